"""Softmax cross-entropy, the plain reference every long-tailed loss reduces to."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lt_lightning.losses.base import LongTailLoss
from lt_lightning.output import ModelOutput


def cross_entropy(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean softmax cross-entropy ``-1/B sum_i log softmax(z_i)[y_i]``.

    Args:
        logits: ``[B, C]`` scores.
        target: ``[B]`` class indices or ``[B, C]`` soft targets.
        label_smoothing: ε of label smoothing (Szegedy et al. 2016), in ``[0, 1)``.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be [B, C], got shape {tuple(logits.shape)}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


class CrossEntropyLoss(LongTailLoss):
    """Softmax cross-entropy on ``output.logits`` (the survey's "Softmax" baseline)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        return cross_entropy(output.logits, target, self.label_smoothing)
