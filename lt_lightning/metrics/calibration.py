"""Calibration of a long-tailed classifier: ECE and NLL, overall and per shot group, plus the confusion matrix.

Expected calibration error (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017, Sec. 2; reference
code gpleiss/temperature_scaling ``_ECELoss``): the confidence of image ``i`` is ``conf_i = max_k softmax(z_i)_k``;
with ``B`` equal-width bins ``(b/B, (b+1)/B]`` (bin 0 also holds ``conf = 0``),

``ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|``,

``acc(B_b)`` the top-1 accuracy and ``conf(B_b)`` the mean confidence of the images in bin ``b``. The negative
log-likelihood is ``NLL = mean_i -log softmax(z_i)_{y_i}`` (float32 ``log_softmax`` of the logits). Long-tailed
models are over-confident on head classes, so both are also reported per shot group (Kang et al., ICLR 2020 groups
by training count, :func:`~lt_lightning.metrics.long_tail_accuracy.shot_group_masks`); an image belongs to the group
of its *true* class.

Only sums are accumulated (``dist_reduce_fx="sum"``): per group and bin the image count, summed confidence and
correct count ``[3, B]``; per class the summed NLL and image count ``[C]``; the confusion matrix ``[C, C]``. Summing
them over processes (DDP) gives exactly the single-process result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lt_lightning._checks import check_int
from lt_lightning._lightning_compat import reset_metric_cache
from lt_lightning.metrics.long_tail_accuracy import (
    DEFAULT_FEW_THRESHOLD,
    DEFAULT_MANY_THRESHOLD,
    ShotGroups,
    check_target_range,
    shot_group_masks,
    validate_shot_thresholds,
)
from lt_lightning.prior import ClassPriorAware, validate_class_counts

DEFAULT_NUM_BINS = 15
"""Confidence bins of the ECE (Guo et al., ICML 2017)."""

CALIBRATION_SCALAR_KEYS: tuple[str, ...] = (
    "ece",
    "nll",
    "ece_many",
    "ece_medium",
    "ece_few",
    "nll_many",
    "nll_medium",
    "nll_few",
)
"""Keys of :meth:`CalibrationMetric.compute` whose values are 0-d tensors (the ones to ``self.log``)."""

_GROUPS = ("many", "medium", "few")


def expected_calibration_error(count: Tensor, conf_sum: Tensor, correct: Tensor) -> Tensor:
    """``sum_b |B_b|/N |acc(B_b) - conf(B_b)| = sum_b |correct_b - conf_sum_b| / N``; NaN when ``N = 0``."""
    return (correct.double() - conf_sum.double()).abs().sum() / count.double().sum()


class CalibrationMetric(Metric, ClassPriorAware):
    """ECE (equal-width bins, Guo et al., ICML 2017) and NLL, overall and per shot group, and the confusion matrix.

    States (all summed across processes): ``bin_count``, ``bin_conf``, ``bin_correct`` ``[4, B]`` (rows many,
    medium, few, and classes whose group is unknown -- all classes until training counts are set); ``nll_sum``
    (float64) and ``count`` (long) ``[C]``; ``confusion`` ``[C, C]`` (long, row = true class, column = prediction).
    Overall ECE bins all images (the sum of the rows), so it does not depend on the groups.

    Args:
        num_classes: number of classes ``C``.
        class_counts: ``[C]`` training counts, or ``None`` (the per-group values are NaN until
            :meth:`set_class_counts`).
        many_threshold: a class with more training samples is many-shot.
        few_threshold: a class with fewer training samples is few-shot.
        num_bins: ``B`` equal-width confidence bins.
        validate_args: check that targets lie in ``[0, C)`` (see
            :func:`~lt_lightning.metrics.long_tail_accuracy.check_target_range`).
        **kwargs: passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    bin_count: Tensor
    bin_conf: Tensor
    bin_correct: Tensor
    nll_sum: Tensor
    count: Tensor
    confusion: Tensor
    group_of_class: Tensor

    def __init__(
        self,
        num_classes: int,
        class_counts: Sequence[int] | Tensor | None = None,
        many_threshold: int = DEFAULT_MANY_THRESHOLD,
        few_threshold: int = DEFAULT_FEW_THRESHOLD,
        num_bins: int = DEFAULT_NUM_BINS,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_int("num_classes", num_classes, minimum=1)
        check_int("num_bins", num_bins, minimum=1)
        validate_shot_thresholds(many_threshold, few_threshold)
        self.num_classes = num_classes
        self.num_bins = num_bins
        self.many_threshold = many_threshold
        self.few_threshold = few_threshold
        self.validate_args = validate_args
        # float64 sums: exact enough for millions of images; torchmetrics keeps state dtypes under .half()
        self.add_state("bin_count", default=torch.zeros(4, num_bins, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("bin_conf", default=torch.zeros(4, num_bins, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("bin_correct", default=torch.zeros(4, num_bins, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("nll_sum", default=torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state(
            "confusion", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )
        self.register_buffer("group_of_class", torch.full((num_classes,), 3, dtype=torch.long), persistent=False)
        self.class_counts: Tensor | None = None
        if class_counts is not None:
            self.set_class_counts(class_counts)

    def set_class_counts(self, class_counts: Sequence[int] | Tensor) -> None:
        """Set the ``[C]`` training counts that define the shot groups (call before :meth:`update`)."""
        counts = validate_class_counts(class_counts, self.num_classes).double()
        groups = shot_group_masks(counts, self.many_threshold, self.few_threshold)
        group_of = torch.full((self.num_classes,), 3, dtype=torch.long)
        for index, name in enumerate(_GROUPS):
            group_of[getattr(groups, name).cpu()] = index
        self.group_of_class = group_of.to(self.count.device)
        self.class_counts = counts
        reset_metric_cache(self)

    def shot_groups(self) -> ShotGroups:
        """Boolean ``[C]`` masks of the many/medium/few-shot classes (all ``False`` when counts are unknown)."""
        return ShotGroups(*(self.group_of_class == index for index in range(3)))

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Accumulate a batch: ``preds`` ``[N, C]`` logits, ``target`` ``[N]`` class indices."""
        if preds.ndim != 2 or preds.shape[1] != self.num_classes or not preds.dtype.is_floating_point:
            raise ValueError(
                f"preds must be [N, {self.num_classes}] floating logits, got shape {tuple(preds.shape)} and dtype "
                f"{preds.dtype}"
            )
        if target.ndim != 1 or target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex():
            raise ValueError(
                f"target must be [N] integer class indices, got shape {tuple(target.shape)} and dtype {target.dtype}"
            )
        if target.shape[0] != preds.shape[0]:
            raise ValueError(f"preds and target disagree on the batch size: {preds.shape[0]} vs {target.shape[0]}")
        if self.validate_args:
            check_target_range(target, self.num_classes)
        num_bins = self.num_bins
        logits = preds.to(self.count.device)
        log_probs = torch.log_softmax(logits.float(), dim=1)
        max_log_prob, pred = log_probs.max(dim=1)
        conf = max_log_prob.exp()
        target = target.long().to(logits.device)
        # bucketize(right=False) on the inner edges: bin b holds (b/B, (b+1)/B]; conf = 1 falls in the last bin
        edges = torch.linspace(0.0, 1.0, num_bins + 1, dtype=conf.dtype, device=conf.device)[1:-1]
        flat = self.group_of_class[target] * num_bins + torch.bucketize(conf, edges)
        self.bin_count += (
            torch.zeros(4 * num_bins, dtype=torch.long, device=conf.device)
            .index_add_(0, flat, torch.ones_like(target))
            .view(4, num_bins)
        )
        self.bin_conf += (
            torch.zeros(4 * num_bins, dtype=torch.float64, device=conf.device)
            .index_add_(0, flat, conf.double())
            .view(4, num_bins)
        )
        self.bin_correct += (
            torch.zeros(4 * num_bins, dtype=torch.long, device=conf.device)
            .index_add_(0, flat, (pred == target).long())
            .view(4, num_bins)
        )
        nll = -log_probs.gather(1, target[:, None]).squeeze(1)
        self.nll_sum.index_add_(0, target, nll.double())
        self.count.index_add_(0, target, torch.ones_like(target))
        self.confusion.view(-1).index_add_(0, target * self.num_classes + pred, torch.ones_like(target))

    def compute(self) -> dict[str, Tensor]:
        """The calibration results (float32 unless stated).

        * ``ece``, ``nll`` (0-d): over all images; ``ece_g``, ``nll_g`` for ``g`` in many/medium/few over the images
          whose true class is in group ``g`` (NaN when it has none, or the training counts are unknown);
        * ``reliability_acc``, ``reliability_conf`` ``[B]``: accuracy and mean confidence of each bin (NaN for an
          empty bin); ``reliability_count`` ``[B]`` (long);
        * ``nll_per_class`` ``[C]`` (NaN for a class without test images); ``confusion_matrix`` ``[C, C]`` (long).
        """
        count, conf, correct = self.bin_count.double(), self.bin_conf, self.bin_correct.double()
        class_count = self.count.double()
        out: dict[str, Tensor] = {
            "ece": expected_calibration_error(count.sum(0), conf.sum(0), correct.sum(0)),
            "nll": self.nll_sum.sum() / class_count.sum(),
        }
        for index, name in enumerate(_GROUPS):
            out[f"ece_{name}"] = expected_calibration_error(count[index], conf[index], correct[index])
        for index, name in enumerate(_GROUPS):
            mask = self.group_of_class == index
            out[f"nll_{name}"] = self.nll_sum[mask].sum() / class_count[mask].sum()
        bins = count.sum(0)
        out["reliability_acc"] = correct.sum(0) / bins  # 0/0 = NaN for an empty bin
        out["reliability_conf"] = conf.sum(0) / bins
        out["nll_per_class"] = self.nll_sum / class_count
        out = {k: v.float() for k, v in out.items()}
        out["reliability_count"] = self.bin_count.sum(0).clone()
        out["confusion_matrix"] = self.confusion.clone()
        return out
