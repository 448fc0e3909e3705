"""Learnable weight scaling (LWS): ``z_c = f_c · (w_c^T x + b_c)`` with one learned scale ``f_c`` per class.

Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020, Sec. 4.2: after
joint training, the backbone and the linear classifier are frozen and only the scales ``f`` (initialised to 1) are
learned, with class-balanced sampling. The reference (facebookresearch/classifier-balancing) multiplies the whole
logit, bias included, by the scale; so does this head. With every ``f_c = 1`` it is exactly the wrapped head.

The stage itself (freezing, sampler, optimizer) is run by
:class:`~lt_lightning.callbacks.classifier_retraining.ClassifierRetraining` with ``method: lws``; the head is the
structure that stage trains and that checkpoints keep (``classifier.base.*`` and ``classifier.scales``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lt_lightning.heads.base import ClassifierHead
from lt_lightning.heads.linear import LinearHead


class LWSHead(ClassifierHead):
    """A head whose logits are multiplied by a learned per-class scale.

    Args:
        in_features: feature dimension ``D``.
        num_classes: number of classes ``C``.
        base: head factory ``base(D, C)`` whose logits are scaled (default :class:`LinearHead`).

    Attributes:
        base: the wrapped head (frozen during the LWS stage).
        scales: ``[C]`` learned scales ``f``, initialised to 1.
        active: when ``False`` the scales are skipped (the logits are ``base``'s and no gradient reaches
            ``scales``); the retraining callback keeps it ``False`` before its stage so the scales take no part in
            stage 1 (under DDP they are then unused parameters, not trained ones).
    """

    def __init__(self, in_features: int, num_classes: int, base: Callable[[int, int], nn.Module] = LinearHead) -> None:
        super().__init__()
        if in_features <= 0 or num_classes <= 0:
            raise ValueError(f"in_features and num_classes must be positive, got {in_features}, {num_classes}")
        self.base = base(in_features, num_classes)
        self.num_classes = num_classes
        self.scales = nn.Parameter(torch.ones(num_classes))
        self.active = True

    @classmethod
    def wrap(cls, head: nn.Module, num_classes: int) -> LWSHead:
        """An :class:`LWSHead` around an existing (trained) ``head``, scales 1, on ``head``'s device."""
        wrapper = cls(1, num_classes, base=lambda _d, _c: head)
        reference = next(head.parameters(), None)
        if reference is not None:
            wrapper.scales.data = wrapper.scales.data.to(reference.device)
        return wrapper

    def forward(self, features: Tensor) -> Tensor:
        logits = self.base(features)
        if not isinstance(logits, Tensor):
            raise TypeError(f"LWSHead scales a head that returns a logits tensor; {type(self.base).__name__} does not")
        return logits * self.scales if self.active else logits

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, active={self.active}"
