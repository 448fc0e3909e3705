"""Explicit trust for the checkpoints of modules the tests build in Python.

A :class:`~lt_lightning.module.LongTailModule` built in Python pickles its parts (backbone, head, loss, optimizer
factory) into its checkpoint's hyper-parameters. The package reads checkpoints with ``weights_only=True`` only
(:mod:`lt_lightning.checkpoint_reader`) and refuses those types unless the user allows them with PyTorch's own
``torch.serialization.add_safe_globals`` / ``safe_globals`` -- which is what a test that uses such a checkpoint as an
``init_from`` / teacher / pre-training file does, with :func:`trusting`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from lt_lightning.backbones.bbn import BBNResNetCifar
from lt_lightning.backbones.multi_expert import MultiExpertResNetCifar
from lt_lightning.backbones.resnet_cifar import BasicBlock, ResNetCifar
from lt_lightning.heads.cosine import CosineHead
from lt_lightning.heads.linear import LinearHead
from lt_lightning.heads.multi_expert import MultiExpertHead
from lt_lightning.heads.routed_multi_expert import RoutedMultiExpertHead
from lt_lightning.losses.cross_entropy import CrossEntropyLoss
from lt_lightning.losses.ride import RIDELoss
from lt_lightning.pretext import no_classifier
from tests.helpers import BNBackbone, TinyBackbone

#: the classes the Python-built modules of the tests pickle (``torch.serialization.get_unsafe_globals_in_checkpoint``)
PYTHON_BUILT_TYPES: tuple[Any, ...] = (
    nn.Linear,
    nn.Conv2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.Sequential,
    nn.ModuleList,
    functools.partial,
    torch.optim.SGD,
    LinearHead,
    CosineHead,
    MultiExpertHead,
    RoutedMultiExpertHead,
    CrossEntropyLoss,
    RIDELoss,
    BasicBlock,
    ResNetCifar,
    BBNResNetCifar,
    MultiExpertResNetCifar,
    no_classifier,
    TinyBackbone,
    BNBackbone,
)


@contextlib.contextmanager
def trusting(*extra: Any) -> Iterator[None]:
    """Allow :data:`PYTHON_BUILT_TYPES` and ``extra`` (a test file's own classes) in ``weights_only=True`` loads."""
    with torch.serialization.safe_globals([*PYTHON_BUILT_TYPES, *extra]):
        yield
