"""Post-hoc logit adjustment and the choice of its temperature τ on a validation set.

Aditya Krishna Menon, Sadeep Jayasumana, Ankit Singh Rawat, Himanshu Jain, Andreas Veit, Sanjiv Kumar, "Long-tail
learning via logit adjustment", ICLR 2021, Eq. (9): a model trained with plain cross-entropy on long-tailed data
predicts ``argmax_y z_y - τ log π_y``, with ``π`` the training class prior. ``τ = 1`` is the Bayes-optimal
correction for the balanced error when the softmax is calibrated; in practice ``τ`` is tuned.

**Tune τ on the validation set only, never on the test set.** :func:`tau_sweep` takes whatever logits and targets it
is given and cannot tell the two apart: the caller must pass validation predictions, pick ``best_tau`` there, and
then apply :func:`adjust_logits` with that ``τ`` to the test predictions once.

Everything here is a pure function of tensors (no module, no trainer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lt_lightning.losses.logit_adjustment import log_prior_from_counts
from lt_lightning.metrics.long_tail_accuracy import (
    DEFAULT_FEW_THRESHOLD,
    DEFAULT_MANY_THRESHOLD,
    long_tail_accuracy_compute,
    long_tail_accuracy_update,
    shot_group_masks,
)

#: τ grid of :func:`tau_sweep` when none is given: 0, 0.1, ..., 2.0.
DEFAULT_TAUS: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(21))


def _check_tau(tau: float) -> float:
    if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not math.isfinite(tau) or tau < 0:
        raise ValueError(f"tau must be a finite number >= 0, got {tau!r}")
    return float(tau)


def adjust_logits(logits: Tensor, class_counts: Sequence[int] | Tensor, tau: float = 1.0) -> Tensor:
    """Post-hoc logit adjustment ``z - τ log π`` with ``π_c = n_c / Σ_k n_k`` (Menon et al., ICLR 2021, Eq. 9).

    Args:
        logits: ``[N, C]`` scores of a model trained on the long-tailed distribution.
        class_counts: ``[C]`` training counts ``n_c`` (all positive).
        tau: ``τ >= 0``; 0 returns the logits unchanged.

    Returns:
        ``[N, C]`` adjusted logits (float32 or wider, on the logits' device).
    """
    tau = _check_tau(tau)
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, C], got shape {tuple(logits.shape)}")
    counts = torch.as_tensor(class_counts)
    if counts.ndim != 1 or counts.shape[0] != logits.shape[1]:
        raise ValueError(
            f"class_counts must have one entry per logit column ({logits.shape[1]}), got shape {tuple(counts.shape)}"
        )
    log_prior = log_prior_from_counts(counts).to(logits.device)
    return logits - tau * log_prior


@dataclass(frozen=True)
class TauSweepResult:
    """Accuracy of post-hoc logit adjustment for each ``τ`` of a sweep (the curve), and the chosen ``τ``.

    Attributes:
        taus: ``[T]`` the ``τ`` values, in the order given.
        acc: ``[T]`` top-1 accuracy over all samples.
        acc_balanced: ``[T]`` mean per-class accuracy over the classes present in the targets (the criterion).
        acc_many: ``[T]`` many-shot accuracy (NaN if no many-shot class is present); likewise ``acc_medium``,
            ``acc_few``, with groups from the training counts.
        best_tau: the ``τ`` with the highest balanced accuracy; ties go to the smallest such ``τ`` (the mildest
            adjustment).
        best_acc_balanced: the balanced accuracy at ``best_tau``.
    """

    taus: Tensor
    acc: Tensor
    acc_balanced: Tensor
    acc_many: Tensor
    acc_medium: Tensor
    acc_few: Tensor
    best_tau: float
    best_acc_balanced: float

    def as_rows(self) -> list[dict[str, float]]:
        """The curve as a list of ``{"tau", "acc", "acc_balanced", "acc_many", "acc_medium", "acc_few"}`` rows."""
        keys = ("acc", "acc_balanced", "acc_many", "acc_medium", "acc_few")
        return [{"tau": float(tau), **{k: float(getattr(self, k)[i]) for k in keys}} for i, tau in enumerate(self.taus)]


def tau_sweep(
    logits: Tensor,
    targets: Tensor,
    class_counts: Sequence[int] | Tensor,
    taus: Sequence[float] | Tensor = DEFAULT_TAUS,
    many_threshold: int = DEFAULT_MANY_THRESHOLD,
    few_threshold: int = DEFAULT_FEW_THRESHOLD,
) -> TauSweepResult:
    """Evaluate :func:`adjust_logits` for every ``τ`` and pick the one with the best balanced accuracy.

    For VALIDATION predictions only (see the module docstring): choosing ``τ`` on the test set reports an
    optimistically biased test accuracy.

    Args:
        logits: ``[N, C]`` validation logits of the model (trained on the long-tailed training set).
        targets: ``[N]`` validation class indices.
        class_counts: ``[C]`` *training* counts ``n_c`` that define ``π`` and the many/medium/few groups.
        taus: the ``τ`` grid (each ``>= 0``, at least one); default :data:`DEFAULT_TAUS`.
        many_threshold: classes with more training samples are many-shot.
        few_threshold: classes with fewer training samples are few-shot.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, C], got shape {tuple(logits.shape)}")
    num_classes = logits.shape[1]
    if targets.ndim != 1 or targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"targets must be [N] integer class indices, got shape {tuple(targets.shape)}")
    if targets.shape[0] != logits.shape[0]:
        raise ValueError(f"logits have {logits.shape[0]} rows but targets has {targets.shape[0]} entries")
    if targets.numel() == 0:
        raise ValueError("tau_sweep needs at least one sample")
    if targets.device.type == "cpu" and ((targets < 0) | (targets >= num_classes)).any():
        raise ValueError(f"targets must lie in [0, {num_classes})")
    tau_values = [_check_tau(float(t)) for t in torch.as_tensor(taus, dtype=torch.float64).flatten().tolist()]
    if not tau_values:
        raise ValueError("taus must contain at least one value")
    counts = torch.as_tensor(class_counts)
    if counts.ndim != 1 or counts.shape[0] != num_classes:
        raise ValueError(
            f"class_counts must have one entry per logit column ({num_classes}), got shape {tuple(counts.shape)}"
        )
    groups = shot_group_masks(counts.to(logits.device), many_threshold, few_threshold)
    log_prior = log_prior_from_counts(counts).to(logits.device)
    curve: dict[str, list[Tensor]] = {k: [] for k in ("acc", "acc_balanced", "acc_many", "acc_medium", "acc_few")}
    for tau in tau_values:
        correct, total = long_tail_accuracy_update(logits - tau * log_prior, targets, num_classes)
        result = long_tail_accuracy_compute(correct, total, groups)
        for key, values in curve.items():
            values.append(result[key])
    out = {k: torch.stack(v).cpu() for k, v in curve.items()}
    taus_t = torch.tensor(tau_values, dtype=torch.float64)
    balanced = out["acc_balanced"]
    best = taus_t[balanced == balanced.max()].min()
    best_index = int((taus_t == best).nonzero()[0])
    return TauSweepResult(
        taus=taus_t,
        acc=out["acc"],
        acc_balanced=balanced,
        acc_many=out["acc_many"],
        acc_medium=out["acc_medium"],
        acc_few=out["acc_few"],
        best_tau=float(best),
        best_acc_balanced=float(balanced[best_index]),
    )
