"""Nearest-class-mean prediction at test time, with the class means of the training images.

Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020, Sec. 4: keep the
trained backbone, drop the learned classifier, and predict the class whose mean training feature is nearest
(:class:`~lt_lightning.heads.ncm.NCMHead`). Before testing (or predicting), this callback runs the backbone over
the **training** images once each, with the evaluation pipeline (no augmentation), sharded over processes with no
padding (:meth:`~lt_lightning.data.base.LongTailDataModule.train_eval_dataloader`); per-class feature sums and
counts are summed over processes, so the means are exactly those of a single process. The module's
:attr:`~lt_lightning.module.LongTailModule.test_head` is set to the NCM head for the test and cleared after it.

The authors' NCM (facebookresearch/classifier-balancing ``run_networks.py`` ``get_knncentroids`` and
``models/KNNClassifier.py``, ``main.py --knn`` defaults ``feat_type="cl2n"``, ``dist_type="l2"``) centres every
feature by the mean training feature, L2-normalises it and scores the negative squared distance to the class
means: ``NearestClassMean(metric="squared_euclidean", center=True)``, the reference configs' setting. With
``center`` the backbone runs twice over the training images: once for the mean feature, once for the class means
of the centred features (both summed over processes: exact under DDP).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from lt_lightning.heads.ncm import METRICS, Metric, NCMHead, class_feature_sums
from lt_lightning.slots import require_long_tail_module


def check_test_head_module(pl_module: pl.LightningModule, callback: Any) -> None:
    """``ValueError`` unless ``pl_module`` is a ``LongTailModule`` (see ``slots.require_long_tail_module``)."""
    require_long_tail_module(pl_module, callback)


def eval_features(
    trainer: pl.Trainer, pl_module: pl.LightningModule, loader: DataLoader
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(features [B, D], labels [B])`` of every batch of ``loader``, model in eval mode, no grad.

    Batches go to the module's device and through the datamodule's ``on_after_batch_transfer`` (normalisation;
    no augmentation outside training), and features are ``pl_module(x).features``. The module's train/eval mode
    is restored at the end.
    """
    datamodule = trainer.datamodule
    was_training = pl_module.training
    pl_module.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                if datamodule is not None:
                    batch = datamodule.on_after_batch_transfer(batch, 0)
                x, y = batch[0], batch[1]
                yield pl_module(x).features, y
    finally:
        pl_module.train(was_training)


class NearestClassMean(Callback):
    """Test (and predict) with a nearest-class-mean head built from the training images' features.

    Args:
        metric: ``"cosine"``, ``"euclidean"`` or ``"squared_euclidean"`` (see :class:`~lt_lightning.heads.ncm.
            NCMHead`; the authors' default is ``"squared_euclidean"``, their ``dist_type="l2"``).
        normalize: L2-normalise the features before averaging and at prediction (Kang et al.).
        center: subtract the mean feature of the training images first (the authors' default ``feat_type="cl2n"``
            with ``normalize``); ``False``: their ``"l2n"`` (``normalize``) or ``"un"``.

    Needs a :class:`~lt_lightning.module.LongTailModule` (``test_head``) and a datamodule with
    ``train_eval_dataloader()`` (every :class:`~lt_lightning.data.base.LongTailDataModule`). A class without a
    training image is never predicted (a warning says so).
    """

    def __init__(self, metric: Metric = "cosine", normalize: bool = True, center: bool = False) -> None:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if not isinstance(center, bool):
            raise ValueError(f"center must be a bool, got {center!r}")
        self.metric = metric
        self.normalize = bool(normalize)
        self.center = center

    def _class_sums(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, normalize: bool, center: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Per-class feature sums ``[C, D]`` (float64) and counts ``[C]`` over all training images and processes
        (features centred by ``center`` if given, then L2-normalised if ``normalize``)."""
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "train_eval_dataloader"):
            raise ValueError(
                "NearestClassMean needs a datamodule with `train_eval_dataloader()` (a LongTailDataModule) to compute "
                "the class means of the training images"
            )
        if getattr(datamodule, "train_dataset", None) is None:
            datamodule.setup("fit")
        c = pl_module.num_classes
        sums: Tensor | None = None
        counts = torch.zeros(c, dtype=torch.long, device=pl_module.device)
        for features, labels in eval_features(trainer, pl_module, datamodule.train_eval_dataloader()):
            batch_sums, batch_counts = class_feature_sums(features, labels, c, normalize, center)
            sums = batch_sums.double() if sums is None else sums + batch_sums.double()
            counts += batch_counts
        if sums is None:  # this process got no training image: its share of the sums is zero
            num_features = getattr(getattr(pl_module, "backbone", None), "num_features", None)
            if not isinstance(num_features, int):
                raise ValueError("NearestClassMean: no training batch and no `backbone.num_features` to size the means")
            sums = torch.zeros(c, num_features, dtype=torch.float64, device=pl_module.device)
        sums = trainer.strategy.reduce(sums, reduce_op="sum")
        counts = trainer.strategy.reduce(counts, reduce_op="sum")
        return sums, counts

    def _install(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        check_test_head_module(pl_module, self)
        feature_mean = None
        if self.center:  # first pass: the mean raw feature of the training images (each image once)
            raw_sums, raw_counts = self._class_sums(trainer, pl_module, normalize=False)
            feature_mean = raw_sums.sum(dim=0) / max(int(raw_counts.sum()), 1)
        sums, counts = self._class_sums(trainer, pl_module, self.normalize, feature_mean)
        if int(counts.sum()) == 0:
            raise ValueError("the training set is empty: NearestClassMean has no class mean to compare with")
        empty = torch.nonzero(counts == 0).flatten().tolist()
        if empty:
            rank_zero_warn(f"NearestClassMean: classes {empty[:10]} have no training image and are never predicted")
        head = NCMHead(sums.shape[1], pl_module.num_classes, self.metric, self.normalize, self.center)
        head = head.to(pl_module.device)
        head.set_means(sums, counts, feature_mean)
        pl_module.install_test_head(head, owner=self)
        rank_zero_info(
            f"NearestClassMean: {self.metric} to the means of {int(counts.sum())} training images "
            f"(normalize={self.normalize}, center={self.center})"
        )

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer, pl_module)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer, pl_module)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.clear_test_head(owner=self)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.clear_test_head(owner=self)
