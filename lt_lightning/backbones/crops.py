"""Test-time ensembling of crops (LIFT's ``tte``: shijxcs/LIFT ``trainer.py``, ``Resize(224 + 24)``, ``FiveCrop(224)``,
the crops' outputs averaged) as a backbone wrapper.

In evaluation mode (validation, test, predict) the batch is brought to ``resize_to`` pixels (bilinear, when it has
another size), cut into the four corner crops and the centre crop of ``crop_size`` (``"ten"``: the same five and
their mirror images), and the wrapped backbone's features of the crops are averaged -- L2-normalised first
(``normalize``, the default). With a cosine classifier (LIFT's) the logits are then ``s <m, ŵ_c> / ||m||`` for
``m`` the mean of the crops' normalised features, while LIFT averages the crops' logits ``s <m, ŵ_c>``: the same
prediction (the factor ``1 / ||m|| >= 1`` is one per image), hence the same accuracy; the softmax is sharper. With a
linear head and ``normalize=False`` it is exactly the average of the crops' logits. In training mode the batch goes
to the wrapped backbone as it is.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from lt_lightning._checks import check_int
from lt_lightning.backbones.base import Backbone

__all__ = ["TestTimeCrops", "five_crops"]


def five_crops(x: Tensor, size: int) -> list[Tensor]:
    """The four corner crops and the centre crop of side ``size`` of ``x`` ``[B, C, H, W]`` (torchvision's
    ``FiveCrop`` order: top-left, top-right, bottom-left, bottom-right, centre)."""
    height, width = x.shape[-2:]
    if size > height or size > width:
        raise ValueError(f"crop_size={size} exceeds the image ({height} x {width})")
    top, left = (height - size + 1) // 2, (width - size + 1) // 2  # torchvision's center_crop rounding
    return [
        x[..., :size, :size],
        x[..., :size, width - size :],
        x[..., height - size :, :size],
        x[..., height - size :, width - size :],
        x[..., top : top + size, left : left + size],
    ]


class TestTimeCrops(Backbone):
    """Average the wrapped backbone's features over crops of each evaluation image (see the module docstring).

    Args:
        backbone: the backbone whose features are averaged.
        crop_size: side of the crops (LIFT: 224).
        resize_to: side the evaluation batch is resized to before cropping (LIFT: ``crop_size + 24`` = 248);
            ``None``: the batch as it comes.
        crops: ``"five"`` (LIFT's default ``fivecrop``) or ``"ten"`` (with the mirrored crops).
        normalize: average the L2-normalised features (for a cosine classifier) instead of the raw ones.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        backbone: Backbone,
        crop_size: int = 224,
        resize_to: int | None = 248,
        crops: Literal["five", "ten"] = "five",
        normalize: bool = True,
    ) -> None:
        super().__init__()
        check_int("crop_size", crop_size, minimum=1)
        if resize_to is not None:
            check_int("resize_to", resize_to, minimum=1)
            if crop_size > resize_to:
                raise ValueError(
                    f"crop_size={crop_size} must not exceed resize_to={resize_to} (crops of the resized batch)"
                )
        if crops not in ("five", "ten"):
            raise ValueError(f"crops must be 'five' or 'ten', got {crops!r}")
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be a bool, got {normalize!r}")
        self.backbone = backbone
        self.num_features = backbone.num_features
        if hasattr(backbone, "in_channels"):
            self.in_channels = backbone.in_channels  # what the CLI's channel check reads
        self.crop_size, self.resize_to, self.crops, self.normalize = crop_size, resize_to, crops, normalize

    def forward_features(self, x: Tensor) -> Tensor:
        if self.training:
            return self.backbone(x)
        if self.resize_to is not None and tuple(x.shape[-2:]) != (self.resize_to, self.resize_to):
            x = F.interpolate(
                x.float(), size=(self.resize_to, self.resize_to), mode="bilinear", antialias=True, align_corners=False
            ).to(x.dtype)
        views = five_crops(x, self.crop_size)
        if self.crops == "ten":
            views += [torch.flip(v, dims=(-1,)) for v in views]
        batch = x.shape[0]
        features = self.backbone(torch.cat(views, dim=0))  # one pass over all crops
        if self.normalize:
            features = F.normalize(features.float(), dim=-1).to(features.dtype)
        return features.view(len(views), batch, -1).mean(dim=0)

    def extra_repr(self) -> str:
        return (
            f"crop_size={self.crop_size}, resize_to={self.resize_to}, crops={self.crops!r}, normalize={self.normalize}"
        )
