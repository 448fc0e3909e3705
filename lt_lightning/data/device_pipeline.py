"""The datamodule's device-side batch pipeline: per-step reseeding, augmented views, the on-device training set.

What :class:`~lt_lightning.data.datamodule.LongTailDataModule` runs on each batch once it is on the device
(Lightning's ``transfer_batch_to_device`` and ``on_after_batch_transfer`` hooks), as functions of their inputs:

* :func:`training_step_seed` -- the seed of a training step from ``(seed, epoch, batch index, rank)``, so that
  everything random on the device during the step depends on the step alone (resume-exact, distinct per rank);
* :func:`augment_views` / :func:`augment_batch` -- ``uint8 -> float``, the train-time augmentation of ``views``
  views (view-major, labels repeated) and normalisation, by a
  :class:`~lt_lightning.data.transforms.DeviceAugmentation`;
* :class:`DeviceTrainSet` -- the copy of the training images and labels held on the device
  (``train_set_on_device=True``) and the gather of a :class:`~lt_lightning.data.tensor_dataset.TrainIndices` batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lt_lightning.data.tensor_dataset import TrainIndices
from lt_lightning.data.transforms import DeviceAugmentation

__all__ = ["DeviceTrainSet", "augment_batch", "augment_views", "seed_training_step", "training_step_seed"]


def training_step_seed(seed: int, epoch: int, batch_index: int, rank: int) -> int:
    """The seed of one training step: ``SeedSequence([seed, epoch, batch_index, rank])``'s first 64-bit word
    shifted right by one (a non-negative ``int`` below ``2**63``, accepted by ``torch.manual_seed``)."""
    key = [int(seed), int(epoch), int(batch_index), int(rank)]
    return int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0] >> np.uint64(1))


def seed_training_step(seed: int, trainer: Any) -> None:
    """Re-seed torch's global generators for the trainer's current training batch (:func:`training_step_seed`).

    Everything random on the device during a training step -- the crop/flip here, a random loss (equalization's
    β, KCL's positives), dropout -- then depends on the step, not on what ran before it, so a run resumed from any
    checkpoint draws what the uninterrupted run drew (Lightning does not restore the global RNG state), and DDP
    ranks draw differently. The batch index is the trainer's ``ready`` count, which Lightning increments right
    after ``on_after_batch_transfer`` (``loops/training_epoch_loop.py``).
    """
    ready = trainer.fit_loop.epoch_loop.batch_progress.current.ready
    torch.manual_seed(training_step_seed(seed, trainer.current_epoch, ready, trainer.global_rank))


def augment_views(augmentation: DeviceAugmentation, images: Tensor, train: bool, views: int) -> Tensor:
    """``views`` independently augmented copies of ``images``, concatenated view-major (one call if ``views == 1``)."""
    if views == 1:
        return augmentation(images, train=train)
    return torch.cat([augmentation(images, train=train) for _ in range(views)])


def augment_batch(augmentation: DeviceAugmentation, batch: Any, train: bool, views: int) -> Any:
    """Apply :func:`augment_views` to a bare image tensor or to the images of ``[images, labels, ...]``.

    With ``views > 1`` every other tensor of the batch is repeated ``views`` times along its first dimension (the
    labels of each view); a list stays a list, a tuple a tuple.

    Raises:
        ValueError: ``batch`` is neither an image tensor nor a list / tuple starting with one.
    """
    if isinstance(batch, Tensor):
        return augment_views(augmentation, batch, train, views)
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        images = augment_views(augmentation, batch[0], train, views)
        rest = [b.repeat(views, *([1] * (b.dim() - 1))) if isinstance(b, Tensor) else b for b in batch[1:]]
        rest = rest if views > 1 else list(batch[1:])
        return [images, *rest] if isinstance(batch, list) else (images, *rest)
    raise ValueError(f"batch must be an image tensor or [images, labels], got {type(batch).__name__}")


class DeviceTrainSet:
    """A device copy of an in-memory training set's ``images`` and ``labels``, and the gather of index batches.

    The copy is made on first use and again when the training set or the device changes.
    """

    def __init__(self) -> None:
        self._cached: tuple[Dataset, torch.device, Tensor, Tensor] | None = None

    def gather(self, dataset: Dataset, batch: TrainIndices, device: torch.device) -> list[Tensor]:
        """``[images[idx], labels[idx]]`` on ``device`` for the indices of ``batch``.

        Args:
            dataset: the training set (with ``images`` and ``labels`` tensors, e.g. a
                :class:`~lt_lightning.data.tensor_dataset.TensorImageDataset`).
            batch: the indices of the batch.
            device: the training device.
        """
        cached = self._cached
        if cached is None or cached[0] is not dataset or cached[1] != device:
            images = dataset.images.to(device)  # type: ignore[attr-defined]
            labels = dataset.labels.to(device)  # type: ignore[attr-defined]
            self._cached = cached = (dataset, device, images, labels)
        indices = batch.indices
        if device.type == "cuda":
            indices = indices.pin_memory()  # an asynchronous copy: the step does not wait for the device
        indices = indices.to(device, non_blocking=device.type == "cuda")
        return [cached[2][indices], cached[3][indices]]
