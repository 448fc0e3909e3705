"""The one backbone interface: ``forward(x) -> [B, num_features]`` features."""

from __future__ import annotations

from torch import Tensor, nn


class Backbone(nn.Module):
    """Base class of every backbone.

    Subclasses set ``self.num_features`` (the feature dimension ``D``) in ``__init__`` and implement
    :meth:`forward_features` returning pooled, flattened features ``[B, D]``. ``forward`` is an alias.
    """

    num_features: int

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)
