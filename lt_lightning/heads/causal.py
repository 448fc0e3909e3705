"""Causal classifier of De-confound-TDE (Tang, Huang, Zhang, "Long-Tailed Classification by Keeping the Good and
Removing the Bad Momentum Causal Effect", NeurIPS 2020; code: ``KaihuaTang/Long-Tailed-Recognition.pytorch``,
``classification/models/CausalNormClassifier.py`` and the moving-average feature in ``classification/run_networks.py``).

De-confounded training (multi-head normalisation). Features ``x`` ``[B, D]`` and class weights ``W`` ``[C, D]`` are
split into ``K`` groups of ``D / K`` channels; per group ``k``::

    x̂_k = x_k / ||x_k||,        ŵ_{c,k} = w_{c,k} / (||w_{c,k}|| + gamma),
    z_c = (tau / K) * sum_k <x̂_k, ŵ_{c,k}>.

Total direct effect (TDE) at inference. With ``ĉ_k = c_k / ||c_k||`` the normalised ``k``-th group of the moving
average ``c`` of the training features (the head's "momentum" direction), each normalised feature group loses its
projection on the head direction, scaled by ``alpha``::

    x̂_k  <-  x̂_k - alpha * cos(x̂_k, ĉ_k) * ĉ_k,

before the same scaled product. ``alpha = 0`` gives the training-mode logits. The reference uses ``alpha = 1.0`` for
CIFAR-10-LT and ``alpha = 1.5`` for CIFAR-100-LT (its ``config/CIFAR*_LT/causal_norm*.yaml``), 3.0 by default.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lt_lightning._checks import check_int
from lt_lightning.heads.base import ClassifierHead

_EPS = 1e-12


def causal_norm_logits(
    features: Tensor,
    weight: Tensor,
    num_heads: int,
    tau: float,
    gamma: float,
    feature_mean: Tensor | None = None,
    alpha: float = 0.0,
) -> Tensor:
    """Multi-head normalised logits ``[B, C]``, with the TDE term when ``feature_mean`` is given and ``alpha > 0``.

    Args:
        features: ``[B, D]`` features ``x``.
        weight: ``[C, D]`` class weights ``W``.
        num_heads: number of groups ``K`` (divides ``D``).
        tau: scale ``tau`` (the logits are multiplied by ``tau / K``).
        gamma: ``gamma`` added to each weight group's norm.
        feature_mean: ``[D]`` moving average ``c`` of the training features, or ``None`` for no TDE term. A group whose
            mean is all zero (e.g. never trained) contributes no TDE term in that group.
        alpha: strength of the removed head direction.
    """
    batch, dim = features.shape
    num_classes = weight.shape[0]
    if dim % num_heads or weight.shape[1] != dim:
        raise ValueError(f"features [{batch}, {dim}] and weight {list(weight.shape)} do not fit num_heads={num_heads}")
    head_dim = dim // num_heads
    x = F.normalize(features.reshape(batch, num_heads, head_dim), dim=-1, eps=_EPS)
    w = weight.reshape(num_classes, num_heads, head_dim)
    w = w / (w.norm(dim=-1, keepdim=True) + gamma).clamp_min(_EPS)
    if feature_mean is not None and alpha != 0:
        c = F.normalize(feature_mean.reshape(1, num_heads, head_dim).to(x), dim=-1, eps=_EPS)
        cos = (x * c).sum(dim=-1, keepdim=True)  # x̂_k and ĉ_k are unit vectors (or ĉ_k = 0)
        x = x - alpha * cos * c
    return (tau / num_heads) * torch.einsum("bkd,ckd->bc", x, w.to(x))


class CausalHead(ClassifierHead):
    """De-confound-TDE's causal-norm classifier with its moving-average feature (see the module docstring).

    In training mode every forward updates the buffer ``feature_mean`` ``[D]`` exactly as the reference's
    ``run_networks.py`` does (no ``1 - momentum`` factor: an exponentially weighted *sum*, whose direction is all the
    TDE term uses)::

        feature_mean <- momentum * feature_mean + mean_over_batch(x).detach()

    The reference keeps ``momentum = 0.9`` on CIFAR and, on ImageNet-LT / Places-LT, sets it each epoch to
    ``1 - 0.1 * min(50 * lr, 1)``; here it is the constant ``momentum``. In eval mode (validation, test, predict) the
    buffer is left unchanged and, when ``use_effect`` is set, the TDE logits are returned; while ``feature_mean`` is
    still all zero (never trained) they equal the training-mode logits.

    Under DDP the buffer follows rank 0: DDP broadcasts buffers from rank 0 before each training forward (like
    BatchNorm's running statistics), so the other ranks' updates are overwritten and the average is over rank 0's
    batches. The buffer is saved in the ``state_dict`` (and so in checkpoints).

    Args:
        in_features: feature dimension ``D``, divisible by ``num_heads``.
        num_classes: number of classes ``C``.
        num_heads: number of groups ``K`` (reference: 2).
        tau: logit scale ``tau`` (reference: 16.0).
        gamma: ``gamma`` of the weight normalisation ``w / (||w|| + gamma)`` (reference: 1/32 = 0.03125).
        alpha: TDE strength at inference (reference default 3.0; 1.0 for CIFAR-10-LT, 1.5 for CIFAR-100-LT).
        momentum: decay of the moving-average feature, in ``[0, 1)`` (reference: 0.9).
        use_effect: apply the TDE term in eval mode (reference: True).
    """

    feature_mean: Tensor

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        num_heads: int = 2,
        tau: float = 16.0,
        gamma: float = 0.03125,
        alpha: float = 3.0,
        momentum: float = 0.9,
        use_effect: bool = True,
    ) -> None:
        super().__init__()
        if in_features <= 0 or num_classes <= 0:
            raise ValueError(f"in_features and num_classes must be positive, got {in_features}, {num_classes}")
        check_int("num_heads", num_heads, minimum=1)
        if in_features % num_heads:
            raise ValueError(f"in_features={in_features} must be divisible by num_heads={num_heads}")
        if not (tau > 0 and math.isfinite(tau)):
            raise ValueError(f"tau must be a finite number > 0, got {tau}")
        if not (gamma >= 0 and math.isfinite(gamma)):
            raise ValueError(f"gamma must be a finite number >= 0, got {gamma}")
        if not (alpha >= 0 and math.isfinite(alpha)):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.num_heads = num_heads
        self.tau = float(tau)
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.momentum = float(momentum)
        self.use_effect = bool(use_effect)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's initialisation: ``uniform(-1/sqrt(D), 1/sqrt(D))``."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)

    @torch.no_grad()
    def update_feature_mean(self, features: Tensor) -> None:
        """``feature_mean <- momentum * feature_mean + mean_over_batch(features)`` (no gradient; an empty batch is
        skipped)."""
        if features.shape[0] == 0:
            return
        batch_mean = features.detach().mean(dim=0).to(self.feature_mean.dtype)
        self.feature_mean.mul_(self.momentum).add_(batch_mean)

    def forward(self, features: Tensor) -> Tensor:
        if self.training:
            self.update_feature_mean(features)
            return causal_norm_logits(features, self.weight, self.num_heads, self.tau, self.gamma)
        mean = self.feature_mean if self.use_effect else None
        return causal_norm_logits(features, self.weight, self.num_heads, self.tau, self.gamma, mean, self.alpha)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, num_heads={self.num_heads}, "
            f"tau={self.tau}, gamma={self.gamma}, alpha={self.alpha}, momentum={self.momentum}, "
            f"use_effect={self.use_effect}"
        )
