"""``SupervisedContrastiveLoss``: SupCon / KCL on the projection, plus an online linear probe's cross-entropy.

``L = L_con(z, y) + w * CE(logits, y)`` where

* ``L_con`` is :func:`~lt_lightning.losses.contrastive.supervised_contrastive_loss` on
  ``output.extras["projection"]`` (``z``, L2-normalised, from :class:`~lt_lightning.heads.projection.ProjectionHead`):
  SupCon (Khosla et al., NeurIPS 2020) when ``k_positives`` is ``None``, KCL (Kang et al., ICLR 2021) otherwise;
* the cross-entropy trains the classifier. With ``ProjectionHead(detach_classifier=True)`` the classifier is fed
  detached features, so the representation is learned by the contrastive term only (the papers' two stages: a
  contrastive representation, then a classifier on it) while the classifier follows it online and validation
  accuracy is meaningful during the fit. KCL's class-balanced classifier stage is then the
  :class:`~lt_lightning.callbacks.classifier_retraining.ClassifierRetraining` callback (cRT).

Batches come with ``views`` augmented views per image in view-major order (``LongTailDataModule(views=2)``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lt_lightning._checks import check_int
from lt_lightning.heads.projection import PROJECTION_KEY
from lt_lightning.losses.base import LongTailLoss
from lt_lightning.losses.contrastive import supervised_contrastive_loss
from lt_lightning.losses.cross_entropy import cross_entropy
from lt_lightning.output import ModelOutput


def projection_of(output: ModelOutput, owner: str) -> Tensor:
    """``output.extras["projection"]``, or a ``ValueError`` saying which head provides it."""
    z = output.extras.get(PROJECTION_KEY)
    if z is None:
        raise ValueError(
            f"{owner} needs output.extras[{PROJECTION_KEY!r}]: use classifier "
            "lt_lightning.heads.projection.ProjectionHead"
        )
    return z


def hard_labels(target: Tensor, owner: str) -> Tensor:
    """``target`` if it holds class indices ``[N]``; soft targets (mixup, ...) raise ``ValueError``."""
    if target.ndim != 1 or target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(
            f"{owner} needs hard class-index targets [N], got shape {tuple(target.shape)} and dtype {target.dtype} "
            "(soft targets from batch mixing are not supported)"
        )
    return target


class SupervisedContrastiveLoss(LongTailLoss):
    """SupCon (or KCL with ``k_positives``) on the projection + ``classifier_weight`` x CE on the logits.

    Args:
        temperature: contrastive temperature ``t > 0``.
        k_positives: ``None``: SupCon (every same-class sample is a positive). ``k``: KCL (the anchor's other views
            plus ``k`` random same-class samples, drawn from the global torch RNG seeded by ``seed_everything``).
        views: views per image in the batch (the datamodule's ``views``).
        classifier_weight: weight ``w >= 0`` of the classifier's cross-entropy (``0``: contrastive only).
        base_temperature: the contrastive term is multiplied by ``temperature / base_temperature``, as in
            HobbitLong/SupContrast ``losses.py`` with 0.07 (``supcon.yaml`` sets it); ``None`` (default) or
            ``base_temperature = temperature``: factor 1, as the KCL authors' code (bingykang/BalFeat ``main_kcl.py``;
            ``kcl.yaml``).
    """

    def __init__(
        self,
        temperature: float = 0.1,
        k_positives: int | None = None,
        views: int = 2,
        classifier_weight: float = 1.0,
        base_temperature: float | None = None,
    ) -> None:
        super().__init__()
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        if k_positives is not None and (isinstance(k_positives, bool) or k_positives < 0):
            raise ValueError(f"k_positives must be None or an integer >= 0, got {k_positives!r}")
        check_int("views", views, minimum=1)
        if not (classifier_weight >= 0 and math.isfinite(classifier_weight)):
            raise ValueError(f"classifier_weight must be a finite number >= 0, got {classifier_weight}")
        if base_temperature is not None and not (base_temperature > 0 and math.isfinite(base_temperature)):
            raise ValueError(f"base_temperature must be None or a finite number > 0, got {base_temperature}")
        self.temperature = float(temperature)
        self.k_positives = k_positives
        self.views = views
        self.classifier_weight = float(classifier_weight)
        self.base_temperature = None if base_temperature is None else float(base_temperature)

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        owner = type(self).__name__
        labels = hard_labels(target, owner)
        z = projection_of(output, owner)
        loss = supervised_contrastive_loss(
            z, labels, self.temperature, self.k_positives, self.views, base_temperature=self.base_temperature
        )
        if self.classifier_weight > 0:
            loss = loss + self.classifier_weight * cross_entropy(output.logits, labels)
        return loss

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, k_positives={self.k_positives}, views={self.views}, "
            f"classifier_weight={self.classifier_weight}, base_temperature={self.base_temperature}"
        )
