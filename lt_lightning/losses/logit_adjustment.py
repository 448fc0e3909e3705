"""Logit adjustment during training: balanced softmax and the logit-adjusted loss.

Both train on logits shifted by the (scaled) log class prior ``log π_c = log(n_c / Σ_k n_k)`` and predict with the
raw logits, which then estimate the class-balanced posterior:

* **Balanced softmax** -- Jiawei Ren, Cunjun Yu, Shunan Sheng, Xiao Ma, Haiyu Zhao, Shuai Yi, Hongsheng Li,
  "Balanced Meta-Softmax for Long-Tailed Visual Recognition", NeurIPS 2020:
  ``L = -log softmax(z + log π)_y``. (The paper writes ``log n_c``; it differs from ``log π_c`` by a constant,
  which the softmax ignores.)
* **Logit-adjusted loss** -- Aditya Krishna Menon, Sadeep Jayasumana, Ankit Singh Rawat, Himanshu Jain,
  Andreas Veit, Sanjiv Kumar, "Long-tail learning via logit adjustment", ICLR 2021, Eq. (10):
  ``L = -log softmax(z + τ log π)_y``; ``τ = 1`` is balanced softmax, ``τ = 0`` plain cross-entropy.

Both accept class-index targets ``[B]`` and soft targets ``[B, C]`` (``-Σ_c y_c log softmax(z + τ log π)_c``).

The helper :func:`log_prior_from_counts` is shared by the other logit-adjustment
family members (LADE, equalization, post-hoc adjustment).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lt_lightning.losses.base import LongTailLoss
from lt_lightning.output import ModelOutput
from lt_lightning.prior import ClassPriorAware, validate_class_counts


def log_prior_from_counts(class_counts: Tensor, name: str = "class_counts") -> Tensor:
    """``log π_c = log n_c - log Σ_k n_k`` as a float32 ``[C]`` tensor on the counts' device.

    Raises:
        ValueError: if the counts are not a finite non-negative ``[C]`` vector, or a class has count 0
            (``log 0`` is undefined); the message names the class.
    """
    counts = torch.as_tensor(class_counts)
    device = counts.device
    counts = validate_class_counts(counts).double()
    zero = (counts == 0).nonzero().flatten().tolist()
    if zero:
        raise ValueError(
            f"{name} has a zero count for class(es) {zero}: the log class prior log(n_c / N) is undefined; "
            "every class needs at least one training sample for this loss"
        )
    return (counts.log() - counts.sum().log()).to(device=device, dtype=torch.float32)


def check_logits(logits: Tensor, log_prior: Tensor | None = None) -> None:
    """Raise ``ValueError`` unless ``logits`` is ``[B, C]`` (and ``log_prior``, if given, is ``[C]``)."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be [B, C], got shape {tuple(logits.shape)}")
    if log_prior is not None and (log_prior.ndim != 1 or log_prior.shape[0] != logits.shape[1]):
        raise ValueError(
            f"log_prior must be [C] with C={logits.shape[1]} (the number of logits), got shape {tuple(log_prior.shape)}"
        )


def _check_tau(tau: float) -> float:
    if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not math.isfinite(tau) or tau < 0:
        raise ValueError(f"tau must be a finite number >= 0, got {tau!r}")
    return float(tau)


def logit_adjusted_loss(logits: Tensor, target: Tensor, log_prior: Tensor, tau: float = 1.0) -> Tensor:
    """Mean logit-adjusted cross-entropy ``-1/B Σ_i log softmax(z_i + τ log π)[y_i]`` (Menon et al., ICLR 2021).

    Args:
        logits: ``[B, C]`` scores ``z``.
        target: ``[B]`` class indices or ``[B, C]`` soft targets.
        log_prior: ``[C]`` log class prior ``log π`` (see :func:`log_prior_from_counts`).
        tau: temperature ``τ >= 0`` of the adjustment; 0 gives plain cross-entropy, 1 balanced softmax.
    """
    check_logits(logits, log_prior)
    tau = _check_tau(tau)
    return F.cross_entropy(logits + tau * log_prior.to(logits.device), target)


def balanced_softmax_loss(logits: Tensor, target: Tensor, log_prior: Tensor) -> Tensor:
    """Mean balanced-softmax cross-entropy ``-1/B Σ_i log softmax(z_i + log π)[y_i]`` (Ren et al., NeurIPS 2020)."""
    return logit_adjusted_loss(logits, target, log_prior, tau=1.0)


class _LogPriorLoss(LongTailLoss, ClassPriorAware):
    """Holds ``log π`` in a registered buffer ``log_prior`` filled by :meth:`set_class_counts`."""

    log_prior: Tensor

    def __init__(self) -> None:
        super().__init__()
        # Empty until the module sends the counts; replaced (same name, so it stays a persistent buffer) then.
        self.register_buffer("log_prior", torch.zeros(0))

    def set_class_counts(self, class_counts: Tensor) -> None:
        """Store ``log π`` from the ``[C]`` training counts; a class with count 0 raises ``ValueError``."""
        self.log_prior = log_prior_from_counts(class_counts)

    def _require_prior(self) -> Tensor:
        if self.log_prior.numel() == 0:
            raise ValueError(
                f"{type(self).__name__} has no class prior: call set_class_counts(class_counts) first "
                "(LongTailModule does this when it is built)"
            )
        return self.log_prior


class LogitAdjustedLoss(_LogPriorLoss):
    """Logit-adjusted softmax cross-entropy (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021).

    ``L = -log softmax(z + τ log π)_y`` with ``π`` the training class prior (buffer ``log_prior``). Predict with the
    raw logits ``z``.

    Args:
        tau: ``τ >= 0``; the paper's default (and the CIFAR-LT recipe) is 1.
    """

    def __init__(self, tau: float = 1.0) -> None:
        super().__init__()
        self.tau = _check_tau(tau)

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        return logit_adjusted_loss(output.logits, target, self._require_prior(), self.tau)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


class BalancedSoftmaxLoss(_LogPriorLoss):
    """Balanced softmax (Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition", NeurIPS 2020).

    ``L = -log softmax(z + log π)_y`` with ``π`` the training class prior (buffer ``log_prior``); equal to
    :class:`LogitAdjustedLoss` with ``τ = 1``. Predict with the raw logits ``z``.
    """

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        return balanced_softmax_loss(output.logits, target, self._require_prior())
