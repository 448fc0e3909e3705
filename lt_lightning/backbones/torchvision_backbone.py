"""torchvision ResNets / ResNeXts (ImageNet-LT, Places-LT, iNaturalist backbones) as feature extractors."""

from __future__ import annotations

from typing import Literal

import torchvision
from torch import Tensor, nn

from lt_lightning.backbones._checkpoint import describe_mismatch, drop_prefixed, match_prefix, read_state_dict
from lt_lightning.backbones.base import Backbone

__all__ = ["ResNeXt50", "ResNet50", "TorchvisionBackbone"]

TorchvisionArch = Literal[
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d"
]
ARCHS: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
)
_CHECKPOINT_PREFIXES = ("backbone.model.", "model.", "backbone.")


class TorchvisionBackbone(Backbone):
    """A torchvision ResNet/ResNeXt with its ``fc`` replaced by ``Identity``: ``forward(x) -> [B, num_features]``.

    The network is built with ``weights=None`` and never downloads anything; pass ``weights_path`` to load a local
    file (a torchvision ``state_dict`` such as ``resnet50-0676ba61.pth``, a Lightning / DDP checkpoint wrapping
    one, or ``.safetensors``). The file's ``fc`` weights are ignored; every other weight must be present and have
    the right shape (``ValueError`` listing the offending keys otherwise).

    ImageNet-LT / Places-LT papers in Zhang et al. (TPAMI 2023) use ResNet-50 / ResNeXt-50 (32x4d), 2048 features.

    Args:
        arch: one of ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, ``resnet152``, ``resnext50_32x4d``,
            ``resnext101_32x8d``.
        weights_path: local weights file to load, or ``None`` for random initialisation.
        zero_init_residual: start the last BN of every residual branch at ``gamma = 0`` (Goyal et al., 2017), so
            each block starts as the identity.
    """

    def __init__(
        self, arch: TorchvisionArch = "resnet50", weights_path: str | None = None, zero_init_residual: bool = False
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}; got {arch!r}")
        self.arch = arch
        self.model = getattr(torchvision.models, arch)(weights=None, zero_init_residual=zero_init_residual)
        self.num_features = int(self.model.fc.in_features)
        self.model.fc = nn.Identity()
        if weights_path is not None:
            self.load_weights(weights_path)

    def load_weights(self, weights_path: str) -> None:
        """Load a local weights file, ignoring its ``fc`` (classifier) entries.

        Raises:
            FileNotFoundError: ``weights_path`` does not exist.
            ValueError: weights are missing, unexpected or of the wrong shape.
        """
        state_dict = read_state_dict(weights_path, "weights_path")
        state_dict = match_prefix(state_dict, self.model.state_dict().keys(), _CHECKPOINT_PREFIXES)
        state_dict = drop_prefixed(state_dict, ("fc",))
        try:
            result = self.model.load_state_dict(state_dict, strict=False)
        except RuntimeError as error:
            raise ValueError(f"weights_path={weights_path!r} does not fit {self.arch}: {error}") from error
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"weights_path={weights_path!r} does not fit {self.arch}: "
                + describe_mismatch(result.missing_keys, result.unexpected_keys)
            )

    def forward_features(self, x: Tensor) -> Tensor:
        return self.model(x)


class ResNet50(TorchvisionBackbone):
    """torchvision ResNet-50 (2048 features). See :class:`TorchvisionBackbone`."""

    def __init__(self, weights_path: str | None = None, zero_init_residual: bool = False) -> None:
        super().__init__("resnet50", weights_path=weights_path, zero_init_residual=zero_init_residual)


class ResNeXt50(TorchvisionBackbone):
    """torchvision ResNeXt-50 32x4d (2048 features). See :class:`TorchvisionBackbone`."""

    def __init__(self, weights_path: str | None = None, zero_init_residual: bool = False) -> None:
        super().__init__("resnext50_32x4d", weights_path=weights_path, zero_init_residual=zero_init_residual)
