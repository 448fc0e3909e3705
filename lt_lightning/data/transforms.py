"""Device-side, batched image transforms (no per-sample Python loop).

Datasets hand out ``uint8 [B, C, H, W]`` batches; after the batch is on the accelerator the datamodule's
``on_after_batch_transfer`` runs :class:`DeviceAugmentation`: random crop with zero padding and random horizontal
flip (on ``uint8``, while training only), then ``uint8 -> float`` in ``[0, 1]`` and per-channel normalisation.
The CIFAR recipe (LDAM-DRW, Cao et al. NeurIPS 2019) is pad-4 crop + flip + normalise with
:data:`CIFAR_MEAN` / :data:`CIFAR_STD`. The contrastive methods' views (SimCLR, Chen et al. ICML 2020; SupCon,
Khosla et al. NeurIPS 2020) are :func:`lt_lightning.data.views.simclr_augment`, chosen with
``DeviceAugmentation(view_augment="simclr")``.
Randomness comes from ``generator`` or the global torch RNG of the batch's device (seeded by ``seed_everything``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.transforms import v2

CIFAR_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)


def _check_batch(x: Tensor, name: str = "x") -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} must be a [B, C, H, W] batch, got shape {tuple(x.shape)}")


def _random_ints(high: int, size: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``size`` integers uniform in ``[0, high)`` on ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randint(0, high, (size,), generator=generator, device=gen_device).to(device)


def random_crop_with_padding(x: Tensor, padding: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad each side by ``padding`` and crop a random ``H x W`` window per sample.

    Output ``y[b, :, i, j] = pad(x)[b, :, i + dy_b, j + dx_b]`` with offsets ``dy_b, dx_b`` uniform in
    ``{0, ..., 2 * padding}``, gathered with one advanced-indexing operation (torchvision's
    ``RandomCrop(size, padding)`` on a whole batch). Works on any dtype; ``padding=0`` returns ``x`` unchanged.

    Args:
        x: ``[B, C, H, W]`` batch.
        padding: pixels of zero padding on each side (``>= 0``).
        generator: optional torch generator for the offsets.
    """
    _check_batch(x)
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding == 0 or x.shape[0] == 0:
        return x
    b, _, h, w = x.shape
    padded = nn.functional.pad(x, (padding, padding, padding, padding))  # zeros
    dy = _random_ints(2 * padding + 1, b, generator, x.device)
    dx = _random_ints(2 * padding + 1, b, generator, x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = dx[:, None] + torch.arange(w, device=x.device)  # [B, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    # channels-last view so the three advanced indices are adjacent: result [B, H, W, C]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_horizontal_flip(x: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each sample left-right with probability ``p`` (independently per sample).

    Args:
        x: ``[B, C, H, W]`` batch.
        p: flip probability in ``[0, 1]``.
        generator: optional torch generator.
    """
    _check_batch(x)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if p == 0.0 or x.shape[0] == 0:
        return x
    gen_device = generator.device if generator is not None else x.device
    flip = (torch.rand(x.shape[0], generator=generator, device=gen_device) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def to_float(x: Tensor) -> Tensor:
    """``uint8`` in ``[0, 255]`` -> ``float32`` in ``[0, 1]``; floating inputs are returned unchanged."""
    if x.is_floating_point():
        return x
    if x.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 or floating point, got dtype {x.dtype}")
    return x.to(torch.float32).div_(255.0)


def check_mean_std(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` as float tuples; ``ValueError`` unless they have equal length, ``mean`` is finite, ``std > 0``.

    Checked on Python numbers, so it costs no device synchronisation.
    """
    mean_f = tuple(float(m) for m in mean)
    std_f = tuple(float(s) for s in std)
    if len(mean_f) != len(std_f) or not mean_f:
        raise ValueError(f"mean and std must have the same length >= 1, got mean={mean_f}, std={std_f}")
    if not all(math.isfinite(m) for m in mean_f):
        raise ValueError(f"mean must be finite, got {mean_f}")
    if not all(math.isfinite(s) and s > 0 for s in std_f):
        raise ValueError(f"std must be positive and finite, got {std_f}")
    return mean_f, std_f


def normalize(x: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """Per-channel standardisation ``(x - mean_c) / std_c`` of a float ``[B, C, H, W]`` batch.

    ``mean`` / ``std`` given as numbers are checked by :func:`check_mean_std`; given as tensors they are checked
    only when on the CPU (checking an accelerator tensor would synchronise the host with the device on every batch).
    """
    _check_batch(x)
    if not isinstance(mean, Tensor) and not isinstance(std, Tensor):
        mean, std = check_mean_std(mean, std)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).flatten()
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).flatten()
    channels = x.shape[1]
    if mean_t.numel() != channels or std_t.numel() != channels:
        raise ValueError(
            f"mean/std must have one entry per channel ({channels}), got mean={mean_t.tolist()}, std={std_t.tolist()}"
            f" (a {channels}-channel batch: is the data's channel count the one the mean/std were made for?)"
        )
    if isinstance(std, Tensor) and std.device.type == "cpu" and not bool(((std > 0) & std.isfinite()).all()):
        raise ValueError(f"std must be positive and finite, got {std.flatten().tolist()}")
    return (x - mean_t[None, :, None, None]) / std_t[None, :, None, None]


def check_finite_batch(x: Tensor, what: str = "input batch") -> Tensor:
    """Return ``x``; ``ValueError`` with the count and the first position of its NaN / inf entries, if any.

    Integer tensors (``uint8`` images) cannot hold them and are returned without a check. For a floating tensor this
    is one reduction and one host-device synchronisation: call it on a chosen batch (e.g. the first of each epoch),
    not on every step of a GPU run.
    """
    if not x.is_floating_point() and not x.is_complex():
        return x
    finite = torch.isfinite(x)
    if bool(finite.all()):
        return x
    bad = ~finite
    first = tuple(int(i) for i in torch.nonzero(bad)[0].tolist())
    nan = int(torch.isnan(x).sum())
    raise ValueError(
        f"{what} {tuple(x.shape)} holds {int(bad.sum())} non-finite value(s) ({nan} NaN, {int(bad.sum()) - nan} inf), "
        f"first at index {first}: check the dataset / transforms that produced it"
    )


VIEW_AUGMENTS: tuple[str, ...] = ("standard", "simclr")
"""Train-time view augmentations of :class:`DeviceAugmentation`: ``"standard"`` (pad crop + flip) or ``"simclr"``."""


def check_view_augment(view_augment: str) -> str:
    """``view_augment`` if it is one of :data:`VIEW_AUGMENTS`, else ``ValueError`` naming the choices."""
    if not isinstance(view_augment, str) or view_augment not in VIEW_AUGMENTS:
        raise ValueError(f"view_augment must be one of {', '.join(map(repr, VIEW_AUGMENTS))}, got {view_augment!r}")
    return view_augment


class DeviceAugmentation(nn.Module):
    """The batched pipeline ``[crop + flip when training] -> to_float -> normalize``.

    ``view_augment`` picks the training augmentation: ``"standard"`` is the random crop with zero ``padding`` and the
    optional flip (on ``uint8``); ``"simclr"`` is :func:`simclr_augment` on the float image -- random resized crop
    (scale ``(0.2, 1)``), the flip if ``flip``, colour jitter ``(0.4, 0.4, 0.4, 0.1)`` with ``p = 0.8`` and
    grayscale with ``p = 0.2`` (the SimCLR / SupCon CIFAR views) -- and ``padding`` is unused. Evaluation
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
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        padding: int = 0,
        flip: bool = False,
        check_finite: bool = False,
        view_augment: str = "standard",
    ) -> None:
        super().__init__()
        self.mean, self.std = check_mean_std(mean, std)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding!r}")
        self.padding = int(padding)
        self.flip = bool(flip)
        self.check_finite = bool(check_finite)
        self.view_augment = check_view_augment(view_augment)

    def forward(self, x: Tensor, train: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Transform a ``uint8`` (or float in ``[0, 1]``) ``[B, C, H, W]`` batch; augment only if ``train``."""
        _check_batch(x)
        if self.check_finite:
            check_finite_batch(x)
        if train and self.view_augment == "simclr":
            from lt_lightning.data.views import simclr_augment  # local: views imports this module

            return normalize(simclr_augment(x, self.flip, generator), self.mean, self.std)
        if train:
            x = random_crop_with_padding(x, self.padding, generator)
            if self.flip:
                x = random_horizontal_flip(x, 0.5, generator)
        return normalize(to_float(x), self.mean, self.std)

    def extra_repr(self) -> str:
        return (
            f"mean={self.mean}, std={self.std}, padding={self.padding}, flip={self.flip}, "
            f"view_augment={self.view_augment!r}"
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
