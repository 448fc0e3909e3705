"""Criteria: each a pure function plus a thin ``nn.Module`` reading a :class:`ModelOutput`."""

from lt_lightning.losses.base import LongTailLoss
from lt_lightning.losses.cross_entropy import CrossEntropyLoss, cross_entropy

__all__ = ["CrossEntropyLoss", "LongTailLoss", "cross_entropy"]
