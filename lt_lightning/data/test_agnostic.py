"""Test-agnostic evaluation: the balanced test set resampled to forward-LT, uniform or backward-LT class distributions.

The protocol of Zhang et al., "Self-Supervised Aggregation of Diverse Experts for Test-Agnostic Long-Tailed
Recognition", NeurIPS 2022, Sec. 5 (code: Vanint/SADE-AgnosticLT, ``data_loader/imbalance_cifar.py`` with
``train=False`` and ``test_training_cifar.py``): the balanced test set (``n_max`` images per class) keeps

* **forward** (ratio ``ρ``): ``n_r = int(n_max * (1/ρ) ** (r / (C - 1)))`` images of the class of rank ``r``
  -- the same long tail as the training set (:func:`~lt_lightning.data.profiles.long_tail_counts`);
* **uniform**: ``n_max`` images of every class (the whole balanced test set; ``forward`` with ``ρ = 1``);
* **backward** (ratio ``ρ``): the forward counts reversed, ``n_r = int(n_max * (1/ρ) ** ((C - 1 - r) / (C - 1)))``
  -- the training tail classes become the test head.

The reference orders classes by index (CIFAR-LT's head is class 0); here the rank ``r`` of a class is its position
in the training counts sorted from most to fewest (a stable sort, so for CIFAR-LT and Digits-LT it is the class
index and the counts are the reference's). Images are chosen as in the reference (LDAM-DRW's
``gen_imbalanced_data``: ``np.random.seed(seed)``, then per class a shuffle and the first ``n_c``; see
:func:`~lt_lightning.data.profiles.select_long_tail_indices`), so the same seed gives the same test subsets on
every process. The paper's grid is :data:`SADE_TEST_DISTRIBUTIONS` (``ρ`` in 2, 5, 10, 25, 50 each way).

Every :class:`~lt_lightning.data.base.LongTailDataModule` uses it when given ``test_distribution`` and
``test_imbalance_ratio`` (only the test and predict sets change), e.g. ``--data.init_args.test_distribution backward
--data.init_args.test_imbalance_ratio 50``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from lt_lightning._checks import check_choice, is_number
from lt_lightning.data.profiles import long_tail_counts, select_long_tail_indices

Distribution = Literal["forward", "uniform", "backward"]
DISTRIBUTIONS: tuple[str, ...] = ("forward", "uniform", "backward")

#: SADE's test distributions (``test_training_cifar.py``): name -> (distribution, imbalance ratio)
SADE_TEST_DISTRIBUTIONS: dict[str, tuple[str, float]] = {
    **{f"forward{r}": ("forward", float(r)) for r in (50, 25, 10, 5, 2)},
    "uniform": ("uniform", 1.0),
    **{f"backward{r}": ("backward", float(r)) for r in (2, 5, 10, 25, 50)},
}


def check_distribution(distribution: str, imbalance_ratio: float) -> tuple[str, float]:
    """Validate ``(distribution, imbalance_ratio)``; ``ValueError`` naming the bad one."""
    check_choice("distribution", distribution, DISTRIBUTIONS)
    if not is_number(imbalance_ratio):
        raise ValueError(f"imbalance_ratio must be a number >= 1, got {imbalance_ratio!r}")
    if not math.isfinite(imbalance_ratio) or imbalance_ratio < 1:
        raise ValueError(f"imbalance_ratio must be a finite number >= 1 (n_max / n_min), got {imbalance_ratio!r}")
    return distribution, float(imbalance_ratio)


def class_ranks(train_counts: Sequence[int] | Tensor | None, num_classes: int) -> list[int]:
    """Rank of each class from head (0) to tail: training counts sorted descending, ties by class index.

    ``train_counts=None`` ranks classes by index (the reference's CIFAR convention).
    """
    if train_counts is None:
        return list(range(num_classes))
    counts = [float(n) for n in torch.as_tensor(train_counts).flatten().tolist()]
    if len(counts) != num_classes:
        raise ValueError(f"train_counts has {len(counts)} entries but num_classes={num_classes}")
    order = sorted(range(num_classes), key=lambda c: (-counts[c], c))
    ranks = [0] * num_classes
    for r, c in enumerate(order):
        ranks[c] = r
    return ranks


def resampled_counts(
    num_classes: int,
    n_max: int,
    distribution: Distribution,
    imbalance_ratio: float = 1.0,
    train_counts: Sequence[int] | Tensor | None = None,
) -> list[int]:
    """Test images per class (class-index order) of a forward / uniform / backward distribution.

    Args:
        num_classes: ``C``.
        n_max: test images of the most frequent test class (the per-class size of the balanced test set).
        distribution: ``"forward"``, ``"uniform"`` or ``"backward"``.
        imbalance_ratio: ``ρ >= 1`` (ignored for ``"uniform"``).
        train_counts: training counts that rank the classes from head to tail (``None``: by index).

    Raises:
        ValueError: a bad argument, or a class left with zero test images (lower ``ρ``).
    """
    distribution, imbalance_ratio = check_distribution(distribution, imbalance_ratio)
    ratio = 1.0 if distribution == "uniform" else imbalance_ratio
    try:
        by_rank = long_tail_counts(num_classes, n_max, ratio, "exp")
    except ValueError as err:
        raise ValueError(
            f"test distribution {distribution!r} with imbalance_ratio={imbalance_ratio} over {n_max} test images per "
            f"class: {err}"
        ) from err
    if distribution == "backward":
        by_rank = by_rank[::-1]
    return [by_rank[r] for r in class_ranks(train_counts, num_classes)]


def select_resampled_indices(
    test_labels: Sequence[int] | np.ndarray | Tensor,
    num_classes: int,
    distribution: Distribution,
    imbalance_ratio: float = 1.0,
    train_counts: Sequence[int] | Tensor | None = None,
    seed: int = 0,
    n_max: int | None = None,
) -> np.ndarray:
    """Indices into the test set of its forward / uniform / backward resampling (see the module docstring).

    Args:
        test_labels: ``[N]`` labels of the balanced test set.
        num_classes: ``C``.
        distribution: ``"forward"``, ``"uniform"`` or ``"backward"``.
        imbalance_ratio: ``ρ >= 1``.
        train_counts: training counts (head-to-tail ranking of the classes; ``None``: by index).
        seed: seed of the selection (the reference's ``rand_number``, 0).
        n_max: images of the most frequent test class; default the smallest per-class test count (the per-class
            size of a balanced test set).

    Returns:
        ``int64`` indices, class by class, each class's in shuffled order (the reference's order).
    """
    labels = np.asarray(torch.as_tensor(np.asarray(test_labels)).flatten(), dtype=np.int64)
    per_class = np.bincount(labels, minlength=num_classes) if labels.size else np.zeros(num_classes, np.int64)
    if per_class.size > num_classes:
        raise ValueError(f"test labels go up to {int(labels.max())}, outside [0, num_classes={num_classes})")
    if n_max is None:
        n_max = int(per_class.min())
        if n_max == 0:
            empty = np.flatnonzero(per_class == 0).tolist()
            raise ValueError(f"the test set has no image of class(es) {empty[:10]}: cannot resample it per class")
    counts = resampled_counts(num_classes, int(n_max), distribution, imbalance_ratio, train_counts)
    selected, _ = select_long_tail_indices(labels, counts, seed=seed)
    return selected


def dataset_labels(dataset: Dataset) -> Tensor:
    """The labels of a dataset as a ``[N]`` long tensor, without decoding images where the dataset allows.

    Reads ``labels`` (:class:`~lt_lightning.data.base.TensorImageDataset`), ``targets``
    (:class:`~lt_lightning.data.image_files.ImageFileDataset`, torchvision datasets), a :class:`Subset`'s parent's
    labels, and otherwise ``dataset[i][1]`` for every ``i``.
    """
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    for name in ("labels", "targets"):
        found = getattr(dataset, name, None)
        if found is not None:
            return torch.as_tensor(np.asarray(found)).flatten().long()
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)  # type: ignore[arg-type]


def resample_test_dataset(
    dataset: Dataset,
    num_classes: int,
    distribution: Distribution,
    imbalance_ratio: float = 1.0,
    train_counts: Sequence[int] | Tensor | None = None,
    seed: int = 0,
    n_max: int | None = None,
) -> Subset:
    """A :class:`Subset` of ``dataset`` with the test-agnostic class distribution (:func:`select_resampled_indices`).

    ``Subset`` forwards batched ``__getitems__``, so a :class:`~lt_lightning.data.base.TensorImageDataset` still
    loads a batch in one indexing operation.
    """
    indices = select_resampled_indices(
        dataset_labels(dataset), num_classes, distribution, imbalance_ratio, train_counts, seed, n_max
    )
    return Subset(dataset, indices.tolist())


__all__ = [
    "DISTRIBUTIONS",
    "SADE_TEST_DISTRIBUTIONS",
    "class_ranks",
    "dataset_labels",
    "resample_test_dataset",
    "select_resampled_indices",
    "resampled_counts",
]
