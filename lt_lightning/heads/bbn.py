"""BBN's classifier: one linear layer on ``[f_c ‖ f_r]`` that also reports each branch's logits at evaluation.

Zhou et al., "BBN: Bilateral-Branch Network with Cumulative Learning for Long-Tailed Visual Recognition", CVPR 2020,
Sec. 3.3: the two branches' features are concatenated and fed to one classifier ``W = [W_c | W_r]`` (megvii-research/
BBN: ``nn.Linear(2D, C, bias=True)``). With the backbone's features ``s [α f_c ‖ (1 - α) f_r]`` (``s = 2`` in the
reference)::

    W f + b = α ℓ_c + (1 - α) ℓ_r,    ℓ_c = s W_c f_c + b,    ℓ_r = s W_r f_r + b,

the paper's mixed logits; at inference (``α = 0.5``, ``f = (s / 2) [f_c ‖ f_r]``) the prediction is the mean of the
two branches' logits, ``ℓ = 2 W_branch f_branch + b`` of the evaluation features.

:class:`BilateralHead` is a :class:`~lt_lightning.heads.linear.LinearHead` over ``2D`` features (the same parameters,
the same training) which, in evaluation mode, also returns ``expert_logits = [ℓ_c, ℓ_r]`` (``[2, B, C]``), so the
module logs the conventional and the re-balancing branch's accuracy (``expert0_*`` and ``expert1_*``) beside the
whole network's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lt_lightning.heads.linear import LinearHead
from lt_lightning.output import ModelOutput

__all__ = ["BilateralHead"]


class BilateralHead(LinearHead):
    """``z = W f + b`` on BBN's ``2D`` features; at evaluation also the branch logits ``[ℓ_c, ℓ_r]``.

    Args:
        in_features: ``2D``, the backbone's ``num_features`` (both branches), even.
        num_classes: ``C``.
        bias: learn a bias (BBN's CIFAR recipe: yes).

    Attributes:
        num_experts: 2 (the conventional and the re-balancing branch), read by the module's per-expert metrics.
    """

    num_experts = 2

    def __init__(self, in_features: int, num_classes: int, bias: bool = True) -> None:
        if in_features % 2:
            raise ValueError(f"in_features must be even (the two branches' features [f_c ‖ f_r]), got {in_features}")
        super().__init__(in_features, num_classes, bias=bias)

    def branch_logits(self, features: Tensor) -> Tensor:
        """``[ℓ_c, ℓ_r]`` (``[2, B, C]``) of evaluation features ``[f_c ‖ f_r]``: ``ℓ = 2 W_branch f_branch + b``."""
        d = self.in_features // 2
        weight, bias = self.fc.weight, self.fc.bias
        logits = torch.stack((features[:, :d] @ weight[:, :d].T, features[:, d:] @ weight[:, d:].T)) * 2.0
        return logits if bias is None else logits + bias

    def forward(self, features: Tensor) -> Tensor | ModelOutput:
        logits = self.fc(features)
        if self.training:  # training features are the mixture of two different images: no per-branch logits
            return logits
        return ModelOutput(logits=logits, features=features, expert_logits=self.branch_logits(features))
