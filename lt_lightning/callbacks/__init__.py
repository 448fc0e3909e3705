"""Callbacks: methods that change training over time, and the end-of-test report."""

from lt_lightning.callbacks.batch_mixing import BatchMixing
from lt_lightning.callbacks.bbn_schedule import CumulativeLearning
from lt_lightning.callbacks.classifier_retraining import ClassifierRetraining
from lt_lightning.callbacks.compute_per_image import ComputePerImage
from lt_lightning.callbacks.data_fingerprint import DataFingerprint
from lt_lightning.callbacks.deferred_reweighting import DeferredReweighting
from lt_lightning.callbacks.expert_aggregation import TestTimeAggregation
from lt_lightning.callbacks.expert_router_training import ExpertRouterTraining
from lt_lightning.callbacks.knowledge_distillation import KnowledgeDistillation
from lt_lightning.callbacks.momentum_encoder import MomentumEncoder
from lt_lightning.callbacks.nearest_class_mean import NearestClassMean
from lt_lightning.callbacks.posthoc_logit_adjustment import PostHocLogitAdjustment
from lt_lightning.callbacks.prediction_writer import PredictionWriter
from lt_lightning.callbacks.resampling_schedule import ResamplingSchedule
from lt_lightning.callbacks.self_supervised_init import SelfSupervisedInit
from lt_lightning.callbacks.tau_normalization import TauNormalization
from lt_lightning.callbacks.test_report import TestReport

__all__ = [
    "DataFingerprint",
    "SelfSupervisedInit",
    "MomentumEncoder",
    "KnowledgeDistillation",
    "BatchMixing",
    "ClassifierRetraining",
    "ComputePerImage",
    "CumulativeLearning",
    "ExpertRouterTraining",
    "DeferredReweighting",
    "NearestClassMean",
    "PostHocLogitAdjustment",
    "PredictionWriter",
    "ResamplingSchedule",
    "TauNormalization",
    "TestReport",
    "TestTimeAggregation",
]
