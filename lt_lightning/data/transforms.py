"""Device-side, batched image transforms (no per-sample Python loop).

Datasets hand out ``uint8 [B, C, H, W]`` batches; after the batch is on the accelerator the datamodule's
``on_after_batch_transfer`` runs :class:`DeviceAugmentation`: random crop with zero padding and random horizontal
flip (on ``uint8``, while training only), then ``uint8 -> float`` in ``[0, 1]`` and per-channel normalisation.
The CIFAR recipe (LDAM-DRW, Cao et al. NeurIPS 2019) is pad-4 crop + flip + normalise with
:data:`CIFAR_MEAN` / :data:`CIFAR_STD`. The contrastive methods' views (SimCLR, Chen et al. ICML 2020; SupCon,
Khosla et al. NeurIPS 2020) are :func:`lt_lightning.data.views.simclr_augment`, chosen with
``DeviceAugmentation(view_augment="simclr")``. The strong recipe's policies (AutoAugment's CIFAR-10 policy or
RandAugment, then Cutout; :mod:`lt_lightning.data.autoaugment`) follow the crop and flip with
``DeviceAugmentation(policy=..., cutout=...)``.
Randomness comes from ``generator`` or the global torch RNG of the batch's device (seeded by ``seed_everything``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.transforms import v2

from lt_lightning._checks import check_choice, check_int
from lt_lightning.data.autoaugment import autoaugment, cutout, randaugment
from lt_lightning.data.functional import (
    check_batch,
    check_finite_batch,
    check_mean_std,
    normalize,
    random_crop_with_padding,
    random_horizontal_flip,
    to_float,
)
from lt_lightning.data.functional import check_batch as _check_batch
from lt_lightning.data.views import simclr_augment

CIFAR_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)

#: the batched primitives (:mod:`lt_lightning.data.functional`), re-exported: ``lt_lightning.data.transforms.normalize``
#: and the others keep working
__all__ = [
    "AUGMENTATION_PRESETS",
    "AUGMENT_POLICIES",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "VIEW_AUGMENTS",
    "DeviceAugmentation",
    "check_augment_policy",
    "check_augmentation_preset",
    "check_finite_batch",
    "check_mean_std",
    "check_view_augment",
    "image_train_transform",
    "normalize",
    "pad_crop_padding",
    "random_crop_with_padding",
    "random_horizontal_flip",
    "simclr_augment",
    "to_float",
]
_PRIVATE_ALIASES = (_check_batch,)


VIEW_AUGMENTS: tuple[str, ...] = ("standard", "simclr")
"""Train-time view augmentations of :class:`DeviceAugmentation`: ``"standard"`` (pad crop + flip) or ``"simclr"``."""


def check_view_augment(view_augment: str) -> str:
    """``view_augment`` if it is one of :data:`VIEW_AUGMENTS`, else ``ValueError`` naming the choices."""
    return check_choice(
        "view_augment", view_augment, VIEW_AUGMENTS, what=f"one of {', '.join(map(repr, VIEW_AUGMENTS))}"
    )


AUGMENT_POLICIES: tuple[str, ...] = ("none", "autoaugment", "randaugment")
"""Policies of :class:`DeviceAugmentation` after the crop and flip: none, AutoAugment's CIFAR-10 policy
(:func:`~lt_lightning.data.autoaugment.autoaugment`) or RandAugment (2 operations, magnitude 9 of 31,
:func:`~lt_lightning.data.autoaugment.randaugment`)."""


def check_augment_policy(policy: str) -> str:
    """``policy`` if it is one of :data:`AUGMENT_POLICIES`, else ``ValueError`` naming ``augment_policy``."""
    return check_choice(
        "augment_policy", policy, AUGMENT_POLICIES, what=f"one of {', '.join(map(repr, AUGMENT_POLICIES))}"
    )


class DeviceAugmentation(nn.Module):
    """The batched pipeline ``[crop + flip when training] -> to_float -> normalize``.

    ``view_augment`` picks the training augmentation: ``"standard"`` is the random crop with zero ``padding`` and the
    optional flip (on ``uint8``), then ``policy`` and ``cutout`` when set (the strong CIFAR recipe: crop, flip,
    AutoAugment's CIFAR-10 policy, Cutout 16, as zzpustc/CC-SAM ``datasets/Cifar.py``, BCL and ProCo); ``"simclr"``
    is :func:`simclr_augment` on the float image -- random resized crop
    (scale ``(0.2, 1)``), the flip if ``flip``, colour jitter ``(0.4, 0.4, 0.4, 0.1)`` with ``p = 0.8`` and
    grayscale with ``p = 0.2`` (the SimCLR / SupCon CIFAR views) -- and ``padding``, ``policy`` and ``cutout`` are
    unused (the contrastive methods' views are their strong augmentation already). Evaluation
    (``train=False``) is the same for both: ``to_float`` and ``normalize``.

    ``uint8`` batches (every datamodule of this package) cannot hold NaN or inf, and finite ``mean`` / ``std > 0``
    (checked here) keep them finite. A floating batch from a custom dataset can: ``check_finite=True`` checks every
    floating batch with :func:`check_finite_batch` (one host-device synchronisation per batch, none for ``uint8``).

    Args:
        mean: per-channel mean of the ``[0, 1]`` images (finite).
        std: per-channel standard deviation (positive, finite).
        padding: zero padding of the random crop (``0`` disables the crop).
        flip: random horizontal flip with probability 0.5 when training.
        check_finite: refuse floating input batches holding NaN / inf (``ValueError``).
        view_augment: ``"standard"`` or ``"simclr"`` (see above; :data:`VIEW_AUGMENTS`).
        policy: after the crop and flip of ``"standard"`` views: ``"none"`` (default), ``"autoaugment"`` (CIFAR-10
            policy) or ``"randaugment"`` (:data:`AUGMENT_POLICIES`), per sample, on ``uint8`` batches.
        cutout: side of the Cutout square after the policy (``0``, the default: none; 16 for CIFAR).
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        padding: int = 0,
        flip: bool = False,
        check_finite: bool = False,
        view_augment: str = "standard",
        policy: str = "none",
        cutout: int = 0,
    ) -> None:
        super().__init__()
        self.mean, self.std = check_mean_std(mean, std)
        check_int("padding", padding, minimum=0, what=">= 0")
        self.padding = int(padding)
        self.flip = bool(flip)
        self.check_finite = bool(check_finite)
        self.view_augment = check_view_augment(view_augment)
        self.policy = check_augment_policy(policy)
        self.cutout = int(check_int("cutout", cutout, minimum=0, what="an integer >= 0 (the square's side; 0: none)"))

    def forward(self, x: Tensor, train: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Transform a ``uint8`` (or float in ``[0, 1]``) ``[B, C, H, W]`` batch; augment only if ``train``."""
        check_batch(x)
        if self.check_finite:
            check_finite_batch(x)
        if train and self.view_augment == "simclr":
            return normalize(simclr_augment(x, self.flip, generator), self.mean, self.std)
        if train:
            x = random_crop_with_padding(x, self.padding, generator)
            if self.flip:
                x = random_horizontal_flip(x, 0.5, generator)
            if self.policy != "none" and x.dtype != torch.uint8:
                raise ValueError(f"policy={self.policy!r} needs uint8 batches, got dtype {x.dtype}")
            if self.policy == "autoaugment":
                x = autoaugment(x, generator=generator)
            elif self.policy == "randaugment":
                x = randaugment(x, generator=generator)
            x = cutout(x, self.cutout, generator)
        return normalize(to_float(x), self.mean, self.std)

    def extra_repr(self) -> str:
        strong = f", policy={self.policy!r}, cutout={self.cutout}" if self.policy != "none" or self.cutout else ""
        return (
            f"mean={self.mean}, std={self.std}, padding={self.padding}, flip={self.flip}, "
            f"view_augment={self.view_augment!r}{strong}"
        )


AUGMENTATION_PRESETS: tuple[str, ...] = ("random_resized_crop", "pad_crop", "randaugment", "trivialaugment")
"""Train-time augmentation presets of the image-file datamodules (``augmentation_preset`` argument of
:class:`~lt_lightning.data.image_files.ImageFileDataModule`); see :func:`image_train_transform`."""


def check_augmentation_preset(preset: str) -> str:
    """``preset`` if it is one of :data:`AUGMENTATION_PRESETS`, else ``ValueError`` naming ``augmentation_preset``."""
    if not isinstance(preset, str) or preset not in AUGMENTATION_PRESETS:
        raise ValueError(
            f"augmentation_preset must be one of {', '.join(map(repr, AUGMENTATION_PRESETS))}, got {preset!r} "
            "(pad_crop: CIFAR-style for small images; random_resized_crop: ImageNet-style; randaugment / "
            "trivialaugment: torchvision's policies after the random resized crop)"
        )
    return preset


def pad_crop_padding(image_size: int) -> int:
    """Zero padding of the ``pad_crop`` preset: ``max(1, image_size // 8)``, CIFAR's 4 pixels at 32 x 32."""
    return max(1, int(image_size) // 8)


def image_train_transform(augmentation_preset: str, image_size: int, horizontal_flip: bool = True) -> v2.Compose:
    """The per-image (DataLoader worker) training pipeline of an augmentation preset, on a PIL RGB image.

    With ``S = image_size``:

    * ``"random_resized_crop"`` (ImageNet-style; facebookresearch/classifier-balancing ``data/dataloader.py``, the
      recipe of the ImageNet-LT / Places-LT numbers): ``RandomResizedCrop(S)`` (scale ``(0.08, 1)``, ratio
      ``(3/4, 4/3)``), then ``RandomHorizontalFlip(0.5)`` if ``horizontal_flip``.
    * ``"randaugment"``: the same, then torchvision's ``RandAugment()`` (2 operations of magnitude 9 of 31 bins;
      Cubuk et al., CVPR-W 2020), in the order of mmpretrain's ``configs/_base_/datasets/imagenet_bs64_swin_256.py``
      and of PaCo's ImageNet-LT pipeline (dvlab-research/Parametric-Contrastive-Learning ``LT/paco_lt.py``,
      ``augmentation_randncls``: RandomResizedCrop -> flip -> colour jitter -> RandAugment; the colour jitter and
      timm's magnitude noise are not part of this preset).
    * ``"trivialaugment"``: the same with ``TrivialAugmentWide()`` (one operation, uniform magnitude; Müller &
      Hutter, ICCV 2021) instead of RandAugment.
    * ``"pad_crop"`` (CIFAR-style for small images; kaidic/LDAM-DRW ``cifar_train.py``: ``RandomCrop(32,
      padding=4)`` + ``RandomHorizontalFlip``): the worker only brings the image to ``S x S`` -- ``Resize(S)`` of
      the shorter side, ``CenterCrop(S)``, the whole image of a square input -- and the random crop with
      :func:`pad_crop_padding` zero padding and the flip run batched on the device
      (:class:`DeviceAugmentation`, set up by the datamodule), as for CIFAR. This part is deterministic.

    Raises:
        ValueError: an unknown ``augmentation_preset`` (:func:`check_augmentation_preset`).
    """
    augmentation_preset = check_augmentation_preset(augmentation_preset)
    if augmentation_preset == "pad_crop":
        return v2.Compose([v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)])
    steps: list[v2.Transform] = [v2.RandomResizedCrop(image_size, antialias=True)]
    if horizontal_flip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if augmentation_preset == "randaugment":
        steps.append(v2.RandAugment())
    elif augmentation_preset == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    return v2.Compose(steps)
