"""AdaptFormer: a bottleneck adapter parallel to every block's MLP (Chen et al., "AdaptFormer: Adapting Vision
Transformers for Scalable Visual Recognition", NeurIPS 2022), in LIFT's form (shijxcs/LIFT
``models/peft_modules.py`` ``AdaptFormer``, ``models/peft_vit.py``), LIFT's choice of PEFT method.

For a block's residual stream ``x`` after the attention: ``x + mlp(ln_2(x)) + s · up(relu(down(LN(x))))`` with its
own LayerNorm, ``down`` ``[r, D]`` Kaiming-normal (``a = sqrt(5)``), ``up`` ``[D, r]`` zero, both biases zero, and a
learnable scalar ``s`` starting at 1: the block starts as the pre-trained one. The block's ``ln_2`` and ``mlp`` are
replaced by one module (:class:`ParallelAdapter`, ``mlp(norm(x)) + adapter(x)``) in the ``mlp`` slot and an
identity in the ``ln_2`` slot; a LayerScale after the MLP (timm ``ls2``, ``Identity`` in CLIP and in the usual ViTs)
would scale the adapter's output too.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lt_lightning._checks import check_int
from lt_lightning.backbones.base import Backbone
from lt_lightning.backbones.peft.base import PEFTBackbone, vit_blocks

__all__ = ["AdaptFormer", "Adapter", "ParallelAdapter"]


class Adapter(nn.Module):
    """``s · up(relu(down(LN(x))))`` (LIFT's ``AdaptFormer`` module).

    Args:
        width: ``D``.
        bottleneck: ``r``.
        learnable_scale: ``s`` trains (LIFT: ``adaptformer_scale: learnable``), else it stays 1.
    """

    def __init__(self, width: int, bottleneck: int, learnable_scale: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.down = nn.Linear(width, bottleneck)
        self.up = nn.Linear(bottleneck, width)
        if learnable_scale:
            self.scale = nn.Parameter(torch.ones(1))
        else:
            self.register_buffer("scale", torch.ones(1))
        nn.init.kaiming_normal_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(torch.relu(self.down(self.norm(x)))) * self.scale


class ParallelAdapter(nn.Module):
    """``mlp(norm(x)) + adapter(x)``: a block's MLP branch with the adapter beside it."""

    def __init__(self, norm: nn.Module, mlp: nn.Module, adapter: Adapter) -> None:
        super().__init__()
        self.norm, self.mlp, self.adapter = norm, mlp, adapter

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.norm(x)) + self.adapter(x)


class AdaptFormer(PEFTBackbone):
    """A bottleneck adapter beside the MLP of every block; only the adapters train.

    Trainable parameters per block: ``2 D`` (LayerNorm) ``+ D r + r`` (down) ``+ r D + D`` (up) ``+ 1``
    (the scale, when learnable).

    Args:
        backbone: a ViT backbone (see :func:`~lt_lightning.backbones.peft.base.vit_blocks`).
        bottleneck: ``r`` (LIFT's default: ``2 ** max(0, floor(log2(C / (2 L))))`` for ``C`` classes and ``L``
            blocks: 32 for ImageNet-LT, 8 for Places-LT, 4 for CIFAR-100-LT, 256 for iNaturalist 2018 with ViT-B/16;
            the configs give it per dataset).
        learnable_scale: train the scalar ``s`` (LIFT's default) or keep it at 1.
    """

    def __init__(self, backbone: Backbone, bottleneck: int = 32, learnable_scale: bool = True) -> None:
        check_int("bottleneck", bottleneck, minimum=1)
        if not isinstance(learnable_scale, bool):
            raise ValueError(f"learnable_scale must be a bool, got {learnable_scale!r}")
        self.bottleneck, self.learnable_scale = int(bottleneck), learnable_scale
        super().__init__(backbone)

    def attach(self) -> None:
        _, blocks, width = vit_blocks(self.backbone)
        for part in blocks:
            adapter = Adapter(width, self.bottleneck, self.learnable_scale)
            branch = ParallelAdapter(getattr(part.block, part.norm2), getattr(part.block, part.mlp), adapter)
            setattr(part.block, part.mlp, branch)
            setattr(part.block, part.norm2, nn.Identity())
