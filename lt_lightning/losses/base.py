"""Base class of every criterion: ``loss(output: ModelOutput, target) -> scalar``."""

from __future__ import annotations

from torch import Tensor, nn

from lt_lightning.output import ModelOutput


class LongTailLoss(nn.Module):
    """A criterion that reads a :class:`ModelOutput` (logits, features, per-expert logits).

    Targets are class indices ``[B]`` (long) or soft targets ``[B, C]`` (float, rows sum to 1).
    Subclasses that depend on the class prior also inherit :class:`lt_lightning.prior.ClassPriorAware`.
    """

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError
