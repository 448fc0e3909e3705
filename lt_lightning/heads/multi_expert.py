"""Multi-expert head: one classifier per expert, the ensemble's logits are the experts' mean.

For the per-expert features ``[E, B, D]`` of a multi-expert backbone
(:class:`~lt_lightning.backbones.multi_expert.MultiExpertResNetCifar`): ``z_e = h_e(f_e)`` for each expert ``e``,
and the prediction of the ensemble is ``z = (1/E) sum_e z_e`` (RIDE and SADE average the experts' logits at
inference; test-time aggregation re-weights them). The output carries ``expert_logits`` ``[E, B, C]`` for the
ensemble losses and the per-expert metrics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lt_lightning._checks import check_int
from lt_lightning.heads.base import ClassifierHead
from lt_lightning.heads.linear import LinearHead
from lt_lightning.output import ModelOutput


class MultiExpertHead(ClassifierHead):
    """``E`` independent heads over per-expert features.

    Args:
        in_features: an expert's feature dimension ``D``.
        num_classes: ``C``.
        num_experts: ``E >= 1`` (must equal the backbone's).
        expert_head: head factory ``expert_head(D, C)`` of one expert (default linear; RIDE and SADE use a cosine
            head with a scale, e.g. ``CosineHead`` with ``scale: 30``).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        num_experts: int = 3,
        expert_head: Callable[[int, int], nn.Module] = LinearHead,
    ) -> None:
        super().__init__()
        check_int("num_experts", num_experts, minimum=1)
        if in_features <= 0 or num_classes <= 0:
            raise ValueError(f"in_features and num_classes must be positive, got {in_features}, {num_classes}")
        self.num_experts = num_experts
        self.num_classes = num_classes
        self.heads = nn.ModuleList(expert_head(in_features, num_classes) for _ in range(num_experts))

    def reset_parameters(self) -> None:
        for head in self.heads:
            head.reset_parameters()

    def forward(self, features: Tensor) -> ModelOutput:
        if features.ndim != 3 or features.shape[0] != self.num_experts:
            raise ValueError(
                f"MultiExpertHead expects per-expert features [E={self.num_experts}, B, D] from a multi-expert "
                f"backbone, got shape {tuple(features.shape)}"
            )
        expert_logits = torch.stack([head(f) for head, f in zip(self.heads, features, strict=True)])
        return ModelOutput(
            logits=expert_logits.mean(dim=0),
            features=features.mean(dim=0),
            expert_logits=expert_logits,
            extras={"expert_features": features},
        )
