"""von Mises-Fisher maths for ProCo: ``log I_nu``, the vMF log-normaliser and the concentration estimate.

The von Mises-Fisher distribution on the unit sphere of ``R^p`` has density ``C_p(kappa) exp(kappa mu . z)`` with

``C_p(kappa) = kappa^nu / ((2 pi)^(p/2) I_nu(kappa))``, ``nu = p/2 - 1``,

``I_nu`` the modified Bessel function of the first kind. ProCo (Du, Wang, Song, Huang, "Probabilistic Contrastive
Learning for Long-Tailed Visual Recognition", TPAMI 2024) needs ``log I_nu(kappa) - nu log kappa`` (which is
``-log C_p(kappa)`` up to the constant ``(p/2) log 2 pi``, :func:`log_vmf_partition`) and its derivative
``d/dk (log I_nu(k) - nu log k) = I_{nu+1}(k) / I_nu(k)`` (the Bessel ratio ``A_p(k)``), at orders ``nu`` of 15-63
and arguments from ``1e-3`` to ``1e5``.

``log I_nu`` (:func:`log_bessel_iv`): the uniform asymptotic expansion of Debye (DLMF 10.41.3, terms ``u_1 .. u_4``
of DLMF 10.41.10), evaluated at an order ``M = nu + m >= 20`` where its error is below ``1e-8`` for every argument,
then brought down to ``nu`` by the backward recurrence of the ratio, ``r_{k-1} = 1 / (2k / x + r_k)``
(``r_k = I_{k+1}(x) / I_k(x)``; the stable direction, Miller's), ``log I_{k} = log I_{k+1} - log r_k``; in float64.
For ``nu >= 20`` (a projection of 42 or more dimensions) no recurrence step is needed.

The authors' code (LeapLabTHU/ProCo ``ProCo_cifar/loss/proco.py``, ``miller_recurrence``) runs Miller's backward
recurrence of ``I_k`` from order ``2 nu`` with ``i0e`` as the normalisation; started that low it is exact to
``1e-9`` up to ``kappa = 600`` (``p = 128``; their initial ``kappa`` is 606) but drifts beyond (measured against
``scipy.special.ive``: ``5e-6`` at 1000, ``0.02`` at 3000, ``0.5`` at ``1e4``, ``2.8`` at the cap ``1e5``), where the
expansion here stays within ``1e-8`` (tests/losses/test_proco.py).

The concentration (:func:`vmf_concentration`) is the authors' code's estimate from the mean resultant length
``R = ||mean of the unit vectors||``: ``kappa = p R / (1 - R^2)``, set to ``1e5`` above ``1e5`` or for ``R >= 1``
(``update_kappa``). The approximation of Banerjee et al. (JMLR 2005), ``R (p - R^2) / (1 - R^2)``, differs from it
by ``R^3 / (1 - R^2)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: the order from which Debye's expansion (4 terms) is used directly
DEBYE_MIN_ORDER = 20.0
#: the authors' cap on the concentration (``update_kappa``: ``kappa[kappa > 1e5] = 1e5``)
MAX_CONCENTRATION = 1e5

# DLMF 10.41.10: u_k(t) as polynomials in t, lowest power first (u_k has powers t^k .. t^{3k}, every other one)
_DEBYE_U = (
    ((1, 3.0), (3, -5.0), 24.0),
    ((2, 81.0), (4, -462.0), (6, 385.0), 1152.0),
    ((3, 30375.0), (5, -369603.0), (7, 765765.0), (9, -425425.0), 414720.0),
    ((4, 4465125.0), (6, -94121676.0), (8, 349922430.0), (10, -446185740.0), (12, 185910725.0), 39813120.0),
)


def _check_order(nu: float) -> float:
    if isinstance(nu, bool) or not isinstance(nu, (int, float)) or not math.isfinite(nu) or nu < 0:
        raise ValueError(f"nu must be a finite number >= 0, got {nu!r}")
    return float(nu)


def _log_iv_debye(nu: float, x: Tensor) -> Tensor:
    """``log I_nu(x)`` by Debye's uniform expansion (``nu >= 20``; float64 ``x > 0``)."""
    z = x / nu
    s = torch.sqrt(1.0 + z * z)
    t = 1.0 / s
    eta = s + torch.log(z / (1.0 + s))
    series = torch.ones_like(x)
    for k, term in enumerate(_DEBYE_U, start=1):
        *monomials, denominator = term
        u = sum(c * t**p for p, c in monomials) / denominator
        series = series + u / nu**k
    return nu * eta - 0.5 * math.log(2.0 * math.pi * nu) - 0.5 * torch.log(s) + torch.log(series)


def log_bessel_iv_and_ratio(nu: float, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(log I_nu(x), I_{nu+1}(x) / I_nu(x))`` elementwise, in float64 (method in the module docstring).

    Args:
        nu: order ``>= 0`` (integer or half-integer orders alike).
        x: arguments ``> 0`` (values below ``1e-12`` are taken as ``1e-12``).
    """
    nu = _check_order(nu)
    x = x.double().clamp(min=1e-12)
    steps = max(0, math.ceil(DEBYE_MIN_ORDER - nu))
    top = nu + steps
    log_i = _log_iv_debye(top, x)
    ratio = torch.exp(_log_iv_debye(top + 1.0, x) - log_i)
    for k in range(steps):  # order top - k -> top - k - 1
        order = top - k  # r_{order - 1} = 1 / (2 order / x + r_order)
        ratio = 1.0 / (2.0 * order / x + ratio)
        log_i = log_i - torch.log(ratio)
    return log_i, ratio


def log_bessel_iv(nu: float, x: Tensor) -> Tensor:
    """``log I_nu(x)`` elementwise, float64 (see :func:`log_bessel_iv_and_ratio`)."""
    return log_bessel_iv_and_ratio(nu, x)[0]


class _LogVMFPartition(torch.autograd.Function):
    """``log I_nu(k) - nu log k`` with the gradient ``I_{nu+1}(k) / I_nu(k)`` (the authors' ``LogRatioC``)."""

    @staticmethod
    def forward(ctx, kappa: Tensor, nu: float) -> Tensor:  # type: ignore[override]
        log_i, ratio = log_bessel_iv_and_ratio(nu, kappa.detach())
        ctx.save_for_backward(ratio.clamp(max=1.0))  # the ratio is below 1; the authors clip it at 1
        value = log_i - nu * torch.log(kappa.detach().double().clamp(min=1e-12))
        return value.to(kappa.dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (ratio,) = ctx.saved_tensors
        return grad_output * ratio.to(grad_output.dtype), None


def log_vmf_partition(kappa: Tensor, dim: int) -> Tensor:
    """``log I_nu(kappa) - nu log kappa`` with ``nu = dim/2 - 1``: ``-log C_dim(kappa) - (dim/2) log(2 pi)``.

    Differentiable in ``kappa`` (gradient ``I_{nu+1}(kappa) / I_nu(kappa)``); the value has ``kappa``'s dtype and is
    computed in float64.

    Args:
        kappa: concentrations ``> 0``, any shape.
        dim: dimension ``p >= 2`` of the sphere's ambient space.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an integer >= 2, got {dim!r}")
    return _LogVMFPartition.apply(kappa, dim / 2.0 - 1.0)


def vmf_concentration(mean: Tensor, dim: int | None = None) -> Tensor:
    """The authors' concentration estimate ``kappa = p R / (1 - R^2)`` from mean vectors ``[..., p]``.

    ``R = ||mean||`` (the mean resultant length of unit vectors, ``<= 1``); ``kappa`` above ``1e5``, infinite or
    negative (``R >= 1``) becomes ``1e5`` (LeapLabTHU/ProCo ``EstimatorCV.update_kappa``).

    Args:
        mean: ``[..., p]`` means of unit vectors.
        dim: ``p``; ``None``: ``mean.shape[-1]``.
    """
    p = mean.shape[-1] if dim is None else dim
    r = torch.linalg.vector_norm(mean, dim=-1)
    kappa = p * r / (1.0 - r * r)
    bad = ~torch.isfinite(kappa) | (kappa < 0) | (kappa > MAX_CONCENTRATION)
    return torch.where(bad, torch.full_like(kappa, MAX_CONCENTRATION), kappa)
