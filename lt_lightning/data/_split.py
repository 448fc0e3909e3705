"""Seeded balanced hold-out of ``k`` images per class (validation / test splits built from a labelled pool)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def hold_out_per_class(
    labels: Sequence[int] | np.ndarray, sizes: Sequence[int], num_classes: int, seed: int, what: str = "pool"
) -> list[np.ndarray]:
    """Split the indices of ``labels`` into consecutive per-class blocks of the given ``sizes`` plus the rest.

    Each class's indices are shuffled once with ``np.random.RandomState(seed)`` (classes in order ``0..C-1``);
    block ``k`` takes the next ``sizes[k]`` indices of every class; the last returned array holds what is left.
    Every returned array is sorted (dataset order).

    Raises:
        ValueError: a negative size, or a class with fewer images than ``sum(sizes)``.
    """
    labels_np = np.asarray(labels, dtype=np.int64)
    for k, s in enumerate(sizes):
        if s < 0:
            raise ValueError(f"hold-out size #{k} must be >= 0, got {s}")
    need = int(sum(sizes))
    rng = np.random.RandomState(seed)
    blocks: list[list[np.ndarray]] = [[] for _ in range(len(sizes) + 1)]
    for c in range(num_classes):
        idx = np.flatnonzero(labels_np == c)
        if idx.size < need:
            raise ValueError(f"class {c} has {idx.size} images in the {what} but the hold-out needs {need} ({sizes})")
        rng.shuffle(idx)
        start = 0
        for k, s in enumerate(sizes):
            blocks[k].append(idx[start : start + s])
            start += s
        blocks[-1].append(idx[start:])
    return [np.sort(np.concatenate(b)).astype(np.int64) if b else np.zeros(0, np.int64) for b in blocks]
