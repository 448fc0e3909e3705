"""CIFAR-10-LT / CIFAR-100-LT datamodules against LDAM-DRW's split (``lt_lightning.data.cifar``).

CIFAR-10 is the session fixture ``cifar10_root`` (a local copy; those tests are skipped where it is absent).
CIFAR-100 is not available offline, so a tiny file of the original layout is generated here
(100 classes x 20 training images, shuffled): the reader derives ``n_max = N / C = 20`` from it.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lt_lightning.data.cifar import CIFAR10LTDataModule, CIFAR100LTDataModule, read_cifar
from lt_lightning.data.profiles import long_tail_counts
from tests.cifar_files import write_tiny_cifar10, write_tiny_cifar100

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _load_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _plain_holdout(labels: np.ndarray, num_classes: int, k: int, seed: int = 0) -> np.ndarray:
    """First ``k`` of each class after a per-class ``RandomState(seed)`` shuffle, classes in order, sorted."""
    rng = np.random.RandomState(seed)
    out = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        out.append(idx[:k])
    return np.sort(np.concatenate(out))


def _build(cls, *args, **kwargs):
    """Construct a datamodule, returning it and the warning messages raised in ``__init__``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm = cls(*args, **kwargs)
    return dm, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


# ---------------------------------------------------------------------------------------------- no data needed
def test_missing_root_names_path_and_how_to_get_data(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        CIFAR10LTDataModule(root=str(root))
    message = str(info.value)
    assert str(root / "cifar-10-batches-py") in message
    assert "cifar-10-python.tar.gz" in message and "download: true" in message
    assert "shared" not in message and "make_cifar10" not in message  # no path of our own machines
    with pytest.raises(FileNotFoundError, match="cifar-100-python.*download: true"):
        CIFAR100LTDataModule(root=str(root))


def test_no_message_points_at_our_machines() -> None:
    """Error messages and config headers say how to get the data, never a path of the project's machines."""
    repo = Path(__file__).resolve().parents[2]
    for path in [*(repo / "lt_lightning").rglob("*.py"), *(repo / "configs" / "data").glob("*.yaml")]:
        text = path.read_text()
        for needle in ("/work/shared", "lt_data", "../shared"):
            assert needle not in text, f"{path}: {needle}"


@pytest.mark.parametrize(("cls", "classes"), [(CIFAR10LTDataModule, 10), (CIFAR100LTDataModule, 100)])
def test_download_true_calls_torchvisions_downloader_once(cls, classes: int, tmp_path: Path, monkeypatch) -> None:
    """``download=True`` fetches a missing dataset with torchvision's ``download_and_extract_archive`` (replaced here
    by a writer of tiny files of the original layout: tests never download) and reads what it extracted."""
    import torchvision.datasets as tv_datasets
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake_download(url, download_root, extract_root=None, filename=None, md5=None, remove_finished=False):
        calls.append((url, download_root, filename, md5))
        write = write_tiny_cifar10 if classes == 10 else write_tiny_cifar100
        write(Path(download_root), 60 if classes == 10 else 20, 2)

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    root = tmp_path / "data"
    with pytest.raises(FileNotFoundError):  # the default: no download
        cls(root=str(root), imbalance_ratio=2.0, val_per_class=1, val_source="holdout")
    assert calls == []
    dm = cls(root=str(root), imbalance_ratio=2.0, val_per_class=1, val_source="holdout", download=True)
    reference = tv_datasets.CIFAR10 if classes == 10 else tv_datasets.CIFAR100
    assert calls == [(reference.url, str(root), reference.filename, reference.tgz_md5)]
    assert dm.num_classes == classes and dm.download
    cls(root=str(root), imbalance_ratio=2.0, val_per_class=1, val_source="holdout", download=True)  # present now
    assert len(calls) == 1  # not fetched again


def test_bad_arguments_before_reading(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="val_source must be 'unused' or 'holdout', got 'test'"):
        CIFAR10LTDataModule(root=str(tmp_path), val_source="test")
    with pytest.raises(ValueError, match="val_per_class must be >= 0, got -1"):
        CIFAR10LTDataModule(root=str(tmp_path), val_per_class=-1)
    with pytest.raises(ValueError, match="num_classes must be 10 or 100"):
        read_cifar(str(tmp_path), 20, train=True)


# ---------------------------------------------------------------------------------------------- CIFAR-10
@pytest.fixture(scope="module")
def raw10(cifar10_root: Path) -> dict:
    """The generated CIFAR-10 pickles read plainly (no project code)."""
    base = cifar10_root / "cifar-10-batches-py"
    batches = [_load_pickle(base / f"data_batch_{i}") for i in range(1, 6)]
    test = _load_pickle(base / "test_batch")
    return {
        "data": np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32),
        "labels": np.array([y for b in batches for y in b["labels"]], dtype=np.int64),
        "test_labels": np.array(test["labels"], dtype=np.int64),
        "names": _load_pickle(base / "batches.meta")["label_names"],
    }


@pytest.fixture(scope="module")
def cifar10_lt(cifar10_root: Path) -> CIFAR10LTDataModule:
    """The default CIFAR-10-LT (rho 100, exp, 50 validation images per class from the unused pool), set up."""
    dm, _ = _build(CIFAR10LTDataModule, root=str(cifar10_root), batch_size=64)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("profile", ["exp", "step"])
@pytest.mark.parametrize("rho", [10, 50, 100])
def test_cifar10_counts_and_indices_equal_ldam(cifar10_root, raw10, ldam_counts, ldam_selection, rho, profile) -> None:
    dm, messages = _build(CIFAR10LTDataModule, root=str(cifar10_root), imbalance_ratio=rho, profile=profile)
    labels = raw10["labels"]
    assert np.bincount(labels).tolist() == [5000] * 10
    counts = ldam_counts(10, 5000, profile, 1.0 / rho)
    selected, _, rest = ldam_selection(labels, counts, rand_number=0)

    assert dm.class_counts == counts
    np.testing.assert_array_equal(dm.train_index, selected)  # same images in the same order as LDAM-DRW
    assert dm.train_labels.tolist() == labels[selected].tolist()
    assert dm.class_names == CIFAR10_NAMES == raw10["names"]

    # validation from the unused pool: the first 50 of each class's leftover (LDAM's shuffled order)
    np.testing.assert_array_equal(dm.val_index, np.sort(np.concatenate([rest[c][:50] for c in range(10)])))
    assert set(dm.val_index.tolist()).isdisjoint(dm.train_index.tolist())
    expected_val = [min(50, 5000 - n) for n in counts]
    assert np.bincount(labels[dm.val_index], minlength=10).tolist() == expected_val
    short = [c for c, n in enumerate(expected_val) if n < 50]  # exp: the head class; step: the majority half
    assert short == ([0] if profile == "exp" else [0, 1, 2, 3, 4])
    assert len(messages) == 1 and f"classes {short}" in messages[0] and "val_source='holdout'" in messages[0]


def test_cifar10_datasets_after_setup(cifar10_lt: CIFAR10LTDataModule, raw10: dict) -> None:
    dm = cifar10_lt
    assert sum(dm.class_counts) == 12406 == len(dm.train_dataset)
    assert torch.equal(dm.train_dataset.images, torch.from_numpy(raw10["data"][dm.train_index]))
    assert torch.equal(dm.train_dataset.labels, dm.train_labels)
    assert dm.train_dataset.images.dtype == torch.uint8 and dm.train_dataset.images.shape[1:] == (3, 32, 32)
    assert len(dm.val_dataset) == 9 * 50
    assert torch.equal(dm.val_dataset.images, torch.from_numpy(raw10["data"][dm.val_index]))
    assert len(dm.test_dataset) == 10000
    assert np.bincount(dm.test_dataset.labels.numpy()).tolist() == [1000] * 10
    assert dm.test_dataset.labels.tolist() == raw10["test_labels"].tolist()
    assert dm.crop_padding == 4 and dm.horizontal_flip is True


def test_cifar10_loaders_give_uint8_batches(cifar10_lt: CIFAR10LTDataModule) -> None:
    images, labels = next(iter(cifar10_lt.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (64, 3, 32, 32) and labels.dtype == torch.long
    images, labels = next(iter(cifar10_lt.test_dataloader()))
    assert images.shape == (128, 3, 32, 32)
    assert labels.tolist() == cifar10_lt.test_dataset.labels[:128].tolist()  # evaluation keeps dataset order


def test_cifar10_holdout_validation_is_balanced_and_disjoint(cifar10_root, raw10, ldam_selection) -> None:
    dm, messages = _build(CIFAR10LTDataModule, root=str(cifar10_root), val_source="holdout", val_per_class=50)
    labels = raw10["labels"]
    assert messages == []
    val = _plain_holdout(labels, 10, 50, seed=0)
    np.testing.assert_array_equal(dm.val_index, val)
    assert np.bincount(labels[dm.val_index]).tolist() == [50] * 10
    pool = np.setdiff1d(np.arange(labels.size), val)
    counts = long_tail_counts(10, 4950, 100)
    assert counts[0] == 4950 and counts[-1] == 49
    assert dm.class_counts == counts
    selected, _, _ = ldam_selection(labels[pool], counts, rand_number=0)
    np.testing.assert_array_equal(dm.train_index, pool[selected])
    assert set(dm.train_index.tolist()).isdisjoint(dm.val_index.tolist())


@pytest.mark.parametrize("rho", [0, -1, 0.5])
def test_cifar10_bad_imbalance_ratio(cifar10_root, rho) -> None:
    with pytest.raises(ValueError, match="imbalance_ratio"):
        CIFAR10LTDataModule(root=str(cifar10_root), imbalance_ratio=rho)


# ---------------------------------------------------------------------------------------------- CIFAR-100 (tiny)
@pytest.fixture(scope="module")
def tiny100(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cifar100")
    return root, write_tiny_cifar100(root)


@pytest.mark.parametrize(("rho", "profile"), [(10, "exp"), (20, "exp"), (4, "step"), (1, "exp")])
def test_cifar100_counts_and_indices_equal_ldam(tiny100, ldam_counts, ldam_selection, rho, profile) -> None:
    root, raw = tiny100
    dm, messages = _build(CIFAR100LTDataModule, root=str(root), imbalance_ratio=rho, profile=profile, val_per_class=5)
    _, labels = raw["train"]
    counts = ldam_counts(100, 20, profile, 1.0 / rho)  # n_max = 2000 / 100
    assert counts[0] == 20 and counts[-1] == int(20 / rho)
    selected, _, rest = ldam_selection(labels, counts, rand_number=0)
    assert dm.num_classes == 100
    assert dm.class_counts == counts
    np.testing.assert_array_equal(dm.train_index, selected)
    assert dm.class_names == raw["names"]
    np.testing.assert_array_equal(dm.val_index, np.sort(np.concatenate([rest[c][:5] for c in range(100)])))
    assert set(dm.val_index.tolist()).isdisjoint(dm.train_index.tolist())
    short = [c for c, n in enumerate(counts) if 20 - n < 5]
    assert bool(messages) == bool(short)
    dm.setup()
    assert len(dm.test_dataset) == 300 and np.bincount(dm.test_dataset.labels.numpy()).tolist() == [3] * 100
    assert torch.equal(dm.train_dataset.images, torch.from_numpy(raw["train"][0][selected]))


@pytest.fixture(scope="module")
def cifar100_100_per_class(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A generated CIFAR-100 with 100 training images per class: deep enough for rho = 100 (tail class 1 image)."""
    root = tmp_path_factory.mktemp("cifar100_100")
    return root, write_tiny_cifar100(root, train_per_class=100, test_per_class=1)


@pytest.mark.parametrize("profile", ["exp", "step"])
@pytest.mark.parametrize("rho", [10, 50, 100])
def test_cifar100_issue_ratios_equal_ldam(cifar100_100_per_class, ldam_counts, ldam_selection, rho, profile) -> None:
    """The issue's ratios rho in {10, 50, 100}, both profiles, against LDAM-DRW's loop (n_max = 10000 / 100)."""
    root, raw = cifar100_100_per_class
    dm, _ = _build(CIFAR100LTDataModule, root=str(root), imbalance_ratio=rho, profile=profile, val_per_class=0)
    counts = ldam_counts(100, 100, profile, 1.0 / rho)
    assert dm.class_counts == counts and counts[-1] == int(100 / rho)
    selected, _, _ = ldam_selection(raw["train"][1], counts, rand_number=0)
    np.testing.assert_array_equal(dm.train_index, selected)


def test_cifar100_default_val_and_holdout(tiny100, ldam_selection) -> None:
    root, raw = tiny100
    _, labels = raw["train"]
    dm, _ = _build(CIFAR100LTDataModule, root=str(root), imbalance_ratio=10)
    assert dm.val_per_class == 20  # CIFAR-100 default
    held, messages = _build(
        CIFAR100LTDataModule, root=str(root), imbalance_ratio=4, val_source="holdout", val_per_class=4
    )
    assert messages == []
    val = _plain_holdout(labels, 100, 4, seed=0)
    np.testing.assert_array_equal(held.val_index, val)
    pool = np.setdiff1d(np.arange(labels.size), val)
    counts = long_tail_counts(100, 16, 4)  # n_max = 20 - 4
    assert held.class_counts == counts and counts[-1] == 4
    selected, _, _ = ldam_selection(labels[pool], counts, rand_number=0)
    np.testing.assert_array_equal(held.train_index, pool[selected])


@pytest.mark.parametrize(
    ("rho", "match"), [(0, "imbalance_ratio must be positive"), (-5, "imbalance_ratio"), (100, "would get zero images")]
)
def test_cifar100_bad_imbalance_ratio(tiny100, rho, match) -> None:
    root, _ = tiny100
    with pytest.raises(ValueError, match=match):
        CIFAR100LTDataModule(root=str(root), imbalance_ratio=rho)  # 20 * 0.01 -> 0 images for rho 100


def test_cifar100_wrong_layout(tmp_path: Path) -> None:
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    for name in ("train", "test"):
        with open(base / name, "wb") as f:
            pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, f)  # CIFAR-10 keys
    with open(base / "meta", "wb") as f:
        pickle.dump({"fine_label_names": ["a"]}, f)
    with pytest.raises(ValueError, match="is not a CIFAR-100 pickle"):
        CIFAR100LTDataModule(root=str(tmp_path))
