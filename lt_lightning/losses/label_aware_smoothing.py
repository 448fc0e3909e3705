"""Label-aware smoothing (LAS), the stage-2 loss of MiSLAS (Zhong, Cui, Liu, Jia, "Improving Calibration for
Long-Tailed Recognition", CVPR 2021, Sec. 3.2).

Label smoothing with a smoothing factor per class, larger for head classes (over-confident) than for tail classes:

    l(z, y) = (1 - eps_y) (-log p_y) + eps_y * mean_c (-log p_c),      p = softmax(z),

i.e. cross-entropy against ``(1 - eps_y) e_y + eps_y / C``. The factors ``eps_1 ... eps_K`` follow the class counts
``n`` (``n_1`` the largest, ``n_K`` the smallest count) between ``smooth_tail`` (at ``n_K``) and ``smooth_head`` (at
``n_1``) along one of the reference's shapes (dvlab-research/MiSLAS ``methods.py``), with ``r = (n - n_K)/(n_1 - n_K)``:

* ``concave``: ``eps = tail + (head - tail) sin(r pi / 2)`` (the paper's default);
* ``linear``: ``eps = tail + (head - tail) r``;
* ``convex``: ``eps = head + (head - tail) sin(3 pi / 2 + r pi / 2)``;
* ``exp``: ``eps = tail + (head - tail) r^power``.

Balanced counts (``n_1 = n_K``; the reference divides by zero) give every class ``smooth_head``, the limit of every
shape at ``r = 1``. Soft targets ``t`` (mixup) give the expectation of the hard-label loss,
``sum_k t_k l(z, k)``: exactly MiSLAS's ``mixup_criterion`` interpolation of the loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lt_lightning._checks import check_float
from lt_lightning.losses._checks import check_logits_target
from lt_lightning.losses.base import LongTailLoss
from lt_lightning.output import ModelOutput
from lt_lightning.prior import ClassPriorAware, validate_class_counts

__all__ = ["LabelAwareSmoothingLoss", "label_aware_epsilons", "label_aware_smoothing_loss"]

Shape = Literal["concave", "linear", "convex", "exp"]
SHAPES = ("concave", "linear", "convex", "exp")


def _check_factors(smooth_head: float, smooth_tail: float, shape: str, power: float | None) -> None:
    for name, value in (("smooth_head", smooth_head), ("smooth_tail", smooth_tail)):
        check_float(name, value, minimum=0, maximum=1, what="a smoothing factor in [0, 1]")
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    if shape == "exp" and (power is None or not math.isfinite(power) or power <= 0):
        raise ValueError(f"shape='exp' needs a finite power > 0, got power={power!r}")


def label_aware_epsilons(
    class_counts: Sequence[int] | Tensor,
    smooth_head: float,
    smooth_tail: float,
    shape: Shape = "concave",
    power: float | None = None,
) -> Tensor:
    """Per-class smoothing factors ``eps`` ``[C]`` (float32) from the training counts (see the module docstring)."""
    _check_factors(smooth_head, smooth_tail, shape, power)
    n = validate_class_counts(class_counts).to(torch.float64)
    n_1, n_k = n.max(), n.min()
    if n_1 == n_k:
        return torch.full_like(n, float(smooth_head), dtype=torch.float32)
    r = (n - n_k) / (n_1 - n_k)
    head, tail = float(smooth_head), float(smooth_tail)
    if shape == "concave":
        eps = tail + (head - tail) * torch.sin(r * math.pi / 2)
    elif shape == "linear":
        eps = tail + (head - tail) * r
    elif shape == "convex":
        eps = head + (head - tail) * torch.sin(1.5 * math.pi + r * math.pi / 2)
    else:
        eps = tail + (head - tail) * r.pow(float(power))  # type: ignore[arg-type]
    return eps.to(torch.float32)


def label_aware_smoothing_loss(logits: Tensor, target: Tensor, epsilons: Tensor) -> Tensor:
    """Mean over the batch of ``(1 - eps_y)(-log p_y) + eps_y mean_c(-log p_c)``.

    Args:
        logits: ``[B, C]`` scores.
        target: ``[B]`` class indices or ``[B, C]`` soft targets (the loss is then ``sum_k t_k l(z, k)``).
        epsilons: ``[C]`` smoothing factors (:func:`label_aware_epsilons`); all zero is cross-entropy.
    """
    soft = check_logits_target(logits, target)
    num_classes = logits.shape[1]
    if epsilons.ndim != 1 or epsilons.shape[0] != num_classes:
        raise ValueError(f"epsilons must have shape [{num_classes}] (one per class), got {tuple(epsilons.shape)}")
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    eps = epsilons.to(device=logits.device, dtype=logits.dtype)
    log_p = F.log_softmax(logits, dim=1)
    uniform = -log_p.mean(dim=1, keepdim=True)  # [B, 1]: mean_c (-log p_c)
    per_class = (1.0 - eps) * (-log_p) + eps * uniform  # [B, C]: the loss if the label were k
    if soft:
        losses = (target.to(logits.dtype) * per_class).sum(dim=1)
    else:
        losses = per_class.gather(1, target.long().unsqueeze(1)).squeeze(1)
    return losses.mean()


class LabelAwareSmoothingLoss(LongTailLoss, ClassPriorAware):
    """MiSLAS's label-aware smoothing; the factors ``eps`` follow the training counts (buffer ``epsilons``).

    Args:
        smooth_head: ``eps`` of the largest class, in ``[0, 1]`` (0.3 on CIFAR-10-LT, 0.4 on CIFAR-100-LT at
            rho = 100 in the reference configs).
        smooth_tail: ``eps`` of the smallest class, in ``[0, 1]`` (0.0 / 0.1).
        shape: ``"concave"`` (default), ``"linear"``, ``"convex"`` or ``"exp"`` (with ``power``).
        power: exponent of ``"exp"``.
    """

    epsilons: Tensor

    def __init__(
        self, smooth_head: float = 0.3, smooth_tail: float = 0.0, shape: Shape = "concave", power: float | None = None
    ) -> None:
        super().__init__()
        _check_factors(smooth_head, smooth_tail, shape, power)
        self.smooth_head = float(smooth_head)
        self.smooth_tail = float(smooth_tail)
        self.shape = shape
        self.power = None if power is None else float(power)
        self.register_buffer("epsilons", torch.empty(0))

    def set_class_counts(self, class_counts: Tensor) -> None:
        counts = class_counts.detach().cpu()
        eps = label_aware_epsilons(counts, self.smooth_head, self.smooth_tail, self.shape, self.power)
        eps = eps.to(self.epsilons.device)
        if eps.shape == self.epsilons.shape:
            self.epsilons.copy_(eps)
        else:
            self.epsilons = eps

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        if self.epsilons.numel() == 0:
            raise ValueError(
                "LabelAwareSmoothingLoss needs the class counts for its factors: call set_class_counts "
                "(LongTailModule and ClassifierRetraining do it)"
            )
        return label_aware_smoothing_loss(output.logits, target, self.epsilons)

    def extra_repr(self) -> str:
        power = f", power={self.power}" if self.shape == "exp" else ""
        return f"smooth_head={self.smooth_head}, smooth_tail={self.smooth_tail}, shape={self.shape!r}{power}"
