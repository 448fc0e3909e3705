"""Image files on disk: colour conversion, the worker pipelines, unreadable files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from lt_lightning.data.image_files import (
    ImageFileDataset,
    UnreadableImageError,
    default_resize_size,
    load_rgb,
    to_rgb,
    validate_on_error,
)


def _write(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


def _columns(height: int, width: int) -> np.ndarray:
    """RGB image, pixel (y, x) = (8 x, y, 200) for width <= 32: every column differs, so crops are identifiable."""
    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[..., 0] = 8 * np.arange(width)[None, :]
    img[..., 1] = np.arange(height)[:, None]
    img[..., 2] = 200
    return img


# ---------------------------------------------------------------------------------------------- colour conversion
def test_to_rgb_modes_hand_computed() -> None:
    gray = Image.fromarray(np.array([[0, 128, 255]], dtype=np.uint8), mode="L")
    assert np.asarray(to_rgb(gray)).tolist() == [[[0, 0, 0], [128, 128, 128], [255, 255, 255]]]
    rgba = Image.fromarray(np.array([[[10, 20, 30, 0]]], dtype=np.uint8), mode="RGBA")
    assert np.asarray(to_rgb(rgba)).tolist() == [[[10, 20, 30]]]  # alpha dropped, colour kept
    # 16-bit grey: v * 255 / 65535 rounded -> 0, 127.50 -> 128, 255
    deep = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert deep.mode.startswith("I")
    assert np.asarray(to_rgb(deep))[0, :, 0].tolist() == [0, 128, 255]
    flt = Image.fromarray(np.array([[-3.0, 12.4, 300.0]], dtype=np.float32), mode="F")
    assert np.asarray(to_rgb(flt))[0, :, 0].tolist() == [0, 12, 255]
    palette = Image.fromarray(np.array([[0, 1]], dtype=np.uint8), mode="P")
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    assert np.asarray(to_rgb(palette)).tolist() == [[[255, 0, 0], [0, 0, 255]]]


def test_load_rgb_decodes_grey_png_to_rgb(tmp_path: Path) -> None:
    path = _write(tmp_path / "g.png", np.full((3, 4), 77, dtype=np.uint8))
    image = load_rgb(path)
    assert image.mode == "RGB" and image.size == (4, 3)
    assert np.asarray(image).max() == 77


def test_load_rgb_names_unreadable_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(UnreadableImageError, match="broken.jpg") as info:
        load_rgb(str(bad))
    assert info.value.path == str(bad)
    truncated = tmp_path / "truncated.png"
    _write(truncated, _columns(16, 16))
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(UnreadableImageError, match="truncated.png"):
        load_rgb(str(truncated))
    with pytest.raises(UnreadableImageError, match="nowhere.png"):
        load_rgb(str(tmp_path / "nowhere.png"))


# ---------------------------------------------------------------------------------------------- pipelines
def test_resize_follows_the_crop_and_inconsistent_pairs_are_refused() -> None:
    # issue 18: a pinned resize_size 256 with --data.init_args.image_size 32 evaluated a 32-pixel centre of a
    # 256-pixel image (1/64 of it) while training saw whole images
    assert default_resize_size(32) == 36
    with pytest.raises(ValueError, match=r"resize_size=256 with image_size=32: .* keep 12% of each side"):
        default_resize_size(32, 256)
    assert default_resize_size(32, 64) == 64  # at most twice the crop: allowed
    configs = Path(__file__).resolve().parents[2] / "configs"
    for name in (
        "data/folder_lt.yaml",
        "data/imagenet_lt.yaml",
        "data/places_lt.yaml",
    ):
        assert "resize_size" not in yaml.safe_load((configs / name).read_text())["data"]["init_args"], name


def test_default_resize_size() -> None:
    assert default_resize_size(224) == 256  # int(224 / 0.875)
    assert default_resize_size(16) == 18  # int(18.28)
    assert default_resize_size(16, 16) == 16
    with pytest.raises(ValueError, match="resize_size"):
        default_resize_size(16, 15)


def test_eval_pipeline_is_resize_then_centre_crop(tmp_path: Path) -> None:
    """12x8 image, resize shorter side to 8 (no-op), centre crop 8: columns 2..9 exactly."""
    img = _columns(8, 12)
    path = _write(tmp_path / "c.png", img)
    ds = ImageFileDataset([path], [3], image_size=8, resize_size=8, train=False)
    x, y = ds[0]
    assert y == 3
    assert x.dtype == torch.uint8 and x.shape == (3, 8, 8)
    assert torch.equal(x, torch.from_numpy(img).permute(2, 0, 1)[:, :, 2:10])


def test_eval_pipeline_downscales_shorter_side(tmp_path: Path) -> None:
    """A 16x32 (HxW) image resized to shorter side 8 is 8x16; a centre crop of 8 keeps the middle half."""
    img = np.zeros((16, 32, 3), dtype=np.uint8)
    img[:, 8:24] = 255  # the middle half is white
    ds = ImageFileDataset([_write(tmp_path / "w.png", img)], [0], image_size=8, resize_size=8)
    x, _ = ds[0]
    assert x.shape == (3, 8, 8)
    assert x[:, :, 1:7].min() == 255  # away from the antialiasing border the crop is all white


def test_train_pipeline_shape_seeded_and_flip_option(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.png", _columns(20, 30))
    ds = ImageFileDataset([path], [1], image_size=8, train=True)
    torch.manual_seed(0)
    a, _ = ds[0]
    torch.manual_seed(0)
    b, _ = ds[0]
    assert a.shape == (3, 8, 8) and a.dtype == torch.uint8
    assert torch.equal(a, b)  # the worker RNG (seeded by Lightning per worker) drives the crop and the flip
    # blue channel is constant 200: whatever the crop, it stays 200
    assert int(a[2].min()) == 200 == int(a[2].max())
    # the flip actually flips: over seeds, the red gradient runs both ways
    directions = set()
    for seed in range(20):
        torch.manual_seed(seed)
        x, _ = ds[0]
        red = x[0].float().mean(0)
        directions.add(bool(red[-1] > red[0]))
    assert directions == {True, False}
    no_flip = ImageFileDataset([path], [1], image_size=8, train=True, horizontal_flip=False)
    for seed in range(10):
        torch.manual_seed(seed)
        red = no_flip[0][0][0].float().mean(0)
        assert red[-1] >= red[0]


def test_dataset_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="same length"):
        ImageFileDataset(["a.png"], [0, 1])
    with pytest.raises(ValueError, match="image_size"):
        ImageFileDataset(["a.png"], [0], image_size=0)
    with pytest.raises(ValueError, match="on_error"):
        ImageFileDataset(["a.png"], [0], on_error="ignore")
    with pytest.raises(ValueError, match="on_error"):
        validate_on_error("warn")


# ---------------------------------------------------------------------------------------------- unreadable files
def test_raise_names_the_file_and_skip_moves_on(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.png", _columns(8, 8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    strict = ImageFileDataset([str(bad), good], [0, 1], image_size=8)
    with pytest.raises(UnreadableImageError, match="bad.png"):
        strict[0]
    lenient = ImageFileDataset([str(bad), good], [0, 1], image_size=8, on_error="skip")
    with pytest.warns(RuntimeWarning, match="bad.png"):
        x, y = lenient[0]
    assert y == 1 and x.shape == (3, 8, 8)  # the next readable sample
    assert lenient.num_skipped == 1


def test_missing_files_and_drop_unreadable(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.png", _columns(8, 8))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    missing = str(tmp_path / "missing.png")
    ds = ImageFileDataset([good, str(bad), missing], [0, 1, 2], image_size=8, on_error="skip")
    assert ds.missing_files() == [missing]
    assert ds.targets.tolist() == [0, 1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # dropping is silent: the caller reports it
        dropped = ds.drop_unreadable(max_workers=2)
    assert dropped == [str(bad), missing]
    assert ds.paths == [good] and ds.labels == [0] and len(ds) == 1
    with pytest.raises(ValueError, match="max_workers"):
        ds.drop_unreadable(max_workers=0)
