"""Functional cores of the contrastive losses: supervised contrastive (SupCon), its k-positive variant (KCL), SimCLR.

All three are one formula (Khosla et al., NeurIPS 2020, the ``L^sup_out`` form). For ``N`` L2-normalised features
``z_i`` with labels ``y_i``, anchors ``i``, positives ``P(i)`` and the contrast set ``A(i) = {a != i}``:

``L = 1/|I| sum_{i in I} -1/|P(i)| sum_{p in P(i)} log( exp(z_i . z_p / t) / sum_{a in A(i)} exp(z_i . z_a / t) )``

where ``I`` is the set of anchors with at least one positive (an anchor without positives contributes nothing).

* SupCon: ``P(i) = {p != i : y_p = y_i}``, every same-class sample of the batch.
* KCL (Kang et al., "Exploring Balanced Feature Spaces for Representation Learning", ICLR 2021): ``P(i)`` is the
  anchor's other view(s) plus ``k`` same-class samples drawn at random (fewer when the batch holds fewer), so
  that every class, head or tail, gets the same number of positives per anchor and the feature space is balanced.
  The denominator still runs over all of ``A(i)``.
* SimCLR's NT-Xent (Chen et al., ICML 2020): SupCon with one label per image, i.e. the positives of an anchor are
  the other views of the same image.

Batches are view-major (``views`` augmented views of ``B`` images: image ``b``'s views at ``b, B + b, ...``), as
:class:`~lt_lightning.data.base.LongTailDataModule` produces with ``views > 1``.

The reference SupCon code (HobbitLong/SupContrast ``losses.py``, ``SupConLoss``) multiplies the loss by
``t / base_temperature`` with ``base_temperature = 0.07`` fixed (its CIFAR runs set ``--temp`` alone, e.g. 0.1: a
factor 1/0.7 = 1.43), and so does TSC's batch re-implementation of KCL (LTH14/targeted-supcon ``SupConLoss(k=...)``),
whose positive draw KCL follows here. The KCL authors' code has no such factor (bingykang/BalFeat ``main_kcl.py``: a
soft-label cross-entropy on the MoCo logits divided by ``T``). ``base_temperature`` gives the factor; ``None`` (the
default) or ``base_temperature = t`` give factor 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lt_lightning._checks import check_int


def _check_features(features: Tensor, views: int) -> int:
    """Validate ``features`` ``[N, d]`` and ``views``; return the number of images ``B = N / views``."""
    if features.ndim != 2:
        raise ValueError(f"features must be [N, d], got shape {tuple(features.shape)}")
    check_int("views", views, minimum=1)
    n = features.shape[0]
    if n % views != 0:
        raise ValueError(f"features has {n} rows, not a multiple of views={views}")
    return n // views


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def temperature_factor(temperature: float, base_temperature: float | None) -> float:
    """SupContrast's loss factor ``t / base_temperature``; 1 when ``base_temperature`` is ``None``."""
    if base_temperature is None:
        return 1.0
    if not (base_temperature > 0 and math.isfinite(base_temperature)):
        raise ValueError(f"base_temperature must be None or a finite number > 0, got {base_temperature}")
    return temperature / base_temperature


def same_image_mask(num_samples: int, views: int, device: torch.device | None = None) -> Tensor:
    """``[N, N]`` bool: ``True`` where rows ``i`` and ``j`` are views of the same image (view-major order)."""
    images = num_samples // views
    image_id = torch.arange(num_samples, device=device) % images
    return image_id[:, None] == image_id[None, :]


def k_positive_mask(
    labels: Tensor,
    k: int,
    views: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """KCL's positives ``[N, N]`` (bool): each anchor's other views plus ``k`` random same-class samples.

    The ``k`` samples are drawn uniformly without replacement among the same-class rows that are not views of the
    anchor's own image; when fewer than ``k`` exist, all of them are taken. Drawing uses ``generator`` or the global
    torch RNG of ``labels``' device (seeded by ``seed_everything``); no host-device synchronisation.
    """
    check_int("k_positives", k, minimum=0)
    n = labels.shape[0]
    own = same_image_mask(n, views, labels.device)
    candidates = (labels[:, None] == labels[None, :]) & ~own
    positives = own & ~torch.eye(n, dtype=torch.bool, device=labels.device)
    if k == 0 or n == 0:
        return positives
    gen_device = generator.device if generator is not None else labels.device
    scores = torch.rand(n, n, generator=generator, device=gen_device).to(labels.device)
    scores = scores.masked_fill(~candidates, -1.0)  # non-candidates rank last
    chosen_idx = scores.topk(min(k, n), dim=1).indices
    chosen = torch.zeros(n, n, dtype=torch.bool, device=labels.device).scatter_(1, chosen_idx, True)
    return positives | (chosen & candidates)


def contrastive_loss_from_mask(
    features: Tensor, positives: Tensor, temperature: float, base_temperature: float | None = None
) -> Tensor:
    """The formula of this module for an explicit ``[N, N]`` bool positive mask (the diagonal is ignored).

    Args:
        features: ``[N, d]`` L2-normalised features.
        positives: ``[N, N]`` bool, ``positives[i, p]``: ``p`` is a positive of anchor ``i``.
        temperature: ``t > 0``.
        base_temperature: the loss is multiplied by ``t / base_temperature`` (SupContrast: 0.07); ``None``: by 1.
    """
    _check_temperature(temperature)
    factor = temperature_factor(temperature, base_temperature)
    n = features.shape[0]
    if tuple(positives.shape) != (n, n):
        raise ValueError(f"positives must be [{n}, {n}], got shape {tuple(positives.shape)}")
    logits = features.float() @ features.float().T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=features.device)
    log_denominator = torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    log_prob = logits - log_denominator
    pos = (positives & ~self_mask).to(log_prob.dtype)
    num_pos = pos.sum(dim=1)
    has_pos = num_pos > 0
    per_anchor = -(pos * log_prob.masked_fill(self_mask, 0.0)).sum(dim=1) / num_pos.clamp(min=1)
    loss = (per_anchor * has_pos).sum() / has_pos.sum().clamp(min=1)
    return loss if factor == 1.0 else loss * factor


def supervised_contrastive_loss(
    features: Tensor,
    labels: Tensor,
    temperature: float = 0.07,
    k_positives: int | None = None,
    views: int = 1,
    generator: torch.Generator | None = None,
    base_temperature: float | None = None,
) -> Tensor:
    """Supervised contrastive loss (SupCon), or KCL when ``k_positives`` is given.

    Args:
        features: ``[N, d]`` L2-normalised features (``N = views * B``, view-major).
        labels: ``[N]`` integer class indices (repeated per view).
        temperature: ``t > 0`` (SupCon / KCL CIFAR recipes: 0.07 / 0.1 / 0.2).
        k_positives: ``None``: every same-class sample is a positive (SupCon). ``k``: the anchor's other views plus
            ``k`` random same-class samples (KCL); ``k = 0`` leaves the other views only (SimCLR).
        views: views per image; only KCL needs it (to tell an anchor's own views from other same-class images).
        generator: torch generator for KCL's draw (default: the global RNG).
        base_temperature: the loss is multiplied by ``t / base_temperature`` (SupContrast: 0.07); ``None``: by 1
            (the KCL authors' code).
    """
    _check_features(features, views)
    _check_temperature(temperature)
    temperature_factor(temperature, base_temperature)  # validate before drawing KCL's positives
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"labels must be [{features.shape[0]}], got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if k_positives is None:
        positives = labels[:, None] == labels[None, :]
    else:
        positives = k_positive_mask(labels, k_positives, views, generator)
    return contrastive_loss_from_mask(features, positives, temperature, base_temperature)


def simclr_loss(features: Tensor, views: int, temperature: float) -> Tensor:
    """SimCLR's NT-Xent: SupCon with one label per image (each anchor's positives are its image's other views).

    ``L = -1/N sum_i 1/(V-1) sum_{j ~ i, j != i} log( exp(z_i . z_j / t) / sum_{a != i} exp(z_i . z_a / t) )``.

    Args:
        features: ``[V * B, d]`` L2-normalised features in view-major order.
        views: ``V >= 2`` views per image.
        temperature: ``t > 0`` (SimCLR: 0.5 on CIFAR).
    """
    images = _check_features(features, views)
    if views < 2:
        raise ValueError(f"simclr_loss needs views >= 2 (positives are the other views), got {views}")
    _check_temperature(temperature)
    labels = torch.arange(images, device=features.device).repeat(views)
    return supervised_contrastive_loss(features, labels, temperature)
