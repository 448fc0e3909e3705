"""Device-side, batched image transforms (no per-sample Python loop).

Datasets hand out ``uint8 [B, C, H, W]`` batches; after the batch is on the accelerator the datamodule's
``on_after_batch_transfer`` runs :class:`DeviceAugmentation`: random crop with zero padding and random horizontal
flip (on ``uint8``, while training only), then ``uint8 -> float`` in ``[0, 1]`` and per-channel normalisation.
The CIFAR recipe (LDAM-DRW, Cao et al. NeurIPS 2019) is pad-4 crop + flip + normalise with
:data:`CIFAR_MEAN` / :data:`CIFAR_STD`. Randomness comes from ``generator`` or the global torch RNG of the
batch's device (seeded by ``seed_everything``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

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


def normalize(x: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """Per-channel standardisation ``(x - mean_c) / std_c`` of a float ``[B, C, H, W]`` batch."""
    _check_batch(x)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).flatten()
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).flatten()
    channels = x.shape[1]
    if mean_t.numel() != channels or std_t.numel() != channels:
        raise ValueError(
            f"mean/std must have one entry per channel ({channels}), got mean={mean_t.tolist()}, std={std_t.tolist()}"
        )
    if (std_t <= 0).any():
        raise ValueError(f"std must be positive, got {std_t.tolist()}")
    return (x - mean_t[None, :, None, None]) / std_t[None, :, None, None]


class DeviceAugmentation(nn.Module):
    """The batched pipeline ``[crop + flip when training] -> to_float -> normalize``.

    Args:
        mean: per-channel mean of the ``[0, 1]`` images.
        std: per-channel standard deviation.
        padding: zero padding of the random crop (``0`` disables the crop).
        flip: random horizontal flip with probability 0.5 when training.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        padding: int = 0,
        flip: bool = False,
    ) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have the same length, got mean={mean}, std={std}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {std}")
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.padding = int(padding)
        self.flip = bool(flip)

    def forward(self, x: Tensor, train: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Transform a ``uint8`` (or float in ``[0, 1]``) ``[B, C, H, W]`` batch; augment only if ``train``."""
        _check_batch(x)
        if train:
            x = random_crop_with_padding(x, self.padding, generator)
            if self.flip:
                x = random_horizontal_flip(x, 0.5, generator)
        return normalize(to_float(x), self.mean, self.std)

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}, padding={self.padding}, flip={self.flip}"
