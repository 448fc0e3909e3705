"""Classifier heads, built by the module as ``head(in_features, num_classes)``."""

from lt_lightning.heads.cosine import CosineHead
from lt_lightning.heads.linear import LinearHead

__all__ = ["CosineHead", "LinearHead"]
