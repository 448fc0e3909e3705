"""LADE: label distribution disentangling loss.

Youngkyu Hong, Seungju Han, Kwanghee Choi, Seokjun Seo, Beomsu Kim, Buru Chang, "Disentangling Label Distribution
for Long-tailed Visual Recognition", CVPR 2021 (code: hyperconnect/LADE, ``loss/PriorCELoss.py`` and
``loss/LADELoss.py``; implemented here from the formulas below).

The model's logits ``z`` are read as ``log p_t(x | y) - log p_t(x)`` for the uniform target prior. Training uses

``L = L_PriorCE + α · L_LADE``

* ``L_PriorCE = -1/B Σ_i log softmax(z_i + log π)[y_i]`` -- the "LADE-CE" loss: cross-entropy on the logits shifted
  by the log training prior ``log π`` (the same as balanced softmax, Ren et al. NeurIPS 2020).
* ``L_LADE = -Σ_c π_c · ( T_c - S_c - λ S_c² )``, a Donsker-Varadhan estimate of ``KL(p(x|c) || p(x))`` per class
  with the ReMINE regulariser ``λ S_c²`` (Kwanghee Choi, Siyeong Lee, "Regularized Mutual Information Neural
  Estimation", 2020, as used by LADE), where, over the batch of size ``B``,

  - ``T_c = Σ_i y_ic z_ic / Σ_i y_ic`` -- the mean logit of class ``c`` over the batch samples labelled ``c``
    (``0`` when no sample is labelled ``c``, as in the authors' code, whose ``Σ / (n + 1e-8)`` is 0 then);
  - ``S_c = log Σ_i exp(z_ic - log π_c + log(1/C)) - log B`` -- the log-mean-exp over *all* batch samples of the
    logit re-based from the training prior to the uniform prior.

  Every class enters the sum (weight ``π_c``), whether or not it occurs in the batch, as in the authors' code.

Soft targets ``[B, C]`` are supported: ``L_PriorCE`` is the soft cross-entropy and ``T_c`` the ``y_ic``-weighted mean
(the indicator ``1[y_i = c]`` of the hard case replaced by ``y_ic``). Predict with the raw logits ``z`` (uniform
test prior).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lt_lightning.losses._checks import target_distribution
from lt_lightning.losses.logit_adjustment import _LogPriorLoss, check_logits
from lt_lightning.output import ModelOutput


def _check_non_negative(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def lade_regularizer(logits: Tensor, target: Tensor, log_prior: Tensor, remine_lambda: float = 0.1) -> Tensor:
    """The LADE regulariser ``-Σ_c π_c (T_c - S_c - λ S_c²)`` (see the module docstring for ``T_c`` and ``S_c``).

    Args:
        logits: ``[B, C]`` raw logits ``z``.
        target: ``[B]`` class indices or ``[B, C]`` soft targets.
        log_prior: ``[C]`` log training prior ``log π``.
        remine_lambda: ``λ >= 0``, weight of the ReMINE regulariser ``S_c²``.
    """
    check_logits(logits, log_prior)
    remine_lambda = _check_non_negative("remine_lambda", remine_lambda)
    batch, num_classes = logits.shape
    log_prior = log_prior.to(device=logits.device)
    z = logits.float()
    y = target_distribution(target, num_classes, dtype=z.dtype)
    n = y.sum(dim=0)  # [C] (soft) number of batch samples per class
    # Absent classes: Σ_i y_ic z_ic = 0, divided by 1 -> T_c = 0 (no 0/0, no NaN gradient).
    first = (y * z).sum(dim=0) / torch.where(n > 0, n, torch.ones_like(n))
    second = torch.logsumexp(z - log_prior + math.log(1.0 / num_classes), dim=0) - math.log(batch)
    estimate = first - second - remine_lambda * second.square()
    return -(log_prior.exp() * estimate).sum()


def lade_loss(
    logits: Tensor, target: Tensor, log_prior: Tensor, alpha: float = 0.1, remine_lambda: float = 0.1
) -> Tensor:
    """``-1/B Σ_i log softmax(z_i + log π)[y_i] + α · lade_regularizer(z, y, log π, λ)`` (Hong et al., CVPR 2021)."""
    check_logits(logits, log_prior)
    alpha = _check_non_negative("alpha", alpha)
    prior_ce = F.cross_entropy(logits + log_prior.to(logits.device), target)
    if alpha == 0.0:
        return prior_ce
    return prior_ce + alpha * lade_regularizer(logits, target, log_prior, remine_lambda)


class LADELoss(_LogPriorLoss):
    """LADE loss (Hong et al., "Disentangling Label Distribution for Long-tailed Visual Recognition", CVPR 2021).

    ``L = CE(z + log π, y) + α · L_LADE(z, y)`` with the training prior ``π`` in the buffer ``log_prior``; see
    :func:`lade_loss`.

    Args:
        alpha: ``α >= 0``, weight of the LADE regulariser (authors' CIFAR-100-LT ρ=100 run: 0.1; ImageNet-LT: 0.05;
            Places-LT: 0.005; iNaturalist 2018: 0.05).
        remine_lambda: ``λ >= 0`` of the ReMINE term (authors' CIFAR-100-LT ρ=100 run: 0.01; their config default
            0.1; ImageNet-LT: 0.5).
    """

    def __init__(self, alpha: float = 0.1, remine_lambda: float = 0.1) -> None:
        super().__init__()
        self.alpha = _check_non_negative("alpha", alpha)
        self.remine_lambda = _check_non_negative("remine_lambda", remine_lambda)

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        return lade_loss(output.logits, target, self._require_prior(), self.alpha, self.remine_lambda)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, remine_lambda={self.remine_lambda}"
