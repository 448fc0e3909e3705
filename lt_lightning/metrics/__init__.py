"""Long-tailed evaluation metrics (per-class counts and calibration sums, summed across processes)."""

from lt_lightning.metrics.calibration import (
    CALIBRATION_SCALAR_KEYS,
    DEFAULT_NUM_BINS,
    CalibrationMetric,
    expected_calibration_error,
)
from lt_lightning.metrics.long_tail_accuracy import (
    SCALAR_KEYS,
    LongTailAccuracy,
    ShotGroups,
    long_tail_accuracy_compute,
    long_tail_accuracy_update,
    shot_group_masks,
)

__all__ = [
    "CALIBRATION_SCALAR_KEYS",
    "DEFAULT_NUM_BINS",
    "CalibrationMetric",
    "SCALAR_KEYS",
    "LongTailAccuracy",
    "ShotGroups",
    "expected_calibration_error",
    "long_tail_accuracy_compute",
    "long_tail_accuracy_update",
    "shot_group_masks",
]
