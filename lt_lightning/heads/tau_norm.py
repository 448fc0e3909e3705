"""τ-normalised linear classifier: ``z = f · (w_c / ||w_c||_2^τ) + b_c``.

Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020, Sec. 4
("τ-normalized classifier"): after joint training on long-tailed data the norms of the class vectors ``w_c`` grow
with the class size. Rescaling every row to ``w̃_c = w_c / ||w_c||^τ`` needs no training: ``τ = 1`` makes all
rows unit-norm, ``τ = 0`` leaves the classifier unchanged, and ``τ`` in between (tuned on a validation set) trades
head accuracy for tail accuracy.

The paper's rule rescales the weights only. Here a trained bias ``b`` is kept unchanged by default (``bias=False``
drops it); the authors' script (facebookresearch/classifier-balancing ``tau_norm.py``: ``pnorm(weights, p)``, then
``dotproduct_similarity(feat, ws)``) scores features against the normalised weights with no bias, which
``from_linear(head, tau, keep_bias=False)`` reproduces: ``z = f · w_c / ||w_c||^τ``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lt_lightning._checks import check_float
from lt_lightning.heads.base import ClassifierHead, head_linear_parameters


def _check_tau(tau: float) -> float:
    return float(check_float("tau", tau, minimum=0))


def tau_normalized_weight(weight: Tensor, tau: float) -> Tensor:
    """Row-wise ``w_c / ||w_c||_2^τ`` of a ``[C, D]`` weight (Kang et al., ICLR 2020).

    A row of norm 0 stays 0 (no NaN). ``τ = 0`` returns the weight values unchanged (divided by exactly 1).

    Args:
        weight: ``[C, D]`` class vectors.
        tau: ``τ >= 0``.
    """
    tau = _check_tau(tau)
    if weight.ndim != 2:
        raise ValueError(f"weight must be [C, D], got shape {tuple(weight.shape)}")
    norms = weight.norm(p=2, dim=1, keepdim=True)
    denominator = torch.where(norms > 0, norms.pow(tau), torch.ones_like(norms))
    return weight / denominator


class TauNormHead(ClassifierHead):
    """A linear head whose forward uses the τ-normalised weight: ``z = f · tau_normalized_weight(W, τ)ᵀ + b``.

    The parameters are those of :class:`~lt_lightning.heads.linear.LinearHead` (an ``fc`` ``nn.Linear``), so a
    ``LinearHead`` state dict loads into it: a model trained with the plain head is tested with τ-normalisation by
    giving this head (``classifier: {class_path: lt_lightning.heads.TauNormHead, init_args: {tau: 1.0}}``) and the
    trained checkpoint. ``τ = 0`` gives exactly the plain linear head's logits.

    Args:
        in_features: feature dimension ``D``.
        num_classes: number of classes ``C``.
        tau: ``τ >= 0``.
        bias: add the bias ``b`` (unchanged by the normalisation).
    """

    def __init__(self, in_features: int, num_classes: int, tau: float = 1.0, bias: bool = True) -> None:
        super().__init__()
        if in_features <= 0 or num_classes <= 0:
            raise ValueError(f"in_features and num_classes must be positive, got {in_features}, {num_classes}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.tau = _check_tau(tau)
        self.fc = nn.Linear(in_features, num_classes, bias=bias)

    @property
    def weight(self) -> Tensor:
        """The raw (un-normalised) ``[C, D]`` weight."""
        return self.fc.weight

    @classmethod
    def from_linear(cls, head: nn.Module, tau: float, keep_bias: bool = True) -> TauNormHead:
        """A τ-normalised copy of a trained linear head, on the head's device and dtype.

        Args:
            head: a linear head (:meth:`~lt_lightning.heads.base.ClassifierHead.linear_parameters` not ``None``:
                :class:`~lt_lightning.heads.linear.LinearHead`, a ``ProjectionHead`` over one), a
                :class:`TauNormHead` (its raw weights), an ``nn.Linear``, or any plain module with a ``weight``
                ``[C, D]`` and an optional ``bias`` (or ``fc.bias``) ``[C]``.
            tau: ``τ >= 0``.
            keep_bias: copy the head's bias (if it has one); ``False`` scores with the weights only.

        The weights are copied (detached): later changes to ``head`` do not reach the returned head.
        """
        if isinstance(head, TauNormHead):  # its raw weights (its logits are linear in them only for τ = 0)
            params: tuple[Tensor, Tensor | None] | None = (head.fc.weight, head.fc.bias)
        else:
            params = head_linear_parameters(head)
        if params is None:
            raise ValueError(
                f"from_linear needs a linear head (a `weight` of shape [C, D], logits = W f + b), got "
                f"{type(head).__name__}"
            )
        weight, bias = params
        if not keep_bias:
            bias = None
        num_classes, in_features = weight.shape
        if bias is not None and tuple(bias.shape) != (num_classes,):
            raise ValueError(f"bias must have shape ({num_classes},), got {tuple(bias.shape)}")
        new = cls(in_features, num_classes, tau=tau, bias=bias is not None).to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            new.fc.weight.copy_(weight)
            if bias is not None:
                new.fc.bias.copy_(bias)
        return new

    def linear_parameters(self) -> tuple[Tensor, Tensor | None] | None:
        """``(fc.weight, fc.bias)`` for ``τ = 0`` (the plain linear head's logits), else ``None``."""
        return (self.fc.weight, self.fc.bias) if self.tau == 0 else None

    def reset_parameters(self) -> None:
        """Re-initialise the weights (as :meth:`LinearHead.reset_parameters`)."""
        self.fc.reset_parameters()

    def forward(self, features: Tensor) -> Tensor:
        return F.linear(features, tau_normalized_weight(self.fc.weight, self.tau), self.fc.bias)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"
