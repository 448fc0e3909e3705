"""Long-tailed evaluation metrics (per-class counts summed across processes)."""

from lt_lightning.metrics.long_tail_accuracy import (
    SCALAR_KEYS,
    LongTailAccuracy,
    ShotGroups,
    long_tail_accuracy_compute,
    long_tail_accuracy_update,
    shot_group_masks,
)

__all__ = [
    "SCALAR_KEYS",
    "LongTailAccuracy",
    "ShotGroups",
    "long_tail_accuracy_compute",
    "long_tail_accuracy_update",
    "shot_group_masks",
]
