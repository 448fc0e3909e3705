"""The balanced reference set of a long-tailed training set (Zhang et al., "Deep Long-Tailed Learning: A Survey",
TPAMI 2023, Sec. 4, relative accuracy).

For a long-tailed training set of ``N`` images over ``C`` classes, its balanced reference set is a class-balanced
training set of about the same total size drawn from the same source: ``floor(N / C)`` images of every class
(e.g. CIFAR-10-LT, rho = 100: ``N = 12,406``, 1,240 per class from the full CIFAR-10 training set). A method
trained on it gives the upper reference accuracy of the survey's relative accuracy
(:mod:`lt_lightning.study.metrics`). The datamodules build it with ``balanced_reference=True``, from the pool the
long-tailed set is drawn from (never from their validation or test images).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def balanced_reference_per_class(total: int, num_classes: int) -> int:
    """Images per class of the balanced reference set of a long-tailed set of ``total`` images: ``floor(N / C)``.

    Raises:
        ValueError: ``num_classes < 1`` or ``total < num_classes`` (a class would get no image).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if total < num_classes:
        raise ValueError(
            f"the long-tailed training set has {total} images for {num_classes} classes: its balanced reference set "
            "would have no image per class"
        )
    return int(total) // int(num_classes)


def select_balanced_reference(
    labels: Sequence[int] | np.ndarray,
    total: int,
    num_classes: int,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    what: str = "pool",
) -> np.ndarray:
    """Indices into ``labels`` of a balanced set of ``floor(total / C)`` images per class, drawn seeded.

    Each class's indices are shuffled with one ``np.random.RandomState(seed)`` (classes in order ``0..C-1``) and
    the first ``floor(total / C)`` kept; the result is sorted (dataset order).

    Args:
        labels: ``[M]`` labels of the pool to draw from (the images the long-tailed set is drawn from, without the
            validation and test images).
        total: ``N``, the size of the long-tailed training set.
        num_classes: ``C``.
        seed: seed of the draw.
        class_names: names used in the error message (default the class indices).
        what: what the pool is, used in the error message.

    Raises:
        ValueError: a class has fewer than ``floor(total / C)`` images in the pool (the message names it).
    """
    per_class = balanced_reference_per_class(total, num_classes)
    labels_np = np.asarray(labels, dtype=np.int64)
    rng = np.random.RandomState(seed)
    chosen: list[np.ndarray] = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels_np == c)
        if idx.size < per_class:
            name = str(c) if class_names is None else f"{c} ({class_names[c]!r})"
            raise ValueError(
                f"balanced_reference: class {name} has {idx.size} images in the {what}, but the balanced reference "
                f"set needs {per_class} per class (floor({total} / {num_classes}): the long-tailed total over the "
                "classes); "
                "point the datamodule at more images of that class or train without balanced_reference"
            )
        rng.shuffle(idx)
        chosen.append(idx[:per_class])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


__all__ = ["balanced_reference_per_class", "select_balanced_reference"]
