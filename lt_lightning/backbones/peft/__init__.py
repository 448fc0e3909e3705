"""Parameter-efficient fine-tuning of ViT backbones (LIFT, Shi et al., ICML 2024): each method wraps a backbone.

``FullFineTuning``, ``LinearProbe``, ``BitFit``, ``VPT``, ``LoRA``, ``AdaptFormer`` (LIFT's choice). From YAML::

    backbone:
      class_path: lt_lightning.backbones.peft.AdaptFormer
      init_args:
        bottleneck: 32
        backbone:
          class_path: lt_lightning.backbones.clip.CLIPVisualBackbone
          init_args: {model_name: ViT-B-16, pretrained: openai}
"""

from lt_lightning.backbones.peft.adaptformer import AdaptFormer
from lt_lightning.backbones.peft.base import FullFineTuning, LinearProbe, PEFTBackbone, vit_blocks
from lt_lightning.backbones.peft.bitfit import BitFit
from lt_lightning.backbones.peft.lora import LoRA
from lt_lightning.backbones.peft.vpt import VPT

__all__ = ["VPT", "AdaptFormer", "BitFit", "FullFineTuning", "LinearProbe", "LoRA", "PEFTBackbone", "vit_blocks"]
