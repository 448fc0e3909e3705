"""BitFit: only the bias terms of the backbone train (Ben Zaken, Ravfogel & Goldberg, ACL 2022; LIFT's
``bias_tuning``, shijxcs/LIFT ``models/peft_vit.py``, which tunes the biases of the transformer blocks)."""

from __future__ import annotations

from torch import nn

from lt_lightning.backbones.base import Backbone
from lt_lightning.backbones.peft.base import PEFTBackbone, vit_blocks

__all__ = ["BitFit"]


class BitFit(PEFTBackbone):
    """Train every parameter whose name ends in ``bias``.

    Args:
        backbone: the backbone to fine-tune.
        blocks_only: LIFT's choice (default): only the biases inside the transformer blocks (attention and MLP
            projections, LayerNorms); ``False``: every bias of the backbone (the BitFit paper: patch embedding and
            final LayerNorm too). ``blocks_only`` needs a ViT backbone.
    """

    def __init__(self, backbone: Backbone, blocks_only: bool = True) -> None:
        if not isinstance(blocks_only, bool):
            raise ValueError(f"blocks_only must be a bool, got {blocks_only!r}")
        self.blocks_only = blocks_only
        super().__init__(backbone)

    def tuned_parameters(self) -> list[nn.Parameter]:
        owner = vit_blocks(self.backbone)[0] if self.blocks_only else self.backbone
        return [p for name, p in owner.named_parameters() if name.endswith("bias")]
