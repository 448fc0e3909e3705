"""The single path by which parts learn the class prior.

``LongTailModule`` owns the training class counts as a registered buffer. Every sub-module that
implements :class:`ClassPriorAware` is told the counts once, when the module is built (and again if
the counts are replaced, e.g. by a checkpoint load or a callback). Parts derive what they need
(weights, margins, log-priors) and keep it in their own buffers so it moves with the device and is
saved in checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class ClassPriorAware:
    """Mix-in for losses, heads and adjusters that depend on the training class counts."""

    def set_class_counts(self, class_counts: Tensor) -> None:  # pragma: no cover - interface
        """Receive the ``[C]`` training counts (float tensor on the module's device)."""
        raise NotImplementedError


def validate_class_counts(class_counts: Sequence[int] | Tensor, num_classes: int | None = None) -> Tensor:
    """Return ``class_counts`` as a 1-D float tensor, or raise ``ValueError`` naming the problem."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    if counts.numel() == 0:
        raise ValueError("class_counts is empty")
    if not torch.isfinite(counts).all() or (counts < 0).any():
        raise ValueError(f"class_counts must be finite and non-negative, got {counts.tolist()}")
    if num_classes is not None and counts.numel() != num_classes:
        raise ValueError(f"class_counts has {counts.numel()} entries but num_classes={num_classes}")
    return counts.to(torch.float32)


def broadcast_class_counts(root: nn.Module, class_counts: Tensor) -> None:
    """Call ``set_class_counts`` on every :class:`ClassPriorAware` sub-module of ``root``."""
    for module in root.modules():
        if module is not root and isinstance(module, ClassPriorAware):
            module.set_class_counts(class_counts)
