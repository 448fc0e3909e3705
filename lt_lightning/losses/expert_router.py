"""Loss of RIDE's expert router (second stage): binary cross-entropy of each routing decision.

Wang et al., "Long-tailed Recognition by Routing Diverse Distribution-Aware Experts", ICLR 2021, Sec. 3.3 (code:
``ea_resnet_cifar.py``, ``ResNet_s.forward`` with a target). For the decisions' logits ``r_i`` ``[B]``
(``i = 0 .. E-2``) and the targets ``t_i`` of :func:`~lt_lightning.heads.expert_router.router_targets`:

    L = (1 / (E-1)) sum_i mean_b [ -pos_weight · t_ib log σ(r_ib) - (1 - t_ib) log(1 - σ(r_ib)) ]

(``F.binary_cross_entropy_with_logits(r_i, t_i, pos_weight)``). ``pos_weight`` (reference: 20 by default, 100 in the
CIFAR configs) trades accuracy for compute: larger values send more images to more experts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lt_lightning.heads.expert_router import router_targets
from lt_lightning.losses.base import LongTailLoss
from lt_lightning.output import ModelOutput

__all__ = ["ExpertRouterLoss", "expert_router_loss"]


def expert_router_loss(
    router_logits: Tensor, expert_logits: Tensor, target: Tensor, pos_weight: float = 20.0
) -> Tensor:
    """Mean over decisions of the batch-mean weighted BCE between ``router_logits`` ``[E-1, B]`` and the targets.

    Args:
        router_logits: ``[E-1, B]`` decision logits.
        expert_logits: ``[E, B, C]`` per-expert logits (only their predictions are read: no gradient).
        target: ``[B]`` class indices.
        pos_weight: weight of the positive ("use more experts") examples, ``> 0``.
    """
    if not math.isfinite(pos_weight) or pos_weight <= 0:
        raise ValueError(f"pos_weight must be a finite number > 0, got {pos_weight}")
    targets = router_targets(expert_logits, target)
    if router_logits.shape != targets.shape:
        raise ValueError(
            f"router_logits must be [E-1, B] = {tuple(targets.shape)} for these expert logits, got "
            f"{tuple(router_logits.shape)}"
        )
    logits = router_logits.float()
    weight = torch.tensor(pos_weight, device=logits.device, dtype=logits.dtype)
    per_decision = F.binary_cross_entropy_with_logits(
        logits, targets.to(logits.dtype), pos_weight=weight, reduction="none"
    ).mean(dim=1)
    return per_decision.mean()


class ExpertRouterLoss(LongTailLoss):
    """RIDE's router loss (see the module docstring); reads ``extras["router_logits"]`` and ``expert_logits``.

    Used as the loss of the router-training stage (:class:`~lt_lightning.callbacks.expert_router_training.
    ExpertRouterTraining`) with a :class:`~lt_lightning.heads.routed_multi_expert.RoutedMultiExpertHead`.

    Args:
        pos_weight: weight of the positive examples (reference default 20; 100 in its CIFAR configs), ``> 0``.
    """

    def __init__(self, pos_weight: float = 20.0) -> None:
        super().__init__()
        if not math.isfinite(pos_weight) or pos_weight <= 0:
            raise ValueError(f"pos_weight must be a finite number > 0, got {pos_weight}")
        self.pos_weight = float(pos_weight)

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        router_logits = output.extras.get("router_logits")
        if router_logits is None or output.expert_logits is None:
            raise ValueError(
                "ExpertRouterLoss needs router logits and expert logits: use a RoutedMultiExpertHead whose router is "
                "being trained (ExpertRouterTraining turns it on)"
            )
        return expert_router_loss(router_logits, output.expert_logits, target, self.pos_weight)

    def extra_repr(self) -> str:
        return f"pos_weight={self.pos_weight}"
