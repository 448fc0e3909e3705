"""``TextClassifierInit``: the classifier starts from CLIP text embeddings of the class names (LIFT, Shi et al.,
ICML 2024; shijxcs/LIFT ``trainer.py`` ``init_head_text_feat``). See :mod:`lt_lightning.heads.text_init`."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from lt_lightning.backbones.clip import DEFAULT_PROMPT
from lt_lightning.heads.text_init import clip_text_classifier_weights, prompts

__all__ = ["TextClassifierInit"]


class TextClassifierInit(Callback):
    """Set ``classifier.weight`` ``[C, D]`` to the text embeddings of ``template.format(class_name)`` at the start of
    a fit.

    The class names are the datamodule's ``class_names`` (split-file data: ``class_names`` or ``class_names_file``). The
    weights are written in ``setup("fit")``, before Lightning restores a checkpoint: a resumed run (``--ckpt_path``)
    continues with the checkpoint's weights, exactly as if it had not stopped. The text tower is built for the call
    and dropped (not part of the module or its checkpoints).

    Args:
        template: the prompt with ``{}`` for the class name (LIFT's ``"a photo of a {}."``).
    """

    def __init__(self, template: str = DEFAULT_PROMPT) -> None:
        prompts(["x"], template)  # ValueError naming template
        self.template = template

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        names = getattr(trainer.datamodule, "class_names", None)
        weight = getattr(pl_module.classifier, "weight", None)
        if names is None:
            raise ValueError("TextClassifierInit needs a datamodule with class_names")
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise ValueError(
                f"TextClassifierInit needs a classifier with a [C, D] weight (CosineHead, LinearHead), got "
                f"{type(pl_module.classifier).__name__}"
            )
        text = clip_text_classifier_weights(pl_module.backbone, list(names), self.template)
        if text.shape != weight.shape:
            raise ValueError(
                f"text embeddings {tuple(text.shape)} do not fit the classifier weight {tuple(weight.shape)} "
                "(class names vs num_classes, or the head's in_features vs the backbone's num_features)"
            )
        with torch.no_grad():
            weight.copy_(text.to(weight))
        rank_zero_info(f"TextClassifierInit: classifier weights from {len(names)} prompts like {self.template!r}")
