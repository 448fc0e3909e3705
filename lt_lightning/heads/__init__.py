"""Classifier heads. Each is built as ``Head(in_features, num_classes, **init_args)``."""

from lt_lightning.heads.linear import LinearHead

__all__ = ["LinearHead"]
