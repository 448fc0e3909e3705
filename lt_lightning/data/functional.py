"""Batched functional image transforms on ``[B, C, H, W]`` tensors (no per-sample Python loop).

The primitives of the device pipelines: the random crop with zero padding and the random horizontal flip (any dtype),
``uint8 -> float``, per-channel normalisation, and the checks they share. :class:`~lt_lightning.data.transforms.
DeviceAugmentation` and the SimCLR views (:mod:`lt_lightning.data.views`) are built from them. Randomness comes from
``generator`` or the global torch RNG of the batch's device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "check_batch",
    "check_finite_batch",
    "check_mean_std",
    "normalize",
    "random_crop_with_padding",
    "random_horizontal_flip",
    "to_float",
]


def check_batch(x: Tensor, name: str = "x") -> None:
    """``ValueError`` naming ``name`` unless ``x`` is a 4-D ``[B, C, H, W]`` batch."""
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
    check_batch(x)
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
    check_batch(x)
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
    check_batch(x)
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
