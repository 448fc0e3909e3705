"""Any timm model as a feature extractor (``num_classes=0``: pooled, pre-logit features)."""

from __future__ import annotations

import difflib
import warnings

import timm
from timm.models import adapt_input_conv
from torch import Tensor, nn

from lt_lightning._checks import check_int
from lt_lightning.backbones._checkpoint import describe_mismatch, drop_prefixed, match_prefix, read_state_dict
from lt_lightning.backbones.base import Backbone

__all__ = ["TimmBackbone"]

# prefixes under which a checkpoint written by lt_lightning (or a bare wrapper) keeps this adapter's weights
_CHECKPOINT_PREFIXES = ("backbone.model.", "model.", "backbone.")


class TimmBackbone(Backbone):
    """A ``timm`` model without its classifier: ``forward(x) -> [B, num_features]`` pooled features.

    The model is ``timm.create_model(model_name, pretrained=pretrained, num_classes=0, in_chans=in_channels,
    drop_rate=drop_rate)``. Arguments are explicit (no ``**kwargs``) so LightningCLI / jsonargparse can type-check
    YAML configs.

    Weights:
        * ``pretrained=False`` (default): random initialisation, nothing is downloaded.
        * ``pretrained=True``: timm **downloads** the model's default pre-trained weights from the Hugging Face hub
          (or the URL in its ``pretrained_cfg``) into the local cache. This needs network access and is the user's
          explicit choice.
        * ``checkpoint_path``: load local weights instead (a ``state_dict``, a timm / Lightning checkpoint wrapping
          one under ``state_dict`` / ``model``, or ``.safetensors``). Classifier weights in the file are ignored,
          an lt_lightning ``backbone.model.`` prefix is stripped, and a first convolution trained on a different
          number of channels is adapted with timm's ``adapt_input_conv`` (summed for 1 channel). Every weight of the
          model must be present in the file (``ValueError`` listing the missing keys otherwise); extra keys are
          reported with a warning.

    Args:
        model_name: a timm model name, e.g. ``"resnet18"``, ``"resnet50"``, ``"vit_small_patch16_224"``.
        pretrained: download timm's pre-trained weights (see above).
        in_channels: channels of the input images.
        drop_rate: dropout rate before the (removed) classifier, applied to the features.
        checkpoint_path: local weights file to load; exclusive with ``pretrained=True``.
    """

    def __init__(
        self,
        model_name: str,
        pretrained: bool = False,
        in_channels: int = 3,
        drop_rate: float = 0.0,
        checkpoint_path: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model_name, str) or not timm.is_model(model_name):
            raise ValueError(
                f"model_name={model_name!r} is not a timm model; close matches: {_close_matches(model_name)}"
            )
        check_int("in_channels", in_channels, minimum=1)
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        if pretrained and checkpoint_path is not None:
            raise ValueError(
                f"pretrained=True downloads timm's weights and checkpoint_path={checkpoint_path!r} loads local ones; "
                "set only one of them"
            )
        self.model_name = model_name
        self.in_channels = in_channels
        self.model: nn.Module = timm.create_model(
            model_name, pretrained=pretrained, num_classes=0, in_chans=in_channels, drop_rate=drop_rate
        )
        self.num_features = int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)
        if checkpoint_path is not None:
            self.load_checkpoint(checkpoint_path)

    def load_checkpoint(self, checkpoint_path: str) -> None:
        """Load local weights into the timm model (see the class docstring for the accepted files).

        Raises:
            FileNotFoundError: ``checkpoint_path`` does not exist.
            ValueError: the file misses weights of the model or has tensors of the wrong shape.
        """
        model_keys = self.model.state_dict().keys()
        state_dict = match_prefix(read_state_dict(checkpoint_path, "checkpoint_path"), model_keys, _CHECKPOINT_PREFIXES)
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        classifiers = cfg.get("classifier") or ()
        state_dict = drop_prefixed(state_dict, (classifiers,) if isinstance(classifiers, str) else classifiers)
        self._adapt_first_conv(state_dict, cfg.get("first_conv"), checkpoint_path)
        try:
            result = self.model.load_state_dict(state_dict, strict=False)
        except RuntimeError as error:
            raise ValueError(f"checkpoint_path={checkpoint_path!r} does not fit {self.model_name}: {error}") from error
        if result.missing_keys:
            raise ValueError(
                f"checkpoint_path={checkpoint_path!r} does not fit {self.model_name}: "
                + describe_mismatch(result.missing_keys, result.unexpected_keys)
            )
        if result.unexpected_keys:
            warnings.warn(
                f"checkpoint_path={checkpoint_path!r}: ignored {describe_mismatch([], result.unexpected_keys)}",
                stacklevel=2,
            )

    def _adapt_first_conv(
        self, state_dict: dict[str, Tensor], first_conv: str | tuple[str, ...] | None, path: str
    ) -> None:
        names = (first_conv,) if isinstance(first_conv, str) else (first_conv or ())
        for name in names:
            key = f"{name}.weight"
            if key not in state_dict:
                continue
            weight = state_dict[key]
            target = self.model.get_submodule(name).weight
            if weight.ndim != 4 or weight.shape[1] == target.shape[1]:
                continue
            try:
                state_dict[key] = adapt_input_conv(self.in_channels, weight, base_chans=weight.shape[1])
            except NotImplementedError as error:
                raise ValueError(
                    f"checkpoint_path={path!r}: cannot adapt {key} from {weight.shape[1]} to {self.in_channels} "
                    "input channels"
                ) from error

    def forward_features(self, x: Tensor) -> Tensor:
        return self.model(x)


def _close_matches(name: object, limit: int = 10) -> list[str]:
    """Timm model names containing ``name``, else the most similar ones."""
    if not isinstance(name, str) or not name:
        return []
    matches = timm.list_models(f"*{name}*")[:limit]
    return matches or difflib.get_close_matches(name, timm.list_models(), n=limit)
