"""Criteria: ``loss(output: ModelOutput, target) -> scalar``, each a pure function plus a thin ``nn.Module``."""

from lt_lightning.losses._checks import check_finite_loss
from lt_lightning.losses.base import LongTailLoss
from lt_lightning.losses.bbn import BilateralLoss
from lt_lightning.losses.bcl import BalancedContrastiveLoss, balanced_contrastive_loss
from lt_lightning.losses.class_balanced import ClassBalancedLoss, class_balanced_loss, sigmoid_focal_loss
from lt_lightning.losses.contrastive import simclr_loss, supervised_contrastive_loss
from lt_lightning.losses.cross_entropy import CrossEntropyLoss, cross_entropy
from lt_lightning.losses.distillation import DistillationLoss, distillation_loss
from lt_lightning.losses.equalization import EqualizationLoss, softmax_equalization_loss
from lt_lightning.losses.expert_router import ExpertRouterLoss
from lt_lightning.losses.focal import FocalLoss, focal_loss
from lt_lightning.losses.label_aware_smoothing import (
    LabelAwareSmoothingLoss,
    label_aware_epsilons,
    label_aware_smoothing_loss,
)
from lt_lightning.losses.lade import LADELoss, lade_loss, lade_regularizer
from lt_lightning.losses.ldam import LDAMLoss, ldam_loss, ldam_margins
from lt_lightning.losses.logit_adjustment import (
    BalancedSoftmaxLoss,
    LogitAdjustedLoss,
    balanced_softmax_loss,
    log_prior_from_counts,
    logit_adjusted_loss,
)
from lt_lightning.losses.paco import PaCoLoss, paco_loss
from lt_lightning.losses.proco import ProCoLoss, proco_loss
from lt_lightning.losses.ride import RIDELoss
from lt_lightning.losses.sade import DiverseExpertLoss
from lt_lightning.losses.seesaw import SeesawLoss, seesaw_loss
from lt_lightning.losses.supcon import SupervisedContrastiveLoss
from lt_lightning.losses.weighted import ClassWeightedLoss, WeightedCrossEntropyLoss, weighted_cross_entropy
from lt_lightning.losses.weighting import effective_number_weights, inverse_power_weights

__all__ = [
    "BalancedContrastiveLoss",
    "balanced_contrastive_loss",
    "PaCoLoss",
    "ProCoLoss",
    "SupervisedContrastiveLoss",
    "paco_loss",
    "proco_loss",
    "simclr_loss",
    "supervised_contrastive_loss",
    "DistillationLoss",
    "distillation_loss",
    "LabelAwareSmoothingLoss",
    "label_aware_epsilons",
    "label_aware_smoothing_loss",
    "BilateralLoss",
    "DiverseExpertLoss",
    "ExpertRouterLoss",
    "RIDELoss",
    "BalancedSoftmaxLoss",
    "EqualizationLoss",
    "LADELoss",
    "LogitAdjustedLoss",
    "SeesawLoss",
    "balanced_softmax_loss",
    "lade_loss",
    "lade_regularizer",
    "log_prior_from_counts",
    "logit_adjusted_loss",
    "seesaw_loss",
    "softmax_equalization_loss",
    "ClassBalancedLoss",
    "ClassWeightedLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "LDAMLoss",
    "LongTailLoss",
    "WeightedCrossEntropyLoss",
    "check_finite_loss",
    "class_balanced_loss",
    "cross_entropy",
    "effective_number_weights",
    "focal_loss",
    "inverse_power_weights",
    "ldam_loss",
    "ldam_margins",
    "sigmoid_focal_loss",
    "weighted_cross_entropy",
]
