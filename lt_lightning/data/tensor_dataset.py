"""The in-memory image dataset, its batch types and the collate function of every loader of the datamodules.

:class:`TensorImageDataset` holds ``uint8 [N, C, H, W]`` images and labels and fetches a whole batch with one indexing
operation (``__getitems__`` -> :class:`ImageBatch`); :func:`collate_image_batch` turns that into ``[images, labels]``
(anything else goes to ``default_collate``). With ``train_set_on_device=True`` the train loader draws from an
:class:`IndexDataset` and yields :class:`TrainIndices`, which the datamodule gathers on the device
(:mod:`lt_lightning.data.device_pipeline`). :func:`check_labels` validates integer labels against ``num_classes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

__all__ = [
    "ImageBatch",
    "IndexDataset",
    "TensorImageDataset",
    "TrainIndices",
    "check_labels",
    "collate_image_batch",
    "collate_indices",
]


class ImageBatch(NamedTuple):
    """A batch fetched in one indexing operation by :meth:`TensorImageDataset.__getitems__`."""

    images: Tensor
    labels: Tensor


class TrainIndices(NamedTuple):
    """A training batch as indices into the training set (``train_set_on_device=True``); the datamodule's
    :meth:`~lt_lightning.data.datamodule.LongTailDataModule.transfer_batch_to_device` turns it into
    ``[images, labels]`` on the device."""

    indices: Tensor


class IndexDataset(Dataset):
    """``range(n)`` whose ``__getitems__`` returns the batch's indices as one :class:`TrainIndices`."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index

    def __getitems__(self, indices: Sequence[int]) -> TrainIndices:
        return TrainIndices(torch.as_tensor(indices, dtype=torch.long))


def collate_indices(batch: TrainIndices) -> TrainIndices:
    """Collate function of an :class:`IndexDataset` loader: the batch is already one :class:`TrainIndices`."""
    return batch


def collate_image_batch(batch: Any) -> Any:
    """Collate function of every loader here: an :class:`ImageBatch` passes through as ``[images, labels]``.

    Anything else (a list of samples from a dataset without ``__getitems__``) goes to ``default_collate``, which
    gives the same ``[images, labels]`` structure.
    """
    if isinstance(batch, ImageBatch):
        return [batch.images, batch.labels]
    return default_collate(batch)


class TensorImageDataset(Dataset):
    """In-memory dataset of ``uint8`` images and integer labels.

    ``__getitems__`` (used by ``DataLoader`` with automatic batching) fetches a whole batch with one indexing
    operation, so loading has no per-sample Python work; use it with :func:`collate_image_batch`.

    Args:
        images: ``uint8 [N, C, H, W]``.
        labels: ``[N]`` integer labels.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        images = torch.as_tensor(images)
        labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        if images.dim() != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8, got dtype {images.dtype}")
        if images.shape[0] != labels.numel():
            raise ValueError(f"images has {images.shape[0]} samples but labels has {labels.numel()}")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return int(self.labels.numel())

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> ImageBatch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageBatch(self.images[idx], self.labels[idx])


def check_labels(labels: Sequence[int] | np.ndarray | Tensor, num_classes: int, origin: str = "labels") -> Tensor:
    """Return ``labels`` as a 1-D long tensor; ``ValueError`` naming the first label outside ``[0, num_classes)``.

    Args:
        labels: integer labels.
        num_classes: number of classes ``C``.
        origin: what the labels are, used in the message (e.g. ``"training labels of split file X"``).
    """
    t = torch.as_tensor(np.asarray(labels)).flatten()
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise ValueError(f"{origin} must be integers, got {t[:5].tolist()}...")
    t = t.to(torch.long)
    bad = torch.nonzero((t < 0) | (t >= num_classes)).flatten()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(f"{origin}[{i}] = {int(t[i])} is outside [0, num_classes={num_classes})")
    return t
