"""Seesaw loss.

Jiaqi Wang, Wenwei Zhang, Yuhang Zang, Yuhang Cao, Jiangmiao Pang, Tao Gong, Kai Chen, Ziwei Liu, Chen Change Loy,
Dahua Lin, "Seesaw Loss for Long-Tailed Instance Segmentation", CVPR 2021 (classification form as in
open-mmlab's mmdetection / mmpretrain ``SeesawLoss``, implemented here from the formulas below).

For a sample of class ``i`` with logits ``z``:

``L = -log( exp(z_i) / (exp(z_i) + Σ_{j≠i} S_ij exp(z_j)) )``,  ``S_ij = M_ij · C_ij``

* mitigation factor ``M_ij = (N_j / N_i)^p`` if ``N_j < N_i`` else 1, where ``N_c`` is the number of samples of
  class ``c`` seen so far (counts below 1 are raised to 1, as in the reference code): a head-class sample
  discourages a rarer class ``j`` less.
* compensation factor ``C_ij = (σ_j / σ_i)^q`` if ``σ_j > σ_i`` else 1, with ``σ = softmax(z)`` (no gradient) and
  ``σ_i`` raised to at least ``eps``: a rarer class that is wrongly ranked above the target is penalised more.

Equivalently ``L = CE(z + (1 - onehot(i)) ⊙ log S_i, i)``; with ``p = q = 0`` it is plain cross-entropy.

Counts ``N_c`` -- the choice made here: by default (``online_counts=True``) they are accumulated online in the
buffer ``cum_samples`` from the training targets the loss sees, *before* the batch's loss is computed, exactly as
in the paper and its reference code. They therefore count what the sampler delivers (with a class-balanced sampler
all ``N_c`` grow alike and ``M → 1``). Under DDP the per-batch counts are summed across processes
(``sync_counts=True``) so every rank holds the same counts, and a checkpoint (saved by rank 0) restores them
exactly. With ``online_counts=False`` the training-set counts given to :meth:`SeesawLoss.set_class_counts` are used
instead and never change.

Only class-index targets ``[B]``: the factors ``M_ij`` and ``C_ij`` are defined relative to the ground-truth class
``i``, so soft targets (mixup, label smoothing) raise ``ValueError``.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from lt_lightning._checks import check_int
from lt_lightning.losses.base import LongTailLoss
from lt_lightning.losses.logit_adjustment import check_logits
from lt_lightning.output import ModelOutput
from lt_lightning.prior import ClassPriorAware, validate_class_counts


def _check_hard_target(target: Tensor, batch: int) -> None:
    if target.ndim != 1 or target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(
            "seesaw loss needs [B] integer class-index targets: its mitigation and compensation factors are "
            f"defined per ground-truth class, so soft targets are not supported; got shape {tuple(target.shape)} "
            f"and dtype {target.dtype}"
        )
    if target.shape[0] != batch:
        raise ValueError(f"target has {target.shape[0]} entries but logits have {batch} rows")


def _check_non_negative(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def seesaw_log_factors(
    logits: Tensor, target: Tensor, class_counts: Tensor, p: float = 0.8, q: float = 2.0, eps: float = 1e-2
) -> Tensor:
    """``log S_ij = log M_ij + log C_ij`` as ``[B, C]`` (row ``b`` for target ``i = y_b``; 0 at the target column).

    ``log M_ij = p · min(0, log N_j - log N_i)``, ``log C_ij = q · max(0, log σ_j - log max(σ_i, eps))``.
    """
    check_logits(logits)
    batch, num_classes = logits.shape
    _check_hard_target(target, batch)
    if class_counts.ndim != 1 or class_counts.shape[0] != num_classes:
        raise ValueError(f"class_counts must be [C] with C={num_classes}, got shape {tuple(class_counts.shape)}")
    p = _check_non_negative("p", p)
    q = _check_non_negative("q", q)
    if not math.isfinite(eps) or not 0.0 < eps <= 1.0:
        raise ValueError(f"eps must be in (0, 1], got {eps!r}")
    target = target.long()
    log_s = torch.zeros(batch, num_classes, dtype=torch.float32, device=logits.device)
    if p > 0:
        log_n = class_counts.to(device=logits.device, dtype=torch.float32).clamp(min=1.0).log()
        log_s = log_s + p * (log_n.unsqueeze(0) - log_n[target].unsqueeze(1)).clamp(max=0.0)
    if q > 0:
        log_sigma = logits.detach().float().log_softmax(dim=1)
        log_self = log_sigma.gather(1, target.unsqueeze(1)).clamp(min=math.log(eps))
        log_s = log_s + q * (log_sigma - log_self).clamp(min=0.0)
    # The target column is never scaled (S_ii is not part of the formula).
    return log_s.scatter(1, target.unsqueeze(1), 0.0)


def seesaw_loss(
    logits: Tensor, target: Tensor, class_counts: Tensor, p: float = 0.8, q: float = 2.0, eps: float = 1e-2
) -> Tensor:
    """Mean seesaw loss ``-1/B Σ_b log( e^{z_i} / (e^{z_i} + Σ_{j≠i} S_ij e^{z_j}) )``, ``i = y_b`` (Wang et al. 2021).

    Args:
        logits: ``[B, C]`` scores ``z``.
        target: ``[B]`` class indices (soft targets raise ``ValueError``).
        class_counts: ``[C]`` counts ``N_c`` of the mitigation factor (values below 1 count as 1).
        p: mitigation exponent ``p >= 0``.
        q: compensation exponent ``q >= 0``.
        eps: lower bound of ``σ_i`` in the compensation ratio, in ``(0, 1]``.
    """
    log_s = seesaw_log_factors(logits, target, class_counts, p, q, eps)
    return F.cross_entropy(logits.float() + log_s, target.long())


class SeesawLoss(LongTailLoss, ClassPriorAware):
    """Seesaw loss (Wang et al., "Seesaw Loss for Long-Tailed Instance Segmentation", CVPR 2021).

    The counts ``N_c`` live in the float buffer ``cum_samples`` (``[C]``, created by :meth:`set_class_counts` or from
    ``num_classes``); see the module docstring for online accumulation versus training-set counts.

    Args:
        p: mitigation exponent (paper: 0.8).
        q: compensation exponent (paper: 2.0).
        eps: lower bound of the target's probability in the compensation ratio (reference code: 1e-2).
        online_counts: accumulate ``N_c`` from the training targets (paper) instead of using the training-set
            counts.
        sync_counts: with ``online_counts``, sum each batch's counts over processes when ``torch.distributed`` is
            initialised with more than one process.
        num_classes: optional ``C``, to create ``cum_samples`` before :meth:`set_class_counts` is called (standalone
            use); inside :class:`~lt_lightning.module.LongTailModule` it is not needed.
    """

    cum_samples: Tensor

    def __init__(
        self,
        p: float = 0.8,
        q: float = 2.0,
        eps: float = 1e-2,
        online_counts: bool = True,
        sync_counts: bool = True,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.p = _check_non_negative("p", p)
        self.q = _check_non_negative("q", q)
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0.0 < eps <= 1.0:
            raise ValueError(f"eps must be in (0, 1], got {eps!r}")
        self.eps = float(eps)
        self.online_counts = bool(online_counts)
        self.sync_counts = bool(sync_counts)
        check_int("num_classes", num_classes, minimum=1, or_none=True)
        self.register_buffer("cum_samples", torch.zeros(num_classes or 0))

    def set_class_counts(self, class_counts: Tensor) -> None:
        """Learn ``C`` (and, with ``online_counts=False``, the counts themselves).

        Online counts already accumulated for the same number of classes are kept: the module calls this again on
        checkpoint load and when its counts are replaced, which must not erase what the loss has seen.
        """
        counts = torch.as_tensor(class_counts)
        device = counts.device
        counts = validate_class_counts(counts).to(device)
        if not self.online_counts:
            self.cum_samples = counts.clone()
        elif self.cum_samples.shape != counts.shape:
            self.cum_samples = torch.zeros_like(counts)

    @torch.no_grad()
    def _accumulate(self, target: Tensor) -> None:
        batch_counts = torch.zeros_like(self.cum_samples)
        index = target.long().to(batch_counts.device)
        # index_add_ rather than bincount: no host sync on accelerators.
        batch_counts.index_add_(0, index, torch.ones_like(index, dtype=batch_counts.dtype))
        if self.sync_counts and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(batch_counts)
        self.cum_samples.add_(batch_counts)

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        logits = output.logits
        check_logits(logits)
        _check_hard_target(target, logits.shape[0])
        if self.cum_samples.shape[0] != logits.shape[1]:
            raise ValueError(
                f"SeesawLoss holds counts for {self.cum_samples.shape[0]} classes but got {logits.shape[1]} logits: "
                "call set_class_counts(class_counts) first or pass num_classes"
            )
        if self.online_counts and self.training:
            self._accumulate(target)
        return seesaw_loss(logits, target, self.cum_samples, self.p, self.q, self.eps)

    def extra_repr(self) -> str:
        return f"p={self.p}, q={self.q}, eps={self.eps}, online_counts={self.online_counts}"
