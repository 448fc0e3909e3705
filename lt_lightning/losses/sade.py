"""SADE's skill-diverse expert loss (TADE): one loss per expert, each simulating another test class distribution.

Yifan Zhang, Bryan Hooi, Lanqing Hong, Jiashi Feng, "Self-Supervised Aggregation of Diverse Experts for
Test-Agnostic Long-Tailed Recognition", NeurIPS 2022, Sec. 4.1 (code: Vanint/SADE-AgnosticLT, ``model/loss.py``
``DiverseExpertLoss``). Three experts share a backbone; with the training prior ``π`` and expert logits
``v_1, v_2, v_3``:

* expert 1, **forward** (long-tailed test distribution): softmax cross-entropy ``-log softmax(v_1)_y``;
* expert 2, **uniform** (balanced test distribution): balanced softmax ``-log softmax(v_2 + log π)_y``;
* expert 3, **backward** (inversely long-tailed test distribution): ``-log softmax(v_3 + log π - λ log π̄)_y``.

``π̄`` is the *inverse* prior of the reference code: the class values of ``π`` re-assigned in reversed rank order --
the class with the ``k``-th smallest ``π_c`` gets the ``k``-th largest value (:func:`inverse_prior`). For a
long-tailed prior sorted from head to tail, ``π̄`` is ``π`` reversed. The total loss is the **sum** of the three
terms (as in the reference), and the prediction is the experts' mean logits (or test-time aggregated ones, see
:class:`~lt_lightning.callbacks.expert_aggregation.TestTimeAggregation`). With ``λ = 0`` the backward expert's loss
is balanced softmax. The reference's default and its CIFAR configs use ``λ = 2`` (``"tau": 2``).

The reference adds ``1e-9`` inside its logarithms; here ``log π`` comes from
:func:`~lt_lightning.losses.logit_adjustment.log_prior_from_counts`, which refuses a class with zero training images.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lt_lightning._checks import check_float
from lt_lightning.losses.logit_adjustment import _LogPriorLoss, balanced_softmax_loss, check_logits
from lt_lightning.output import ModelOutput

#: SADE's three experts, in the order of ``expert_logits``
SADE_EXPERTS: tuple[str, ...] = ("forward", "uniform", "backward")


def inverse_prior(prior: Tensor) -> Tensor:
    """``π̄``: the values of ``prior`` re-assigned in reversed rank order (SADE's ``inverse_prior``).

    The class with the ``k``-th smallest value gets the ``k``-th largest one. Ranks come from a stable sort, so tied
    classes keep their index order (the reference's ``torch.sort`` leaves ties to the implementation). Because the
    map only permutes values, it commutes with any increasing function: ``inverse_prior(log π) = log inverse_prior(π)``.

    Args:
        prior: ``[C]`` values (a prior, counts or a log-prior).
    """
    if prior.ndim != 1:
        raise ValueError(f"prior must be a [C] vector, got shape {tuple(prior.shape)}")
    values, order = torch.sort(prior, stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel(), device=order.device)
    return values[order.numel() - 1 - ranks]


def _check_lam(lam: float) -> float:
    return float(check_float("lam", lam, minimum=0, what="a finite number >= 0 (λ of the backward expert)"))


def check_expert_logits(expert_logits: Tensor | None, num_experts: int = len(SADE_EXPERTS)) -> Tensor:
    """Return ``expert_logits`` if it is ``[num_experts, B, C]``; ``ValueError`` naming the problem otherwise."""
    if expert_logits is None:
        raise ValueError(
            f"SADE's loss needs per-expert logits (ModelOutput.expert_logits [{num_experts}, B, C]) from a "
            "multi-expert head such as lt_lightning.heads.multi_expert.MultiExpertHead; the output has none"
        )
    if expert_logits.ndim != 3:
        raise ValueError(f"expert_logits must be [E, B, C], got shape {tuple(expert_logits.shape)}")
    if expert_logits.shape[0] != num_experts:
        raise ValueError(
            f"SADE trains exactly {num_experts} experts ({', '.join(SADE_EXPERTS)}), got expert_logits with "
            f"{expert_logits.shape[0]} experts (shape {tuple(expert_logits.shape)}): set num_experts: "
            f"{num_experts} in the backbone and the head"
        )
    return expert_logits


def sade_expert_losses(expert_logits: Tensor, target: Tensor, log_prior: Tensor, lam: float = 2.0) -> Tensor:
    """The three expert losses ``[L_forward, L_uniform, L_backward]`` (each a batch mean) as a ``[3]`` tensor.

    Args:
        expert_logits: ``[3, B, C]`` logits of the forward, uniform and backward experts.
        target: ``[B]`` class indices or ``[B, C]`` soft targets.
        log_prior: ``[C]`` training log-prior ``log π``.
        lam: ``λ >= 0`` of the backward expert.
    """
    expert_logits = check_expert_logits(expert_logits)
    lam = _check_lam(lam)
    for logits in expert_logits:
        check_logits(logits, log_prior)
    log_prior = log_prior.to(expert_logits.device)
    forward = torch.nn.functional.cross_entropy(expert_logits[0], target)
    uniform = balanced_softmax_loss(expert_logits[1], target, log_prior)
    backward = balanced_softmax_loss(expert_logits[2] - lam * inverse_prior(log_prior), target, log_prior)
    return torch.stack([forward, uniform, backward])


def diverse_expert_loss(expert_logits: Tensor, target: Tensor, log_prior: Tensor, lam: float = 2.0) -> Tensor:
    """SADE's loss: the sum of :func:`sade_expert_losses` (Zhang et al., NeurIPS 2022)."""
    return sade_expert_losses(expert_logits, target, log_prior, lam).sum()


class DiverseExpertLoss(_LogPriorLoss):
    """SADE / TADE's diverse expert loss over ``output.expert_logits`` ``[3, B, C]`` (see the module docstring).

    Needs a three-expert model: :class:`~lt_lightning.backbones.multi_expert.MultiExpertResNetCifar` with
    ``num_experts: 3`` and :class:`~lt_lightning.heads.multi_expert.MultiExpertHead` (SADE: cosine heads, scale 30).
    The training prior comes from the module (:class:`~lt_lightning.prior.ClassPriorAware`).

    Args:
        lam: ``λ >= 0`` of the backward expert's inverse-prior adjustment; 2 in the reference (``tau`` there).
    """

    def __init__(self, lam: float = 2.0) -> None:
        super().__init__()
        self.lam = _check_lam(lam)

    def expert_losses(self, output: ModelOutput, target: Tensor) -> Tensor:
        """``[L_forward, L_uniform, L_backward]`` of a batch."""
        return sade_expert_losses(output.expert_logits, target, self._require_prior(), self.lam)

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        return self.expert_losses(output, target).sum()

    def extra_repr(self) -> str:
        return f"lam={self.lam}"


__all__ = [
    "SADE_EXPERTS",
    "DiverseExpertLoss",
    "check_expert_logits",
    "diverse_expert_loss",
    "inverse_prior",
    "sade_expert_losses",
]
