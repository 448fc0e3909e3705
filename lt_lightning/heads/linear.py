"""Linear classifier head: ``z = W f + b``."""

from __future__ import annotations

from torch import Tensor, nn


class LinearHead(nn.Module):
    """The plain fully-connected classifier.

    Heads are built by the module as ``head(in_features, num_classes)``; from YAML they are given by
    ``class_path`` with their other arguments in ``init_args``.

    Args:
        in_features: feature dimension ``D`` (the backbone's ``num_features``).
        num_classes: number of classes ``C``.
        bias: learn a bias term.
    """

    def __init__(self, in_features: int, num_classes: int, bias: bool = True) -> None:
        super().__init__()
        if in_features <= 0 or num_classes <= 0:
            raise ValueError(f"in_features and num_classes must be positive, got {in_features}, {num_classes}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.fc = nn.Linear(in_features, num_classes, bias=bias)

    @property
    def weight(self) -> Tensor:
        return self.fc.weight

    def reset_parameters(self) -> None:
        """Re-initialise the weights (cRT's classifier re-initialisation)."""
        self.fc.reset_parameters()

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(features)
