"""The SimCLR / SupCon view augmentation on the device, batched with per-sample randomness (no per-sample loop).

One view of each image (Khosla et al. NeurIPS 2020, SupCon's CIFAR recipe; Chen et al. ICML 2020, SimCLR):
``RandomResizedCrop(scale=(0.2, 1))`` -> flip -> ``RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8)`` ->
``RandomGrayscale(p=0.2)``, torchvision's formulas on float images in ``[0, 1]`` (:func:`simclr_augment`).
:class:`~lt_lightning.data.transforms.DeviceAugmentation` runs it for ``view_augment="simclr"``; randomness comes
from ``generator`` or the global torch RNG of the batch's device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lt_lightning._checks import check_probability
from lt_lightning.data.functional import check_batch, random_horizontal_flip, to_float

#: the SimCLR / SupCon CIFAR view recipe (HobbitLong/SupContrast main_supcon.py): RandomResizedCrop(scale=(0.2, 1)),
#: flip, RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8), RandomGrayscale(p=0.2)
SIMCLR_CROP_SCALE: tuple[float, float] = (0.2, 1.0)
SIMCLR_JITTER: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
SIMCLR_JITTER_P: float = 0.8
SIMCLR_GRAYSCALE_P: float = 0.2

#: luma weights of ITU-R 601-2 (PIL's ``convert("L")``; torchvision's tensor kernel uses 0.2989 for red)
GRAY_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)

_CROP_TRIES = 10


def _check_p(p: float, name: str = "p") -> float:
    return check_probability(name, p)


def _uniform(size: tuple[int, ...], low: float, high: float, generator: torch.Generator | None, device) -> Tensor:
    """``float32`` uniform in ``[low, high)`` of shape ``size`` on ``device`` (drawn on the generator's device)."""
    gen_device = generator.device if generator is not None else device
    u = torch.rand(size, generator=generator, device=gen_device).to(device)
    return low + (high - low) * u


def _check_float_images(x: Tensor, what: str) -> None:
    check_batch(x)
    if not x.is_floating_point():
        raise ValueError(f"{what} needs a floating point batch in [0, 1] (see to_float), got dtype {x.dtype}")


def _check_pair(value: Sequence[float], name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max), got {value!r}") from None
    return lo, hi


def sample_crop_boxes(
    batch: int,
    height: int,
    width: int,
    scale: Sequence[float] = SIMCLR_CROP_SCALE,
    ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Per-sample crop boxes ``[B, 4]`` (``top, left, h, w``, ``long``) of torchvision's ``RandomResizedCrop``.

    For each sample, ``10`` candidates at once: area ``a = H W s`` with ``s ~ U(scale)``, aspect ratio
    ``r = exp(u)`` with ``u ~ U(log ratio)``, ``w = round(sqrt(a r))``, ``h = round(sqrt(a / r))``; the first
    candidate with ``0 < w <= W`` and ``0 < h <= H`` is taken, its corner uniform over the positions that fit. A
    sample with no valid candidate gets torchvision's fallback: the centre crop of the whole image clipped to the
    ratio bounds (``w = W, h = round(W / ratio[0])`` if ``W / H < ratio[0]``, ``h = H, w = round(H * ratio[1])`` if
    ``W / H > ratio[1]``, else the whole image). Draws, in order: areas ``[B, 10]``, log ratios ``[B, 10]``, then
    ``top`` and ``left`` fractions ``[B]`` each, from ``generator`` or the global RNG of ``device``; all on the device,
    no host synchronisation.

    Args:
        batch: number of boxes ``B``.
        height, width: image size ``H, W``.
        scale: range of the crop's area fraction, within ``(0, 1]``.
        ratio: range of the crop's aspect ratio ``w / h`` (drawn log-uniformly), positive, non-decreasing.
        generator: optional torch generator.
        device: device of the boxes (default CPU).

    Raises:
        ValueError: ``scale`` not within ``(0, 1]`` with ``scale[0] <= scale[1]``; ``ratio`` not positive and
            non-decreasing.
    """
    s0, s1 = _check_pair(scale, "scale")
    r0, r1 = _check_pair(ratio, "ratio")
    if not 0.0 < s0 <= s1 <= 1.0:
        raise ValueError(f"scale must satisfy 0 < scale[0] <= scale[1] <= 1, got {tuple(scale)}")
    if not (0.0 < r0 <= r1 and math.isfinite(r1)):
        raise ValueError(f"ratio must be positive and increasing (ratio[0] <= ratio[1]), got {tuple(ratio)}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    area = float(height * width)
    target = area * _uniform((batch, _CROP_TRIES), s0, s1, generator, device)
    aspect = torch.exp(_uniform((batch, _CROP_TRIES), math.log(r0), math.log(r1), generator, device))
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first valid candidate (0 if none)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    in_ratio = width / height
    if in_ratio < r0:
        fw, fh = width, max(1, int(round(width / r0)))
    elif in_ratio > r1:
        fw, fh = max(1, int(round(height * r1))), height
    else:
        fw, fh = width, height
    found = valid.any(dim=1)
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    top_u = _uniform((batch,), 0.0, 1.0, generator, device)
    left_u = _uniform((batch,), 0.0, 1.0, generator, device)
    top = torch.floor(top_u * (height - h + 1)).long().clamp(min=0).minimum(height - h)
    left = torch.floor(left_u * (width - w + 1)).long().clamp(min=0).minimum(width - w)
    # the fallback is centred: torchvision's ((H - h) // 2, (W - w) // 2)
    top = torch.where(found, top, (height - h) // 2)
    left = torch.where(found, left, (width - w) // 2)
    return torch.stack((top, left, h, w), dim=1)


def resized_crop(x: Tensor, boxes: Tensor) -> Tensor:
    """Crop box ``boxes[b] = (top, left, h, w)`` of each sample and resize it bilinearly back to ``H x W``.

    One ``grid_sample`` (bilinear, ``align_corners=False``) whose sampling points are those of
    ``torch.nn.functional.interpolate(crop, (H, W), mode="bilinear", align_corners=False)`` on the cropped window --
    source ``(o + 1/2) * h / H - 1/2`` clamped to ``[0, h - 1]`` within the crop -- so the result is torchvision's
    ``resized_crop(img, top, left, h, w, (H, W))`` per sample (crops are never larger than the image, so the
    antialias of downscaling never applies). Floating batches stay in their dtype (half precision is computed in
    ``float32``); ``uint8`` is accepted and rounded back to ``uint8``.

    Args:
        x: ``[B, C, H, W]`` batch.
        boxes: ``[B, 4]`` integer boxes inside the image, as :func:`sample_crop_boxes` gives them.
    """
    check_batch(x)
    if boxes.shape != (x.shape[0], 4):
        raise ValueError(f"boxes must be [B, 4] = [{x.shape[0]}, 4], got shape {tuple(boxes.shape)}")
    if x.shape[0] == 0:
        return x
    b, _, height, width = x.shape
    work = x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float32)
    boxes = boxes.to(device=x.device, dtype=work.dtype)
    top, left, h, w = (boxes[:, i : i + 1] for i in range(4))
    oy = torch.arange(height, device=x.device, dtype=work.dtype)[None, :]
    ox = torch.arange(width, device=x.device, dtype=work.dtype)[None, :]
    sy = top + torch.minimum(((oy + 0.5) * (h / height) - 0.5).clamp(min=0.0), h - 1)  # [B, H] source rows
    sx = left + torch.minimum(((ox + 0.5) * (w / width) - 0.5).clamp(min=0.0), w - 1)  # [B, W] source columns
    gy = (2.0 * sy + 1.0) / height - 1.0  # pixel -> normalised coordinate (align_corners=False)
    gx = (2.0 * sx + 1.0) / width - 1.0
    grid = torch.stack((gx[:, None, :].expand(b, height, width), gy[:, :, None].expand(b, height, width)), dim=-1)
    out = nn.functional.grid_sample(work, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if x.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(x.dtype)


def random_resized_crop(
    x: Tensor,
    scale: Sequence[float] = SIMCLR_CROP_SCALE,
    ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """torchvision's ``RandomResizedCrop((H, W), scale, ratio)`` on every sample of a batch, each with its own box.

    The boxes are :func:`sample_crop_boxes` (10 tries, centre-crop fallback), the resize is :func:`resized_crop`
    (bilinear back to the input's ``H x W``). Input: float in ``[0, 1]`` (the output stays in it: bilinear weights are
    convex) or ``uint8`` (rounded back to ``uint8``).

    Args:
        x: ``[B, C, H, W]`` batch.
        scale: range of the crop's area fraction, within ``(0, 1]``.
        ratio: range of the crop's aspect ratio ``w / h`` (drawn log-uniformly), positive, non-decreasing.
        generator: optional torch generator.
    """
    check_batch(x)
    boxes = sample_crop_boxes(x.shape[0], x.shape[2], x.shape[3], scale, ratio, generator, x.device)
    if x.shape[0] == 0:
        return x
    return resized_crop(x, boxes)


def _gray(x: Tensor) -> Tensor:
    """``[B, 1, H, W]`` luma ``0.299 R + 0.587 G + 0.114 B`` of an RGB batch."""
    r, g, b = x.unbind(dim=1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


#: channel offsets of the HSV -> RGB formula (R, G, B), see :func:`_adjust_hue`
_HUE_OFFSETS: tuple[float, float, float] = (5.0, 3.0, 1.0)


def _adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of each RGB sample by ``shift[b]`` turns (in ``[-0.5, 0.5]``), keeping HSV saturation and value.

    With ``v = max(R, G, B)``, chroma ``c = v - min(R, G, B)`` and the hue in sixths of a turn
    ``6 H = 2 i + (x_{i+1} - x_{i+2}) / c`` (``i`` the channel of the maximum, the first one on ties, channel indices
    mod 3), the rotated hue ``6 H' = (6 H + 6 shift) mod 6`` gives channel ``n`` (offsets 5, 3, 1 for R, G, B) as
    ``v - c clamp(min(k, 4 - k), 0, 1)``, ``k = (n + 6 H') mod 6`` -- the usual HSV -> RGB conversion, written with
    ``v s = c``. Gray pixels (``c = 0``) stay as they are. A 1-channel batch is returned unchanged (as PIL).
    """
    if x.shape[1] != 3:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    v = x.amax(dim=1, keepdim=True)
    chroma = v - x.amin(dim=1, keepdim=True)
    max_r = r == v  # the maximum's channel, R first then G on ties (a tie gives the same hue either way)
    max_g = (g == v) & ~max_r
    numerator = torch.where(max_r, g - b, torch.where(max_g, b - r, r - g))
    sector = 2.0 * max_g.to(x.dtype) + 4.0 * (~(max_r | max_g)).to(x.dtype)  # 2 i
    sector = sector + numerator / chroma.clamp(min=torch.finfo(x.dtype).tiny) + 6.0 * shift.view(-1, 1, 1, 1)
    offsets = torch.tensor(_HUE_OFFSETS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    k = torch.remainder(offsets + sector, 6.0)
    return (v - chroma * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)).clamp_(0.0, 1.0)


def _blend_step(x: Tensor, factor: Tensor, op: Tensor, luma: bool = True) -> Tensor:
    """One of brightness / contrast / saturation per sample: ``clamp(a x + (1 - a) t, 0, 1)``.

    ``op[b]`` is 0 (brightness: ``t = 0``), 1 (contrast: ``t`` the image's mean luma) or 2 (saturation: ``t`` the
    pixel's luma); ``factor[b] = 1`` makes the step the identity, exactly (``1 x + 0 t = x``). ``luma=False``: no
    sample does contrast or saturation (``t = 0`` for all).
    """
    a = factor.view(-1, 1, 1, 1)
    if not luma:
        return (a * x).clamp(0.0, 1.0)
    gray = _gray(x) if x.shape[1] == 3 else x
    use_mean = (op == 1).to(x.dtype).view(-1, 1, 1, 1)
    use_pixel = (op == 2).to(x.dtype).view(-1, 1, 1, 1)
    target = use_pixel * gray + use_mean * gray.mean(dim=(1, 2, 3), keepdim=True)
    return torch.addcmul((1.0 - a) * target, a, x).clamp_(0.0, 1.0)


def _jitter_range(value: float | Sequence[float], name: str, hue: bool = False) -> tuple[float, float] | None:
    """torchvision ``ColorJitter``'s range of one factor: a number ``v`` gives ``[max(0, 1 - v), 1 + v]``
    (``[-v, v]`` for the hue), a pair ``(min, max)`` is taken as is; ``None`` when the range is the identity alone."""
    center, bound = (0.0, 0.5) if hue else (1.0, math.inf)
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number or a (min, max) pair, got {value!r}")
    if isinstance(value, (int, float)):
        v = float(value)
        if hue and not 0.0 <= v <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {value!r}")
        if not hue and not (v >= 0.0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        lo, hi = (-v, v) if hue else (max(0.0, 1.0 - v), 1.0 + v)
    else:
        lo, hi = _check_pair(value, name)
        low_bound = -0.5 if hue else 0.0
        if not low_bound <= lo <= hi <= bound:
            raise ValueError(
                f"{name} as a (min, max) pair must satisfy {low_bound} <= min <= max <= {bound}, got {tuple(value)}"
            )
    return None if lo == hi == center else (lo, hi)


def color_jitter(
    x: Tensor,
    brightness: float | Sequence[float] = 0.0,
    contrast: float | Sequence[float] = 0.0,
    saturation: float | Sequence[float] = 0.0,
    hue: float | Sequence[float] = 0.0,
    p: float = 0.8,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p)`` of torchvision, per sample.

    Each sample draws its factors uniformly -- brightness ``b``, contrast ``c``, saturation ``s`` in
    ``[max(0, 1 - v), 1 + v]`` for a number ``v`` (or in a given ``(min, max)`` pair), hue shift ``h`` in
    ``[-hue, hue]`` -- and its own random order of the four operations (torchvision draws one order per call, i.e.
    per image), each followed by a clamp to ``[0, 1]``:

    * brightness: ``b x``;
    * contrast: ``c x + (1 - c) m``, ``m`` the image's mean luma ``0.299 R + 0.587 G + 0.114 B``;
    * saturation: ``s x + (1 - s) L``, ``L`` the pixel's luma;
    * hue: ``H <- (H + h) mod 1`` in HSV.

    A sample is jittered with probability ``p``, else returned as it is. A 1-channel batch gets brightness and
    contrast only (saturation and hue leave gray images unchanged, as in torchvision / PIL).

    Vectorised, no Python loop over samples: brightness, contrast and saturation are each a blend
    ``clamp(a x + (1 - a) t, 0, 1)`` (:func:`_blend_step`, with ``a = 1`` an exact identity), so each sample's order
    is run as three blend steps before the hue rotation (those of its order that precede the hue; the others with
    ``a = 1``), one hue rotation of the whole batch, and three blend steps after it -- 6 blends and 1 hue rotation
    per batch (3 blends without hue). Draws, in order: one ``[B]`` factor per enabled operation (brightness,
    contrast, saturation, hue), the ``[B, 4]`` order keys, the ``[B]`` apply draws.

    Args:
        x: float ``[B, C, H, W]`` batch in ``[0, 1]``, ``C`` 1 or 3 (RGB).
        brightness, contrast, saturation: ``>= 0``, or a ``(min, max)`` pair with ``0 <= min <= max``.
        hue: in ``[0, 0.5]``, or a ``(min, max)`` pair within ``[-0.5, 0.5]``.
        p: probability in ``[0, 1]`` that a sample is jittered.
        generator: optional torch generator.

    Raises:
        ValueError: a negative factor, a hue outside ``[0, 0.5]``, ``p`` outside ``[0, 1]``, a non-float batch, or a
            channel count other than 1 or 3.
    """
    ranges = [
        _jitter_range(brightness, "brightness"),
        _jitter_range(contrast, "contrast"),
        _jitter_range(saturation, "saturation"),
        _jitter_range(hue, "hue", hue=True),
    ]
    p = _check_p(p)
    _check_float_images(x, "color_jitter")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"color_jitter needs 1- or 3-channel (RGB) images, got {x.shape[1]} channels")
    b = x.shape[0]
    if x.shape[1] == 1:
        ranges[2] = ranges[3] = None
    if p == 0.0 or b == 0 or all(r is None for r in ranges):
        return x
    factors = [None if r is None else _uniform((b,), r[0], r[1], generator, x.device).to(x.dtype) for r in ranges]
    order = torch.argsort(_uniform((b, 4), 0.0, 1.0, generator, x.device), dim=1)  # a random permutation per sample
    apply = _uniform((b,), 0.0, 1.0, generator, x.device) < p
    one = torch.ones(b, dtype=x.dtype, device=x.device)
    blend_factors = torch.stack([one if f is None else f for f in factors[:3]], dim=1)  # [B, 3], 1 = disabled
    hue_at = (order == 3).to(torch.uint8).argmax(dim=1, keepdim=True)  # [B, 1] position of the hue in the order
    slots = torch.arange(3, device=x.device)[None, :]  # [1, 3]
    # the order without the hue: the j-th blend of a sample is order[j] if j < hue_at else order[j + 1]
    blend_ops = order.gather(1, slots + (slots >= hue_at).long())  # [B, 3], values in {0, 1, 2}
    before = slots < hue_at  # [B, 3]: the j-th blend comes before the hue
    has_hue, has_blend = factors[3] is not None, any(f is not None for f in factors[:3])
    luma = factors[1] is not None or factors[2] is not None  # only brightness: the blend target is 0
    out = x
    for stage in ("before", "after") if has_hue else ("all",):
        for j in range(3 if has_blend else 0):
            op = blend_ops[:, j]
            factor = blend_factors.gather(1, op[:, None]).squeeze(1)
            if stage != "all":
                factor = torch.where(before[:, j] if stage == "before" else ~before[:, j], factor, one)
            out = _blend_step(out, factor, op, luma)
        if stage == "before":
            out = _adjust_hue(out, factors[3])  # type: ignore[arg-type]
    return torch.where(apply.view(-1, 1, 1, 1), out, x)


def random_grayscale(x: Tensor, p: float = SIMCLR_GRAYSCALE_P, generator: torch.Generator | None = None) -> Tensor:
    """torchvision's ``RandomGrayscale(p)`` per sample: the luma ``0.299 R + 0.587 G + 0.114 B`` copied to the three
    channels with probability ``p``. A 1-channel batch is returned unchanged (it is gray already).

    Args:
        x: float ``[B, C, H, W]`` batch, ``C`` 1 or 3.
        p: probability in ``[0, 1]``.
        generator: optional torch generator (one ``[B]`` draw).
    """
    p = _check_p(p)
    _check_float_images(x, "random_grayscale")
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"random_grayscale needs 1- or 3-channel (RGB) images, got {x.shape[1]} channels")
    if p == 0.0 or x.shape[0] == 0:
        return x
    gray = _uniform((x.shape[0],), 0.0, 1.0, generator, x.device) < p
    return torch.where(gray.view(-1, 1, 1, 1), _gray(x).expand_as(x), x)


def simclr_augment(x: Tensor, flip: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """One SimCLR / SupCon view of each image (Khosla et al., NeurIPS 2020; HobbitLong/SupContrast CIFAR recipe).

    :func:`random_resized_crop` with ``scale = (0.2, 1)``, then (if ``flip``) :func:`random_horizontal_flip`, then
    :func:`color_jitter` ``(0.4, 0.4, 0.4, 0.1)`` with ``p = 0.8``, then :func:`random_grayscale` with ``p = 0.2``,
    on float images in ``[0, 1]`` (before normalisation). PaCo's CIFAR key view adds a Gaussian blur, not done here.

    Args:
        x: ``[B, C, H, W]`` batch, ``uint8`` or float in ``[0, 1]`` (returned as float in ``[0, 1]``).
        flip: include the random horizontal flip (``False`` for data that is not mirror-symmetric, e.g. digits).
        generator: optional torch generator.
    """
    x = random_resized_crop(to_float(x), SIMCLR_CROP_SCALE, generator=generator)
    if flip:
        x = random_horizontal_flip(x, 0.5, generator)
    x = color_jitter(x, *SIMCLR_JITTER, p=SIMCLR_JITTER_P, generator=generator)
    return random_grayscale(x, SIMCLR_GRAYSCALE_P, generator)
