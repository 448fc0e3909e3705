"""Per-class loss weights computed from the training class counts (pure functions).

Every weighting is normalised so that ``sum_c w_c = C`` (the convention of Cui et al. and of LDAM-DRW's code):
a uniform weighting is all ones, and the weighted loss keeps the scale of the unweighted one on a balanced batch.
Used by the re-weighted losses and by the deferred re-weighting (DRW) callback.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from lt_lightning.prior import validate_class_counts


def normalize_class_weights(weights: Tensor) -> Tensor:
    """Rescale non-negative ``weights`` ``[C]`` so that they sum to ``C``; returned as float32."""
    weights = torch.as_tensor(weights, dtype=torch.float64).flatten()
    total = weights.sum()
    if not torch.isfinite(total) or total <= 0:
        raise ValueError(f"class weights must have a finite positive sum, got {weights.tolist()}")
    return (weights * (weights.numel() / total)).to(torch.float32)


def _zero_count_error(counts: Tensor, what: str) -> ValueError:
    zero = (counts == 0).nonzero().flatten().tolist()
    return ValueError(f"class_counts has zero images for class(es) {zero}: {what} divides by the class count")


def inverse_power_weights(class_counts: Sequence[int] | Tensor, q: float = 1.0) -> Tensor:
    """Inverse-frequency weights ``w_c ∝ n_c^{-q}``, normalised to ``sum_c w_c = C``.

    ``q = 1`` is inverse class frequency (the survey's "weighted softmax"), ``q = 1/2`` its square root, ``q = 0``
    uniform weights (plain cross-entropy).

    Args:
        class_counts: ``[C]`` training images per class.
        q: exponent, ``q >= 0``.

    Returns:
        ``[C]`` float32 weights.
    """
    if not math.isfinite(q) or q < 0:
        raise ValueError(f"q must be a finite number >= 0, got {q}")
    counts = validate_class_counts(class_counts).to(torch.float64)
    if q == 0:
        return torch.ones(counts.numel(), dtype=torch.float32)
    if (counts == 0).any():
        raise _zero_count_error(counts, f"inverse-power weighting n_c^-q (q={q})")
    # (n_c / n_min)^-q: the rarest class gets 1 before normalising, so a large q leaves it weight C instead of
    # underflowing every n_c^-q to 0 (same weights otherwise: the normalisation removes the factor n_min^q)
    return normalize_class_weights((counts / counts.min()).pow(-q))


def effective_number_weights(class_counts: Sequence[int] | Tensor, beta: float = 0.9999) -> Tensor:
    """Class-balanced weights by the effective number of samples, normalised to ``sum_c w_c = C``.

    ``E_n = (1 - β^n) / (1 - β)`` is the expected volume covered by ``n`` samples; the weight is its inverse,
    ``w_c ∝ (1 - β) / (1 - β^{n_c})``. ``β = 0`` gives uniform weights, ``β → 1`` inverse class frequency.
    LDAM-DRW's deferred re-weighting uses ``β = 0.9999``.

    Reference: Y. Cui, M. Jia, T.-Y. Lin, Y. Song, S. Belongie, "Class-Balanced Loss Based on Effective Number of
    Samples", CVPR 2019 (Eq. 3 and their ``cifar_main.py``).

    Args:
        class_counts: ``[C]`` training images per class (all > 0).
        beta: ``β`` in ``[0, 1)``.

    Returns:
        ``[C]`` float32 weights.
    """
    if not math.isfinite(beta) or not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    counts = validate_class_counts(class_counts).to(torch.float64)
    if (counts == 0).any():
        raise _zero_count_error(counts, f"the effective number (1 - beta^n) (beta={beta})")
    # 1 - beta^n computed as -expm1(n log beta): exact where beta^n is close to 1 (beta -> 1, small n).
    effective = -torch.expm1(counts * math.log(beta)) if beta > 0 else torch.ones_like(counts)
    return normalize_class_weights((1.0 - beta) / effective)


def validate_class_weights(weights: Sequence[float] | Tensor, num_classes: int | None = None) -> Tensor:
    """Return ``weights`` as a ``[C]`` float32 tensor, or raise ``ValueError`` naming the problem.

    Weights must be finite and non-negative, with a positive sum, and have ``num_classes`` entries when it is given.
    They are used as given (not re-normalised).
    """
    w = torch.as_tensor(weights).detach().to(torch.float32).flatten()
    if num_classes is not None and w.numel() != num_classes:
        raise ValueError(f"class weights have {w.numel()} entries but the loss has {num_classes} classes")
    if w.numel() == 0:
        raise ValueError("class weights are empty")
    if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"class weights must be finite, non-negative and not all zero, got {w.tolist()}")
    return w
