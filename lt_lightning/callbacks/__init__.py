"""Callbacks: methods that change training over time, and the end-of-test report."""

from lt_lightning.callbacks.deferred_reweighting import DeferredReweighting
from lt_lightning.callbacks.posthoc_logit_adjustment import PostHocLogitAdjustment
from lt_lightning.callbacks.resampling_schedule import ResamplingSchedule
from lt_lightning.callbacks.test_report import TestReport

__all__ = ["DeferredReweighting", "PostHocLogitAdjustment", "ResamplingSchedule", "TestReport"]
