"""Classifier weights from CLIP text embeddings of the class names (LIFT: shijxcs/LIFT ``trainer.py``
``init_head_text_feat`` with ``prompt: default``).

``w_c`` = the L2-normalised text embedding of ``template.format(name_c)`` (class names with ``_`` replaced by
spaces; LIFT's template ``"a photo of a {}."``), mapped into the space of the backbone's features: for LIFT's
pre-projection features ``w_c = normalize(normalize(t_c) P^T)`` with ``P`` the image projection, for projected
features ``w_c = normalize(t_c)`` (:meth:`~lt_lightning.backbones.clip.CLIPVisualBackbone.text_to_feature_space`).
A cosine classifier (:class:`~lt_lightning.heads.cosine.CosineHead`, LIFT's ``CosineClassifier`` with scale 25)
with these weights is zero-shot CLIP at step 0 (up to its scale). The callback
:class:`~lt_lightning.callbacks.text_classifier_init.TextClassifierInit` sets them at the start of a fit.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lt_lightning.backbones.clip import DEFAULT_PROMPT

__all__ = ["clip_backbone", "clip_text_classifier_weights", "prompts"]


def prompts(class_names: Sequence[str], template: str = DEFAULT_PROMPT) -> list[str]:
    """``template.format(name)`` per class, ``_`` in the names replaced by spaces (LIFT ``get_tokenized_prompts``)."""
    if not isinstance(template, str) or "{}" not in template:
        raise ValueError(f"template must be a string with one '{{}}' for the class name, got {template!r}")
    return [template.format(str(name).replace("_", " ")) for name in class_names]


def clip_backbone(backbone: nn.Module) -> nn.Module:
    """The CLIP image tower inside ``backbone`` (looked up through wrappers that hold it as ``.backbone``).

    Raises:
        ValueError: no backbone with ``encode_text`` (a CLIP tower) inside.
    """
    current = backbone
    while not hasattr(current, "encode_text"):
        inner = getattr(current, "backbone", None)
        if not isinstance(inner, nn.Module):
            raise ValueError(
                f"text-initialised classifier: the backbone {type(backbone).__name__} holds no CLIP image tower "
                "(lt_lightning.backbones.clip.CLIPVisualBackbone); text embeddings need CLIP's text tower"
            )
        current = inner
    return current


def clip_text_classifier_weights(
    backbone: nn.Module, class_names: Sequence[str], template: str = DEFAULT_PROMPT
) -> Tensor:
    """``[C, num_features]`` L2-normalised text embeddings of the class prompts, in the backbone's feature space."""
    if len(class_names) == 0:
        raise ValueError("class_names is empty")
    tower = clip_backbone(backbone)
    return tower.text_to_feature_space(tower.encode_text(prompts(class_names, template)))
