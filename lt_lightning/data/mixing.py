"""Batch mixing with soft targets: mixup, CutMix and Remix's label rule, as pure functions on device tensors.

Every function takes its random draws (``lam``, the partner permutation ``perm``, the CutMix box) as arguments, so
the formulas are checked by hand and the caller (:class:`~lt_lightning.callbacks.batch_mixing.BatchMixing`) owns the
randomness. Image ``i`` is mixed with image ``perm[i]`` of the same batch; targets come back as ``[B, C]`` float
distributions (rows sum to 1), which every cross-entropy-family loss accepts.

* **mixup** (Zhang, Cisse, Dauphin, Lopez-Paz, "mixup: Beyond Empirical Risk Minimization", ICLR 2018):
  ``x~ = lam x_i + (1 - lam) x_j``, ``y~ = lam y_i + (1 - lam) y_j``, ``lam ~ Beta(alpha, alpha)``.
* **CutMix** (Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable
  Features", ICCV 2019): a box of area ``(1 - lam) H W`` (centre uniform, clipped at the border) is pasted from
  ``x_j`` into ``x_i``; the label weight is the area actually kept, ``lam' = 1 - box_area / (H W)``.
* **Remix** (Chou, Chang, Pan, Wei, Juan, "Remix: Rebalanced Mixup", ECCV 2020 workshops, Sec. 3): images are
  mixed as mixup's, but the label weight is
  ``lam_y = 0`` if ``n_i / n_j >= kappa`` and ``lam < tau``; ``lam_y = 1`` if ``n_i / n_j <= 1 / kappa`` and
  ``1 - lam < tau``; ``lam_y = lam`` otherwise -- a pair whose minority image holds at least ``1 - tau`` of the
  pixels' weight gets the minority label outright (``n_c``: training images of class ``c``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from lt_lightning._checks import is_number
from lt_lightning.losses._checks import target_distribution

__all__ = [
    "check_alpha",
    "cutmix",
    "cutmix_box",
    "mix_targets",
    "mixup",
    "remix_label_weights",
    "sample_lambda",
]


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """``alpha`` of ``Beta(alpha, alpha)`` as a float, or ``ValueError`` unless it is finite and ``> 0``."""
    if not is_number(alpha) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(
            f"{name} must be a finite number > 0 (the Beta(alpha, alpha) of the mixing weight), got {alpha!r}; "
            "to train without mixing, leave the BatchMixing callback out"
        )
    return float(alpha)


def sample_lambda(alpha: float, rng: np.random.Generator) -> float:
    """One mixing weight ``lam ~ Beta(alpha, alpha)`` drawn from ``rng``."""
    return float(rng.beta(check_alpha(alpha), check_alpha(alpha)))


def _check_batch(x: Tensor, perm: Tensor) -> None:
    if not x.is_floating_point():
        raise ValueError(f"images must be floating point (mixed after normalisation), got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"images must be [B, ...], got shape {tuple(x.shape)}")
    if perm.ndim != 1 or perm.shape[0] != x.shape[0]:
        raise ValueError(f"perm must be a [B] permutation with B={x.shape[0]}, got shape {tuple(perm.shape)}")


def _check_lambda(lam: float) -> float:
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    return float(lam)


def mix_targets(target: Tensor, perm: Tensor, weight: float | Tensor, num_classes: int) -> Tensor:
    """``w t_i + (1 - w) t_perm[i]`` as ``[B, C]`` float32; ``weight`` a scalar or per-sample ``[B]``.

    ``target`` is ``[B]`` class indices or ``[B, C]`` soft targets (already-soft rows mix the same way).
    """
    t = target_distribution(target, num_classes)
    if isinstance(weight, Tensor):
        if weight.shape != (t.shape[0],):
            raise ValueError(f"per-sample weight must be [{t.shape[0]}], got shape {tuple(weight.shape)}")
        w = weight.to(device=t.device, dtype=t.dtype).unsqueeze(1)
    else:
        w = float(weight)
    return w * t + (1.0 - w) * t[perm.to(t.device)]


def mixup(x: Tensor, target: Tensor, lam: float, perm: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """mixup: ``(lam x + (1 - lam) x[perm], lam y + (1 - lam) y[perm])``; ``lam = 1`` is the plain batch."""
    _check_batch(x, perm)
    lam = _check_lambda(lam)
    perm = perm.to(x.device)
    mixed = x * lam + x[perm] * (1.0 - lam)
    return mixed, mix_targets(target, perm, lam, num_classes)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """CutMix's box ``(top, bottom, left, right)`` (half-open) for mixing weight ``lam``.

    As the reference (clovaai/CutMix-PyTorch ``rand_bbox``): sides ``int(H sqrt(1 - lam))`` and
    ``int(W sqrt(1 - lam))``, centre uniform over the image, clipped at the border (so the box may be smaller).
    """
    lam = _check_lambda(lam)
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h // 2, 0), height)
    left, right = min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w // 2, 0), width)
    return top, bottom, left, right


def cutmix(
    x: Tensor, target: Tensor, box: tuple[int, int, int, int], perm: Tensor, num_classes: int
) -> tuple[Tensor, Tensor]:
    """CutMix: paste ``x[perm]``'s ``box = (top, bottom, left, right)`` into ``x``; weight ``1 - area / (H W)``.

    Images are ``[B, ..., H, W]``. Returns the new images (``x`` is not modified) and soft targets
    ``lam' y + (1 - lam') y[perm]`` with ``lam'`` the fraction of each image that is still its own.
    """
    _check_batch(x, perm)
    if x.ndim < 3:
        raise ValueError(f"CutMix needs images [B, ..., H, W], got shape {tuple(x.shape)}")
    height, width = x.shape[-2], x.shape[-1]
    top, bottom, left, right = (int(v) for v in box)
    if not (0 <= top <= bottom <= height and 0 <= left <= right <= width):
        raise ValueError(f"box {box} does not lie in an image of {height}x{width}")
    perm = perm.to(x.device)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x[perm][..., top:bottom, left:right]
    kept = 1.0 - (bottom - top) * (right - left) / (height * width)
    return mixed, mix_targets(target, perm, kept, num_classes)


def remix_label_weights(
    lam: float | Tensor, target: Tensor, perm: Tensor, class_counts: Tensor, kappa: float = 3.0, tau: float = 0.5
) -> Tensor:
    """Remix's label weight ``lam_y`` of image ``i`` (its partner is ``perm[i]``), ``[B]`` float32.

    ``lam_y = 0`` where ``n_i / n_j >= kappa`` and ``lam < tau``; ``1`` where ``n_i / n_j <= 1 / kappa`` and
    ``1 - lam < tau``; ``lam`` elsewhere (Chou et al. 2020; ``n_i`` the training count of image ``i``'s
    class, ``j = perm[i]``). ``lam`` is the image weight of ``x_i``, a scalar or ``[B]``.

    Args:
        lam: image mixing weight(s) in ``[0, 1]``.
        target: ``[B]`` class indices (Remix needs hard labels: the classes' counts decide).
        perm: ``[B]`` partner indices.
        class_counts: ``[C]`` training counts.
        kappa: count ratio ``> 1`` from which a pair counts as majority/minority (3 in the paper).
        tau: image-weight threshold in ``(0, 1]`` (0.5 in the paper).
    """
    if target.ndim != 1 or target.dtype.is_floating_point:
        raise ValueError(f"Remix needs hard targets [B] (class indices), got shape {tuple(target.shape)}")
    if not (math.isfinite(kappa) and kappa > 1.0):
        raise ValueError(f"kappa must be a finite number > 1, got {kappa}")
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    counts = class_counts.to(device=target.device, dtype=torch.float64)
    perm = perm.to(target.device)
    n_i, n_j = counts[target], counts[target[perm]]
    lam_t = torch.as_tensor(lam, dtype=torch.float64, device=target.device).expand(target.shape[0])
    ratio = n_i / n_j
    out = lam_t.clone()
    out = torch.where((ratio >= kappa) & (lam_t < tau), torch.zeros_like(out), out)
    out = torch.where((ratio <= 1.0 / kappa) & ((1.0 - lam_t) < tau), torch.ones_like(out), out)
    return out.to(torch.float32)
