"""Weight balancing's second stage: fine-tune the classifier under a MaxNorm constraint (a ``ClassifierVariant``).

Alshammari, Wang, Ramanan, Kong, "Long-Tailed Recognition via Weight Balancing", CVPR 2022. Stage 1 trains the whole
network with cross-entropy and a tuned (large) weight decay, which already balances the per-class weight norms;
stage 2 freezes the backbone and fine-tunes the stage-1 linear classifier ``z = W f + b`` (not re-initialised) with
a class-balanced loss, weight decay and the MaxNorm constraint ``||w_c||_2 <= delta`` on every class's weight row,
kept by projected gradient descent:

    w_c <- w_c * min(1, delta / ||w_c||_2)

with one threshold for the layer, set from the stage-1 classifier when the stage starts,

    delta = min_c ||w_c|| + thresh * (max_c ||w_c|| - min_c ||w_c||)

(``thresh = 0.1`` in the authors' demo). As in the reference (ShadeAlsha/LTR-weight-balancing
``utils/regularizers.py`` ``MaxNorm_via_PGD``: ``setPerLayerThresh`` on the base model, ``PGD`` called by
``utils/trainval.py`` ``train_model`` once after each training epoch) the projection runs at the end of every epoch
of the stage, and the bias is never projected (its threshold is infinite there).

:class:`MaxNormFinetune` plugs into :class:`~lt_lightning.callbacks.classifier_retraining.ClassifierRetraining`
(``method: {class_path: lt_lightning.callbacks.weight_balancing.MaxNormFinetune}``), which does the rest: the frozen
backbone (the reference keeps ``model.train()``: ``backbone_mode: train``), the stage's loss, sampler, optimizer
(the reference: SGD lr 0.01, momentum 0.9, weight decay 0.1) and cosine schedule. ``delta`` is checkpointed with the
callback, so a run resumed inside the stage projects with the stage's own threshold.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lt_lightning._checks import check_float
from lt_lightning.callbacks.classifier_retraining import ClassifierVariant
from lt_lightning.callbacks.tau_normalization import linear_classifier_parameters
from lt_lightning.heads.base import head_linear_parameters

__all__ = ["MaxNormFinetune", "max_norm_project", "max_norm_threshold"]


def max_norm_threshold(weight: Tensor, thresh: float) -> float:
    """``delta = min_c ||w_c|| + thresh (max_c ||w_c|| - min_c ||w_c||)`` of a ``[C, D]`` weight (rows: classes)."""
    norms = torch.linalg.vector_norm(weight.detach().double(), dim=1)
    return float(norms.min() + thresh * (norms.max() - norms.min()))


@torch.no_grad()
def max_norm_project(weight: Tensor, threshold: float) -> None:
    """In place, ``w_c <- w_c min(1, threshold / ||w_c||)``: rows longer than ``threshold`` are scaled onto it."""
    norms = torch.linalg.vector_norm(weight, dim=1, keepdim=True)
    weight.mul_(torch.clamp(threshold / norms.clamp(min=torch.finfo(norms.dtype).tiny), max=1.0))


class MaxNormFinetune(ClassifierVariant):
    """Weight balancing's stage 2: the stage-1 linear classifier fine-tuned, each class's weight norm capped.

    Args:
        thresh: where ``delta`` lies between the smallest and the largest stage-1 class-weight norm, in ``[0, 1]``
            (0.1 in the authors' demo; 1: no row is ever longer than the largest, so nothing is projected at the
            stage's start, and rows that grow past it are).

    Attributes:
        threshold: ``delta``, set when the stage starts (``None`` before).
    """

    name = "maxnorm"
    trains_classifier = True

    def __init__(self, thresh: float = 0.1) -> None:
        self.thresh = check_float("thresh", thresh, minimum=0.0, maximum=1.0)
        self.threshold: float | None = None

    def prepare(self, pl_module: pl.LightningModule) -> None:
        linear_classifier_parameters(pl_module.classifier)  # a linear head (logits = W f + b), else ValueError

    def reinitialise(self, pl_module: pl.LightningModule, seed: int) -> None:
        weight, _ = linear_classifier_parameters(pl_module.classifier)
        self.threshold = max_norm_threshold(weight, self.thresh)  # the stage-1 classifier is kept as it is

    def after_epoch(self, classifier: nn.Module) -> None:
        if self.threshold is None:
            raise RuntimeError("MaxNormFinetune: the threshold is set when the stage starts (reinitialise)")
        linear = head_linear_parameters(classifier)  # linear: checked once, by prepare (no probe forward per epoch)
        if linear is None:
            raise ValueError(
                f"MaxNormFinetune projects a linear classifier's weights; {type(classifier).__name__} has none"
            )
        max_norm_project(linear[0], self.threshold)

    def state_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("threshold") is not None:
            self.threshold = float(state_dict["threshold"])

    def __repr__(self) -> str:
        return f"MaxNormFinetune(thresh={self.thresh})"
