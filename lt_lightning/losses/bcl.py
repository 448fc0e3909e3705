"""Balanced contrastive learning (BCL): Zhu, Wang, Chen, Chen, Jiang, "Balanced Contrastive Learning for Long-Tailed
Visual Recognition", CVPR 2022.

BCL trains a classifier branch with the logit-adjusted cross-entropy (Menon et al., ICLR 2021) and, beside it, a
supervised contrastive loss made balanced by two changes:

* **class-complement**: the ``C`` class prototypes ``p_c`` -- the classifier's weights passed through their own MLP
  and L2-normalised (:class:`~lt_lightning.heads.projection.ProjectionHead` with ``prototype_projection=True``) --
  join the contrast set, so every class appears in every batch and the own class's prototype is a positive;
* **class-averaging**: in the denominator each class's similarities are averaged over the members of that class in
  the contrast set instead of summed, so a head class with many samples in the batch weighs no more than a tail class.

For an anchor ``z_i`` (L2-normalised projection of one view, label ``y_i``), the contrast set ``A`` holds every view
of the batch and the prototypes, with labels; ``n_c`` is the number of members of class ``c`` in ``A`` (the batch's
views of ``c`` plus its prototype), ``P(i)`` the members of class ``y_i`` other than ``i``, ``t`` the temperature:

``L_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i . a_p / t) / sum_{j in A, j != i} exp(z_i . a_j / t) / w_ij )``

with ``w_ij = n_(y_j) - 1`` when ``y_j = y_i`` (the anchor itself is not in its denominator) and ``n_(y_j)``
otherwise. ``L_bcl`` is the mean over anchors, and the loss is

``L = alpha * LA(l, y) + beta * L_bcl``, ``LA(l, y) = -log softmax(l + tau log pi)_y``

on the classifier's logits ``l`` of every view. Prediction uses the raw logits ``l``. Degenerate case: ``beta = 0``
(``alpha = 1``) is the logit-adjusted loss (:func:`~lt_lightning.losses.logit_adjustment.logit_adjusted_loss`),
balanced softmax at ``tau = 1``.

Reference: FlamieZhu/Balanced-Contrastive-Learning ``loss/contrastive.py`` (``BalSCL``), ``loss/logitadjust.py``
(``LogitAdjust``, tau 1), ``models/resnext.py`` (``BCLModel``: ``head``, ``head_fc`` on ``fc.weight.T``,
``NormedLinear`` with s = 30) and ``main.py`` (``loss = alpha * ce_loss + beta * scl_loss``, alpha 1, beta 0.35,
temperature 0.07). Differences here: the reference computes the classifier's loss on a third view (RandAugment)
and contrasts two SimCLR views; here the classifier's loss covers every view of the batch (``data.views``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lt_lightning._checks import check_float
from lt_lightning.heads.projection import PROTOTYPES_KEY
from lt_lightning.losses.logit_adjustment import _check_tau, _LogPriorLoss, logit_adjusted_loss
from lt_lightning.losses.supcon import hard_labels, projection_of
from lt_lightning.output import ModelOutput


def balanced_contrastive_loss(
    features: Tensor, labels: Tensor, prototypes: Tensor | None, temperature: float = 0.07
) -> Tensor:
    """``L_bcl``: class-averaged supervised contrastive loss with class-complement (formula in the module docstring).

    Args:
        features: ``[N, d]`` L2-normalised projections of every view of the batch (the anchors).
        labels: ``[N]`` class indices.
        prototypes: ``[C, d]`` L2-normalised class prototypes (row ``c`` has label ``c``); ``None``: no
            class-complement (class-averaging only; an anchor without positive is left out of the mean).
        temperature: ``t > 0``.
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"features must be [N, d] and labels [N]; got {tuple(features.shape)}, {tuple(labels.shape)}")
    temperature = check_float("temperature", temperature, minimum=0, exclusive_minimum=True)
    n, device = features.shape[0], features.device
    contrast, contrast_labels = features.float(), labels.long()
    if prototypes is None:
        num_classes = int(labels.max().item()) + 1 if n else 0  # the class sizes' length (one host sync)
    else:
        if prototypes.ndim != 2 or prototypes.shape[1] != features.shape[1]:
            raise ValueError(f"prototypes must be [C, {features.shape[1]}], got {tuple(prototypes.shape)}")
        num_classes = prototypes.shape[0]
        contrast = torch.cat([contrast, prototypes.float()])
        contrast_labels = torch.cat([contrast_labels, torch.arange(num_classes, device=device)])
    logits = features.float() @ contrast.T / temperature  # [N, N (+ C)]
    not_self = torch.ones_like(logits, dtype=torch.bool)
    not_self[:, :n] &= ~torch.eye(n, dtype=torch.bool, device=device)
    positive = (labels[:, None] == contrast_labels[None, :]) & not_self
    class_size = torch.zeros(max(num_classes, 1), device=device).index_add_(
        0, contrast_labels, torch.ones_like(contrast_labels, dtype=torch.float32)
    )
    members = class_size[contrast_labels][None, :] - positive.float()  # w_ij: class y_j's members in i's denominator
    log_weight = torch.where(not_self, -members.clamp(min=1).log(), torch.full_like(logits, float("-inf")))
    log_prob = logits - torch.logsumexp(logits + log_weight, dim=1, keepdim=True)
    count = positive.sum(dim=1)
    per_anchor = -(log_prob * positive).sum(dim=1) / count.clamp(min=1)
    has_positive = (count > 0).float()
    return (per_anchor * has_positive).sum() / has_positive.sum().clamp(min=1)


class BalancedContrastiveLoss(_LogPriorLoss):
    """BCL: ``alpha`` x logit-adjusted CE on the logits + ``beta`` x balanced contrastive loss on the projection.

    Needs :class:`~lt_lightning.heads.projection.ProjectionHead` with ``prototype_projection: true`` and
    ``detach_classifier: false`` (the prototypes come from the classifier's weights), and two or more views per image
    (``data.views``), view-major.

    Args:
        alpha: weight of the logit-adjusted cross-entropy (reference ``--alpha``: 1.0).
        beta: weight of the balanced contrastive loss (reference ``--beta``: 0.35).
        temperature: contrastive temperature (reference ``--temp``: 0.07).
        tau: logit-adjustment temperature (reference ``LogitAdjust``: 1.0).
        class_complement: put the class prototypes into the contrast set (BCL); ``False``: class-averaging only (the
            paper's ablation), and the head's prototypes are not needed.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 0.35,
        temperature: float = 0.07,
        tau: float = 1.0,
        class_complement: bool = True,
    ) -> None:
        super().__init__()
        self.alpha = check_float("alpha", alpha, minimum=0)
        self.beta = check_float("beta", beta, minimum=0)
        self.temperature = check_float("temperature", temperature, minimum=0, exclusive_minimum=True)
        self.tau = _check_tau(tau)
        if not isinstance(class_complement, bool):
            raise ValueError(f"class_complement must be a bool, got {class_complement!r}")
        self.class_complement = class_complement

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        owner = type(self).__name__
        labels = hard_labels(target, owner)
        loss = self.alpha * logit_adjusted_loss(output.logits, labels, self._require_prior(), self.tau)
        if self.beta == 0:
            return loss
        z = projection_of(output, owner)
        prototypes = None
        if self.class_complement:
            prototypes = output.extras.get(PROTOTYPES_KEY)
            if prototypes is None:
                raise ValueError(
                    f"{owner} needs output.extras[{PROTOTYPES_KEY!r}]: use classifier "
                    "lt_lightning.heads.projection.ProjectionHead with prototype_projection: true"
                )
            if prototypes.shape[0] != output.logits.shape[1]:
                raise ValueError(f"prototypes must be [{output.logits.shape[1]}, d], got {tuple(prototypes.shape)}")
        return loss + self.beta * balanced_contrastive_loss(z, labels, prototypes, self.temperature)

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}, tau={self.tau}, "
            f"class_complement={self.class_complement}"
        )


__all__ = ["BalancedContrastiveLoss", "balanced_contrastive_loss"]
