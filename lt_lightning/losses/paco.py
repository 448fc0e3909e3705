"""Parametric contrastive learning (PaCo): Cui, Zhong, Liu, Yu, Jia, "Parametric Contrastive Learning", ICCV 2021.

PaCo adds ``C`` learnable class centres -- the classifier's weights, as logits ``c_i = W f_i + b`` -- to a
supervised contrastive loss with a momentum encoder and a queue (MoCo). For a query ``q_i`` (L2-normalised
projection, label ``y_i``), the contrast set ``A(i)`` is the other queries of the batch, the momentum keys of the
batch and the queue, and the class centres enter as ``C`` more "samples" with logits adjusted by the log class prior
(the reference's ``(sup_logits + log(prior)) / supt``):

``s_ic = (c_ic + log pi_c) / supt`` (centres), ``s_ia = q_i . k_a / t`` (samples)

``L_i = - sum_j w+_ij (s_ij - log sum_j' w_ij' exp(s_ij')) / sum_j w+_ij``

with positive weights ``w+ = beta`` on the own class centre and ``alpha`` on every same-class sample, and
denominator weights ``w = 1`` on the centres and ``gamma`` on the samples. ``L`` is the mean over queries; prediction
uses the raw classifier logits ``c``. Degenerate case: ``alpha = gamma = 0`` (``beta > 0``) leaves only the centres,
``L = -log softmax(c + log pi)_y``, i.e. balanced softmax (Ren et al. 2020) at ``supt = 1``.

Reference: dvlab-research/Parametric-Contrastive-Learning, ``LT/losses.py`` (``PaCoLoss``) and ``LT/paco_cifar.py``.
Differences here: both views of an image are queries (the module forwards both views), so a query is not contrasted
with itself nor with its own momentum key (the near-copy of the same augmented view); the reference's single query
view meets only the *other* view's key, which stays a positive here too. Empty queue slots (label ``-1``) are
left out instead of holding random vectors. The reference's factor ``temperature / base_temperature`` is 1 in its
recipes and left out.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lt_lightning._checks import check_float
from lt_lightning.losses._checks import target_distribution
from lt_lightning.losses.logit_adjustment import _LogPriorLoss
from lt_lightning.losses.supcon import hard_labels, projection_of
from lt_lightning.output import ModelOutput

#: ``output.extras`` keys filled by :class:`~lt_lightning.callbacks.momentum_encoder.MomentumEncoder`
MOMENTUM_KEYS = "momentum_keys"
QUEUE_KEYS = "momentum_queue"
QUEUE_LABELS = "momentum_queue_labels"


def _check_weight(name: str, value: float) -> float:
    return float(check_float(name, value, minimum=0))


def paco_loss(
    queries: Tensor,
    labels: Tensor,
    logits: Tensor,
    log_prior: Tensor,
    keys: Tensor | None = None,
    queue: Tensor | None = None,
    queue_labels: Tensor | None = None,
    alpha: float = 0.05,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 0.05,
    supt: float = 1.0,
) -> Tensor:
    """PaCo loss (formula in the module docstring).

    Args:
        queries: ``[N, d]`` L2-normalised projections of the batch (both views).
        labels: ``[N]`` class indices.
        logits: ``[N, C]`` classifier logits (the parametric centres' similarities).
        log_prior: ``[C]`` log class prior ``log pi``.
        keys: ``[N, d]`` momentum-encoder keys of the same images (``keys[i]`` encodes the same view as
            ``queries[i]`` and is left out of query ``i``'s contrast set); ``None``: no keys.
        queue: ``[K, d]`` queued keys; ``None``: no queue.
        queue_labels: ``[K]`` their labels, ``-1`` for empty slots.
        alpha: weight of the sample positives.
        beta: weight of the class-centre positive.
        gamma: weight of the samples in the denominator.
        temperature: ``t`` of the sample similarities.
        supt: temperature of the centre logits.
    """
    if queries.ndim != 2 or logits.ndim != 2 or labels.ndim != 1:
        raise ValueError(
            f"queries must be [N, d], logits [N, C], labels [N]; got {tuple(queries.shape)}, "
            f"{tuple(logits.shape)}, {tuple(labels.shape)}"
        )
    n, num_classes = logits.shape
    if queries.shape[0] != n or labels.shape[0] != n:
        raise ValueError(f"queries {tuple(queries.shape)}, labels {tuple(labels.shape)} and logits {(n, num_classes)}")
    if log_prior.shape != (num_classes,):
        raise ValueError(f"log_prior must be [{num_classes}], got shape {tuple(log_prior.shape)}")
    alpha, beta, gamma = _check_weight("alpha", alpha), _check_weight("beta", beta), _check_weight("gamma", gamma)
    if not (temperature > 0 and supt > 0 and math.isfinite(temperature) and math.isfinite(supt)):
        raise ValueError(f"temperature and supt must be finite numbers > 0, got {temperature}, {supt}")
    device = queries.device
    not_self = ~torch.eye(n, dtype=torch.bool, device=device)
    contrast, contrast_labels, valid = [queries], [labels], [not_self]
    if keys is not None:
        if tuple(keys.shape) != tuple(queries.shape):
            raise ValueError(f"keys must be {tuple(queries.shape)} like the queries, got {tuple(keys.shape)}")
        contrast.append(keys)
        contrast_labels.append(labels)
        valid.append(not_self)
    if queue is not None:
        if queue_labels is None or queue.ndim != 2 or queue.shape[1] != queries.shape[1]:
            raise ValueError(f"queue must be [K, {queries.shape[1]}] with queue_labels [K]")
        if queue_labels.shape != (queue.shape[0],):
            raise ValueError(f"queue_labels must be [{queue.shape[0]}], got shape {tuple(queue_labels.shape)}")
        contrast.append(queue)
        contrast_labels.append(queue_labels)
        valid.append((queue_labels >= 0)[None, :].expand(n, -1))
    contrast_t = torch.cat(contrast).to(queries.dtype)
    contrast_y = torch.cat(contrast_labels)
    valid_t = torch.cat(valid, dim=1).float()

    sample_logits = queries.float() @ contrast_t.float().T / temperature
    centre_logits = (logits.float() + log_prior.to(device, torch.float32)) / supt
    all_logits = torch.cat([centre_logits, sample_logits], dim=1)

    same_class = (labels[:, None] == contrast_y[None, :]).float() * valid_t
    positive_w = torch.cat([beta * target_distribution(labels, num_classes), alpha * same_class], dim=1)
    denominator_w = torch.cat([torch.ones_like(centre_logits), gamma * valid_t], dim=1)

    log_denominator = torch.logsumexp(all_logits + denominator_w.log(), dim=1, keepdim=True)
    log_prob = all_logits - log_denominator
    positive_sum = positive_w.sum(dim=1)
    per_query = -(positive_w * log_prob).sum(dim=1) / positive_sum.clamp(min=torch.finfo(torch.float32).tiny)
    has_positive = (positive_sum > 0).float()
    return (per_query * has_positive).sum() / has_positive.sum().clamp(min=1)


class PaCoLoss(_LogPriorLoss):
    """PaCo on ``output.extras`` (projection, momentum keys, queue) and the logits; class prior from the module.

    Needs :class:`~lt_lightning.heads.projection.ProjectionHead` (``detach_classifier: false``: the centres train the
    representation too) and the :class:`~lt_lightning.callbacks.momentum_encoder.MomentumEncoder` callback.

    Args:
        alpha: weight of the sample positives (reference CIFAR-100-LT, rho = 100: 0.02; ImageNet-LT: 0.05).
        beta: weight of the class-centre positive (1.0).
        gamma: weight of the samples in the denominator (1.0).
        temperature: temperature of the sample similarities (CIFAR: 0.05; ImageNet-LT: 0.2).
        supt: temperature of the centre logits (1.0).
    """

    def __init__(
        self,
        alpha: float = 0.05,
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 0.05,
        supt: float = 1.0,
    ) -> None:
        super().__init__()
        self.alpha = _check_weight("alpha", alpha)
        self.beta = _check_weight("beta", beta)
        self.gamma = _check_weight("gamma", gamma)
        if not (temperature > 0 and supt > 0 and math.isfinite(temperature) and math.isfinite(supt)):
            raise ValueError(f"temperature and supt must be finite numbers > 0, got {temperature}, {supt}")
        self.temperature = float(temperature)
        self.supt = float(supt)

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        owner = type(self).__name__
        labels = hard_labels(target, owner)
        queries = projection_of(output, owner)
        missing = [k for k in (MOMENTUM_KEYS, QUEUE_KEYS, QUEUE_LABELS) if k not in output.extras]
        if missing:
            raise ValueError(
                f"{owner} needs output.extras {missing}: add the callback "
                "lt_lightning.callbacks.momentum_encoder.MomentumEncoder to trainer.callbacks"
            )
        return paco_loss(
            queries,
            labels,
            output.logits,
            self._require_prior(),
            keys=output.extras[MOMENTUM_KEYS],
            queue=output.extras[QUEUE_KEYS],
            queue_labels=output.extras[QUEUE_LABELS],
            alpha=self.alpha,
            beta=self.beta,
            gamma=self.gamma,
            temperature=self.temperature,
            supt=self.supt,
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, temperature={self.temperature}, "
            f"supt={self.supt}"
        )
