"""LoRA on the query and value projections of every transformer block (Hu et al., "LoRA: Low-Rank Adaptation of
Large Language Models", ICLR 2022), as LIFT applies it (shijxcs/LIFT ``models/peft_modules.py`` ``LoRA``,
``models/peft_vit.py``: ``q = q + s·x A_q B_q``, ``v = v + s·x A_v B_v``, ``A`` ``[D, r]`` Kaiming-uniform with
``a = sqrt(5)``, ``B`` ``[r, D]`` zero, ``s = 1 / r``).

Written as a weight update of the fused query/key/value weight ``W`` ``[3D, D]`` (a ``torch.nn.utils.parametrize``
parametrisation), so it works on open_clip's ``nn.MultiheadAttention`` (``in_proj_weight``) and timm's ``qkv``
linear alike: ``x W'^T = x W^T + s·x [A_q B_q | 0 | A_v B_v]``, i.e. ``W' = W + s·[(A_q B_q)^T; 0; (A_v B_v)^T]``.
The frozen ``W`` is kept as the parametrisation's ``original``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from lt_lightning._checks import check_int
from lt_lightning.backbones.base import Backbone
from lt_lightning.backbones.peft.base import PEFTBackbone, vit_blocks

__all__ = ["LoRA", "LoRAUpdate"]


class LoRAUpdate(nn.Module):
    """``W -> W + scaling · [(A_q B_q)^T; 0; (A_v B_v)^T]`` for a fused ``[3D, D]`` query/key/value weight.

    Args:
        width: ``D``.
        rank: ``r``.
        scaling: ``s`` (LIFT: ``1 / r``).
    """

    def __init__(self, width: int, rank: int, scaling: float) -> None:
        super().__init__()
        self.scaling = float(scaling)
        self.a_q = nn.Parameter(torch.empty(width, rank))
        self.b_q = nn.Parameter(torch.zeros(rank, width))
        self.a_v = nn.Parameter(torch.empty(width, rank))
        self.b_v = nn.Parameter(torch.zeros(rank, width))
        nn.init.kaiming_uniform_(self.a_q, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.a_v, a=math.sqrt(5))

    def delta(self) -> Tensor:
        """The ``[3D, D]`` update ``s·[(A_q B_q)^T; 0; (A_v B_v)^T]``."""
        q = (self.a_q @ self.b_q).t()
        v = (self.a_v @ self.b_v).t()
        return self.scaling * torch.cat([q, torch.zeros_like(q), v], dim=0)

    def forward(self, weight: Tensor) -> Tensor:
        return weight + self.delta().to(weight.dtype)


class LoRA(PEFTBackbone):
    """Low-rank updates of the query and value projections of every block; only ``A``, ``B`` train.

    Trainable parameters: ``4 · D · r`` per block (``A_q``, ``B_q``, ``A_v``, ``B_v``).

    Args:
        backbone: a ViT backbone (see :func:`~lt_lightning.backbones.peft.base.vit_blocks`).
        rank: ``r`` (LIFT's default ``adapter_dim``: ``2 ** max(0, floor(log2(C / (2 L))))`` for ``C`` classes and
            ``L`` blocks; the configs give it per dataset).
        scaling: ``s``; ``None`` is LIFT's ``1 / r``.
    """

    def __init__(self, backbone: Backbone, rank: int = 8, scaling: float | None = None) -> None:
        check_int("rank", rank, minimum=1)
        if scaling is not None and not math.isfinite(scaling):
            raise ValueError(f"scaling must be a finite number or None, got {scaling!r}")
        self.rank = int(rank)
        self.scaling = 1.0 / rank if scaling is None else float(scaling)
        super().__init__(backbone)

    def attach(self) -> None:
        _, blocks, width = vit_blocks(self.backbone)
        for part in blocks:
            update = LoRAUpdate(width, self.rank, self.scaling)
            parametrize.register_parametrization(part.qkv_owner, part.qkv_name, update)
