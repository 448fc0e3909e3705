"""Tiny CIFAR-10 / CIFAR-100 files of the original python-pickle layout, random pixels (CIFAR-100 itself is not
available offline; the real CIFAR-10 of ``../shared/data`` is the ``cifar10_root`` fixture)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_tiny_cifar100(root: Path, train_per_class: int = 20, test_per_class: int = 3, seed: int = 0) -> dict:
    """Write ``root/cifar-100-python/{train,test,meta}`` of the original layout with random pixels."""
    rng = np.random.RandomState(seed)
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    out = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        fine = rng.permutation(np.repeat(np.arange(100), per_class))
        data = rng.randint(0, 256, size=(fine.size, 3072)).astype(np.uint8)
        entry = {
            "filenames": [f"img_{i}.png" for i in range(fine.size)],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": fine.tolist(),
            "coarse_labels": (fine // 5).tolist(),
            "data": data,
        }
        with open(base / split, "wb") as f:
            pickle.dump(entry, f)
        out[split] = (data.reshape(-1, 3, 32, 32), fine.astype(np.int64))
    names = [f"fine_{c:02d}" for c in range(100)]
    with open(base / "meta", "wb") as f:
        pickle.dump({"fine_label_names": names, "coarse_label_names": [f"coarse_{c}" for c in range(20)]}, f)
    out["names"] = names
    return out


def write_tiny_cifar10(root: Path, train_per_class: int = 2, test_per_class: int = 2, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py`` of the original layout (5 training batches, the test batch,
    ``batches.meta``) with ``train_per_class`` training images per class spread over the 5 batches; return it."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    train = rng.permutation(np.repeat(np.arange(10), train_per_class))
    splits = [(f"data_batch_{i + 1}", part) for i, part in enumerate(np.array_split(train, 5))]
    for name, labels in [*splits, ("test_batch", np.repeat(np.arange(10), test_per_class))]:
        data = rng.integers(0, 256, (labels.size, 3072), dtype=np.uint8)
        entry = {"data": data, "labels": labels.tolist(), "filenames": ["x.png"] * labels.size}
        (base / name).write_bytes(pickle.dumps(entry))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class_{c}" for c in range(10)]}))
    return base
