"""Augmentation presets of the image-file datamodules: the pipeline each builds, output shapes, bad names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from lt_lightning.data.folder import ImageFolderLTDataModule
from lt_lightning.data.image_files import ImageFileDataset, default_resize_size
from lt_lightning.data.split_file_datamodule import SplitFileDataModule
from lt_lightning.data.transforms import (
    AUGMENTATION_PRESETS,
    check_augmentation_preset,
    image_train_transform,
    pad_crop_padding,
)


def _image(path: Path, height: int = 20, width: int = 30, seed: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return str(path)


def _folder(root: Path, per_class: int = 6, size: tuple[int, int] = (12, 10)) -> Path:
    for c in range(3):
        for i in range(per_class):
            _image(root / "train" / f"class_{c}" / f"{i}.png", *size, seed=10 * c + i)
    return root


def _steps(transform: v2.Compose) -> list[str]:
    return [type(t).__name__ for t in transform.transforms]


def test_each_preset_builds_its_pipeline() -> None:
    assert AUGMENTATION_PRESETS == ("random_resized_crop", "pad_crop", "randaugment", "trivialaugment")
    rrc = image_train_transform("random_resized_crop", 16)
    assert _steps(rrc) == ["RandomResizedCrop", "RandomHorizontalFlip"]
    crop = rrc.transforms[0]
    assert tuple(crop.size) == (16, 16) and crop.scale == (0.08, 1.0) and crop.ratio == pytest.approx((3 / 4, 4 / 3))
    assert rrc.transforms[1].p == 0.5
    assert _steps(image_train_transform("random_resized_crop", 16, horizontal_flip=False)) == ["RandomResizedCrop"]
    randaug = image_train_transform("randaugment", 16)
    assert _steps(randaug) == ["RandomResizedCrop", "RandomHorizontalFlip", "RandAugment"]
    assert randaug.transforms[2].num_ops == 2 and randaug.transforms[2].magnitude == 9  # torchvision's defaults
    assert _steps(image_train_transform("trivialaugment", 16)) == [
        "RandomResizedCrop",
        "RandomHorizontalFlip",
        "TrivialAugmentWide",
    ]
    pad = image_train_transform("pad_crop", 16)  # the worker only resizes: crop + flip are on the device
    assert _steps(pad) == ["Resize", "CenterCrop"]
    assert list(pad.transforms[0].size) == [16] and tuple(pad.transforms[1].size) == (16, 16)


def test_pad_crop_padding_is_cifar_4_at_32() -> None:
    assert [pad_crop_padding(s) for s in (32, 16, 64, 224, 7, 1)] == [4, 2, 8, 28, 1, 1]


@pytest.mark.parametrize("bad", ["autoaugment", "RandAugment", "", None, 3])
def test_unknown_preset_is_a_value_error_naming_the_argument(bad, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="augmentation_preset must be one of 'random_resized_crop', 'pad_crop'"):
        check_augmentation_preset(bad)
    with pytest.raises(ValueError, match="augmentation_preset must be one of"):
        ImageFileDataset(["a.png"], [0], augmentation_preset=bad)
    with pytest.raises(ValueError, match="augmentation_preset must be one of"):
        ImageFolderLTDataModule(str(_folder(tmp_path)), val_per_class=1, test_per_class=1, augmentation_preset=bad)


@pytest.mark.parametrize("preset", AUGMENTATION_PRESETS)
def test_every_preset_gives_uint8_square_crops_of_a_non_square_image(preset: str, tmp_path: Path) -> None:
    path = _image(tmp_path / "wide.png", 20, 30)
    dataset = ImageFileDataset([path], [1], image_size=8, train=True, augmentation_preset=preset)
    for seed in range(5):
        torch.manual_seed(seed)
        x, y = dataset[0]
        assert x.shape == (3, 8, 8) and x.dtype == torch.uint8 and y == 1


def test_pad_crop_worker_part_is_the_whole_image_and_eval_follows_it(tmp_path: Path) -> None:
    path = _image(tmp_path / "wide.png", 20, 30)
    train = ImageFileDataset([path], [0], image_size=8, train=True, augmentation_preset="pad_crop")
    assert default_resize_size(8, None, "pad_crop") == 8 == train.resize_size  # CIFAR: evaluation sees it whole
    assert default_resize_size(8) == 9  # the other presets: int(8 / 0.875)
    ev = ImageFileDataset([path], [0], image_size=8, train=False, augmentation_preset="pad_crop")
    expected = v2.functional.pil_to_tensor(v2.functional.center_crop(v2.functional.resize(Image.open(path), 8), 8))
    assert torch.equal(train[0][0], expected) and torch.equal(ev[0][0], expected)  # deterministic worker part
    assert train.deterministic and not ImageFileDataset([path], [0], train=True).deterministic


def test_default_preset_keeps_todays_pipeline(tmp_path: Path) -> None:
    dm = ImageFolderLTDataModule(str(_folder(tmp_path)), val_per_class=1, test_per_class=1, image_size=8)
    assert dm.augmentation_preset == "random_resized_crop" and dm.resize_size == 9
    assert dm.crop_padding == 0 and dm.horizontal_flip is False  # nothing more on the device
    dm.setup("fit")
    assert _steps(dm.train_dataset.resize) == ["RandomResizedCrop", "RandomHorizontalFlip"]
    assert _steps(dm.val_dataset.resize) == ["Resize", "CenterCrop"]


def test_pad_crop_datamodule_crops_and_flips_on_the_device(tmp_path: Path) -> None:
    dm = ImageFolderLTDataModule(
        str(_folder(tmp_path)),
        val_per_class=1,
        test_per_class=1,
        image_size=16,
        batch_size=4,
        augmentation_preset="pad_crop",
    )
    assert dm.crop_padding == 2 and dm.horizontal_flip is True and dm.resize_size == 16
    assert dm.augmentation.padding == 2 and dm.augmentation.flip
    assert ImageFolderLTDataModule.crop_padding == 0  # set on the instance only
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.uint8
    torch.manual_seed(0)
    out = dm.augmentation(x, train=True)
    assert out.shape == (4, 3, 16, 16) and out.dtype == torch.float32


@pytest.mark.parametrize("preset", AUGMENTATION_PRESETS)
def test_split_file_datamodule_takes_the_preset(preset: str, tmp_path: Path) -> None:
    lines = []
    for split in ("train", "val", "test"):
        rows = []
        for c in range(2):
            for i in range(2):
                rel = f"{split}/{c}/{i}.png"
                _image(tmp_path / rel, 14, 18, seed=c * 7 + i)
                rows.append(f"{rel} {c}")
        (tmp_path / f"{split}.txt").write_text("\n".join(rows) + "\n")
        lines += rows
    dm = SplitFileDataModule(
        str(tmp_path),
        str(tmp_path / "train.txt"),
        str(tmp_path / "test.txt"),
        val_file=str(tmp_path / "val.txt"),
        image_size=8,
        batch_size=4,
        augmentation_preset=preset,
    )
    dm.setup("fit")
    assert dm.train_dataset.augmentation_preset == preset
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.uint8
