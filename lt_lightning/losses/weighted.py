"""Class-weighted softmax cross-entropy, and the base class of every loss with per-class weights.

Soft targets: every weighted loss here is the expectation of its hard-label loss under the target distribution,
``l_i = sum_k t_ik w_k l(z_i, k)`` -- exactly what mixup's loss interpolation computes -- so one-hot soft targets give
the hard-label loss.

Reductions (``l_i`` already carries its weight):

* ``"weighted_mean"``: ``sum_i l_i / sum_i s_i`` with ``s_i = sum_k t_ik w_k`` (``= w_{y_i}``): PyTorch's
  ``F.cross_entropy(weight=w)`` and LDAM-DRW's CE/LDAM;
* ``"mean"``: ``sum_i l_i / B``: Cui et al.'s class-balanced loss and LDAM-DRW's focal loss;
* ``"sum"``, ``"none"`` (per-sample ``[B]``).

A batch whose sample weights are all zero gives ``0`` under ``"weighted_mean"`` (PyTorch gives NaN).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lt_lightning.losses._checks import check_logits_target
from lt_lightning.losses.base import LongTailLoss
from lt_lightning.losses.weighting import inverse_power_weights, validate_class_weights
from lt_lightning.output import ModelOutput
from lt_lightning.prior import ClassPriorAware, validate_class_counts

REDUCTIONS = ("weighted_mean", "mean", "sum", "none")


def check_reduction(reduction: str) -> str:
    """Return ``reduction`` if it is one of :data:`REDUCTIONS`, else raise ``ValueError``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_weight(weight: Tensor | None, num_classes: int) -> Tensor | None:
    """Check a functional core's ``weight`` argument: ``None`` or a ``[C]`` tensor."""
    if weight is None:
        return None
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a Tensor or None, got {type(weight).__name__}")
    if weight.ndim != 1 or weight.shape[0] != num_classes:
        raise ValueError(f"weight must have shape [{num_classes}] (one per class), got {tuple(weight.shape)}")
    return weight


def sample_weights(target: Tensor, weight: Tensor | None, soft: bool, batch: int, like: Tensor) -> Tensor:
    """``s_i = sum_k t_ik w_k``: ``w[y_i]`` for hard targets, ones when unweighted (on ``like``'s device/dtype)."""
    if weight is None:
        if soft:
            return target.to(like.dtype).sum(dim=1)
        return torch.ones(batch, device=like.device, dtype=like.dtype)
    weight = weight.to(device=like.device, dtype=like.dtype)
    if soft:
        return target.to(like.dtype) @ weight
    return weight[target]


def reduce_loss(losses: Tensor, sample_weight: Tensor, reduction: str) -> Tensor:
    """Reduce per-sample weighted losses ``[B]`` (see the module docstring for the reductions)."""
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.mean()
    if reduction == "weighted_mean":
        return losses.sum() / sample_weight.sum().clamp_min(torch.finfo(losses.dtype).tiny)
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def weighted_cross_entropy(
    logits: Tensor, target: Tensor, weight: Tensor | None = None, reduction: str = "weighted_mean"
) -> Tensor:
    """Class-weighted softmax cross-entropy ``l_i = -sum_k t_ik w_k log softmax(z_i)_k`` (hard: ``-w_y log p_y``).

    With the default ``"weighted_mean"`` and hard targets this equals ``F.cross_entropy(logits, target, weight)``.
    Computed in float32 at least.

    Args:
        logits: ``[B, C]`` scores.
        target: ``[B]`` class indices or ``[B, C]`` soft targets.
        weight: ``[C]`` class weights, ``None`` for ones.
        reduction: ``"weighted_mean"``, ``"mean"``, ``"sum"`` or ``"none"``.
    """
    soft = check_logits_target(logits, target)
    check_reduction(reduction)
    weight = check_weight(weight, logits.shape[1])
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    w = None if weight is None else weight.to(device=logits.device, dtype=logits.dtype)
    if soft:
        log_p = F.log_softmax(logits, dim=1)
        t = target.to(logits.dtype)
        tw = t if w is None else t * w
        losses = -(tw * log_p).sum(dim=1)
    else:
        losses = F.cross_entropy(logits, target, weight=w, reduction="none")
    return reduce_loss(losses, sample_weights(target, w, soft, logits.shape[0], logits), reduction)


class ClassWeightedLoss(LongTailLoss, ClassPriorAware):
    """Base class of the losses with per-class weights, switchable during training (deferred re-weighting).

    The weights live in the registered buffer ``class_weights`` (``[C]``; ones = unweighted), so they move with the
    module's device and are saved in checkpoints. :meth:`set_class_counts` (called by ``LongTailModule`` at
    construction and whenever the counts are replaced) resets them to the loss's default for those counts
    (:meth:`default_class_weights`); :meth:`set_class_weights` overrides them (``None``: back to the default). A
    schedule that overrides them (``DeferredReweighting``) re-applies its weights every epoch, so resuming from a
    checkpoint on either side of the switch gives the same run.

    Used standalone without counts, ``class_weights`` is empty until weights are set and the loss is unweighted.
    Subclasses override :meth:`default_class_weights` and :meth:`on_class_counts` (other derived buffers).
    """

    class_weights: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("class_weights", torch.empty(0))
        self._class_counts: Tensor | None = None

    # ------------------------------------------------------------------ class prior
    @property
    def num_classes(self) -> int | None:
        """``C`` once the counts (or weights) are known, else ``None``."""
        if self._class_counts is not None:
            return int(self._class_counts.numel())
        return int(self.class_weights.numel()) if self.class_weights.numel() > 0 else None

    def default_class_weights(self, class_counts: Tensor) -> Tensor:
        """Weights the loss uses when none are set: ones (override for count-derived weights)."""
        return torch.ones(class_counts.numel(), dtype=torch.float32)

    def on_class_counts(self, class_counts: Tensor) -> None:
        """Hook for subclasses to derive further buffers from the counts (margins, log-priors)."""

    def set_class_counts(self, class_counts: Tensor) -> None:
        """Receive the ``[C]`` training counts; recompute derived buffers and reset weights to the default."""
        counts = validate_class_counts(class_counts).detach().cpu()
        self.on_class_counts(counts)
        self._class_counts = counts
        self._write_class_weights(self.default_class_weights(counts))

    # ------------------------------------------------------------------ weights
    def set_class_weights(self, weights: Tensor | None) -> None:
        """Set the ``[C]`` class weights (used as given); ``None`` resets them to :meth:`default_class_weights`."""
        if weights is None:
            if self._class_counts is None:
                # No counts known: the default of every subclass without counts is "unweighted".
                self._write_class_weights(torch.empty(0))
                return
            self._write_class_weights(self.default_class_weights(self._class_counts))
            return
        self._write_class_weights(validate_class_weights(weights, self.num_classes))

    def _write_class_weights(self, weights: Tensor) -> None:
        weights = weights.detach().to(device=self.class_weights.device, dtype=torch.float32)
        if weights.shape == self.class_weights.shape:
            self.class_weights.copy_(weights)
        else:
            self.class_weights = weights.clone()

    @property
    def weight(self) -> Tensor | None:
        """The class weights to hand to a functional core (``None`` when unset)."""
        return self.class_weights if self.class_weights.numel() > 0 else None

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


class WeightedCrossEntropyLoss(ClassWeightedLoss):
    """Weighted softmax cross-entropy with ``w_c ∝ n_c^{-q}``, normalised to ``sum_c w_c = C``.

    ``l = -w_y log softmax(z)_y``; ``q = 1`` is inverse class frequency (the survey's "Weighted Softmax", Table 5),
    ``q = 1/2`` square-root re-weighting, ``q = 0`` plain cross-entropy. As the re-weighting baseline of LDAM-DRW's
    code (``nn.CrossEntropyLoss(weight=...)``), the default reduction is the weighted mean.

    References: survey of Y. Zhang, B. Kang, B. Hooi, S. Yan, J. Feng, "Deep Long-Tailed Learning: A Survey", TPAMI
    2023 (Sec. 3.1.2); K. Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss",
    NeurIPS 2019 (the "CE-RW" baseline).

    Args:
        q: exponent of the inverse-frequency weights, ``q >= 0``.
        reduction: ``"weighted_mean"`` (default), ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, q: float = 1.0, reduction: str = "weighted_mean") -> None:
        super().__init__()
        if not math.isfinite(q) or q < 0:
            raise ValueError(f"q must be a finite number >= 0, got {q}")
        self.q = float(q)
        self.reduction = check_reduction(reduction)

    def default_class_weights(self, class_counts: Tensor) -> Tensor:
        return inverse_power_weights(class_counts, self.q)

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        if self.q != 0 and self._class_counts is None and self.weight is None:
            raise ValueError(
                f"WeightedCrossEntropyLoss(q={self.q}) needs the class counts: call set_class_counts "
                "(LongTailModule does it) or set_class_weights"
            )
        return weighted_cross_entropy(output.logits, target, self.weight, self.reduction)

    def extra_repr(self) -> str:
        return f"q={self.q}, reduction={self.reduction!r}, {super().extra_repr()}"
