"""Class-balanced loss by the effective number of samples (Cui et al., CVPR 2019), with its three bases.

``CB(z, y) = w_y L(z, y)`` with ``w_c ∝ (1 - β) / (1 - β^{n_c})`` normalised to ``sum_c w_c = C``
(:func:`~lt_lightning.losses.weighting.effective_number_weights`). The bases follow the authors' code
(``richardaecn/class-balanced-loss``, ``src/cifar_main.py``):

* ``"ce"``: softmax cross-entropy ``-w_y log softmax(z)_y``;
* ``"sigmoid"``: one-vs-all binary cross-entropy on the one-hot label, every class term of sample ``i`` weighted by
  ``w_{y_i}``: ``w_y sum_c BCE(z_c, 1[c = y])``;
* ``"focal"``: the *sigmoid* focal loss of the paper, ``w_y sum_c (1 - p_t,c)^γ BCE(z_c, 1[c = y])`` with
  ``p_t,c = σ(z_c)`` for ``c = y`` and ``1 - σ(z_c)`` otherwise;
* ``"softmax_focal"`` (not in the paper): the softmax focal loss of :mod:`lt_lightning.losses.focal`, CB-weighted.

All are divided by the batch size (reduction ``"mean"``: the authors divide by the number of positive labels,
``B``). Sigmoid bases: the authors initialise the classifier bias to ``-log(C - 1)`` (prior ``π = 1/C``) and exclude
it from weight decay (``src/model_base.py``, ``src/cifar_main.py``; not for softmax); that belongs to the head and
the optimizer, not to this loss: ``LinearHead(bias_init="uniform_prior", bias_weight_decay=False)``, as the
``class_balanced.yaml`` configs set. Predictions are the argmax of the logits for every base.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lt_lightning.losses._checks import check_logits_target, target_distribution
from lt_lightning.losses.focal import check_gamma, focal_loss
from lt_lightning.losses.weighted import (
    ClassWeightedLoss,
    check_reduction,
    check_weight,
    reduce_loss,
    weighted_cross_entropy,
)
from lt_lightning.losses.weighting import effective_number_weights
from lt_lightning.output import ModelOutput

BASES = ("ce", "sigmoid", "focal", "softmax_focal")


def sigmoid_focal_loss(
    logits: Tensor, target: Tensor, gamma: float = 0.0, weight: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """One-vs-all sigmoid (focal) loss with per-sample weight ``w_y`` on every class term.

    Hard targets: ``l_i = w_{y_i} sum_c (1 - p_t,ic)^γ BCE(z_ic, 1[c = y_i])``, ``BCE(z, 1) = -log σ(z)``,
    ``BCE(z, 0) = -log(1 - σ(z))``, ``p_t = σ(z)`` for the label and ``1 - σ(z)`` otherwise; ``γ = 0`` is the sigmoid
    cross-entropy. Soft targets: ``l_i = sum_k t_ik l(z_i, k)`` (the expectation of the hard-label loss), i.e.
    positive weight ``t_ic w_c`` and negative weight ``s_i - t_ic w_c`` per class, ``s_i = sum_k t_ik w_k``.

    Equals Cui et al.'s ``focal_loss`` (``cifar_main.py``) with ``alpha = w_y`` tiled over classes, whose modulator
    ``exp(-γ y z - γ log(1 + exp(-z)))`` is ``(1 - p_t)^γ``; computed here through ``logsigmoid`` (no overflow).

    Reference: T.-Y. Lin et al., ICCV 2017; Y. Cui et al., CVPR 2019 (Eq. 6-8).
    """
    check_logits_target(logits, target)
    check_reduction(reduction)
    gamma = check_gamma(gamma)
    weight = check_weight(weight, logits.shape[1])
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    t = target_distribution(target, logits.shape[1], logits.dtype)
    pos_w = t if weight is None else t * weight.to(device=logits.device, dtype=logits.dtype)
    s = pos_w.sum(dim=1, keepdim=True)
    neg_w = s - pos_w
    log_sig_pos = F.logsigmoid(logits)  # log σ(z): -BCE of a positive
    log_sig_neg = F.logsigmoid(-logits)  # log(1 - σ(z)): -BCE of a negative
    pos_terms = -log_sig_pos
    neg_terms = -log_sig_neg
    if gamma != 0:
        pos_terms = torch.exp(gamma * log_sig_neg) * pos_terms  # (1 - σ(z))^γ
        neg_terms = torch.exp(gamma * log_sig_pos) * neg_terms  # σ(z)^γ
    losses = (pos_w * pos_terms + neg_w * neg_terms).sum(dim=1)
    return reduce_loss(losses, s.squeeze(1), reduction)


def class_balanced_from_weights(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    base: str = "ce",
    gamma: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """The class-balanced loss given its weights ``[C]`` (see the module docstring for the bases)."""
    if base == "ce":
        return weighted_cross_entropy(logits, target, weight, reduction)
    if base == "sigmoid":
        return sigmoid_focal_loss(logits, target, 0.0, weight, reduction)
    if base == "focal":
        return sigmoid_focal_loss(logits, target, gamma, weight, reduction)
    if base == "softmax_focal":
        return focal_loss(logits, target, gamma, weight, reduction)
    raise ValueError(f"base must be one of {BASES}, got {base!r}")


def class_balanced_loss(
    logits: Tensor,
    target: Tensor,
    class_counts: Sequence[int] | Tensor,
    beta: float = 0.9999,
    base: str = "ce",
    gamma: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """Class-balanced loss ``w_y L_base(z, y)``, ``w ∝ (1 - β)/(1 - β^n)`` with ``sum_c w_c = C``.

    Reference: Y. Cui, M. Jia, T.-Y. Lin, Y. Song, S. Belongie, "Class-Balanced Loss Based on Effective Number of
    Samples", CVPR 2019.

    Args:
        logits: ``[B, C]`` scores.
        target: ``[B]`` class indices or ``[B, C]`` soft targets.
        class_counts: ``[C]`` training images per class (all > 0).
        beta: ``β`` in ``[0, 1)``; ``0`` is the unweighted base loss.
        base: ``"ce"``, ``"sigmoid"``, ``"focal"`` (sigmoid focal, the paper's) or ``"softmax_focal"``.
        gamma: ``γ >= 0`` of the focal bases.
        reduction: ``"mean"`` (the authors'), ``"weighted_mean"``, ``"sum"`` or ``"none"``.
    """
    weights = effective_number_weights(class_counts, beta).to(logits.device)
    if weights.numel() != logits.shape[-1]:
        raise ValueError(f"class_counts has {weights.numel()} entries but logits have {logits.shape[-1]} classes")
    return class_balanced_from_weights(logits, target, weights, base, gamma, reduction)


class ClassBalancedLoss(ClassWeightedLoss):
    """Class-balanced loss (Cui et al., CVPR 2019) with a CE, sigmoid or (sigmoid / softmax) focal base.

    The effective-number weights are computed from the class counts in :meth:`set_class_counts` and kept in the
    ``class_weights`` buffer; ``set_class_weights`` can override them (``None``: back to the effective-number ones).
    ``beta = 0`` is the plain base loss. See :mod:`lt_lightning.losses.class_balanced` for the formulas.

    Args:
        beta: ``β`` in ``[0, 1)`` (0.9999 in the paper's CIFAR-10-LT runs).
        base: ``"ce"`` (default), ``"sigmoid"``, ``"focal"`` (sigmoid focal, the paper's) or ``"softmax_focal"``.
        gamma: ``γ >= 0`` of the focal bases (1.0 in the authors' CIFAR script); ignored by the others.
        reduction: ``"mean"`` (default, the authors'), ``"weighted_mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, beta: float = 0.9999, base: str = "ce", gamma: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        if not math.isfinite(beta) or not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if base not in BASES:
            raise ValueError(f"base must be one of {BASES}, got {base!r}")
        self.beta = float(beta)
        self.base = base
        self.gamma = check_gamma(gamma)
        self.reduction = check_reduction(reduction)

    def default_class_weights(self, class_counts: Tensor) -> Tensor:
        return effective_number_weights(class_counts, self.beta)

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        if self.beta != 0 and self._class_counts is None and self.weight is None:
            raise ValueError(
                "ClassBalancedLoss needs the class counts: call set_class_counts (LongTailModule does it) "
                "or set_class_weights"
            )
        return class_balanced_from_weights(output.logits, target, self.weight, self.base, self.gamma, self.reduction)

    def extra_repr(self) -> str:
        return (
            f"beta={self.beta}, base={self.base!r}, gamma={self.gamma}, reduction={self.reduction!r}, "
            f"{super().extra_repr()}"
        )
