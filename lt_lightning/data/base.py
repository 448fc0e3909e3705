"""The base datamodule and the in-memory image dataset (compatibility module: the code lives in one file per job).

* :mod:`lt_lightning.data.datamodule`: :class:`LongTailDataModule` (its contract, loaders, predict) and
  :data:`SamplerFactory`;
* :mod:`lt_lightning.data.tensor_dataset`: :class:`TensorImageDataset`, :class:`ImageBatch`, :class:`TrainIndices`,
  :func:`collate_image_batch`, :func:`check_labels`;
* :mod:`lt_lightning.data.device_pipeline`: the per-step reseeding, the augmented views and the on-device training
  set behind ``on_after_batch_transfer`` / ``transfer_batch_to_device``.

Every name this module defined is re-exported here, so ``lt_lightning.data.base.LongTailDataModule`` (configs,
notebooks) keeps resolving.
"""

from __future__ import annotations

from lt_lightning.data.datamodule import LongTailDataModule, SamplerFactory
from lt_lightning.data.tensor_dataset import (
    ImageBatch,
    TensorImageDataset,
    TrainIndices,
    check_labels,
    collate_image_batch,
)
from lt_lightning.data.tensor_dataset import IndexDataset as _IndexDataset
from lt_lightning.data.tensor_dataset import collate_indices as _collate_indices

__all__ = [
    "ImageBatch",
    "LongTailDataModule",
    "SamplerFactory",
    "TensorImageDataset",
    "TrainIndices",
    "check_labels",
    "collate_image_batch",
]
_PRIVATE_ALIASES = (_IndexDataset, _collate_indices)
