"""The image-file datamodules (folders, split files) take every option of the base datamodule (issue 19.4).

Before, ``ImageFileDataModule``, ``SplitFileDataModule`` and ``ImageFolderLTDataModule`` dropped
``test_distribution``, ``test_imbalance_ratio``, ``views``, ``view_augment`` and ``train_set_on_device``: the CLI
refused them for ImageNet-LT, Places-LT and folders. Each option is checked here through the real datamodule.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch import Tensor, nn

from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.data.folder import ImageFolderLTDataModule
from lt_lightning.data.image_datamodule import ImageFileDataModule
from lt_lightning.data.split_file_datamodule import SplitFileDataModule
from lt_lightning.module import LongTailModule
from tests.data.test_folder import CLASSES, make_folder
from tests.data.test_split_file import make_tree

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BASE_OPTIONS = [p for p in inspect.signature(LongTailDataModule.__init__).parameters.values() if p.name != "self"]


@pytest.mark.parametrize("cls", [ImageFileDataModule, SplitFileDataModule, ImageFolderLTDataModule])
def test_every_base_option_is_a_parameter_with_the_base_default(cls: type) -> None:
    params = inspect.signature(cls.__init__).parameters
    assert {p.name for p in BASE_OPTIONS} - set(params) == set()
    for base in BASE_OPTIONS:
        mine = params[base.name]
        assert (mine.default, str(mine.annotation)) == (base.default, str(base.annotation)), base.name


def _folder(tmp_path: Path, **kwargs) -> ImageFolderLTDataModule:
    make_folder(tmp_path / "train", dict.fromkeys(CLASSES, 12))
    args = dict(root=str(tmp_path), image_size=8, batch_size=4, val_per_class=1, test_per_class=4)
    args.update(imbalance_ratio=4.0)  # training counts [7, 4, 2, 1]: class index = rank
    return ImageFolderLTDataModule(**(args | kwargs))


@pytest.mark.parametrize(
    ("distribution", "counts"),
    # 4 test images per class, ratio 4: n_r = int(4 * (1/4) ** (r / 3)) = 4, int(2.52), int(1.59), 1
    [(None, [4, 4, 4, 4]), ("forward", [4, 2, 1, 1]), ("uniform", [4, 4, 4, 4]), ("backward", [1, 1, 2, 4])],
)
def test_folder_test_distribution_resamples_the_test_set(tmp_path: Path, distribution, counts) -> None:
    dm = _folder(tmp_path, test_distribution=distribution, test_imbalance_ratio=4.0)
    assert dm.class_counts == [7, 4, 2, 1]
    dm.setup("test")
    assert dm.test_class_counts() == counts
    labels = torch.cat([y for _, y in dm.test_dataloader()])
    assert torch.bincount(labels, minlength=4).tolist() == counts  # the loader tests the resampled set
    assert len(dm.test_dataset) == 16  # the split itself is unchanged


def test_split_file_test_distribution_backward(tmp_path: Path) -> None:
    files = make_tree(tmp_path, counts=(6, 3, 2), eval_per_class=4)
    dm = SplitFileDataModule(
        root=str(tmp_path),
        train_file=files["train"],
        val_file=files["val"],
        test_file=files["test"],
        image_size=8,
        test_distribution="backward",
        test_imbalance_ratio=4.0,
    )
    dm.setup("test")
    # 3 classes, ranks 0, 1, 2 by training count: backward n = int(4 * (1/4) ** ((2 - r) / 2)) = 1, 2, 4
    assert dm.test_class_counts() == [1, 2, 4]


def test_bad_base_options_are_refused_by_the_image_file_datamodules(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="views must be an integer >= 1, got 0"):
        _folder(tmp_path, views=0)
    with pytest.raises(ValueError, match="view_augment must be one of"):
        _folder(tmp_path, view_augment="randaugment")
    with pytest.raises(ValueError, match="distribution must be one of"):
        _folder(tmp_path, test_distribution="sideways")


def test_identical_views_are_refused_with_a_worker_side_preset(tmp_path: Path) -> None:
    """random_resized_crop crops and flips once per image in the worker: 'standard' device views would be copies."""
    with pytest.raises(ValueError, match="views=2 with augmentation_preset='random_resized_crop'.*identical views"):
        _folder(tmp_path, views=2)
    assert _folder(tmp_path, views=2, view_augment="simclr").views == 2
    assert _folder(tmp_path, views=2, augmentation_preset="pad_crop").views == 2
    assert _folder(tmp_path, views=2, augment=False).views == 2  # no augmentation asked: nothing to differ


def test_train_set_on_device_is_refused_for_image_files_naming_the_option(tmp_path: Path) -> None:
    dm = _folder(tmp_path, train_set_on_device=True)
    assert dm.train_set_on_device is True
    dm.setup("fit")
    with pytest.raises(ValueError, match="train_set_on_device=True needs an in-memory training set"):
        dm.train_dataloader()


class _Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.num_features = 4
        self.proj = nn.Linear(3 * 8 * 8, 4)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.proj(x.flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)


class _Record(L.Callback):
    def __init__(self) -> None:
        self.batches: list[tuple[Tensor, Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append((batch[0].detach().clone(), batch[1].detach().clone()))


@pytest.mark.parametrize(
    "options", [{"augmentation_preset": "pad_crop"}, {"view_augment": "simclr"}], ids=["pad_crop", "simclr"]
)
def test_folder_two_views_give_two_differing_views_per_image(tmp_path: Path, options: dict) -> None:
    dm = _folder(tmp_path, views=2, **options)
    model = LongTailModule(_Flat(), num_classes=dm.num_classes, class_counts=dm.class_counts)
    record = _Record()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
        callbacks=[record],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    assert len(record.batches) == 2
    for images, labels in record.batches:
        assert images.shape == (8, 3, 8, 8) and images.is_floating_point()  # [2B, C, H, W], view-major
        assert torch.equal(labels[:4], labels[4:])
        assert not torch.allclose(images[:4], images[4:])


def test_cli_exposes_the_base_options_for_the_folder_config(tmp_path: Path, capsys) -> None:
    """``lt-lightning fit -c configs/data/folder_lt.yaml --data.init_args.view_augment simclr ... --print_config``."""
    from lt_lightning.cli import run

    make_folder(tmp_path / "train", dict.fromkeys(CLASSES, 12))
    args = ["fit", "-c", str(CONFIGS / "data" / "folder_lt.yaml"), "--data.init_args.root", str(tmp_path)]
    args += ["--data.init_args.view_augment", "simclr", "--data.init_args.views", "2"]
    args += ["--data.init_args.test_distribution", "backward", "--data.init_args.test_imbalance_ratio", "5"]
    args += ["--data.init_args.train_set_on_device", "false", "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        run(args)
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]
    assert printed["view_augment"] == "simclr" and printed["views"] == 2
    assert printed["test_distribution"] == "backward" and printed["test_imbalance_ratio"] == 5.0
    assert printed["train_set_on_device"] is False
