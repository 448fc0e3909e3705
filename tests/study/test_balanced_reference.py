"""The balanced reference set of every datamodule: floor(N / C) per class, same pool, disjoint from val/test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lt_lightning.data.balanced_reference import balanced_reference_per_class, select_balanced_reference
from lt_lightning.data.cifar import CIFAR10LTDataModule, CIFAR100LTDataModule
from lt_lightning.data.digits import DigitsLTDataModule
from lt_lightning.data.folder import ImageFolderLTDataModule
from lt_lightning.data.split_file_datamodule import SplitFileDataModule
from lt_lightning.data.synthetic import SyntheticLTDataModule
from tests.cifar_files import write_tiny_cifar100


def _rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(r) for r in x.flatten(1).numpy()}


def test_selection_counts_seeded_and_named_error() -> None:
    labels = np.array([0] * 10 + [1] * 6 + [2] * 4)
    assert balanced_reference_per_class(14, 3) == 4
    chosen = select_balanced_reference(labels, total=14, num_classes=3, seed=1)
    assert np.bincount(labels[chosen]).tolist() == [4, 4, 4]
    assert np.array_equal(chosen, select_balanced_reference(labels, 14, 3, seed=1))
    assert not np.array_equal(chosen, select_balanced_reference(labels, 14, 3, seed=2))
    with pytest.raises(ValueError, match=r"class 2 \('cat'\) has 4 images in the pool.*needs 5 per class"):
        select_balanced_reference(labels, 15, 3, class_names=["a", "b", "cat"])


def test_digits_balanced_reference() -> None:
    lt = DigitsLTDataModule()
    ref = DigitsLTDataModule(balanced_reference=True)
    assert sum(lt.class_counts) == 461
    assert ref.class_counts == [46] * 10  # floor(461 / 10)
    assert np.array_equal(ref.val_index, lt.val_index) and np.array_equal(ref.test_index, lt.test_index)
    held = set(lt.val_index.tolist()) | set(lt.test_index.tolist())
    assert not held & set(ref.train_index.tolist())
    ref.setup("fit")
    assert ref.train_labels.tolist() == ref.train_dataset.labels.tolist()


def test_synthetic_balanced_reference_keeps_val_and_test() -> None:
    kwargs = {"num_classes": 4, "n_max": 40, "imbalance_ratio": 8, "image_size": 4, "channels": 1}
    lt, ref = SyntheticLTDataModule(**kwargs), SyntheticLTDataModule(**kwargs, balanced_reference=True)
    assert ref.class_counts == [sum(lt.class_counts) // 4] * 4
    lt.setup("fit")
    ref.setup("fit")
    assert torch.equal(lt.test_dataset.images, ref.test_dataset.images)
    assert torch.equal(lt.val_dataset.images, ref.val_dataset.images)
    assert not _rows(ref.train_dataset.images) & _rows(ref.test_dataset.images)
    assert torch.bincount(ref.train_dataset.labels).tolist() == ref.class_counts


@pytest.mark.parametrize("val_source", ["unused", "holdout"])
def test_cifar100_balanced_reference_is_disjoint_from_validation(tmp_path: Path, val_source: str) -> None:
    write_tiny_cifar100(tmp_path, train_per_class=30, test_per_class=1)
    kwargs = {"root": str(tmp_path), "imbalance_ratio": 10, "val_per_class": 2, "val_source": val_source}
    lt, ref = CIFAR100LTDataModule(**kwargs), CIFAR100LTDataModule(**kwargs, balanced_reference=True)
    per_class = sum(lt.class_counts) // 100
    assert ref.class_counts == [per_class] * 100
    assert np.array_equal(ref.val_index, lt.val_index)
    assert not set(ref.train_index.tolist()) & set(ref.val_index.tolist())


def test_cifar10_lt_rho100_reference_has_1240_per_class(cifar10_root: Path) -> None:
    lt = CIFAR10LTDataModule(root=str(cifar10_root))
    ref = CIFAR10LTDataModule(root=str(cifar10_root), balanced_reference=True)
    assert sum(lt.class_counts) == 12406
    assert ref.class_counts == [1240] * 10
    assert not set(ref.train_index.tolist()) & set(ref.val_index.tolist())


def _write_tree(root: Path, counts: list[int]) -> None:
    rng = np.random.RandomState(0)
    for c, n in enumerate(counts):
        folder = root / "train" / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.randint(0, 256, (4, 4, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_folder_balanced_reference_from_the_pool(tmp_path: Path) -> None:
    _write_tree(tmp_path, [30, 24, 20])
    kwargs = {"root": str(tmp_path), "imbalance_ratio": 4.0, "val_per_class": 2, "test_per_class": 3}
    kwargs |= {"image_size": 4, "resize_size": 4}
    lt, ref = ImageFolderLTDataModule(**kwargs), ImageFolderLTDataModule(**kwargs, balanced_reference=True)
    assert ref.class_counts == [sum(lt.class_counts) // 3] * 3
    train = set(ref.image_lists["train"][0])
    assert not train & (set(ref.image_lists["val"][0]) | set(ref.image_lists["test"][0]))
    assert ref.image_lists["test"] == lt.image_lists["test"]


def test_folder_too_few_images_names_the_class(tmp_path: Path) -> None:
    _write_tree(tmp_path, [30, 24, 6])  # pool 25 / 19 / 1 after the hold-out: floor(45 / 3) = 15 needed
    kwargs = {"root": str(tmp_path), "val_per_class": 2, "test_per_class": 3, "image_size": 4}
    with pytest.raises(ValueError, match=r"class 2 \('class_2'\) has 1 images.*needs 15 per class"):
        ImageFolderLTDataModule(**kwargs, balanced_reference=True)


def test_split_file_reference_file_leaves_out_val_and_test(tmp_path: Path) -> None:
    lines = {"train": [], "val": [], "test": [], "full": []}
    for c, n in enumerate([8, 4, 2]):
        for i in range(n):
            lines["train"].append(f"img/{c}_{i}.jpg {c}")
    for c in range(3):
        lines["val"].append(f"img/{c}_v.jpg {c}")
        lines["test"].append(f"img/{c}_t.jpg {c}")
        lines["full"] += [f"img/{c}_{i}.jpg {c}" for i in range(8)] + [f"img/{c}_v.jpg {c}"]
    for name, rows in lines.items():
        (tmp_path / f"{name}.txt").write_text("\n".join(rows) + "\n")
    files = {k: str(tmp_path / f"{k}.txt") for k in ("train", "val", "test")}
    kwargs = {"root": str(tmp_path), "train_file": files["train"], "val_file": files["val"], "test_file": files["test"]}
    with pytest.raises(ValueError, match=r"class 2 has 2 images in the train split file .* needs 4 per class"):
        SplitFileDataModule(**kwargs, balanced_reference=True)  # the long-tailed file alone is too small
    ref = SplitFileDataModule(**kwargs, balanced_reference=True, reference_file=str(tmp_path / "full.txt"))
    assert ref.class_counts == [4, 4, 4]  # floor(14 / 3)
    held = set(ref.image_lists["val"][0]) | set(ref.image_lists["test"][0])
    assert not set(ref.image_lists["train"][0]) & held
