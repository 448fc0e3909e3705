"""The image tower of a CLIP model (open_clip) as a :class:`~lt_lightning.backbones.base.Backbone`.

LIFT (Shi et al., "Long-Tail Learning with Foundation Model: Heavy Fine-Tuning Hurts", ICML 2024; code
shijxcs/LIFT ``models/peft_vit.py``, ``trainer.py``) fine-tunes the image tower of CLIP ViT-B/16 and classifies its
*pre-projection* features (the class token after ``ln_post``, width 768) with a cosine classifier whose weights start
from the text embeddings mapped back through the projection: ``w_c = normalize(normalize(t_c) P^T)`` with ``P`` the
``[width, embed_dim]`` image projection (``trainer.py`` ``init_head_text_feat``). ``project=False`` (the default)
gives those features; ``project=True`` the joint-space embedding ``f P`` (then ``w_c = normalize(t_c)``).

Weights (``pretrained``), nothing is downloaded unless asked for:

* ``None`` (default): random initialisation.
* a local file (``.pt`` / ``.pth`` / ``.bin`` / ``.safetensors``): the full CLIP ``state_dict`` (image and text
  towers, open_clip's keys; OpenAI's checkpoints as open_clip converts them, an lt_lightning ``backbone.visual.``
  checkpoint is not such a file), read without executing pickled code.
* an open_clip tag (``"openai"``, ``"laion2b_s34b_b88k"``, ... see ``open_clip.list_pretrained_tags_by_model``):
  open_clip downloads the weights into its cache (the Hugging Face hub cache, or ``cache_dir``) the first time and
  reads them from there afterwards. Offline and not cached, the error names the file to download and to give as
  ``pretrained`` instead.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lt_lightning.backbones._checkpoint import describe_mismatch, read_state_dict
from lt_lightning.backbones.base import Backbone

__all__ = ["CLIP_MEAN", "CLIP_STD", "CLIPVisualBackbone", "DEFAULT_PROMPT", "import_open_clip"]

#: OpenAI CLIP's image normalisation (open_clip ``OPENAI_DATASET_MEAN`` / ``_STD``; LIFT ``trainer.py``)
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
#: LIFT's prompt template (``trainer.py``: ``"a photo of a {}."``, class names with ``_`` replaced by spaces)
DEFAULT_PROMPT = "a photo of a {}."


def import_open_clip() -> Any:
    """``open_clip``, or ``ImportError`` saying how to install it (the ``foundation`` extra)."""
    try:
        import open_clip
    except ImportError as error:  # pragma: no cover - the dev extra installs it
        raise ImportError(
            "CLIP backbones need open_clip: pip install 'lt-lightning[foundation]' (or pip install open_clip_torch)"
        ) from error
    return open_clip


def _model_name(model_name: str, model_config: dict[str, Any] | None = None) -> str:
    """The open_clip name of ``model_name``; a ``.json`` path or ``model_config`` is registered first with
    ``open_clip.add_model_config`` (a ``.json`` file's name is the model's name)."""
    open_clip = import_open_clip()
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"model_name must be an open_clip model name or a .json model config, got {model_name!r}")
    if model_config is not None:
        if not isinstance(model_config, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(model_config):
            raise ValueError(f"model_config must be a dict with embed_dim, vision_cfg, text_cfg; got {model_config!r}")
        if "/" in model_name or model_name.endswith(".json"):
            raise ValueError(f"with model_config, model_name must be a plain name, got {model_name!r}")
        known = open_clip.get_model_config(model_name)
        if known is not None and known != model_config:
            raise ValueError(f"model_name={model_name!r} is an open_clip model already: name model_config otherwise")
        folder = Path(tempfile.mkdtemp(prefix="lt_lightning_open_clip_"))
        (folder / f"{model_name}.json").write_text(json.dumps(model_config))
        open_clip.add_model_config(folder / f"{model_name}.json")
        return model_name
    if model_name.endswith(".json"):
        path = Path(model_name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model_name: no such open_clip model config: {model_name!r}")
        open_clip.add_model_config(path)
        model_name = path.stem
    if model_name not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if model_name.lower().replace("/", "-") in m.lower()][:10]
        raise ValueError(
            f"model_name={model_name!r} is not an open_clip model (close matches: {close}); give a name of "
            "open_clip.list_models(), the path of a .json model config, or model_config"
        )
    return model_name


def _weights_file(model_name: str, pretrained: str, cache_dir: str | None) -> str:
    """The local file of ``pretrained``: the path itself, or open_clip's cached download of a tag."""
    open_clip = import_open_clip()
    if Path(pretrained).expanduser().is_file():
        return str(Path(pretrained).expanduser())
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained not in tags:
        raise FileNotFoundError(
            f"pretrained={pretrained!r} is neither a file nor an open_clip tag of {model_name} (tags: {tags}); give "
            "the path of a CLIP weights file or one of the tags"
        )
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    try:
        from open_clip.factory import download_pretrained  # the function open_clip.create_model downloads with

        return str(download_pretrained(cfg, cache_dir=cache_dir))
    except Exception as error:  # offline, no cache: say which file to provide
        source = cfg.get("hf_hub") or cfg.get("url") or "?"
        raise FileNotFoundError(
            f"pretrained={pretrained!r}: the weights of open_clip {model_name}/{pretrained} are not in the model cache "
            f"and could not be downloaded ({type(error).__name__}: {error}). Download {source} (Hugging Face hub "
            "repo/file or URL) on a machine with network access and give its local path as pretrained, or "
            "run once with network access to fill the cache"
        ) from error


def build_clip(
    model_name: str,
    pretrained: str | None = None,
    cache_dir: str | None = None,
    model_config: dict[str, Any] | None = None,
) -> nn.Module:
    """A full open_clip ``CLIP`` model (image and text towers) in float32 with the weights of ``pretrained``.

    The architecture is built by ``open_clip.create_model`` without weights (nothing downloaded); the weights are
    then read from the local file (or open_clip's cache, see the module docstring) and must fit exactly.

    Raises:
        FileNotFoundError: ``pretrained`` is neither a file nor an available tag (the message names what to give).
        ValueError: the file does not fit the architecture (missing / unexpected keys, wrong shapes).
    """
    open_clip = import_open_clip()
    name = _model_name(model_name, model_config)
    path = None if pretrained is None else _weights_file(name, pretrained, cache_dir)  # before the (slow) build
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns "No pretrained weights loaded": they are loaded below
    try:
        model = open_clip.create_model(name, pretrained=None, pretrained_image=False, pretrained_text=False)
    finally:
        root.setLevel(level)
    if path is not None:
        state = read_state_dict(path, "pretrained")
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as error:
            raise ValueError(f"pretrained={pretrained!r} ({path}) does not fit open_clip {name}: {error}") from error
        # open_clip's OpenAI checkpoints carry no logit_bias; a missing buffer-like key of that kind is harmless
        missing = [k for k in result.missing_keys if k != "logit_bias"]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"pretrained={pretrained!r} ({path}) does not fit open_clip {name}: "
                + describe_mismatch(missing, list(result.unexpected_keys))
            )
    return model.float()


class CLIPVisualBackbone(Backbone):
    """The image tower of an open_clip CLIP model: ``forward(x) -> [B, num_features]``.

    ``num_features`` is the tower's width (``project=False``: the class token after ``ln_post``, LIFT's features) or
    the joint embedding dimension (``project=True``). The text tower is not part of this module (nor of its
    checkpoints): :meth:`encode_text` builds it from the same ``model_name`` / ``pretrained`` when asked (the
    text-initialised classifier, :func:`lt_lightning.heads.text_init.clip_text_classifier_weights`).

    Input: a batch whose side differs from the tower's ``image_size`` is resized to it (bilinear, antialiased):
    CIFAR's 32-pixel images reach a 224-pixel ViT. ``input_mean`` / ``input_std``: the normalisation the datamodule
    applied (e.g. ImageNet's); given, each batch is brought to CLIP's (``x·s_in + m_in - m_clip) / s_clip``),
    otherwise the batch is used as it comes.

    Args:
        model_name: an open_clip model name (``"ViT-B-16"``) or the path of a ``.json`` open_clip model config
            (``embed_dim``, ``vision_cfg``, ``text_cfg``; its file name is the model's name).
        pretrained: ``None`` (random weights), a local weights file, or an open_clip tag (downloaded into the cache
            the first time: the user's explicit choice); see the module docstring.
        project: apply the image projection (joint-space features) instead of LIFT's pre-projection features.
        input_mean: per-channel mean the datamodule normalised with (``None``: no re-normalisation).
        input_std: per-channel std the datamodule normalised with (with ``input_mean``).
        cache_dir: open_clip's download cache (default the Hugging Face hub cache).
        in_channels: channels of the input images: 3, or 1 (grayscale, repeated to the tower's 3).
        model_config: an open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) registered under
            ``model_name``: an architecture of your own (the tests' tiny CLIP) without a file.

    Raises:
        ValueError: an unknown model name, weights that do not fit, a non-ViT tower, bad ``input_mean`` /
            ``input_std``.
        FileNotFoundError: ``pretrained`` is neither a file nor an available (cached or downloadable) tag.
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        project: bool = False,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        cache_dir: str | None = None,
        model_config: dict[str, Any] | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3) or isinstance(in_channels, bool):
            raise ValueError(f"in_channels must be 1 (grayscale, repeated to RGB) or 3, got {in_channels!r}")
        self.in_channels = int(in_channels)
        if not isinstance(project, bool):
            raise ValueError(f"project must be a bool, got {project!r}")
        if (input_mean is None) != (input_std is None):
            raise ValueError(f"give both input_mean and input_std or neither, got {input_mean!r}, {input_std!r}")
        clip = build_clip(model_name, pretrained, cache_dir, model_config)
        visual = clip.visual
        if not hasattr(visual, "transformer") or not hasattr(visual, "proj"):
            raise ValueError(f"model_name={model_name!r}: only ViT image towers are supported, got {type(visual)}")
        self.model_name, self.pretrained, self.cache_dir, self.project = model_name, pretrained, cache_dir, project
        self.model_config = model_config
        proj = visual.proj.detach().clone()
        visual.proj = None  # the backbone applies it (project=True) or keeps it for the text mapping only
        self.visual = visual
        if project:
            self.proj = nn.Parameter(proj)
        else:
            self.register_buffer("proj", proj)  # [width, embed_dim], unused by forward: not a trained parameter
        self.num_features = int(proj.shape[1] if project else proj.shape[0])
        size = visual.image_size
        self.image_size: tuple[int, int] = (int(size[0]), int(size[1])) if isinstance(size, Sequence) else (size, size)
        if input_mean is not None:
            mean_in, std_in = _channels("input_mean", input_mean), _channels("input_std", input_std, positive=True)
            scale = std_in / torch.tensor(CLIP_STD)
            shift = (mean_in - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
            self.register_buffer("input_scale", scale.view(1, 3, 1, 1), persistent=False)
            self.register_buffer("input_shift", shift.view(1, 3, 1, 1), persistent=False)
        else:
            self.input_scale: Tensor | None = None
            self.input_shift: Tensor | None = None
        del clip

    def prepare_input(self, x: Tensor) -> Tensor:
        """``x`` re-normalised to CLIP's statistics (when ``input_mean`` is set) and resized to ``image_size``."""
        if x.dim() != 4:
            raise ValueError(f"expected an image batch [B, C, H, W], got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels}-channel images, got shape {tuple(x.shape)}")
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)  # grayscale images (Digits-LT) on an RGB tower
        if self.input_scale is not None and self.input_shift is not None:
            x = x * self.input_scale.to(x.dtype) + self.input_shift.to(x.dtype)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        features = self.visual(self.prepare_input(x))
        return features @ self.proj if self.project else features

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> Tensor:
        """CLIP text embeddings ``[N, embed_dim]`` (not normalised) of ``prompts``, from a text tower built for the
        call from ``model_name`` / ``pretrained`` (its weights are read again; nothing is kept afterwards)."""
        open_clip = import_open_clip()
        clip = build_clip(self.model_name, self.pretrained, self.cache_dir, self.model_config).eval()
        tokenizer = open_clip.get_tokenizer(_model_name(self.model_name, self.model_config))
        tokens = tokenizer(list(prompts))
        return torch.cat([clip.encode_text(chunk) for chunk in tokens.split(1000)]).float()

    def text_to_feature_space(self, text_embeddings: Tensor) -> Tensor:
        """Text embeddings mapped into the space of this backbone's features, L2-normalised: ``normalize(t)`` when
        ``project``, else LIFT's ``normalize(normalize(t) P^T)`` (``trainer.py`` ``init_head_text_feat``)."""
        text = F.normalize(text_embeddings.float(), dim=-1)
        if not self.project:
            text = F.normalize(text @ self.proj.detach().float().t(), dim=-1)
        return text

    def extra_repr(self) -> str:
        return f"model_name={self.model_name!r}, pretrained={self.pretrained!r}, project={self.project}"


def _channels(name: str, values: Sequence[float] | None, positive: bool = False) -> Tensor:
    if values is None or len(values) not in (1, 3) or not all(math.isfinite(float(v)) for v in values):
        raise ValueError(f"{name} must be 1 or 3 finite numbers, got {values!r}")
    if positive and any(float(v) <= 0 for v in values):
        raise ValueError(f"{name} must be > 0, got {values!r}")
    return torch.tensor([float(v) for v in values]).expand(3).clone()
