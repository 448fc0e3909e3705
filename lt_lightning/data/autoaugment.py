"""AutoAugment (CIFAR-10 policy), RandAugment and Cutout on the device, batched, with per-sample parameters.

The strong CIFAR recipe of later long-tailed work (``configs/recipe/strong.yaml``): random crop + flip ->
AutoAugment's CIFAR-10 policy -> Cutout (one 16 x 16 square) -> normalise, as the ``transform_train`` of
zzpustc/CC-SAM ``datasets/Cifar.py`` (README "Stronger Augmentation Usage"), of BCL and ProCo's CIFAR loaders
(``CIFAR10Policy()`` of DeepVoltaire/AutoAugment ``autoaugment.py`` and ``Cutout(n_holes=1, length=16)`` of
uoguelph-mlrg/Cutout ``util/cutout.py``).

* :func:`autoaugment` -- Cubuk, Zoph, Mane, Vasudevan, Le, "AutoAugment: Learning Augmentation Strategies from Data",
  CVPR 2019: each image draws one of the 25 sub-policies of :data:`CIFAR10_POLICY` (the table of torchvision's
  ``AutoAugmentPolicy.CIFAR10``, the paper's), then applies each of its two operations with the operation's
  probability, at its magnitude bin of 10, with a random sign for the signed operations.
* :func:`randaugment` -- Cubuk, Zoph, Shlens, Le, "RandAugment", CVPR-W 2020: ``num_ops`` operations drawn uniformly
  from the 14 of :data:`RANDAUGMENT_OPS` (identity included) at one magnitude (``9`` of ``31`` bins, torchvision's).
* :func:`cutout` -- DeVries & Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout", 2017:
  one ``size x size`` square per image, centre uniform over the pixels, clipped at the border, set to 0 (the
  reference zeroes the ``[0, 1]`` tensor before normalising: black).

Operations (:func:`apply_operations`) are those of torchvision's tensor kernels on ``uint8`` images
(``torchvision.transforms.v2.AutoAugment._apply_image_or_video_transform``): the same formulas, the same float32
arithmetic and rounding, with a per-sample magnitude instead of one per call. ShearX/Y, TranslateX/Y and Rotate are
one nearest-neighbour ``grid_sample`` of a per-sample inverse affine matrix; the area outside the image is filled
with :data:`FILL` (128, DeepVoltaire's ``fillcolor=(128, 128, 128)`` of the references; torchvision's default is 0).
Every operation is computed for the whole batch and each sample takes its own (``torch.where``): no per-sample
Python loop and no host-device synchronisation. Randomness comes from ``generator`` or the global torch RNG of the
batch's device (which the datamodule re-seeds per training step, so a resumed run draws what the uninterrupted run
drew).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF

from lt_lightning._checks import check_int
from lt_lightning.data.functional import check_batch

__all__ = [
    "CIFAR10_POLICY",
    "FILL",
    "OPERATIONS",
    "RANDAUGMENT_OPS",
    "apply_operations",
    "autoaugment",
    "cutout",
    "operation_magnitude",
    "randaugment",
]

#: pixel value of the area a geometric operation brings in from outside the image (DeepVoltaire's fillcolor)
FILL: int = 128

#: every operation, in the order of their indices for :func:`apply_operations`
OPERATIONS: tuple[str, ...] = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
    "Invert",
)
_INDEX = {name: i for i, name in enumerate(OPERATIONS)}
_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_SIGNED = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
                     "Sharpness"})  # fmt: skip

#: RandAugment's operations (torchvision ``RandAugment._AUGMENTATION_SPACE``: no Invert)
RANDAUGMENT_OPS: tuple[str, ...] = OPERATIONS[:-1]

#: AutoAugment's CIFAR-10 policy (Cubuk et al., CVPR 2019, appendix; torchvision ``AutoAugmentPolicy.CIFAR10``):
#: 25 sub-policies of two ``(operation, probability, magnitude bin of 10)``
CIFAR10_POLICY: tuple[tuple[tuple[str, float, int | None], tuple[str, float, int | None]], ...] = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)


def operation_magnitude(name: str, level: int, num_bins: int, height: int, width: int) -> float:
    """The unsigned magnitude of operation ``name`` at bin ``level`` of ``num_bins`` (torchvision's float32 bins).

    ShearX/Y ``linspace(0, 0.3)`` (the shear factor), TranslateX/Y ``linspace(0, 150/331 * size)`` pixels (truncated
    to an integer when applied), Rotate ``linspace(0, 30)`` degrees, Brightness / Color / Contrast / Sharpness
    ``linspace(0, 0.9)`` (factor ``1 + m``), Posterize ``round(8 - 4 i / (n - 1))`` bits, Solarize
    ``linspace(1, 0)`` (threshold ``255 m``); 0 for the operations without a magnitude.
    """
    bins = {
        "ShearX": lambda: torch.linspace(0.0, 0.3, num_bins),
        "ShearY": lambda: torch.linspace(0.0, 0.3, num_bins),
        "TranslateX": lambda: torch.linspace(0.0, 150.0 / 331.0 * width, num_bins),
        "TranslateY": lambda: torch.linspace(0.0, 150.0 / 331.0 * height, num_bins),
        "Rotate": lambda: torch.linspace(0.0, 30.0, num_bins),
        "Brightness": lambda: torch.linspace(0.0, 0.9, num_bins),
        "Color": lambda: torch.linspace(0.0, 0.9, num_bins),
        "Contrast": lambda: torch.linspace(0.0, 0.9, num_bins),
        "Sharpness": lambda: torch.linspace(0.0, 0.9, num_bins),
        "Posterize": lambda: (8 - (torch.arange(num_bins) / ((num_bins - 1) / 4))).round().int(),
        "Solarize": lambda: torch.linspace(1.0, 0.0, num_bins),
    }.get(name)
    return 0.0 if bins is None else float(bins()[level])


# ---------------------------------------------------------------------------------------------------------- kernels
def _blend(x: Tensor, other: Tensor, ratio: Tensor) -> Tensor:
    """``clamp(r x + (1 - r) other, 0, 255)`` truncated to ``uint8`` (torchvision's ``_blend``), per-sample ``r``."""
    r = ratio.view(-1, 1, 1, 1)
    out = _fused_add(x.to(torch.float32).mul(r.to(torch.float32)), other, (1.0 - r).to(torch.float32))
    return out.clamp_(0, 255).to(torch.uint8)


def _fused_add(a: Tensor, b: Tensor, alpha: Tensor) -> Tensor:
    """``a + alpha b`` in float32 rounded once, as ``Tensor.add_(b, alpha=...)`` computes it (a fused multiply-add
    on the CPU's vector units and on CUDA): the product and the sum in float64, then one rounding to float32."""
    return a.to(torch.float64).add_(b.to(torch.float64) * alpha.to(torch.float64)).to(torch.float32)


def _gray(x: Tensor) -> Tensor:
    """``floor(0.2989 R + 0.587 G + 0.114 B)`` as float32 ``[B, 1, H, W]`` (torchvision's uint8 grayscale)."""
    r, g, b = x.unbind(dim=1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1).floor_()


def _brightness(x: Tensor, m: Tensor) -> Tensor:
    factor = (1.0 + m).to(torch.float32).view(-1, 1, 1, 1)
    return x.to(torch.float32).mul(factor).clamp_(0, 255).to(torch.uint8)


def _color(x: Tensor, m: Tensor) -> Tensor:
    return x if x.shape[1] == 1 else _blend(x, _gray(x), 1.0 + m)


def _contrast(x: Tensor, m: Tensor) -> Tensor:
    gray = _gray(x) if x.shape[1] == 3 else x.to(torch.float32)
    return _blend(x, gray.mean(dim=(-3, -2, -1), keepdim=True), 1.0 + m)


def _sharpness(x: Tensor, m: Tensor) -> Tensor:
    """The interior pixels blended with the 3 x 3 smoothing ``[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13`` (rounded);
    the border stays."""
    channels, height, width = x.shape[1:]
    if height <= 2 or width <= 2:
        return x
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=torch.float32, device=x.device)
    out = x.to(torch.float32)
    blurred = nn.functional.conv2d(out, kernel.expand(channels, 1, 3, 3), groups=channels).round_()
    inner = out[..., 1:-1, 1:-1]
    inner.copy_(_fused_add(inner, blurred.sub_(inner), (1.0 - (1.0 + m)).to(torch.float32).view(-1, 1, 1, 1)))
    return out.clamp_(0, 255).to(torch.uint8)


def _posterize(x: Tensor, m: Tensor) -> Tensor:
    bits = m.to(torch.int64).clamp(0, 8)
    mask = (((1 << bits) - 1) << (8 - bits)).to(torch.uint8)
    return x & mask.view(-1, 1, 1, 1)


def _solarize(x: Tensor, m: Tensor) -> Tensor:
    threshold = (255.0 * m).to(torch.float32).view(-1, 1, 1, 1)
    return torch.where(x.to(torch.float32) >= threshold, x.bitwise_not(), x)


def _affine_matrices(names: Tensor, m: Tensor, height: int, width: int) -> Tensor:
    """Per-sample inverse affine matrices ``[B, 2, 3]`` (torchvision ``_get_inverse_affine_matrix``: output pixel ->
    input pixel, coordinates from the image centre) of the geometric operations; the identity for the others.

    ShearX ``m``: ``[[1, m, m H / 2], [0, 1, 0]]`` (shear about the top-left corner, torchvision's ``center=[0, 0]``);
    ShearY: ``[[1, 0, 0], [m, 1, m W / 2]]``; TranslateX ``t = int(m)``: ``[[1, 0, -t], [0, 1, 0]]``; TranslateY:
    ``[[1, 0, 0], [0, 1, -t]]``; Rotate by ``m`` degrees (counter-clockwise, about the centre):
    ``[[cos a, sin a, 0], [-sin a, cos a, 0]]`` with ``a = -m`` in radians.
    """
    b = names.shape[0]
    m = m.to(torch.float64)
    zero, one = torch.zeros_like(m), torch.ones_like(m)
    theta = torch.stack((one, zero, zero, zero, one, zero), dim=1)
    shear_x = torch.stack((one, m, m * (height * 0.5), zero, one, zero), dim=1)
    shear_y = torch.stack((one, zero, zero, m, one, m * (width * 0.5)), dim=1)
    shift = torch.trunc(m)
    translate_x = torch.stack((one, zero, -shift, zero, one, zero), dim=1)
    translate_y = torch.stack((one, zero, zero, zero, one, -shift), dim=1)
    rot = torch.deg2rad(-m)
    cos, sin = torch.cos(rot), torch.sin(rot)
    rotate = torch.stack((cos, sin, zero, -sin, cos, zero), dim=1)
    for name, matrix in zip(_GEOMETRIC, (shear_x, shear_y, translate_x, translate_y, rotate), strict=True):
        theta = torch.where((names == _INDEX[name])[:, None], matrix, theta)
    return theta.view(b, 2, 3)


def _geometric(x: Tensor, names: Tensor, m: Tensor, fill: int) -> Tensor:
    """One nearest-neighbour ``grid_sample`` of every sample with its own matrix (torchvision ``_affine_grid`` and
    ``_apply_grid_transform``: pixel-centre grid, ``align_corners=False``, outside filled with ``fill``)."""
    b, channels, height, width = x.shape
    theta = _affine_matrices(names, m, height, width).to(torch.float32)
    xs = torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, steps=width, device=x.device)
    ys = torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, steps=height, device=x.device)
    base = torch.empty(1, height, width, 3, dtype=torch.float32, device=x.device)
    base[..., 0].copy_(xs)
    base[..., 1].copy_(ys.unsqueeze(-1))
    base[..., 2].fill_(1)
    scale = torch.tensor([0.5 * width, 0.5 * height], dtype=torch.float32, device=x.device)
    grid = base.view(1, height * width, 3).expand(b, -1, -1).bmm(theta.transpose(1, 2).div(scale))
    image = torch.cat((x.to(torch.float32), torch.ones_like(x[:, :1], dtype=torch.float32)), dim=1)
    out = nn.functional.grid_sample(
        image, grid.view(b, height, width, 2), mode="nearest", padding_mode="zeros", align_corners=False
    )
    out, inside = out[:, :channels], out[:, channels:]
    out = torch.where(inside < 0.5, torch.full_like(out, float(fill)), out)
    return out.round_().to(torch.uint8)


_MAGNITUDE_KERNELS = {
    "Brightness": _brightness,
    "Color": _color,
    "Contrast": _contrast,
    "Sharpness": _sharpness,
    "Posterize": _posterize,
    "Solarize": _solarize,
}
_PLAIN_KERNELS = {"AutoContrast": TF.autocontrast, "Equalize": TF.equalize, "Invert": TF.invert}


def apply_operations(
    x: Tensor, operation: Tensor, magnitude: Tensor, fill: int = FILL, present: tuple[str, ...] = OPERATIONS
) -> Tensor:
    """Sample ``b`` of ``x`` transformed by operation ``OPERATIONS[operation[b]]`` at magnitude ``magnitude[b]``.

    The kernels of torchvision's AutoAugment on ``uint8`` tensors, per sample (``m`` the signed magnitude):

    * ShearX / ShearY / TranslateX / TranslateY / Rotate: an affine warp, nearest neighbour, ``fill`` outside
      (:func:`_affine_matrices`);
    * Brightness ``trunc(clamp((1 + m) x))``; Color ``trunc(clamp((1 + m) x + (-m) L))`` with the grayscale
      ``L = floor(0.2989 R + 0.587 G + 0.114 B)``; Contrast: the same with ``L``'s image mean; Sharpness: the
      interior blended with the rounded 3 x 3 smoothing ``[[1,1,1],[1,5,1],[1,1,1]] / 13``;
    * Posterize: the top ``int(m)`` bits kept; Solarize: ``255 - x`` where ``x >= 255 m``; AutoContrast: each
      channel stretched to ``[0, 255]``; Equalize: PIL's histogram equalisation per channel (torchvision's batched
      kernels); Invert: ``255 - x``; Identity: ``x``.

    Args:
        x: ``uint8 [B, C, H, W]`` batch (``C`` 1 or 3).
        operation: ``[B]`` integer indices into :data:`OPERATIONS`.
        magnitude: ``[B]`` signed magnitudes (see :func:`operation_magnitude`; unused by the operations without one).
        fill: pixel value outside the image after a geometric operation.
        present: the operations that may occur in ``operation`` (the others are not computed).

    Raises:
        ValueError: ``x`` is not a ``uint8`` batch of 1 or 3 channels, or ``operation`` / ``magnitude`` are not
            ``[B]``.
    """
    check_batch(x)
    if x.dtype != torch.uint8:
        raise ValueError(f"the AutoAugment / RandAugment operations need a uint8 batch, got dtype {x.dtype}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"the AutoAugment / RandAugment operations need 1 or 3 channels, got {x.shape[1]}")
    if operation.shape != (x.shape[0],) or magnitude.shape != (x.shape[0],):
        raise ValueError(
            f"operation and magnitude must be [B] = [{x.shape[0]}], got {tuple(operation.shape)} and "
            f"{tuple(magnitude.shape)}"
        )
    if x.shape[0] == 0:
        return x
    operation = operation.to(x.device)
    magnitude = magnitude.to(device=x.device, dtype=torch.float64)
    out = x
    if any(name in present for name in _GEOMETRIC):
        geometric = torch.zeros_like(operation, dtype=torch.bool)
        for name in _GEOMETRIC:
            geometric |= operation == _INDEX[name]
        out = torch.where(geometric.view(-1, 1, 1, 1), _geometric(x, operation, magnitude, fill), out)
    for name, kernel in _MAGNITUDE_KERNELS.items():
        if name in present:
            out = torch.where((operation == _INDEX[name]).view(-1, 1, 1, 1), kernel(x, magnitude), out)
    for name, plain in _PLAIN_KERNELS.items():
        if name in present:
            out = torch.where((operation == _INDEX[name]).view(-1, 1, 1, 1), plain(x), out)
    return out


# ----------------------------------------------------------------------------------------------------------- policies
def _rand(size: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.rand(size, generator=generator, device=gen_device).to(device)


def _randint(high: int, size: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randint(0, high, size, generator=generator, device=gen_device).to(device)


@lru_cache(maxsize=32)
def _policy_table(height: int, width: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:data:`CIFAR10_POLICY` as CPU tensors ``[25, 2]``: operation index, probability, magnitude, signed."""
    ops, probs, mags, signed = [], [], [], []
    for sub_policy in CIFAR10_POLICY:
        for name, p, level in sub_policy:
            ops.append(_INDEX[name])
            probs.append(p)
            mags.append(0.0 if level is None else operation_magnitude(name, level, 10, height, width))
            signed.append(name in _SIGNED)
    shape = (len(CIFAR10_POLICY), 2)
    return (
        torch.tensor(ops).view(shape),
        torch.tensor(probs, dtype=torch.float32).view(shape),
        torch.tensor(mags, dtype=torch.float64).view(shape),
        torch.tensor(signed).view(shape),
    )


def autoaugment(x: Tensor, fill: int = FILL, generator: torch.Generator | None = None) -> Tensor:
    """AutoAugment's CIFAR-10 policy (:data:`CIFAR10_POLICY`) on every sample of a ``uint8`` batch, independently.

    Per sample, as torchvision's ``AutoAugment(AutoAugmentPolicy.CIFAR10)`` per image: a sub-policy ``k`` uniform
    over the 25; for each of its two operations ``(op, p, bin)`` in turn, applied iff ``u <= p`` (``u ~ U[0, 1)``)
    with the magnitude of ``bin`` of 10 (:func:`operation_magnitude`), negated iff ``v <= 0.5`` for the signed
    operations. Draws, in order: ``k`` ``[B]``, ``u`` ``[B, 2]``, ``v`` ``[B, 2]``.

    Args:
        x: ``uint8 [B, C, H, W]`` batch, ``C`` 1 or 3.
        fill: pixel value brought in by the geometric operations (default :data:`FILL`).
        generator: optional torch generator.
    """
    check_batch(x)
    b, _, height, width = x.shape
    ops, probs, mags, signed = (t.to(x.device) for t in _policy_table(height, width))
    k = _randint(len(CIFAR10_POLICY), (b,), generator, x.device)
    u = _rand((b, 2), generator, x.device)
    v = _rand((b, 2), generator, x.device)
    for slot in range(2):
        present = tuple(sorted({sub[slot][0] for sub in CIFAR10_POLICY}, key=_INDEX.__getitem__))
        op = ops[k, slot]
        applied = u[:, slot] <= probs[k, slot]
        op = torch.where(applied, op, torch.zeros_like(op))  # Identity when not applied
        sign = torch.where(signed[k, slot] & (v[:, slot] <= 0.5), -1.0, 1.0).to(torch.float64)
        x = apply_operations(x, op, mags[k, slot] * sign, fill, present)
    return x


@lru_cache(maxsize=32)
def _randaugment_table(level: int, num_bins: int, height: int, width: int) -> tuple[Tensor, Tensor]:
    mags = [operation_magnitude(name, level, num_bins, height, width) for name in RANDAUGMENT_OPS]
    signed = [name in _SIGNED for name in RANDAUGMENT_OPS]
    return torch.tensor(mags, dtype=torch.float64), torch.tensor(signed)


def randaugment(
    x: Tensor,
    num_ops: int = 2,
    magnitude: int = 9,
    num_magnitude_bins: int = 31,
    fill: int = FILL,
    generator: torch.Generator | None = None,
) -> Tensor:
    """RandAugment on every sample of a ``uint8`` batch, independently (torchvision's ``RandAugment`` per image).

    Per sample, ``num_ops`` times: an operation uniform over the 14 of :data:`RANDAUGMENT_OPS` (identity included),
    at bin ``magnitude`` of ``num_magnitude_bins``, negated iff ``v <= 0.5`` for the signed ones. Draws, in order:
    the operations ``[B, num_ops]``, ``v`` ``[B, num_ops]``.

    Args:
        x: ``uint8 [B, C, H, W]`` batch, ``C`` 1 or 3.
        num_ops: operations per image (``>= 0``).
        magnitude: the magnitude bin, ``0 <= magnitude < num_magnitude_bins``.
        num_magnitude_bins: number of bins (``>= 2``).
        fill: pixel value brought in by the geometric operations.
        generator: optional torch generator.

    Raises:
        ValueError: ``num_ops < 0``, ``num_magnitude_bins < 2`` or ``magnitude`` outside its bins.
    """
    check_batch(x)
    check_int("num_ops", num_ops, minimum=0)
    check_int("num_magnitude_bins", num_magnitude_bins, minimum=2)
    if not (isinstance(magnitude, int) and not isinstance(magnitude, bool) and 0 <= magnitude < num_magnitude_bins):
        raise ValueError(f"magnitude must be an integer in [0, {num_magnitude_bins}), got {magnitude!r}")
    b, _, height, width = x.shape
    mags, signed = (t.to(x.device) for t in _randaugment_table(magnitude, num_magnitude_bins, height, width))
    choice = _randint(len(RANDAUGMENT_OPS), (b, num_ops), generator, x.device)
    v = _rand((b, num_ops), generator, x.device)
    for i in range(num_ops):
        sign = torch.where(signed[choice[:, i]] & (v[:, i] <= 0.5), -1.0, 1.0).to(torch.float64)
        x = apply_operations(x, choice[:, i], mags[choice[:, i]] * sign, fill, RANDAUGMENT_OPS)
    return x


def cutout(x: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """Cutout (DeVries & Taylor, 2017; uoguelph-mlrg/Cutout ``util/cutout.py`` with ``n_holes=1``): per sample, a
    centre ``(cy, cx)`` uniform over the pixels and the rows ``[clip(cy - size // 2), clip(cy + size // 2))`` x the
    columns likewise (clipped to the image) set to 0. Draws ``cy`` ``[B]`` then ``cx`` ``[B]``. Any dtype;
    ``size = 0`` returns ``x``.

    Args:
        x: ``[B, C, H, W]`` batch.
        size: side of the square (16 for CIFAR in the references), ``>= 0``.
        generator: optional torch generator.
    """
    check_batch(x)
    size = check_int("size", size, minimum=0)
    b, _, height, width = x.shape
    if size == 0 or b == 0:
        return x
    cy = _randint(height, (b,), generator, x.device)
    cx = _randint(width, (b,), generator, x.device)
    half = size // 2
    rows = torch.arange(height, device=x.device)[None, :]
    cols = torch.arange(width, device=x.device)[None, :]
    in_rows = (rows >= (cy - half).clamp(0, height)[:, None]) & (rows < (cy + half).clamp(0, height)[:, None])
    in_cols = (cols >= (cx - half).clamp(0, width)[:, None]) & (cols < (cx + half).clamp(0, width)[:, None])
    hole = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # [B, 1, H, W]
    return x.masked_fill(hole, 0)
