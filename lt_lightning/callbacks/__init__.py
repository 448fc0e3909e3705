"""Callbacks: methods that change training over time, and the end-of-test report."""

from lt_lightning.callbacks.test_report import TestReport

__all__ = ["TestReport"]
