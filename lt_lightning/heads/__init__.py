"""Classifier heads, built by the module as ``head(in_features, num_classes)``; each is a
:class:`~lt_lightning.heads.base.ClassifierHead` (the contract the module and the callbacks rely on)."""

from lt_lightning.heads.base import ClassifierHead
from lt_lightning.heads.bbn import BilateralHead
from lt_lightning.heads.causal import CausalHead
from lt_lightning.heads.cosine import CosineHead
from lt_lightning.heads.linear import LinearHead
from lt_lightning.heads.lws import LWSHead
from lt_lightning.heads.multi_expert import MultiExpertHead
from lt_lightning.heads.ncm import NCMHead
from lt_lightning.heads.projection import ProjectionHead
from lt_lightning.heads.routed_multi_expert import RoutedMultiExpertHead
from lt_lightning.heads.tau_norm import TauNormHead

__all__ = [
    "BilateralHead",
    "CausalHead",
    "ClassifierHead",
    "CosineHead",
    "LinearHead",
    "LWSHead",
    "MultiExpertHead",
    "NCMHead",
    "ProjectionHead",
    "RoutedMultiExpertHead",
    "TauNormHead",
]
