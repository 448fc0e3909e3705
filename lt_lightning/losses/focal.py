"""Softmax focal loss (Lin et al. 2017), optionally class-weighted."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lt_lightning.losses._checks import check_logits_target
from lt_lightning.losses.weighted import (
    ClassWeightedLoss,
    check_reduction,
    check_weight,
    reduce_loss,
    sample_weights,
)
from lt_lightning.losses.weighting import inverse_power_weights
from lt_lightning.output import ModelOutput


def check_gamma(gamma: float) -> float:
    """Return ``gamma`` as a float, or raise ``ValueError`` unless it is finite and ``>= 0``."""
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma}")
    return float(gamma)


def focal_modulator(log_p: Tensor, gamma: float) -> Tensor:
    """``(1 - p)^γ`` from ``log p``, with a finite gradient where ``p`` rounds to 1 (also for ``γ < 1``)."""
    if gamma == 0:
        return torch.ones_like(log_p)
    one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)
    return one_minus_p.pow(gamma)


def focal_loss(
    logits: Tensor, target: Tensor, gamma: float = 2.0, weight: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """Softmax focal loss ``l_i = -w_y (1 - p_y)^γ log p_y``, ``p = softmax(z)``.

    ``γ = 0`` is (weighted) cross-entropy. Soft targets: ``l_i = -sum_k t_ik w_k (1 - p_ik)^γ log p_ik``, the
    expectation of the hard-label loss (mixup's interpolation). Computed in float32 at least.

    Reference: T.-Y. Lin, P. Goyal, R. Girshick, K. He, P. Dollár, "Focal Loss for Dense Object Detection", ICCV 2017
    (Eq. 5, here on the softmax as in LDAM-DRW's ``FocalLoss``; Cui et al.'s focal loss is the sigmoid one in
    :mod:`lt_lightning.losses.class_balanced`).

    Note: LDAM-DRW's code computes ``p`` as ``exp(-w_y CE)`` when weighted, which is not the probability; here ``p``
    is always the softmax probability and the weight multiplies the whole term.

    Args:
        logits: ``[B, C]`` scores.
        target: ``[B]`` class indices or ``[B, C]`` soft targets.
        gamma: focusing parameter ``γ >= 0``.
        weight: ``[C]`` class weights (``α_t`` of the paper), ``None`` for ones.
        reduction: ``"mean"`` (default: ``1/B sum_i l_i``), ``"weighted_mean"``, ``"sum"`` or ``"none"``.
    """
    soft = check_logits_target(logits, target)
    check_reduction(reduction)
    gamma = check_gamma(gamma)
    weight = check_weight(weight, logits.shape[1])
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    w = None if weight is None else weight.to(device=logits.device, dtype=logits.dtype)
    log_p = F.log_softmax(logits, dim=1)
    if soft:
        terms = -focal_modulator(log_p, gamma) * log_p
        t = target.to(logits.dtype)
        losses = ((t if w is None else t * w) * terms).sum(dim=1)
    else:
        log_py = log_p.gather(1, target.long().unsqueeze(1)).squeeze(1)
        losses = -focal_modulator(log_py, gamma) * log_py
        if w is not None:
            losses = losses * w[target]
    return reduce_loss(losses, sample_weights(target, w, soft, logits.shape[0], logits), reduction)


class FocalLoss(ClassWeightedLoss):
    """Softmax focal loss ``-w_y (1 - p_y)^γ log p_y`` with optional weights ``w_c ∝ n_c^{-q}`` (sum ``C``).

    ``γ = 0`` and ``weighted_q = 0`` is plain cross-entropy. The weights can be switched during training by
    ``set_class_weights`` (focal-DRW); see :func:`focal_loss` for the formula and the paper (Lin et al., ICCV 2017).

    Args:
        gamma: focusing parameter ``γ >= 0`` (2 in Lin et al.; LDAM-DRW's CIFAR focal baseline uses 1).
        weighted_q: exponent of the default inverse-frequency weights (0: unweighted).
        reduction: ``"mean"`` (default), ``"weighted_mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, gamma: float = 2.0, weighted_q: float = 0.0, reduction: str = "mean") -> None:
        super().__init__()
        self.gamma = check_gamma(gamma)
        if not math.isfinite(weighted_q) or weighted_q < 0:
            raise ValueError(f"weighted_q must be a finite number >= 0, got {weighted_q}")
        self.weighted_q = float(weighted_q)
        self.reduction = check_reduction(reduction)

    def default_class_weights(self, class_counts: Tensor) -> Tensor:
        return inverse_power_weights(class_counts, self.weighted_q)

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        if self.weighted_q != 0 and self._class_counts is None and self.weight is None:
            raise ValueError(
                f"FocalLoss(weighted_q={self.weighted_q}) needs the class counts: call set_class_counts "
                "(LongTailModule does it) or set_class_weights"
            )
        return focal_loss(output.logits, target, self.gamma, self.weight, self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, weighted_q={self.weighted_q}, reduction={self.reduction!r}, {super().extra_repr()}"
