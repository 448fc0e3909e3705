"""Long-tailed top-1 accuracy: overall, class-balanced, many/medium/few-shot and per class.

The survey (Zhang et al., "Deep Long-Tailed Learning: A Survey", TPAMI 2023, Sec. 5) reports top-1 accuracy on
a balanced test set and its split into many-shot, medium-shot and few-shot classes, grouped by the number of
*training* samples ``n_c`` of each class. The thresholds follow Kang et al., "Decoupling Representation and
Classifier for Long-Tailed Recognition" (ICLR 2020; facebookresearch/classifier-balancing ``shot_acc``):

* many-shot:   ``n_c > many_threshold``                   (default 100)
* few-shot:    ``n_c < few_threshold``                    (default 20)
* medium-shot: ``few_threshold <= n_c <= many_threshold``

Only per-class ``correct`` / ``total`` counts are accumulated; every reported number is derived from them, so
summing the counts over processes (DDP) gives exactly the single-process result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric

from lt_lightning._checks import check_int
from lt_lightning._lightning_compat import reset_metric_cache
from lt_lightning.prior import ClassPriorAware, validate_class_counts

SCALAR_KEYS: tuple[str, ...] = ("acc", "acc_balanced", "acc_many", "acc_medium", "acc_few")
"""Keys of :meth:`LongTailAccuracy.compute` whose values are 0-d tensors (the ones to ``self.log``)."""

DEFAULT_MANY_THRESHOLD = 100
DEFAULT_FEW_THRESHOLD = 20


class ShotGroups(NamedTuple):
    """Boolean ``[C]`` masks of the many-, medium- and few-shot classes (disjoint, covering all classes)."""

    many: Tensor
    medium: Tensor
    few: Tensor


def validate_shot_thresholds(many_threshold: int, few_threshold: int) -> None:
    """Raise ``ValueError`` unless ``0 <= few_threshold <= many_threshold`` (integers)."""
    for name, value in (("many_threshold", many_threshold), ("few_threshold", few_threshold)):
        check_int(name, value, minimum=0)
    if few_threshold > many_threshold:
        raise ValueError(
            f"few_threshold must be <= many_threshold, got few_threshold={few_threshold}, "
            f"many_threshold={many_threshold}"
        )


def shot_group_masks(
    class_counts: Tensor,
    many_threshold: int = DEFAULT_MANY_THRESHOLD,
    few_threshold: int = DEFAULT_FEW_THRESHOLD,
) -> ShotGroups:
    """Split classes into many/medium/few-shot groups by their training counts ``n_c``.

    ``many = n_c > many_threshold``, ``few = n_c < few_threshold``, ``medium`` = the rest
    (Kang et al., ICLR 2020).

    Args:
        class_counts: ``[C]`` training counts.
        many_threshold: a class with strictly more training samples is many-shot.
        few_threshold: a class with strictly fewer training samples is few-shot.
    """
    validate_shot_thresholds(many_threshold, few_threshold)
    if class_counts.ndim != 1:
        raise ValueError(f"class_counts must be 1-D [C], got shape {tuple(class_counts.shape)}")
    many = class_counts > many_threshold
    few = class_counts < few_threshold
    return ShotGroups(many=many, medium=~(many | few), few=few)


def long_tail_accuracy_update(preds: Tensor, target: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class ``correct`` and ``total`` counts ``[C]`` (long) of one batch, without a host sync.

    ``total_c = #{i : y_i = c}``, ``correct_c = #{i : y_i = c and argmax_k p_ik = c}``.

    Args:
        preds: ``[B, C]`` logits or probabilities (arg-maxed), or ``[B]`` integer class indices.
        target: ``[B]`` integer class indices in ``[0, C)``; they are not range-checked here (see
            :func:`check_target_range`).
        num_classes: number of classes ``C``.
    """
    if target.ndim != 1 or target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex():
        raise ValueError(
            f"target must be [B] integer class indices, got shape {tuple(target.shape)} and dtype {target.dtype}"
        )
    if preds.ndim == 2:
        if preds.shape[1] != num_classes:
            raise ValueError(f"preds must be [B, {num_classes}] scores, got shape {tuple(preds.shape)}")
        pred_idx = preds.argmax(dim=1)
    elif preds.ndim == 1:
        if preds.dtype.is_floating_point or preds.dtype == torch.bool or preds.is_complex():
            raise ValueError(f"preds of shape [B] must be integer class indices, got dtype {preds.dtype}")
        pred_idx = preds
    else:
        raise ValueError(f"preds must be [B, C] scores or [B] class indices, got shape {tuple(preds.shape)}")
    if pred_idx.shape[0] != target.shape[0]:
        raise ValueError(f"preds and target disagree on the batch size: {preds.shape[0]} vs {target.shape[0]}")
    target = target.long()
    # index_add_ instead of bincount: CUDA bincount reads max(target) on the host (a sync); index_add_ does not.
    total = torch.zeros(num_classes, dtype=torch.long, device=target.device)
    total.index_add_(0, target, torch.ones_like(target))
    correct = torch.zeros(num_classes, dtype=torch.long, device=target.device)
    correct.index_add_(0, target, (pred_idx.to(target.device) == target).long())
    return correct, total


def check_target_range(target: Tensor, num_classes: int) -> None:
    """Check ``0 <= target < num_classes`` without stalling an accelerator.

    On CPU the check is exact and raises ``ValueError`` naming the bad value. On any other device it is a
    device-side ``torch._assert_async`` (no host sync); a failure surfaces as a ``RuntimeError`` at a later
    kernel launch and leaves the CUDA context unusable -- as an out-of-range index would anyway.
    """
    if target.numel() == 0:
        return
    if target.device.type == "cpu":
        bad = target[(target < 0) | (target >= num_classes)]
        if bad.numel() > 0:
            raise ValueError(f"target must be in [0, {num_classes}), got value {int(bad[0])}")
    else:
        in_range = ((target >= 0) & (target < num_classes)).all()
        torch._assert_async(in_range, f"LongTailAccuracy: target must be in [0, {num_classes})")


def long_tail_accuracy_compute(correct: Tensor, total: Tensor, groups: ShotGroups | None) -> dict[str, Tensor]:
    """Accuracies from per-class counts (float32 tensors on the counts' device).

    With ``a_c = correct_c / total_c`` over the classes ``V = {c : total_c > 0}``:

    * ``acc = sum_c correct_c / sum_c total_c`` (top-1 over all samples);
    * ``acc_balanced = mean_{c in V} a_c``;
    * ``acc_g = mean_{c in V ∩ g} a_c`` for ``g`` in many/medium/few -- NaN when ``V ∩ g`` is empty (never 0);
    * ``per_class = a_c``, NaN for ``c`` not in ``V``.

    Args:
        correct: ``[C]`` correctly classified test samples per class.
        total: ``[C]`` test samples per class.
        groups: the shot groups, or ``None`` when the training counts are unknown (group accuracies are NaN).

    Returns:
        The keys of :data:`SCALAR_KEYS` (0-d), ``per_class`` (``[C]`` float32), and the raw ``correct`` and
        ``total`` counts (``[C]`` long), so that a stored result keeps everything a report needs.
    """
    valid = total > 0
    ratio = correct.double() / total.clamp(min=1).double()
    per_class = torch.where(valid, ratio, torch.full_like(ratio, float("nan")))
    valid_f = valid.double()
    zeros = torch.zeros_like(ratio)

    def masked_mean(mask: Tensor) -> Tensor:
        # 0 / 0 = NaN for an empty group, computed on device without branching on values.
        return torch.where(mask, ratio, zeros).sum() / mask.double().sum()

    out: dict[str, Tensor] = {
        "acc": correct.sum().double() / total.sum().double(),
        "acc_balanced": (ratio * valid_f).sum() / valid_f.sum(),
    }
    for name in ("many", "medium", "few"):
        if groups is None:
            out[f"acc_{name}"] = torch.full((), float("nan"), dtype=torch.float64, device=correct.device)
        else:
            out[f"acc_{name}"] = masked_mean(getattr(groups, name).to(valid.device) & valid)
    out = {k: v.float() for k, v in out.items()}
    out["per_class"] = per_class.float()
    out["correct"] = correct.clone()
    out["total"] = total.clone()
    return out


class LongTailAccuracy(Metric, ClassPriorAware):
    """Top-1 accuracy of a long-tailed classifier: overall, class-balanced, many/medium/few-shot, per class.

    States are per-class ``correct`` and ``total`` counts ``[C]`` (long, summed across processes). The training
    class counts that define the shot groups are a non-persistent buffer: they follow the metric to any device,
    and the owning module (which saves its own ``class_counts`` in checkpoints) re-sends them through
    :meth:`set_class_counts` (:class:`~lt_lightning.prior.ClassPriorAware`).

    Args:
        num_classes: number of classes ``C``.
        class_counts: ``[C]`` training counts (integers), or ``None`` until :meth:`set_class_counts` is called;
            without them ``acc_many``/``acc_medium``/``acc_few`` are NaN.
        many_threshold: a class with more than this many training samples is many-shot.
        few_threshold: a class with fewer than this many training samples is few-shot.
        validate_args: check that targets lie in ``[0, C)``: exactly on CPU (``ValueError``), with a device-side
            assertion that does not sync elsewhere (see :func:`check_target_range`). Shape and dtype checks are
            always on (they read only metadata).
        **kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> metric = LongTailAccuracy(num_classes=3, class_counts=[500, 50, 5])
        >>> metric.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2]))
        >>> {k: round(float(v), 4) for k, v in metric.compute().items() if k in SCALAR_KEYS}
        {'acc': 0.6667, 'acc_balanced': 0.6667, 'acc_many': 1.0, 'acc_medium': 1.0, 'acc_few': 0.0}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: Tensor
    total: Tensor
    class_counts: Tensor | None

    def __init__(
        self,
        num_classes: int,
        class_counts: Sequence[int] | Tensor | None = None,
        many_threshold: int = DEFAULT_MANY_THRESHOLD,
        few_threshold: int = DEFAULT_FEW_THRESHOLD,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_int("num_classes", num_classes, minimum=1)
        validate_shot_thresholds(many_threshold, few_threshold)
        self.num_classes = num_classes
        self.many_threshold = many_threshold
        self.few_threshold = few_threshold
        self.validate_args = validate_args
        self.add_state("correct", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        # Long, not float: nn.Module.half()/bfloat16() (e.g. precision="bf16-true") would round float counts.
        self.register_buffer("class_counts", None, persistent=False)
        if class_counts is not None:
            self.set_class_counts(class_counts)

    def set_class_counts(self, class_counts: Sequence[int] | Tensor) -> None:
        """Set the ``[C]`` training counts that define the many/medium/few-shot groups."""
        counts = validate_class_counts(class_counts, self.num_classes).double()
        if not torch.equal(counts, counts.round()):
            raise ValueError(f"class_counts must be whole numbers, got {counts.tolist()}")
        self.class_counts = counts.long().to(self.correct.device)
        # torchmetrics caches compute() until the next update(); new groups must not return the stale result.
        reset_metric_cache(self)

    def shot_groups(self) -> ShotGroups:
        """Boolean ``[C]`` masks of the many/medium/few-shot classes; all ``False`` when counts are unknown."""
        if self.class_counts is None:
            empty = torch.zeros(self.num_classes, dtype=torch.bool, device=self.correct.device)
            return ShotGroups(many=empty, medium=empty.clone(), few=empty.clone())
        return shot_group_masks(self.class_counts, self.many_threshold, self.few_threshold)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Accumulate a batch: ``preds`` ``[B, C]`` scores or ``[B]`` indices, ``target`` ``[B]`` indices."""
        if self.validate_args:
            check_target_range(target, self.num_classes)
        correct, total = long_tail_accuracy_update(preds, target, self.num_classes)
        self.correct += correct.to(self.correct.device)
        self.total += total.to(self.total.device)

    def compute(self) -> dict[str, Tensor]:
        """``acc``, ``acc_balanced``, ``acc_many``, ``acc_medium``, ``acc_few`` (0-d), ``per_class`` ``[C]``
        (NaN where a class has no test sample) and the raw ``correct``/``total`` counts; see
        :func:`long_tail_accuracy_compute`."""
        groups = None if self.class_counts is None else self.shot_groups()
        return long_tail_accuracy_compute(self.correct, self.total, groups)
