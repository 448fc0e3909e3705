"""Parameter-efficient fine-tuning (PEFT) as backbones that wrap a backbone.

A PEFT method is a :class:`~lt_lightning.backbones.base.Backbone` holding the wrapped backbone (``.backbone``): it
adds its own modules inside the wrapped ViT (adapters, low-rank updates, prompts), then :meth:`PEFTBackbone.apply`
freezes every parameter of the wrapped backbone except the ones the method trains. The module's optimizer is built
over the parameters that require grad only (:meth:`lt_lightning.module.LongTailModule.trainable_parameters`), so
frozen weights never reach it; the split is decided in ``__init__``, hence identical in a resumed run.

The count is logged once (``trainable_params=<n> of <total> backbone parameters``) and kept as
:attr:`PEFTBackbone.trainable_params` / :attr:`PEFTBackbone.total_params` (the head's parameters come on top).

Reference: LIFT (Shi et al., ICML 2024), shijxcs/LIFT ``models/peft_vit.py`` (``ViT_Tuner``: which parameters each
method trains) and ``models/peft_modules.py`` (the modules).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lt_lightning.backbones.base import Backbone

__all__ = ["FullFineTuning", "LinearProbe", "PEFTBackbone", "ViTBlock", "vit_blocks"]


@dataclass
class ViTBlock:
    """Where a PEFT method finds the parts of one pre-norm transformer block ``x + attn(ln1(x))``, ``x + mlp(ln2(x))``.

    Attributes:
        block: the block module.
        qkv_owner: the module holding the fused ``[3D, D]`` query/key/value weight.
        qkv_name: that weight's attribute name (``in_proj_weight`` for open_clip, ``weight`` of timm's ``qkv``).
        norm2: attribute name of the block's second LayerNorm (``ln_2`` / ``norm2``).
        mlp: attribute name of the block's MLP (``mlp``).
    """

    block: nn.Module
    qkv_owner: nn.Module
    qkv_name: str
    norm2: str
    mlp: str


def _inner(backbone: nn.Module) -> nn.Module:
    while isinstance(backbone, PEFTBackbone):
        backbone = backbone.backbone
    return backbone


def vit_blocks(backbone: nn.Module) -> tuple[nn.Module, list[ViTBlock], int]:
    """``(container, blocks, width)`` of the ViT inside ``backbone``: the ``nn.ModuleList`` / ``nn.Sequential`` of its
    transformer blocks, their parts, and the token width ``D``.

    Supported: :class:`~lt_lightning.backbones.clip.CLIPVisualBackbone` (open_clip ``VisionTransformer``) and a
    :class:`~lt_lightning.backbones.timm_backbone.TimmBackbone` (or any backbone whose ``.model`` is one) holding a
    timm ``VisionTransformer``; a PEFT backbone is looked through.

    Raises:
        ValueError: another architecture.
    """
    inner = _inner(backbone)
    visual = getattr(inner, "visual", None)
    if visual is not None and hasattr(visual, "transformer"):
        container = visual.transformer.resblocks
        blocks = [ViTBlock(b, b.attn, "in_proj_weight", "ln_2", "mlp") for b in container]
        return container, blocks, int(visual.transformer.width)
    model = getattr(inner, "model", None)
    if model is not None and hasattr(model, "blocks") and hasattr(model, "patch_embed"):
        container = model.blocks
        blocks = [ViTBlock(b, b.attn.qkv, "weight", "norm2", "mlp") for b in container]
        return container, blocks, int(model.embed_dim)
    raise ValueError(
        f"parameter-efficient fine-tuning needs a ViT backbone (CLIPVisualBackbone, or TimmBackbone with a timm "
        f"VisionTransformer), got {type(inner).__name__}"
    )


def count(parameters: Iterator[nn.Parameter]) -> int:
    """Number of scalars in ``parameters`` (each tensor counted once)."""
    seen: dict[int, int] = {}
    for p in parameters:
        seen[id(p)] = p.numel()
    return sum(seen.values())


class PEFTBackbone(Backbone):
    """Base class: wraps ``backbone``, adds the method's modules (:meth:`attach`), trains :meth:`tuned_parameters`.

    Subclasses implement :meth:`attach` (add modules inside the wrapped backbone, once) and, when they train more
    than the parameters they add, :meth:`tuned_parameters`. The features and ``num_features`` are the wrapped
    backbone's.

    Args:
        backbone: the backbone to fine-tune (a ViT for the methods that add modules).
    """

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module) or not isinstance(getattr(backbone, "num_features", None), int):
            raise ValueError(f"backbone must be a Backbone with an int num_features, got {type(backbone).__name__}")
        self.backbone = backbone
        self.num_features = backbone.num_features
        if hasattr(backbone, "in_channels"):
            self.in_channels = backbone.in_channels  # what the CLI's channel check reads
        pretrained = {id(p) for p in backbone.parameters()}
        self.attach()
        self.added: list[nn.Parameter] = [p for p in backbone.parameters() if id(p) not in pretrained]
        self.apply_freezing()

    def attach(self) -> None:
        """Add the method's modules inside :attr:`backbone` (default: nothing)."""

    def tuned_parameters(self) -> list[nn.Parameter]:
        """The parameters that train: by default the ones :meth:`attach` added."""
        return list(self.added)

    def apply_freezing(self) -> None:
        """Freeze every parameter of :attr:`backbone` except :meth:`tuned_parameters`; log and keep the counts."""
        tuned = {id(p) for p in self.tuned_parameters()}
        for p in self.backbone.parameters():
            p.requires_grad_(id(p) in tuned)
        self.trainable_params = count(p for p in self.backbone.parameters() if p.requires_grad)
        self.total_params = count(self.backbone.parameters())
        share = 100.0 * self.trainable_params / max(self.total_params, 1)
        rank_zero_info(
            f"{type(self).__name__}: trainable_params={self.trainable_params} of {self.total_params} backbone "
            f"parameters ({share:.3f}%; the head's come on top)"
        )

    def forward_features(self, x: Tensor) -> Tensor:
        return self.backbone(x)


class FullFineTuning(PEFTBackbone):
    """Every parameter of the backbone trains (LIFT's ``full_tuning``; the "heavy fine-tuning" the paper contrasts)."""

    def tuned_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())


class LinearProbe(PEFTBackbone):
    """No parameter of the backbone trains: only the classifier does (zero-shot CLIP features + a trained head)."""

    def tuned_parameters(self) -> list[nn.Parameter]:
        return []
