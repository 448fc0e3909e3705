"""Probabilistic contrastive learning (ProCo): Du, Wang, Song, Huang, "Probabilistic Contrastive Learning for
Long-Tailed Visual Recognition", TPAMI 2024.

ProCo models the L2-normalised projections ``z`` of each class ``c`` as a von Mises-Fisher distribution
``vMF(mu_c, kappa_c)`` on the unit sphere of ``R^p``, estimated online from the training batches, and replaces the
sampled contrastive pairs by their expectation over infinitely many samples of every class, which has a closed form.
For a query ``z_i`` (label ``y_i``) and temperature ``t``:

``s_ic = log C_p(kappa_c) - log C_p(kappa~_ic)``, ``kappa~_ic = ||kappa_c mu_c + z_i / t||``

with ``C_p(kappa) = kappa^(p/2-1) / ((2 pi)^(p/2) I_(p/2-1)(kappa))`` (:mod:`lt_lightning.losses.vmf`), and the
contrastive term is the logit-adjusted cross-entropy on these logits, ``-log softmax(s_i + tau log pi)_(y_i)``. The
loss adds it to the logit-adjusted cross-entropy (Menon et al., ICLR 2021) of the classifier's logits ``l``:

``L = LA(l, y) + alpha * mean over views v of LA(s^(v), y)``, ``LA(x, y) = -log softmax(x + tau log pi)_y``.

Prediction uses the raw classifier logits ``l``. Degenerate case: ``alpha = 0`` is the logit-adjusted loss
(:func:`~lt_lightning.losses.logit_adjustment.logit_adjusted_loss`), and balanced softmax at ``tau = 1``.

**The estimator** (the authors' ``EstimatorCV``). Per class, the running mean ``m_c`` of the detached projections and
their count ``N_c``: a batch with ``n_c`` samples of mean ``b_c`` gives ``m_c <- (1 - w) m_c + w b_c``,
``w = n_c / (N_c + n_c)``, ``N_c <- N_c + n_c``; ``mu_c = m_c / ||m_c||`` and ``kappa_c = p R / (1 - R^2)``,
``R = ||m_c||`` (:func:`~lt_lightning.losses.vmf.vmf_concentration`). Two estimators run side by side: one restarted
at every epoch, and the one the loss uses, which at the start of each epoch takes over the restarted one's state
(the last epoch's statistics) and then keeps accumulating (``ProCoLoss._hook_before_epoch``). A fresh estimator has
``m_c = 0.9 u_c`` for random unit vectors ``u_c`` (``kappa_c = 90 p / 19``) and ``N_c = 0``, so a class's first batch
replaces it. Each view of the batch updates the statistics and is then contrasted with them, in view order (the
reference's two calls per step). Under DDP the per-class sums and counts are summed over processes (one
``all_reduce`` per step), so every rank holds the statistics of the global batch -- the reference all-gathers the
features, which gives the same sums.

State: the four statistics are buffers of this loss (saved in the module's checkpoint; created at the first training
step, when the projection size is known), and so is the epoch they belong to (``statistics_epoch``), so a run
resumed from any checkpoint continues exactly. :class:`~lt_lightning.module.LongTailModule` calls
:meth:`ProCoLoss.set_epoch` before every training batch; standalone, call it at the start of each epoch. In SAM's
second pass (at ``w + e``) the statistics are not updated again.

Reference: LeapLabTHU/ProCo ``ProCo_cifar/loss/proco.py`` (``EstimatorCV``, ``LogRatioC``, ``ProCoLoss``),
``ProCo_cifar/main.py`` (``train``: ``loss = ce_loss + alpha * scl_loss``, ``LogitAdjust`` for both terms) and
``sh/ProCo_CIFAR.sh``. Differences here: the reference computes the classifier's loss on a third view with
AutoAugment + Cutout and contrasts two SimCLR views; here the classifier's loss covers every view of the batch
(``data.views: 2``). ``log I_nu`` comes from Debye's expansion instead of their Miller recurrence (equal where the
recurrence has converged, see :mod:`lt_lightning.losses.vmf`). The random initial directions come from a generator
seeded with ``init_seed`` (the reference draws them from the global RNG at every restart); they matter only for a
class not seen since the estimator started.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from lt_lightning._checks import check_bool, check_float, check_int
from lt_lightning.losses.logit_adjustment import _check_tau, _LogPriorLoss, logit_adjusted_loss
from lt_lightning.losses.supcon import hard_labels, projection_of
from lt_lightning.losses.vmf import log_vmf_partition, vmf_concentration
from lt_lightning.output import ModelOutput
from lt_lightning.sam import in_perturbed_pass

#: the mean resultant length of a fresh estimator's random directions (the authors' ``* 0.9``)
INITIAL_RESULTANT = 0.9

_STATE = ("mean", "count", "epoch_mean", "epoch_count")


def proco_logits(queries: Tensor, mean_direction: Tensor, concentration: Tensor, temperature: float) -> Tensor:
    """``[N, C]`` closed-form contrastive logits ``log C_p(kappa_c) - log C_p(||kappa_c mu_c + z_i / t||)``.

    Args:
        queries: ``[N, p]`` projections ``z`` (L2-normalised).
        mean_direction: ``[C, p]`` class mean directions ``mu`` (normalised here).
        concentration: ``[C]`` concentrations ``kappa > 0``.
        temperature: ``t > 0``.
    """
    if queries.ndim != 2 or mean_direction.ndim != 2 or queries.shape[1] != mean_direction.shape[1]:
        raise ValueError(
            f"queries must be [N, p] and mean_direction [C, p]; got {tuple(queries.shape)}, "
            f"{tuple(mean_direction.shape)}"
        )
    if concentration.shape != mean_direction.shape[:1]:
        raise ValueError(f"concentration must be [{mean_direction.shape[0]}], got {tuple(concentration.shape)}")
    temperature = check_float("temperature", temperature, minimum=0, exclusive_minimum=True)
    dim = queries.shape[1]
    mu = F.normalize(mean_direction.float(), dim=1)
    kappa = concentration.float()
    z = queries.float()
    # ||kappa mu + z / t||^2 = kappa^2 + 2 kappa (mu . z) / t + ||z||^2 / t^2
    squared = kappa[None, :] ** 2 + 2.0 * kappa[None, :] * (z @ mu.T) / temperature
    squared = squared + (z * z).sum(dim=1, keepdim=True) / temperature**2
    kappa_tilde = squared.clamp(min=1e-12).sqrt()
    return log_vmf_partition(kappa_tilde, dim) - log_vmf_partition(kappa.detach(), dim)[None, :]


def update_vmf_statistics(
    mean: Tensor, count: Tensor, feature_sum: Tensor, batch_count: Tensor
) -> tuple[Tensor, Tensor]:
    """One estimator step: ``m_c <- (1 - w_c) m_c + w_c (S_c / n_c)``, ``w_c = n_c / (N_c + n_c)``, ``N_c += n_c``.

    Classes with ``n_c = 0`` keep their mean. Args: ``mean [C, p]``, ``count [C]`` (``N``), ``feature_sum [C, p]``
    (``S``, the batch's per-class sums) and ``batch_count [C]`` (``n``). Returns the new ``(mean, count)``.
    """
    new_count = count + batch_count
    weight = torch.where(new_count > 0, batch_count / new_count.clamp(min=1e-12), torch.zeros_like(new_count))
    batch_mean = feature_sum / batch_count.clamp(min=1)[:, None]
    return mean * (1.0 - weight[:, None]) + batch_mean * weight[:, None], new_count


def proco_loss(
    logits: Tensor,
    contrast_logits: list[Tensor],
    labels: Tensor,
    log_prior: Tensor,
    alpha: float = 1.0,
    tau: float = 1.0,
) -> Tensor:
    """``LA(logits, y) + alpha * mean_v LA(contrast_logits[v], y_v)`` (formula in the module docstring).

    Args:
        logits: ``[N, C]`` classifier logits of every view.
        contrast_logits: per view ``[B, C]`` ProCo logits (:func:`proco_logits`).
        labels: ``[N]`` labels of ``logits``, view-major: the labels of ``contrast_logits[v]`` are its ``v``-th of
            ``len(contrast_logits)`` chunks.
        log_prior: ``[C]`` log class prior.
        alpha: weight ``>= 0`` of the contrastive term.
        tau: logit-adjustment temperature ``>= 0`` of both terms.
    """
    alpha = check_float("alpha", alpha, minimum=0)
    loss = logit_adjusted_loss(logits, labels, log_prior, tau)
    if alpha == 0 or not contrast_logits:
        return loss
    chunks = labels.chunk(len(contrast_logits))
    contrast = [logit_adjusted_loss(s, y, log_prior, tau) for s, y in zip(contrast_logits, chunks, strict=True)]
    return loss + alpha * torch.stack(contrast).mean()


class ProCoLoss(_LogPriorLoss):
    """ProCo: logit-adjusted CE on the logits + ``alpha`` x the closed-form vMF contrastive loss on the projection.

    Needs :class:`~lt_lightning.heads.projection.ProjectionHead` (``detach_classifier: false``) and a batch of
    ``views`` views per image, view-major (``data.views``). The per-class vMF statistics are buffers; see the module
    docstring.

    Args:
        alpha: weight of the contrastive term (reference: 1.0).
        temperature: ``t`` of the projections (reference ``--temp``: 0.1).
        tau: logit-adjustment temperature of both terms (reference ``LogitAdjust``: 1.0).
        views: views per image in a training batch (the datamodule's ``views``).
        sync_statistics: under ``torch.distributed`` with several processes, sum the per-class statistics over them
            (the reference gathers every process's features).
        init_seed: seed of the random initial mean directions.
    """

    mean: Tensor
    count: Tensor
    epoch_mean: Tensor
    epoch_count: Tensor

    def __init__(
        self,
        alpha: float = 1.0,
        temperature: float = 0.1,
        tau: float = 1.0,
        views: int = 2,
        sync_statistics: bool = True,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        self.alpha = check_float("alpha", alpha, minimum=0)
        self.temperature = check_float("temperature", temperature, minimum=0, exclusive_minimum=True)
        self.tau = _check_tau(tau)
        self.views = check_int("views", views, minimum=1)
        self.sync_statistics = check_bool("sync_statistics", sync_statistics)
        self.init_seed = check_int("init_seed", init_seed, minimum=0)
        for name in _STATE:
            self.register_buffer(name, torch.zeros(0))
        # checkpointed as a buffer, mirrored in ``epoch`` (read without a host sync)
        self.register_buffer("statistics_epoch", torch.tensor(-1, dtype=torch.long))
        #: the epoch whose statistics ``epoch_mean`` / ``epoch_count`` hold (``-1``: none set yet)
        self.epoch = -1

    # ------------------------------------------------------------------ state
    def initial_mean(self, num_classes: int, dim: int) -> Tensor:
        """A fresh estimator's means: ``0.9 u_c``, ``u_c`` random unit vectors from ``init_seed`` (``[C, p]``)."""
        generator = torch.Generator().manual_seed(self.init_seed)
        return F.normalize(torch.randn(num_classes, dim, generator=generator), dim=1) * INITIAL_RESULTANT

    def _allocate(self, num_classes: int, dim: int, device: torch.device) -> None:
        if self.mean.shape == (num_classes, dim):
            return
        start = self.initial_mean(num_classes, dim).to(device)
        self.mean, self.epoch_mean = start.clone(), start.clone()
        self.count = torch.zeros(num_classes, device=device)
        self.epoch_count = torch.zeros(num_classes, device=device)

    def set_class_counts(self, class_counts: Tensor) -> None:
        """Store ``log pi``; statistics held for another number of classes are dropped (re-created at the next step).

        The module calls this again on checkpoint load: statistics for the same classes are kept.
        """
        super().set_class_counts(class_counts)
        if self.mean.numel() and self.mean.shape[0] != self.log_prior.shape[0]:
            for name in _STATE:
                setattr(self, name, torch.zeros(0, device=self.log_prior.device))

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: the loss's estimator takes over the last epoch's statistics, which restart.

        Idempotent (called before every training batch by :class:`~lt_lightning.module.LongTailModule`; a run resumed
        in the middle of an epoch finds it already started).
        """
        epoch = check_int("epoch", epoch, minimum=0)
        if epoch == self.epoch:
            return
        if self.mean.numel():
            self.mean, self.count = self.epoch_mean.clone(), self.epoch_count.clone()
            self.epoch_mean = self.initial_mean(*self.mean.shape).to(self.mean.device)
            self.epoch_count = torch.zeros_like(self.count)
        self.epoch = epoch
        self.statistics_epoch.fill_(epoch)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in _STATE:  # created at the first step: take the checkpoint's shapes
            value = state_dict.get(prefix + name)
            if isinstance(value, Tensor) and value.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty(value.shape, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.epoch = int(self.statistics_epoch)

    @torch.no_grad()
    def _batch_statistics(self, views: list[Tensor], labels: list[Tensor]) -> Tensor:
        """``[V, C, p + 1]``: per view the per-class sums of the projections and the counts, summed over processes."""
        num_classes, dim = self.mean.shape
        stats = torch.zeros(len(views), num_classes, dim + 1, device=self.mean.device)
        for v, (z, y) in enumerate(zip(views, labels, strict=True)):
            rows = torch.cat([z.detach().float(), torch.ones_like(z[:, :1], dtype=torch.float32)], dim=1)
            stats[v].index_add_(0, y.long(), rows.to(stats.device))
        if self.sync_statistics and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(stats)
        return stats

    @torch.no_grad()
    def _update(self, stats: Tensor) -> None:
        feature_sum, batch_count = stats[:, :-1], stats[:, -1]
        self.mean, self.count = update_vmf_statistics(self.mean, self.count, feature_sum, batch_count)
        self.epoch_mean, self.epoch_count = update_vmf_statistics(
            self.epoch_mean, self.epoch_count, feature_sum, batch_count
        )

    # ------------------------------------------------------------------ loss
    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        owner = type(self).__name__
        labels = hard_labels(target, owner)
        log_prior = self._require_prior()
        if self.alpha == 0:
            return logit_adjusted_loss(output.logits, labels, log_prior, self.tau)
        z = projection_of(output, owner)
        if z.ndim != 2 or z.shape[0] != labels.shape[0] or z.shape[0] % self.views:
            raise ValueError(
                f"{owner} needs a projection [N, p] with N = len(target) = {labels.shape[0]} a multiple of views="
                f"{self.views}; got {tuple(z.shape)}"
            )
        self._allocate(log_prior.shape[0], z.shape[1], z.device)
        view_z, view_y = list(z.chunk(self.views)), list(labels.chunk(self.views))
        update = self.training and not in_perturbed_pass()
        stats = self._batch_statistics(view_z, view_y) if update else None
        contrast = []
        for v, zv in enumerate(view_z):
            if stats is not None:
                self._update(stats[v])
            contrast.append(proco_logits(zv, self.mean, vmf_concentration(self.mean), self.temperature))
        return proco_loss(output.logits, contrast, labels, log_prior, self.alpha, self.tau)

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, temperature={self.temperature}, tau={self.tau}, views={self.views}, "
            f"sync_statistics={self.sync_statistics}, init_seed={self.init_seed}"
        )


__all__ = ["ProCoLoss", "proco_logits", "proco_loss", "update_vmf_statistics"]
