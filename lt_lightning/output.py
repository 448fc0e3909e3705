"""The one structure a forward pass returns.

Every head returns logits; multi-expert heads (RIDE, SADE, BBN) also fill ``expert_logits``. Losses,
metrics and callbacks read this structure, never a bare tuple, so new fields can be added without
breaking the parts that do not use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class ModelOutput:
    """Output of :class:`lt_lightning.module.LongTailModule.forward`.

    Attributes:
        logits: ``[B, C]`` class scores used for prediction (the ensemble's, for multi-expert heads).
        features: ``[B, D]`` backbone features that produced ``logits``.
        expert_logits: optional ``[E, B, C]`` per-expert logits of a multi-expert head.
        extras: free-form tensors a head or backbone wants to hand to its loss (e.g. projections).
    """

    logits: Tensor
    features: Tensor
    expert_logits: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    @property
    def num_experts(self) -> int:
        """Number of experts (1 for a single head)."""
        return 1 if self.expert_logits is None else int(self.expert_logits.shape[0])

    def detach(self) -> ModelOutput:
        """A copy whose tensors are detached from the graph."""
        return ModelOutput(
            logits=self.logits.detach(),
            features=self.features.detach(),
            expert_logits=None if self.expert_logits is None else self.expert_logits.detach(),
            extras={k: v.detach() for k, v in self.extras.items()},
        )


def as_output(head_result: Tensor | ModelOutput, features: Tensor) -> ModelOutput:
    """Normalise what a head returned (a logits tensor or a full :class:`ModelOutput`)."""
    if isinstance(head_result, ModelOutput):
        return head_result
    if not isinstance(head_result, torch.Tensor):
        raise TypeError(f"classifier must return a Tensor or ModelOutput, got {type(head_result).__name__}")
    return ModelOutput(logits=head_result, features=features)
