"""Long-tailed class-count profiles and the LDAM-DRW selection of a long-tailed subset.

Both functions reproduce kaidic/LDAM-DRW (Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware
Margin Loss", NeurIPS 2019), file ``imbalance_cifar.py``, methods ``get_img_num_per_cls`` and
``gen_imbalanced_data`` (read at commit 65e2597). With the same inputs they give the same counts and the same
selected indices, so CIFAR-10/100-LT built here is the split the published numbers were measured on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from lt_lightning._checks import check_int

Profile = Literal["exp", "step"]
PROFILES: tuple[str, ...] = ("exp", "step")


def long_tail_counts(
    num_classes: int,
    n_max: int,
    imbalance_ratio: float,
    profile: Profile = "exp",
    step_fraction: float = 0.5,
) -> list[int]:
    """Training images per class for a long-tailed profile, exactly as LDAM-DRW's ``get_img_num_per_cls``.

    With ``C = num_classes``, ``rho = imbalance_ratio`` and class index ``c = 0..C-1``:

    * ``exp``:  ``n_c = int(n_max * (1 / rho) ** (c / (C - 1)))`` (head class ``n_max``, tail ``n_max / rho``);
    * ``step``: the first ``floor(C * step_fraction)`` classes get ``n_max``, the rest ``int(n_max * (1 / rho))``
      (``step_fraction=0.5`` is LDAM-DRW's ``C // 2``).

    ``1 / rho`` is LDAM-DRW's ``imb_factor``; the product is computed in the same order so the truncation ``int``
    gives the same numbers (e.g. CIFAR-10, ``rho=100``: ``[5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]``).
    For an odd ``C`` LDAM-DRW's step profile returns only ``C - 1`` counts; here the last ``C - C//2`` classes are
    the minority, so the list always has ``C`` entries.

    Args:
        num_classes: number of classes ``C >= 1``.
        n_max: images of the most frequent class (``> 0``).
        imbalance_ratio: ``rho = n_max / n_min >= 1`` (``1`` is balanced).
        profile: ``"exp"`` or ``"step"``.
        step_fraction: fraction of majority classes for ``"step"``, in ``(0, 1]``.

    Returns:
        The ``C`` per-class counts, head class first.

    Raises:
        ValueError: for a bad argument, or when a class would get zero images.
    """
    check_int("num_classes", num_classes, minimum=1, numpy=True)
    check_int("n_max", n_max, minimum=1, numpy=True, what="a positive integer")
    if not np.isfinite(imbalance_ratio) or imbalance_ratio <= 0:
        raise ValueError(f"imbalance_ratio must be positive, got {imbalance_ratio!r}")
    if imbalance_ratio < 1:
        raise ValueError(f"imbalance_ratio must be >= 1 (n_max / n_min), got {imbalance_ratio!r}")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if not 0 < step_fraction <= 1:
        raise ValueError(f"step_fraction must be in (0, 1], got {step_fraction!r}")

    imb_factor = 1.0 / float(imbalance_ratio)
    n_max = int(n_max)
    if profile == "exp":
        if num_classes == 1:
            counts = [n_max]
        else:
            counts = [int(n_max * (imb_factor ** (c / (num_classes - 1.0)))) for c in range(num_classes)]
    else:
        n_major = int(num_classes * step_fraction)  # == C // 2 for LDAM-DRW's 0.5
        counts = [n_max] * n_major + [int(n_max * imb_factor)] * (num_classes - n_major)
    for c, n in enumerate(counts):
        if n <= 0:
            raise ValueError(
                f"class {c} would get zero images (n_max={n_max}, imbalance_ratio={imbalance_ratio}, "
                f"profile={profile!r}); increase n_max or decrease imbalance_ratio"
            )
    return counts


def select_long_tail_indices(
    labels: Sequence[int] | np.ndarray,
    counts: Sequence[int],
    seed: int = 0,
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Pick ``counts[c]`` random images of each class, exactly as LDAM-DRW's ``gen_imbalanced_data``.

    LDAM-DRW calls ``np.random.seed(seed)`` once, then for each class ``c`` in ``np.unique(labels)`` order:
    ``idx = np.where(labels == c)[0]; np.random.shuffle(idx); keep idx[:n_c]``. A ``np.random.RandomState(seed)``
    produces the same stream as the seeded global generator, so this function returns the same indices without
    touching global state (checked against a plain re-implementation of the loop in ``tests/data/test_cifar.py``).

    Args:
        labels: ``[N]`` integer class labels in ``[0, len(counts))``.
        counts: images to keep per class (``counts[c]`` for class ``c``), e.g. from :func:`long_tail_counts`.
        seed: LDAM-DRW's ``rand_number`` (0 in their runs).

    Returns:
        ``(selected, unused_per_class)``: ``selected`` is the 1-D int64 array of kept indices, class by class in
        ``np.unique`` order, each class's in shuffled order; ``unused_per_class[c]`` holds class ``c``'s remaining
        indices in the same shuffled order (used for validation splits).

    Raises:
        ValueError: if a label is outside ``[0, len(counts))``, a count is negative, or a class has fewer than
            ``counts[c]`` images.
    """
    labels_np = np.asarray(labels)
    if labels_np.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels_np.shape}")
    labels_np = labels_np.astype(np.int64)
    num_classes = len(counts)
    bad = np.flatnonzero((labels_np < 0) | (labels_np >= num_classes))
    if bad.size:
        raise ValueError(
            f"labels[{int(bad[0])}] = {int(labels_np[bad[0]])} is outside [0, {num_classes}) (len(counts))"
        )
    for c, n in enumerate(counts):
        if n < 0:
            raise ValueError(f"counts[{c}] must be non-negative, got {n}")

    present = np.unique(labels_np)
    for c, n in enumerate(counts):
        if n > 0 and c not in present:
            raise ValueError(f"class {c} has 0 images but counts[{c}] = {n} were requested")

    rng = np.random.RandomState(seed)
    selected: list[np.ndarray] = []
    unused: dict[int, np.ndarray] = {}
    for c in present.tolist():
        idx = np.where(labels_np == c)[0]
        rng.shuffle(idx)
        n_c = int(counts[c])
        if n_c > idx.size:
            raise ValueError(f"class {c} has {idx.size} images but counts[{c}] = {n_c} were requested")
        selected.append(idx[:n_c])
        unused[c] = idx[n_c:]
    if not selected:
        return np.zeros(0, dtype=np.int64), unused
    return np.concatenate(selected).astype(np.int64), unused
