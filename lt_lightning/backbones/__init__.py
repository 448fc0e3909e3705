"""Backbones: images -> features ``[B, num_features]``, one interface for every architecture."""

from lt_lightning.backbones.base import Backbone
from lt_lightning.backbones.resnet_cifar import ResNet20, ResNet32, ResNet44, ResNet56, ResNet110, ResNetCifar
from lt_lightning.backbones.timm_backbone import TimmBackbone
from lt_lightning.backbones.torchvision_backbone import ResNet50, ResNeXt50, TorchvisionBackbone

__all__ = [
    "Backbone",
    "ResNet20",
    "ResNet32",
    "ResNet44",
    "ResNet56",
    "ResNet110",
    "ResNet50",
    "ResNeXt50",
    "ResNetCifar",
    "TimmBackbone",
    "TorchvisionBackbone",
]
