"""Class-folder datamodule: hold-outs, long-tailed profiles, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lt_lightning.data.folder import ImageFolderLTDataModule, list_images
from lt_lightning.data.profiles import long_tail_counts

CLASSES = ("ant", "bee", "cat", "dog")


def make_folder(split_dir: Path, sizes: dict[str, int], seed: int = 0) -> None:
    """``split_dir/<class>/img_<i>.{png,jpg}`` with ``sizes[class]`` tiny random images each."""
    rng = np.random.default_rng(seed)
    for name, n in sizes.items():
        folder = split_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            ext = "png" if i % 3 else "JPG"
            Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(folder / f"img_{i:02d}.{ext}")


def _dm(root: Path, **kwargs) -> ImageFolderLTDataModule:
    args = dict(root=str(root), image_size=8, batch_size=4, val_per_class=1, test_per_class=2)
    args.update(kwargs)
    return ImageFolderLTDataModule(**args)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_folder(tmp_path / "train", dict.fromkeys(CLASSES, 12))
    return tmp_path


def test_taken_as_is_with_balanced_hold_out(root: Path) -> None:
    dm = _dm(root)
    assert dm.class_names == list(CLASSES) and dm.num_classes == 4
    assert dm.class_counts == [9, 9, 9, 9]  # 12 - 2 (test) - 1 (val)
    train, val, test = (set(dm.image_lists[s][0]) for s in ("train", "val", "test"))
    assert len(val) == 4 and len(test) == 8
    assert sorted(dm.image_lists["test"][1]) == [0, 0, 1, 1, 2, 2, 3, 3]  # balanced
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(list_images(str(root / "train")))
    for paths, labels in dm.image_lists.values():  # each path is in its class's folder
        assert all(Path(p).parent.name == CLASSES[c] for p, c in zip(paths, labels, strict=True))
    assert _dm(root).image_lists == dm.image_lists  # seeded
    assert _dm(root, split_seed=1).image_lists["test"] != dm.image_lists["test"]


def test_exp_profile_counts_match_long_tail_counts(root: Path) -> None:
    dm = _dm(root, imbalance_ratio=4.0)
    # n_max = smallest pool = 9; n_c = int(9 * 0.25 ** (c / 3)): 9, int(5.67), int(3.57), int(2.25)
    assert dm.class_counts == [9, 5, 3, 2] == long_tail_counts(4, 9, 4.0, "exp")
    assert dm.train_labels.tolist() == dm.image_lists["train"][1]
    pool = _dm(root).image_lists["train"][0]
    assert set(dm.image_lists["train"][0]) <= set(pool)  # chosen from the pool, never from val/test
    assert _dm(root, imbalance_ratio=4.0).image_lists == dm.image_lists  # seeded


def test_step_profile_and_explicit_n_max(root: Path) -> None:
    assert _dm(root, imbalance_ratio=3.0, profile="step").class_counts == [9, 9, 3, 3]
    dm = _dm(root, imbalance_ratio=2.0, n_max=8)
    # int(8 * 0.5 ** (c / 3)): 8, int(6.35), int(5.04), int(4.0)
    assert dm.class_counts == [8, 6, 5, 4] == long_tail_counts(4, 8, 2.0)
    with pytest.raises(ValueError, match="class 0 has 9 images but counts"):
        _dm(root, imbalance_ratio=2.0, n_max=10)


def test_uneven_classes_head_is_smallest_pool(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", {"a": 20, "b": 7, "c": 15})
    dm = _dm(tmp_path, val_per_class=1, test_per_class=2)
    assert dm.class_counts == [17, 4, 12]  # taken as is after the hold-out
    # the pools are 17, 4, 12 -> n_max = 4; rho = 2: int(4 * 0.5 ** (c / 2)) = 4, int(2.83), 2
    dm = _dm(tmp_path, val_per_class=1, test_per_class=2, imbalance_ratio=2.0)
    assert dm.class_counts == [4, 2, 2] == long_tail_counts(3, 4, 2.0)


def test_uneven_classes_with_folders_rejects_per_class_counts(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", {"a": 5, "b": 5})
    make_folder(tmp_path / "val", {"a": 1, "b": 2}, seed=1)
    make_folder(tmp_path / "test", {"b": 3}, seed=2)  # a class may be absent from an eval folder
    dm = _dm(tmp_path, val_per_class=0, test_per_class=0)
    assert dm.class_counts == [5, 5]
    assert dm.image_lists["val"][1] == [0, 1, 1] and dm.image_lists["test"][1] == [1, 1, 1]
    with pytest.raises(ValueError, match="val.* exists.*not both"):
        _dm(tmp_path, val_per_class=1, test_per_class=0)
    with pytest.raises(ValueError, match="test.* exists.*not both"):
        _dm(tmp_path, val_per_class=0, test_per_class=1)


def test_missing_eval_folder_needs_a_hold_out(root: Path) -> None:
    with pytest.raises(ValueError, match="test.* not found.*test_per_class > 0"):
        _dm(root, test_per_class=0)
    with pytest.raises(ValueError, match="val.* not found.*val_per_class > 0"):
        _dm(root, val_per_class=0)
    with pytest.raises(ValueError, match="class 0 has 12 images .* needs 13"):
        _dm(root, val_per_class=6, test_per_class=7)
    with pytest.raises(ValueError, match="class 0 .*'ant'.* no training images"):
        _dm(root, val_per_class=6, test_per_class=6)


def test_unknown_class_in_eval_folder(root: Path) -> None:
    make_folder(root / "val", {"ant": 1, "eel": 1})
    with pytest.raises(ValueError, match=r"\['eel'\].*not classes of the training folder"):
        _dm(root, val_per_class=0)


def test_empty_class_folder(root: Path) -> None:
    (root / "train" / "emu").mkdir()
    (root / "train" / "emu" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"class folder .*train/emu' holds no image"):
        _dm(root)


def test_profile_errors(root: Path) -> None:
    for rho in (0.0, -2.0, float("nan")):
        with pytest.raises(ValueError, match="imbalance_ratio must be positive"):
            _dm(root, imbalance_ratio=rho)
    with pytest.raises(ValueError, match="imbalance_ratio must be >= 1"):
        _dm(root, imbalance_ratio=0.5)
    with pytest.raises(ValueError, match="class 3 would get zero images"):  # int(9 / 10) = 0
        _dm(root, imbalance_ratio=10.0)
    with pytest.raises(ValueError, match="profile"):
        _dm(root, imbalance_ratio=2.0, profile="linear")
    with pytest.raises(ValueError, match="n_max"):
        _dm(root, imbalance_ratio=2.0, n_max=0)


def test_missing_train_folder_and_no_classes(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"training folder .*train' not found.*root/train/<class>"):
        _dm(tmp_path)
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        _dm(tmp_path)


def test_list_images_filters_extensions_and_hidden(tmp_path: Path) -> None:
    make_folder(tmp_path / "c", {"x": 2})
    (tmp_path / "c" / "x" / "readme.md").write_text("no")
    (tmp_path / "c" / "x" / ".hidden.png").write_bytes(b"")
    nested = tmp_path / "c" / "x" / "more"
    make_folder(nested, {"deep": 1})
    found = [Path(p).relative_to(tmp_path / "c").as_posix() for p in list_images(str(tmp_path / "c"))]
    assert found == ["x/img_00.JPG", "x/img_01.png", "x/more/deep/img_00.JPG"]


def test_loaders_give_uint8_batches(root: Path) -> None:
    dm = _dm(root, imbalance_ratio=4.0)
    dm.setup(None)
    assert dm.train_dataset.train and not dm.val_dataset.train and not dm.test_dataset.train
    for loader, n in ((dm.train_dataloader(), 4), (dm.val_dataloader(), 4), (dm.test_dataloader(), 8)):
        x, y = next(iter(loader))
        assert x.dtype == torch.uint8 and x.shape == (n, 3, 8, 8)
        assert 0 <= int(y.min()) and int(y.max()) < 4
    epoch = torch.cat([b[1] for b in dm.train_dataloader()])
    assert torch.bincount(epoch, minlength=4).tolist() == [9, 5, 3, 2]  # one pass over the long-tailed set


def test_prefer_split_folders_uses_present_folders_and_holds_out_for_missing_ones(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", {"a": 6, "b": 6})
    make_folder(tmp_path / "val", {"a": 1, "b": 2}, seed=1)
    with pytest.raises(ValueError, match="val.* exists.*not both.*prefer_split_folders=True"):
        _dm(tmp_path, val_per_class=1, test_per_class=2)
    dm = _dm(tmp_path, val_per_class=1, test_per_class=2, prefer_split_folders=True)
    assert dm.image_lists["val"][0] == [str(p) for p in sorted((tmp_path / "val").rglob("*.*"))]  # the folder as is
    assert sorted(dm.image_lists["test"][1]) == [0, 0, 1, 1]  # held out of train/: test/ is missing
    assert dm.class_counts == [4, 4]  # 6 - 2 test, nothing held out for val
    # the same arguments on the other layouts
    make_folder(tmp_path / "test", {"a": 3}, seed=2)
    both = _dm(tmp_path, val_per_class=1, test_per_class=2, prefer_split_folders=True)
    assert both.class_counts == [6, 6] and both.image_lists["test"][1] == [0, 0, 0]
    none = tmp_path / "none"
    make_folder(none / "train", {"a": 6, "b": 6})
    held = _dm(none, val_per_class=1, test_per_class=2, prefer_split_folders=True)
    assert held.image_lists == _dm(none, val_per_class=1, test_per_class=2).image_lists  # today's hold-out
    with pytest.raises(ValueError, match="val.* not found.*val_per_class > 0"):  # a missing folder still needs a count
        _dm(none, val_per_class=0, test_per_class=2, prefer_split_folders=True)


@pytest.mark.parametrize("layout", ["train_only", "train_val_test"])
def test_shipped_folder_config_runs_on_both_layouts(layout: str, tmp_path: Path, monkeypatch) -> None:
    """configs/data/folder_lt.yaml through the real CLI, on ``root/train`` alone and with ``root/val`` + ``root/test``.

    Before ``prefer_split_folders`` the second layout failed: "'.../test' exists: give it or test_per_class=20 > 0".
    """
    from lt_lightning.cli import run

    configs = Path(__file__).resolve().parents[2] / "configs"
    make_folder(tmp_path / "data" / "train", dict.fromkeys(CLASSES, 32))
    if layout == "train_val_test":
        make_folder(tmp_path / "data" / "val", dict.fromkeys(CLASSES, 2), seed=1)
        make_folder(tmp_path / "data" / "test", dict.fromkeys(CLASSES, 3), seed=2)
    monkeypatch.chdir(tmp_path)
    files = ("data/cifar10_lt.yaml", "method/ce.yaml", "data/folder_lt.yaml")
    cli = run(
        ["fit", *(x for f in files for x in ("-c", str(configs / f)))]
        + ["--data.init_args.root", "data", "--data.init_args.image_size", "8", "--data.init_args.num_workers", "0"]
        + ["--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu"]
    )
    assert cli.trainer.state.finished
    counts = {"train_only": [2, 2, 2, 2], "train_val_test": [32, 32, 32, 32]}[layout]  # 32 - 10 val - 20 test
    assert cli.datamodule.class_counts == counts
    assert len(cli.datamodule.image_lists["test"][0]) == (80 if layout == "train_only" else 12)
