"""A tiny CIFAR-100 of the original python-pickle layout (CIFAR-100 itself is not available offline)."""

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
