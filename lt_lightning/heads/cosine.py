"""Cosine classifier head: ``z_c = s * <f / ||f||, w_c / ||w_c||>``.

With ``scale = 1`` this is LDAM-DRW's ``NormedLinear`` (Cao et al., "Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss", NeurIPS 2019, ``kaidic/LDAM-DRW`` ``models/resnet_cifar.py``): unscaled
cosines in ``[-1, 1]``, to which :class:`~lt_lightning.losses.ldam.LDAMLoss` applies its margins and its own scale
``s``. With ``scale = s > 1`` it is the cosine classifier of Gidaris & Komodakis (CVPR 2018) used by decoupled
long-tailed methods (the survey's "classifier design").
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lt_lightning.heads.base import ClassifierHead


class CosineHead(ClassifierHead):
    """Cosine similarity between normalised features and normalised class weights, times ``scale``.

    Args:
        in_features: feature dimension ``D``.
        num_classes: number of classes ``C``.
        scale: multiplier ``s`` of the cosines (``> 0``); 1 gives LDAM-DRW's ``NormedLinear``.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 1.0) -> None:
        super().__init__()
        if in_features <= 0 or num_classes <= 0:
            raise ValueError(f"in_features and num_classes must be positive, got {in_features}, {num_classes}")
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a finite number > 0, got {scale}")
        self.num_classes = num_classes
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """LDAM-DRW's initialisation: uniform(-1, 1), then each class vector renormed to at most 1e-5 * 1e5 = 1."""
        with torch.no_grad():
            self.weight.uniform_(-1, 1).renorm_(2, 0, 1e-5).mul_(1e5)

    def forward(self, features: Tensor) -> Tensor:
        return self.scale * F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, num_classes={self.num_classes}, scale={self.scale}"
