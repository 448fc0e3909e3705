"""RIDE's expert router ("expert assignment module", dynamic number of experts): functional core and module.

Wang et al., "Long-tailed Recognition by Routing Diverse Distribution-Aware Experts", ICLR 2021, Sec. 3.3 (code:
frank-xwang/RIDE-LongTailRecognition, ``model/ldam_drw_resnets/ea_resnet_cifar.py``). The experts are evaluated in
order; after expert ``i`` (``i = 0 .. E-2``) a small router decides from what has been computed so far whether image
``b`` needs expert ``i + 1``:

    r_i = w^T [ topk_k( z̄_i ), relu( H_i f_i / ||f_i|| ) ] + b,      continue  iff  sigmoid(r_i) > threshold,

with ``z̄_i = (1/(i+1)) sum_{j<=i} z_j`` the running mean of the expert logits, ``topk_k`` its ``k`` largest values
(sorted, descending), ``f_i`` expert ``i``'s pooled features, ``H_i`` a per-decision ``D -> 16`` linear layer and
``(w, b)`` one output layer shared by the decisions. An image stops at its first "no"; its prediction is the mean of
the ``k_b`` experts it used.

Training (second stage, experts frozen): decision ``i`` is a binary classification with target

    t_i = (argmax sum_{j<=i} z_j != y)  and  (argmax sum_{j<=i'} z_j == y for some i' > i),

"the ensemble so far is wrong and adding experts makes it right", trained with ``BCEWithLogits(pos_weight)`` on every
image and every decision (:mod:`lt_lightning.losses.expert_router`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lt_lightning._checks import check_int

__all__ = [
    "ExpertRouter",
    "cumulative_mean_logits",
    "routed_expert_counts",
    "routed_logits",
    "router_targets",
]


def _check_expert_logits(expert_logits: Tensor) -> None:
    if expert_logits.ndim != 3 or expert_logits.shape[0] < 1:
        raise ValueError(f"expert_logits must be [E >= 1, B, C], got shape {tuple(expert_logits.shape)}")


def cumulative_mean_logits(expert_logits: Tensor) -> Tensor:
    """``z̄_i = (1/(i+1)) sum_{j<=i} z_j`` for every ``i``: ``[E, B, C]`` from ``[E, B, C]``."""
    _check_expert_logits(expert_logits)
    steps = torch.arange(1, expert_logits.shape[0] + 1, device=expert_logits.device, dtype=expert_logits.dtype)
    return expert_logits.cumsum(dim=0) / steps.view(-1, 1, 1)


def router_targets(expert_logits: Tensor, target: Tensor) -> Tensor:
    """Router targets ``t_i`` ``[E-1, B]`` (float 0/1): the first ``i+1`` experts are wrong, more experts are right.

    Correctness of the first ``i+1`` experts is ``argmax_c sum_{j<=i} z_jc == y`` (the argmax of the sum equals that
    of the mean); ``t_i = not correct_i and any(correct_{i+1}, ..., correct_{E-1})``.

    Args:
        expert_logits: ``[E, B, C]`` per-expert logits (``E >= 2``).
        target: ``[B]`` class indices.
    """
    _check_expert_logits(expert_logits)
    if expert_logits.shape[0] < 2:
        raise ValueError(f"routing needs at least 2 experts, got {expert_logits.shape[0]}")
    if target.ndim != 1 or target.dtype.is_floating_point or target.shape[0] != expert_logits.shape[1]:
        raise ValueError(
            f"router targets need [B={expert_logits.shape[1]}] class indices, got shape {tuple(target.shape)} "
            f"and dtype {target.dtype} (soft targets are not supported)"
        )
    correct = expert_logits.detach().cumsum(dim=0).argmax(dim=-1) == target.unsqueeze(0)  # [E, B]
    # later[i] = any(correct[i+1:]): a reversed cumulative "or"
    later = correct.flip(0).int().cummax(dim=0).values.flip(0).bool()  # any(correct[i:])
    return (~correct[:-1] & later[1:]).to(expert_logits.dtype)


def routed_expert_counts(router_logits: Tensor, threshold: float = 0.5) -> Tensor:
    """Experts used per image ``k_b`` in ``1..E`` (long ``[B]``) from the decisions' logits ``[E-1, B]``.

    Image ``b`` continues past decision ``i`` while ``sigmoid(r_ib) > threshold`` and stops at its first "no":
    ``k_b = 1 + sum_i prod_{i' <= i} [sigmoid(r_i'b) > threshold]``.
    """
    if router_logits.ndim != 2:
        raise ValueError(f"router_logits must be [E-1, B], got shape {tuple(router_logits.shape)}")
    check_threshold(threshold)
    go_on = torch.sigmoid(router_logits.float()) > threshold
    return 1 + go_on.long().cumprod(dim=0).sum(dim=0)


def routed_logits(expert_logits: Tensor, counts: Tensor) -> Tensor:
    """The prediction of image ``b`` from its first ``k_b`` experts: ``(1/k_b) sum_{j<k_b} z_jb`` (``[B, C]``)."""
    _check_expert_logits(expert_logits)
    num_experts, batch = expert_logits.shape[:2]
    if counts.shape != (batch,):
        raise ValueError(f"counts must be [B={batch}], got shape {tuple(counts.shape)}")
    means = cumulative_mean_logits(expert_logits)  # [E, B, C]
    index = (counts.long().clamp(1, num_experts) - 1).view(1, batch, 1).expand(1, batch, means.shape[2])
    return means.gather(0, index).squeeze(0)


def check_threshold(threshold: float) -> float:
    """``threshold`` if it is a probability in ``(0, 1)``, else ``ValueError``."""
    if not math.isfinite(threshold) or not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be a probability in (0, 1), got {threshold}")
    return float(threshold)


class ExpertRouter(nn.Module):
    """The ``E - 1`` routing decisions of RIDE's expert assignment module.

    Decision ``i`` reads the running mean logits ``z̄_i`` ``[B, C]`` and expert ``i``'s pooled features ``f_i``
    ``[B, D]`` and returns one logit per image (see the module docstring). Weights are drawn as in the reference
    (``kaiming_normal_`` for every linear weight, default biases).

    Args:
        in_features: ``D``, an expert's feature dimension.
        num_classes: ``C``.
        num_experts: ``E >= 2``.
        top_k: ``k`` largest running-mean logits fed to the router, ``1 <= k <= C`` (reference: 5 by default, 30 for
            CIFAR-100).
        hidden_features: width of the per-decision feature layer (reference: 16).
        shared_output: one output layer for all decisions (the reference's ``share_expert_help_pred_fc=True``) or one
            per decision.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        num_experts: int = 3,
        top_k: int = 5,
        hidden_features: int = 16,
        shared_output: bool = True,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("in_features", in_features, 1),
            ("num_classes", num_classes, 1),
            ("num_experts", num_experts, 2),
            ("top_k", top_k, 1),
            ("hidden_features", hidden_features, 1),
        ):
            check_int(name, value, minimum=low)
        if top_k > num_classes:
            raise ValueError(f"top_k={top_k} must not exceed num_classes={num_classes}")
        self.num_experts = num_experts
        self.num_classes = num_classes
        self.top_k = top_k
        self.hidden = nn.ModuleList(nn.Linear(in_features, hidden_features) for _ in range(num_experts - 1))
        outputs = 1 if shared_output else num_experts - 1
        self.output = nn.ModuleList(nn.Linear(hidden_features + top_k, 1) for _ in range(outputs))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's ``_weights_init``: ``kaiming_normal_`` weights; biases as ``nn.Linear`` draws them."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()
                nn.init.kaiming_normal_(module.weight)

    @property
    def num_decisions(self) -> int:
        return self.num_experts - 1

    def decision_logit(self, decision: int, mean_logits: Tensor, features: Tensor) -> Tensor:
        """Logit ``r_i`` ``[B]`` of decision ``i`` ("evaluate expert ``i + 1``?") for ``z̄_i`` ``[B, C]``, ``f_i``."""
        if not 0 <= decision < self.num_decisions:
            raise ValueError(f"decision must be in [0, {self.num_decisions}), got {decision}")
        if mean_logits.ndim != 2 or mean_logits.shape[1] != self.num_classes:
            raise ValueError(f"mean_logits must be [B, {self.num_classes}], got shape {tuple(mean_logits.shape)}")
        hidden = F.relu(self.hidden[decision](F.normalize(features, dim=1)))
        top = mean_logits.topk(self.top_k, dim=1).values
        output = self.output[0] if len(self.output) == 1 else self.output[decision]
        return output(torch.cat([top.to(hidden.dtype), hidden], dim=1)).squeeze(1)

    def forward(self, expert_logits: Tensor, expert_features: Tensor) -> Tensor:
        """All decisions' logits ``[E-1, B]`` from the full ``[E, B, C]`` logits and ``[E, B, D]`` features."""
        _check_expert_logits(expert_logits)
        if expert_logits.shape[0] != self.num_experts or expert_features.shape[0] != self.num_experts:
            raise ValueError(
                f"ExpertRouter has {self.num_experts} experts, got logits for {expert_logits.shape[0]} and features "
                f"for {expert_features.shape[0]}"
            )
        means = cumulative_mean_logits(expert_logits)
        return torch.stack([self.decision_logit(i, means[i], expert_features[i]) for i in range(self.num_decisions)])
