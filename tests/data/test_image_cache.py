"""In-memory cache of decoded images (``cache_images``) and PIL's decompression-bomb limit (``max_image_pixels``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lt_lightning.data.folder import ImageFolderLTDataModule
from lt_lightning.data.image_files import ImageCache, ImageFileDataset, UnreadableImageError, load_rgb
from lt_lightning.data.transforms import AUGMENTATION_PRESETS

SIZES = {"a": 7, "b": 5, "c": 4}


def _folder(root: Path, height: int = 12, width: int = 10) -> Path:
    rng = np.random.default_rng(0)
    for name, n in SIZES.items():
        folder = root / "train" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            ext = "png" if i % 2 else "jpg"  # JPEG decoding too
            Image.fromarray(rng.integers(0, 256, (height + i, width, 3), dtype=np.uint8)).save(folder / f"{i}.{ext}")
    return root


def _dm(root: Path, **kwargs) -> ImageFolderLTDataModule:
    args = dict(root=str(root), image_size=8, batch_size=3, val_per_class=1, test_per_class=1)
    return ImageFolderLTDataModule(**(args | kwargs))


def _epoch(loader, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(seed)
    return [(x.clone(), y.clone()) for x, y in loader]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return _folder(tmp_path)


@pytest.mark.parametrize("preset", AUGMENTATION_PRESETS)
def test_cached_batches_are_byte_identical_to_uncached(preset: str, root: Path) -> None:
    plain, cached = _dm(root, augmentation_preset=preset), _dm(root, augmentation_preset=preset, cache_images=True)
    for dm in (plain, cached):
        dm.setup(None)
    assert plain.train_dataset.cache is None
    assert cached.train_dataset.cache.kind == ("output" if preset == "pad_crop" else "decoded")
    assert cached.val_dataset.cache.kind == "output" == cached.test_dataset.cache.kind  # evaluation: deterministic
    for epoch_seed in (0, 1):
        a, b = _epoch(plain.train_dataloader(), epoch_seed), _epoch(cached.train_dataloader(), epoch_seed)
        assert len(a) == len(b) == 4  # 13 training images in batches of 3
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert xa.dtype == xb.dtype == torch.uint8 and torch.equal(xa, xb) and torch.equal(ya, yb)
    for name in ("val_dataloader", "test_dataloader", "train_eval_dataloader"):
        for (xa, ya), (xb, yb) in zip(_epoch(getattr(plain, name)()), _epoch(getattr(cached, name)()), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_cached_batches_are_identical_with_a_worker_process(root: Path) -> None:
    plain = _dm(root, num_workers=1)
    cached = _dm(root, num_workers=1, cache_images=True)
    for dm in (plain, cached):
        dm.setup("fit")
    for (xa, ya), (xb, yb) in zip(_epoch(plain.train_dataloader()), _epoch(cached.train_dataloader()), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_cache_sizes_and_estimates_hand_computed(root: Path) -> None:
    dm = _dm(root, cache_images=True)
    dm.setup("fit")
    train = dm.train_dataset
    # decoded images: 3 bytes per pixel, 10 pixels wide, 12 + i high for image i of each class
    decoded = sum(3 * 10 * (12 + int(Path(p).stem)) for p in train.paths)
    assert train.cache.nbytes == decoded == train.estimated_cache_bytes()
    assert dm.val_dataset.cache.nbytes == 3 * 3 * 8 * 8  # one 8 x 8 output per class
    assert dm.cache_bytes == decoded + 3 * 3 * 8 * 8
    first = np.asarray(load_rgb(train.paths[0]))
    assert np.array_equal(train.cache.get(0), first) and not train.cache.get(0).flags.writeable


def test_cache_over_the_limit_is_refused_naming_the_option(root: Path) -> None:
    dm = _dm(root, cache_images=True, cache_max_bytes=1000)
    with pytest.raises(
        ValueError,
        match=r"cache_images=True: the 10 train images need about \d\.\d KiB in memory, over cache_max_bytes=1000",
    ):
        dm.setup("fit")
    with pytest.raises(ValueError, match="cache_max_bytes must be an integer >= 0"):
        _dm(root, cache_max_bytes=-1)
    # the limit counts every split: train (decoded) fits alone, the validation outputs do not
    decoded = _dm(root, cache_images=True)
    decoded.setup("fit")
    limit = decoded.train_dataset.cache.nbytes + 10
    with pytest.raises(ValueError, match=r"val images .* \(plus .* already cached\)"):
        _dm(root, cache_images=True, cache_max_bytes=limit).setup("fit")


def test_cache_with_unreadable_files(root: Path) -> None:
    bad = root / "train" / "a" / "9.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(UnreadableImageError, match=r"9\.png"):
        _dm(root, cache_images=True, val_per_class=1, test_per_class=1, split_seed=3).setup(None)
    dm = _dm(root, cache_images=True, on_error="skip")
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable"):
        dm.setup(None)
    skipped = [p for paths in dm.skipped_files.values() for p in paths]
    assert skipped == [str(bad)]
    for dataset in (dm.train_dataset, dm.val_dataset, dm.test_dataset):
        assert len(dataset.cache) == len(dataset) and str(bad) not in dataset.paths


def test_image_cache_take_and_kind() -> None:
    arrays = [np.full((2, 3, 3), i, dtype=np.uint8) for i in range(3)]
    cache = ImageCache("decoded", arrays)
    assert cache.nbytes == 54 and len(cache) == 3
    taken = cache.take([2, 0])
    assert [int(taken.get(i)[0, 0, 0]) for i in range(2)] == [2, 0]
    with pytest.raises(ValueError, match="kind must be one of"):
        ImageCache("pixels", arrays)


# ---------------------------------------------------------------------------------------------- decompression bombs
def test_bomb_error_names_max_image_pixels_and_raising_it_loads(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(path)  # 600 pixels
    with pytest.raises(UnreadableImageError, match=r"big\.png.*DecompressionBombError.*max_image_pixels.*1200"):
        load_rgb(str(path), max_image_pixels=100)  # 600 > 2 x 100: refused
    assert load_rgb(str(path), max_image_pixels=1000).size == (30, 20)
    dataset = ImageFileDataset([str(path)], [0], image_size=8, max_image_pixels=100)
    with pytest.raises(UnreadableImageError, match="max_image_pixels"):
        dataset[0]
    with pytest.raises(ValueError, match="max_image_pixels must be an integer >= 1 or None"):
        ImageFileDataset([str(path)], [0], max_image_pixels=0)


def test_datamodule_max_image_pixels(root: Path, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    with pytest.raises(
        UnreadableImageError, match=r"max_image_pixels option \(e\.g\. --data\.init_args\.max_image_pixels 240"
    ):
        _dm(root, max_image_pixels=20, cache_images=True).setup("fit")  # 10 x 12 = 120 pixels > 2 x 20
    dm = _dm(root, max_image_pixels=1000, cache_images=True)
    assert Image.MAX_IMAGE_PIXELS == 1000  # process-wide, as PIL's limit is
    dm.setup("fit")
    assert len(dm.train_dataset.cache) == 10
