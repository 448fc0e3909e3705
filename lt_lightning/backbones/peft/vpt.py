"""Visual prompt tuning, VPT (Jia et al., "Visual Prompt Tuning", ECCV 2022), in LIFT's form (shijxcs/LIFT
``models/peft_modules.py`` ``VPT``, ``models/peft_vit.py``).

``length`` learnable tokens are appended to the token sequence before a block: *deep* (LIFT's ``vpt_deep``) before
every block, the previous block's prompt outputs replaced (``x = [x[:, :N], P_l]`` with ``N`` the tokens without
prompts); *shallow* (``vpt_shallow``) before the first block only, the prompts then travel through the network.
Initialisation: uniform in ``±sqrt(6 / (3 p² + D))`` for patch size ``p`` and width ``D``. The pooled feature is
the class token's, so the backbone must pool by its class token (CLIP's ``tok``, timm's ``token``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from lt_lightning._checks import check_int
from lt_lightning.backbones.base import Backbone
from lt_lightning.backbones.peft.base import PEFTBackbone, _inner, vit_blocks

__all__ = ["VPT", "PromptedBlock"]


class PromptedBlock(nn.Module):
    """``block([x[:, :T - previous], P])``: the block with its prompts ``P`` ``[length, D]`` appended, the
    ``previous`` prompt tokens of the input dropped (0 before the first prompted block)."""

    def __init__(self, block: nn.Module, length: int, width: int, previous: int, init_bound: float) -> None:
        super().__init__()
        self.block = block
        self.previous = int(previous)
        self.prompts = nn.Parameter(torch.empty(length, width).uniform_(-init_bound, init_bound))

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        tokens = x[:, : x.shape[1] - self.previous] if self.previous else x
        prompts = self.prompts.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.block(torch.cat([tokens, prompts], dim=1), *args, **kwargs)


def _patch_size_and_pooling(backbone: nn.Module) -> tuple[int, bool]:
    inner = _inner(backbone)
    visual = getattr(inner, "visual", None)
    if visual is not None:
        size = visual.conv1.kernel_size
        token = getattr(visual, "pool_type", "tok") == "tok" and getattr(visual, "attn_pool", None) is None
        return int(size[0]) * int(size[1]) if isinstance(size, tuple) else int(size) ** 2, token
    model = inner.model
    size = model.patch_embed.proj.kernel_size
    return int(size[0]) * int(size[1]), getattr(model, "global_pool", "token") == "token"


class VPT(PEFTBackbone):
    """Learnable prompt tokens before every block (deep) or the first (shallow); only the prompts train.

    Trainable parameters: ``length · D`` per prompted block.

    Args:
        backbone: a ViT backbone pooling by its class token.
        length: prompt tokens per block (LIFT's default ``vpt_len``: 10).
        deep: prompts before every block (``True``, LIFT's ``vpt_deep``) or before the first only (``False``).
    """

    def __init__(self, backbone: Backbone, length: int = 10, deep: bool = True) -> None:
        check_int("length", length, minimum=1)
        if not isinstance(deep, bool):
            raise ValueError(f"deep must be a bool, got {deep!r}")
        self.length, self.deep = int(length), deep
        super().__init__(backbone)

    def attach(self) -> None:
        container, blocks, width = vit_blocks(self.backbone)
        patch_area, token_pool = _patch_size_and_pooling(self.backbone)
        if not token_pool:
            raise ValueError("VPT needs a backbone that pools its class token (the prompts would enter an average)")
        bound = math.sqrt(6.0 / float(3 * patch_area + width))
        for i, part in enumerate(blocks if self.deep else blocks[:1]):
            previous = self.length if i > 0 else 0
            container[i] = PromptedBlock(part.block, self.length, width, previous, bound)
