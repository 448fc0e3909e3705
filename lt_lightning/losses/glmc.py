"""GLMC's loss: cumulative head-tail soft-label re-weighting plus global-local mixture consistency.

Du, Yang, Jia, Nan, Chen, Yang, "Global and Local Mixture Consistency Cumulative Learning for Long-tailed Visual
Recognitions", CVPR 2023 (ynu-yangpeng/GLMC, ``GLMC-2023/Trainer.py`` ``train`` and ``SimSiamLoss``). A training
batch holds ``2B`` rows: the first ``B`` the *global* mixture (mixup of an instance-balanced image with a re-balanced
draw), the last ``B`` the *local* one (CutMix of the same pairs' second views), with soft targets ``y_g``, ``y_l``
(:class:`~lt_lightning.callbacks.glmc.GlobalLocalMixing` builds them). With ``h`` the conventional classifier, ``g``
the re-balanced one (the prediction), ``z`` the projection and ``u`` the prediction head of
:class:`~lt_lightning.heads.glmc.GLMCHead`::

    L = α [E(h_g, y_g) + E(h_l, y_l)] + (1 - α) [E(g_g, w ⊙ y_g) + E(g_l, w ⊙ y_l)]
        + λ [S(u_g, sg(z_l)) + S(u_l, sg(z_g))]

* ``E(z, t) = -1/B sum_i sum_k t_ik log softmax(z_i)_k``, the soft-label cross-entropy (mean over the ``B`` rows);
* ``w_c = n_c^{-r} / sum_k n_k^{-r} · C`` (``r = label_weighting``: 1.2 in the CIFAR recipe): the mixed label's
  class weights, not renormalised (the reference's ``per_cls_weights * one_hot`` mixed with ``lam``);
* ``S(u, z) = -1/B sum_i cos(u_i, z_i)``, SimSiam's negative cosine similarity, ``sg`` the stop-gradient;
* ``α = 1 - (e / T)^2`` at the 0-based epoch ``e`` of ``T`` (set every epoch by the callback), ``λ`` the consistency
  weight (``contrast_weight``: 4 in the CIFAR-100-LT rho = 100 recipe).

With ``λ = 0`` and ``α = 1`` the loss is the plain mixup cross-entropy of the first half plus the CutMix
cross-entropy of the second.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from lt_lightning.losses.weighted import ClassWeightedLoss, check_weight, weighted_cross_entropy
from lt_lightning.losses.weighting import inverse_power_weights
from lt_lightning.output import ModelOutput

__all__ = [
    "CONVENTIONAL_KEY",
    "GLMCLoss",
    "PREDICTION_KEY",
    "PROJECTION_KEY",
    "check_alpha",
    "glmc_loss",
    "split_global_local",
    "simsiam_loss",
]

#: ``ModelOutput.extras`` keys written by :class:`~lt_lightning.heads.glmc.GLMCHead` in training
CONVENTIONAL_KEY = "glmc_conventional_logits"
PROJECTION_KEY = "glmc_projection"
PREDICTION_KEY = "glmc_prediction"


def check_alpha(alpha: float) -> float:
    """The cumulative ``α`` as a float, or ``ValueError`` unless it is a number in ``[0, 1]``."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1] (GLMC's cumulative weight), got {alpha!r}")
    return float(alpha)


def _check_weight_value(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def simsiam_loss(prediction: Tensor, projection: Tensor) -> Tensor:
    """SimSiam's ``S(u, sg(z)) = -mean_i cos(u_i, z_i)`` with the gradient stopped at ``z``."""
    if prediction.shape != projection.shape or prediction.ndim != 2:
        raise ValueError(
            "prediction and projection must both be [B, H], got "
            f"{tuple(prediction.shape)} and {tuple(projection.shape)}"
        )
    return -F.cosine_similarity(prediction, projection.detach(), dim=-1).mean()


def split_global_local(tensor: Tensor, name: str = "tensor") -> tuple[Tensor, Tensor]:
    """``(tensor[:B], tensor[B:])`` of a ``2B``-row tensor: the global (mixup) and the local (CutMix) rows."""
    rows = tensor.shape[0]
    if rows == 0 or rows % 2:
        raise ValueError(
            f"GLMC needs an even number of rows, [global mixture; local mixture], got {name} of shape "
            f"{tuple(tensor.shape)}: train with lt_lightning.callbacks.glmc.GlobalLocalMixing"
        )
    half = rows // 2
    return tensor[:half], tensor[half:]


def glmc_loss(
    conventional_logits: Tensor,
    rebalanced_logits: Tensor,
    projection: Tensor,
    prediction: Tensor,
    target: Tensor,
    class_weights: Tensor | None,
    alpha: float,
    consistency_weight: float,
) -> Tensor:
    """GLMC's loss (see the module docstring) of ``2B`` rows ``[global; local]``.

    Args:
        conventional_logits: ``[2B, C]`` logits ``h`` of the conventional classifier.
        rebalanced_logits: ``[2B, C]`` logits ``g`` of the re-balanced classifier.
        projection: ``[2B, H]`` projections ``z``.
        prediction: ``[2B, H]`` predictions ``u`` (the prediction head on ``z``).
        target: ``[2B, C]`` soft targets (or ``[2B]`` class indices) of the mixed images.
        class_weights: ``[C]`` weights ``w`` of the re-balanced term, ``None`` for ones.
        alpha: cumulative weight ``α`` in ``[0, 1]``.
        consistency_weight: ``λ >= 0``.
    """
    alpha = check_alpha(alpha)
    consistency_weight = _check_weight_value("consistency_weight", consistency_weight)
    if conventional_logits.shape != rebalanced_logits.shape or conventional_logits.ndim != 2:
        raise ValueError(
            "conventional_logits and rebalanced_logits must both be [2B, C], got "
            f"{tuple(conventional_logits.shape)} and {tuple(rebalanced_logits.shape)}"
        )
    check_weight(class_weights, conventional_logits.shape[1])
    h_g, h_l = split_global_local(conventional_logits, "conventional_logits")
    g_g, g_l = split_global_local(rebalanced_logits, "rebalanced_logits")
    y_g, y_l = split_global_local(target, "target")
    z_g, z_l = split_global_local(projection, "projection")
    u_g, u_l = split_global_local(prediction, "prediction")
    balance = weighted_cross_entropy(h_g, y_g, reduction="mean") + weighted_cross_entropy(h_l, y_l, reduction="mean")
    rebalance = weighted_cross_entropy(g_g, y_g, class_weights, reduction="mean") + weighted_cross_entropy(
        g_l, y_l, class_weights, reduction="mean"
    )
    loss = alpha * balance + (1.0 - alpha) * rebalance
    if consistency_weight > 0:
        loss = loss + consistency_weight * (simsiam_loss(u_g, z_l) + simsiam_loss(u_l, z_g))
    return loss


class GLMCLoss(ClassWeightedLoss):
    """GLMC's cumulative re-weighted mixture loss with mixture consistency, on :class:`GLMCHead`'s output.

    YAML (``model.init_args.criterion``; the ``GlobalLocalMixing`` callback sets ``alpha`` every epoch)::

        class_path: lt_lightning.losses.glmc.GLMCLoss
        init_args: {label_weighting: 1.2, consistency_weight: 4.0}

    Args:
        label_weighting: ``r >= 0`` of the class weights ``w_c ∝ n_c^{-r}`` (normalised to sum to ``C``) of the
            re-balanced term (the reference's ``--label_weighting``; 1.2 in its CIFAR rho = 100 runs; 0: unweighted).
        consistency_weight: ``λ >= 0`` of the mixture-consistency term (``--contrast_weight``).
        alpha: a fixed ``α`` in ``[0, 1]``; ``None`` (default): set every epoch by
            :class:`~lt_lightning.callbacks.glmc.GlobalLocalMixing`.

    Attributes:
        alpha: the ``α`` of the next call (``None`` until set).
    """

    def __init__(self, label_weighting: float = 1.2, consistency_weight: float = 4.0, alpha: float | None = None):
        super().__init__()
        self.label_weighting = _check_weight_value("label_weighting", label_weighting)
        self.consistency_weight = _check_weight_value("consistency_weight", consistency_weight)
        self.alpha: float | None = None if alpha is None else check_alpha(alpha)

    def default_class_weights(self, class_counts: Tensor) -> Tensor:
        """``w_c = n_c^{-r} / sum_k n_k^{-r} · C`` with ``r = label_weighting``."""
        return inverse_power_weights(class_counts, self.label_weighting)

    def set_alpha(self, alpha: float | None) -> None:
        """Set ``α`` (``None``: unset, a call then raises)."""
        self.alpha = None if alpha is None else check_alpha(alpha)

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        if self.alpha is None:
            raise RuntimeError(
                "GLMCLoss.alpha is not set: add the lt_lightning.callbacks.glmc.GlobalLocalMixing callback (it sets "
                "alpha every epoch), or give a fixed alpha"
            )
        missing = [k for k in (CONVENTIONAL_KEY, PROJECTION_KEY, PREDICTION_KEY) if k not in output.extras]
        if missing:
            raise ValueError(
                f"GLMCLoss needs the training output of lt_lightning.heads.glmc.GLMCHead (extras {missing} missing): "
                "set model.classifier to GLMCHead"
            )
        weight = self.weight
        if weight is not None:
            weight = weight.to(output.logits.device)
        return glmc_loss(
            output.extras[CONVENTIONAL_KEY],
            output.logits,
            output.extras[PROJECTION_KEY],
            output.extras[PREDICTION_KEY],
            target,
            weight,
            self.alpha,
            self.consistency_weight,
        )

    def extra_repr(self) -> str:
        return (
            f"label_weighting={self.label_weighting}, consistency_weight={self.consistency_weight}, alpha={self.alpha}"
        )
