"""Label-distribution-aware margin (LDAM) loss (Cao et al., NeurIPS 2019).

``l = -w_y log [ e^{s(z_y - m_y)} / (e^{s(z_y - m_y)} + sum_{j != y} e^{s z_j}) ]``, margins
``m_c = C / n_c^{1/4}`` with ``C`` chosen so that ``max_c m_c = max_m``. With deferred re-weighting (LDAM-DRW) the
weights ``w`` switch from ones to the effective-number weights (``β = 0.9999``) at epoch 160 of 200.

The head matters: LDAM-DRW's ResNet-32 ends in ``NormedLinear``, ``z_c = cos(f, W_c)`` in ``[-1, 1]``, without a
scale of its own; ``s = 30`` scales those cosines and ``max_m = 0.5`` is a margin in cosine units. Use the loss with
an *unscaled* cosine head for the paper's recipe; with a head that already scales its cosines by ``σ``, set ``s = 1``
and express ``max_m`` in the scaled units (``σ · 0.5``); with a plain linear head ``s`` multiplies unbounded logits
and the margin is no longer on the scale the paper tuned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
from lt_lightning.output import ModelOutput
from lt_lightning.prior import validate_class_counts


def ldam_margins(class_counts: Sequence[int] | Tensor, max_m: float = 0.5) -> Tensor:
    """Margins ``m_c ∝ n_c^{-1/4}`` scaled so that the largest (rarest class) is ``max_m``; float32 ``[C]``.

    As in kaidic/LDAM-DRW ``losses.py``: ``m = 1/sqrt(sqrt(n)); m *= max_m / max(m)``.
    """
    if not math.isfinite(max_m) or max_m < 0:
        raise ValueError(f"max_m must be a finite number >= 0, got {max_m}")
    counts = validate_class_counts(class_counts).to(torch.float64)
    if (counts == 0).any():
        zero = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"class_counts has zero images for class(es) {zero}: LDAM's margin n_c^-1/4 divides by it")
    m = counts.pow(-0.25)
    return (m * (max_m / m.max())).to(torch.float32)


def _logsumexp_excluding_each(x: Tensor) -> Tensor:
    """``out[i, k] = log sum_{j != k} exp(x[i, j])`` for all ``k`` in ``O(BC)``, stable.

    For ``k`` other than the row's argmax, ``p_k <= 1/2`` and ``out = lse + log(1 - p_k)`` is exact; for the argmax
    the sum is recomputed with that entry masked out. (Clamping ``p`` at 1/2 keeps the unused argmax branch's
    gradient finite.)
    """
    lse = torch.logsumexp(x, dim=1, keepdim=True)
    p = (x - lse).exp().clamp(max=0.5)
    out = lse + torch.log1p(-p)
    amax = x.argmax(dim=1, keepdim=True)
    masked = x.scatter(1, amax, float("-inf"))
    return out.scatter(1, amax, torch.logsumexp(masked, dim=1, keepdim=True))


def ldam_loss(
    logits: Tensor,
    target: Tensor,
    margins: Tensor,
    s: float = 30.0,
    weight: Tensor | None = None,
    reduction: str = "weighted_mean",
) -> Tensor:
    """LDAM loss: subtract ``m_y`` from the true-class logit, scale by ``s``, then (weighted) cross-entropy.

    Hard targets: ``l_i = -w_y log softmax(s (z_i - m_y e_y))_y``, exactly kaidic/LDAM-DRW's ``LDAMLoss.forward``
    (``F.cross_entropy(s * output, target, weight)``, i.e. the ``"weighted_mean"`` reduction). Soft targets:
    ``l_i = sum_k t_ik w_k l(z_i, k)``, the expectation of the hard-label LDAM loss under the target distribution
    (what mixup's loss interpolation computes; each term uses its own class's margin).

    Reference: K. Cao, C. Wei, A. Gaidon, N. Arechiga, T. Ma, "Learning Imbalanced Datasets with Label-Distribution-
    Aware Margin Loss", NeurIPS 2019 (Eq. 13).

    Args:
        logits: ``[B, C]`` scores (cosines for the paper's normalised head).
        target: ``[B]`` class indices or ``[B, C]`` soft targets.
        margins: ``[C]`` per-class margins (:func:`ldam_margins`).
        s: logit scale ``s > 0``.
        weight: ``[C]`` class weights (DRW), ``None`` for ones.
        reduction: ``"weighted_mean"`` (default), ``"mean"``, ``"sum"`` or ``"none"``.
    """
    soft = check_logits_target(logits, target)
    check_reduction(reduction)
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"s must be a finite number > 0, got {s}")
    num_classes = logits.shape[1]
    if margins.ndim != 1 or margins.shape[0] != num_classes:
        raise ValueError(f"margins must have shape [{num_classes}] (one per class), got {tuple(margins.shape)}")
    weight = check_weight(weight, num_classes)
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    m = margins.to(device=logits.device, dtype=logits.dtype)
    w = None if weight is None else weight.to(device=logits.device, dtype=logits.dtype)
    if soft:
        x = s * logits
        true_logit = x - s * m  # [B, C]: the scaled logit of class k when k is the label
        per_class = torch.logaddexp(_logsumexp_excluding_each(x), true_logit) - true_logit
        t = target.to(logits.dtype)
        losses = ((t if w is None else t * w) * per_class).sum(dim=1)
    else:
        one_hot = F.one_hot(target.long(), num_classes).to(logits.dtype)
        losses = F.cross_entropy(s * (logits - one_hot * m), target, weight=w, reduction="none")
    return reduce_loss(losses, sample_weights(target, w, soft, logits.shape[0], logits), reduction)


class LDAMLoss(ClassWeightedLoss):
    """LDAM loss with margins ``m_c ∝ n_c^{-1/4}`` (max ``max_m``) and scale ``s`` (Cao et al., NeurIPS 2019).

    The margins are derived from the class counts in :meth:`set_class_counts` and kept in the ``margins`` buffer;
    the class weights (ones by default) are switched by ``DeferredReweighting`` for LDAM-DRW. ``max_m = 0`` and
    ``s = 1`` is plain cross-entropy. Read the module docstring about the head: the paper's ``s = 30, max_m = 0.5``
    assume an unscaled cosine classifier.

    Args:
        max_m: the largest margin (the rarest class's), ``>= 0``.
        s: logit scale ``> 0``.
        reduction: ``"weighted_mean"`` (default, as ``F.cross_entropy(weight=...)`` in the authors' code),
            ``"mean"``, ``"sum"`` or ``"none"``.
    """

    margins: Tensor

    def __init__(self, max_m: float = 0.5, s: float = 30.0, reduction: str = "weighted_mean") -> None:
        super().__init__()
        if not math.isfinite(max_m) or max_m < 0:
            raise ValueError(f"max_m must be a finite number >= 0, got {max_m}")
        if not math.isfinite(s) or s <= 0:
            raise ValueError(f"s must be a finite number > 0, got {s}")
        self.max_m = float(max_m)
        self.s = float(s)
        self.reduction = check_reduction(reduction)
        self.register_buffer("margins", torch.empty(0))

    def on_class_counts(self, class_counts: Tensor) -> None:
        margins = ldam_margins(class_counts, self.max_m).to(self.margins.device)
        if margins.shape == self.margins.shape:
            self.margins.copy_(margins)
        else:
            self.margins = margins

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        if self.margins.numel() == 0:
            raise ValueError(
                "LDAMLoss needs the class counts for its margins: call set_class_counts (LongTailModule does it)"
            )
        return ldam_loss(output.logits, target, self.margins, self.s, self.weight, self.reduction)

    def extra_repr(self) -> str:
        return f"max_m={self.max_m}, s={self.s}, reduction={self.reduction!r}, {super().extra_repr()}"
