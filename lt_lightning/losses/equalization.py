"""Softmax equalization loss (ESQL / SEQL), the variant the survey's Table 7 evaluates.

Jingru Tan, Changbao Wang, Buyu Li, Quanquan Li, Wanli Ouyang, Changqing Yin, Junjie Yan, "Equalization Loss for
Long-Tailed Object Recognition", CVPR 2020 -- the *softmax* equalization loss the paper proposes for image
classification (its sigmoid form is for detection; "Equalization Loss v2", Tan et al. CVPR 2021, is a detection
loss and is not this one). For a sample with target ``y``:

``L = -Σ_j y_j log p̃_j``, ``p̃_j = exp(z_j) / Σ_k w̃_k exp(z_k)``, ``w̃_k = 1 - β_k T_λ(f_k) (1 - y_k)``

* ``f_k = n_k / Σ_c n_c`` is the training frequency of class ``k`` and ``T_λ(f) = 1`` if ``f < λ`` else 0: a *tail*
  class (strictly below the threshold ``λ``) may be dropped from the softmax denominator.
* ``β_k ~ Bernoulli(γ)`` is drawn independently for every sample and class (as in BagofTricks-LT's ``SEQL``), so a
  tail class that is not the target loses its discouraging (negative) gradient with probability ``γ`` and keeps it
  with probability ``1 - γ``.
* The target class is never dropped (``y_k = 1``); classes that are not tail are never dropped.

``γ = 0`` or ``λ = 0`` (no class has ``f < 0``) gives plain cross-entropy. Defaults ``λ = 5e-3``, ``γ = 0.9`` are those
of BagofTricks-LT (``LOSS.SEQL``) and of Balanced Meta-Softmax's ``EQV1Softmax``.

Soft targets ``[B, C]`` are supported: a class with ``y_k > 0`` is never dropped (``w̃_k = 1``), every other tail class
is dropped with probability ``γ``; with one-hot targets this is exactly the formula above.

Randomness: ``β`` comes from the given ``torch.Generator`` or the global RNG (seeded by ``seed_everything``); as for
dropout, a resumed run does not replay the exact draws of one that never stopped.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lt_lightning.losses._checks import target_distribution
from lt_lightning.losses.base import LongTailLoss
from lt_lightning.losses.logit_adjustment import check_logits
from lt_lightning.output import ModelOutput
from lt_lightning.prior import ClassPriorAware, validate_class_counts


def _check_probability(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def equalization_tail_mask(class_counts: Tensor, threshold: float) -> Tensor:
    """``T_λ(f_c) = [n_c / Σ_k n_k < λ]`` as a bool ``[C]`` tensor on the counts' device."""
    threshold = _check_probability("threshold", threshold)
    counts = torch.as_tensor(class_counts)
    device = counts.device
    counts = validate_class_counts(counts).double()
    total = counts.sum()
    if total <= 0:
        raise ValueError(f"class_counts must not all be zero, got {counts.tolist()}")
    return (counts / total < threshold).to(device)


def softmax_equalization_loss(
    logits: Tensor,
    target: Tensor,
    tail_mask: Tensor,
    gamma: float = 0.9,
    beta: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Mean softmax equalization loss ``-1/B Σ_i Σ_j y_ij log p̃_ij`` (Tan et al., CVPR 2020; module docstring).

    Args:
        logits: ``[B, C]`` scores ``z``.
        target: ``[B]`` class indices or ``[B, C]`` soft targets.
        tail_mask: bool ``[C]``, ``T_λ(f_c)`` (see :func:`equalization_tail_mask`).
        gamma: ``γ`` in ``[0, 1]``, probability that ``β_ic = 1`` (the tail negative is dropped).
        beta: optional ``[B, C]`` 0/1 (or bool) draw of ``β``; drawn from ``Bernoulli(γ)`` when ``None``.
        generator: RNG for the draw of ``β`` (on the logits' device); the global RNG when ``None``.
    """
    check_logits(logits)
    gamma = _check_probability("gamma", gamma)
    batch, num_classes = logits.shape
    if tail_mask.ndim != 1 or tail_mask.shape[0] != num_classes:
        raise ValueError(f"tail_mask must be [C] with C={num_classes}, got shape {tuple(tail_mask.shape)}")
    y = target_distribution(target, num_classes, dtype=torch.float32)
    if beta is None:
        beta = torch.rand(batch, num_classes, generator=generator, device=logits.device) < gamma
    elif beta.shape != logits.shape:
        raise ValueError(f"beta must have the logits' shape {tuple(logits.shape)}, got {tuple(beta.shape)}")
    drop = beta.to(device=logits.device, dtype=torch.bool) & tail_mask.to(logits.device).bool().unsqueeze(0)
    drop = drop & (y == 0)
    # w̃_k = 0 <=> the logit becomes -inf; log p̃ is then -inf where y = 0, so mask it before multiplying by y.
    log_p = logits.float().masked_fill(drop, -math.inf).log_softmax(dim=1).masked_fill(drop, 0.0)
    return -(y * log_p).sum(dim=1).mean()


class EqualizationLoss(LongTailLoss, ClassPriorAware):
    """Softmax equalization loss, ESQL (Tan et al., "Equalization Loss for Long-Tailed Object Recognition", CVPR 2020).

    The tail mask ``T_λ(f_c)`` is computed from the training counts in :meth:`set_class_counts` and kept in the bool
    buffer ``tail_mask``; ``β`` is redrawn at every call. See :func:`softmax_equalization_loss`.

    Args:
        threshold: frequency threshold ``λ`` in ``[0, 1]``: classes with ``n_c / N < λ`` are tail classes.
        gamma: ``γ`` in ``[0, 1]``, probability of dropping a tail negative for a sample.
    """

    tail_mask: Tensor

    def __init__(self, threshold: float = 5e-3, gamma: float = 0.9) -> None:
        super().__init__()
        self.threshold = _check_probability("threshold", threshold)
        self.gamma = _check_probability("gamma", gamma)
        self.register_buffer("tail_mask", torch.zeros(0, dtype=torch.bool))

    def set_class_counts(self, class_counts: Tensor) -> None:
        """Store ``T_λ(n_c / N)`` from the ``[C]`` training counts."""
        self.tail_mask = equalization_tail_mask(class_counts, self.threshold)

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        if self.tail_mask.numel() == 0:
            raise ValueError(
                "EqualizationLoss has no class counts: call set_class_counts(class_counts) first "
                "(LongTailModule does this when it is built)"
            )
        return softmax_equalization_loss(output.logits, target, self.tail_mask, self.gamma)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, gamma={self.gamma}"
