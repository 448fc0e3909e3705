"""Safe checkpoints and the data fingerprint of a run (compatibility module: one file per job).

* :mod:`lt_lightning.checkpoint_io`: :class:`AtomicCheckpointIO`, atomic and durable checkpoint writes (what
  Lightning 2.6.6 does without it, measured, is in that module's docstring), and its crash-test seam;
* :mod:`lt_lightning.data.fingerprint`: :func:`data_fingerprint` and :func:`fingerprint_difference`.

Every name this module defined is re-exported, so ``lt_lightning.checkpointing.AtomicCheckpointIO`` (configs'
``class_path``, the README) keeps resolving.
"""

from __future__ import annotations

from lt_lightning.checkpoint_io import (
    _TEMP_SUFFIX,
    SLOW_SAVE_ENV,
    SLOW_SAVE_SKIP_ENV,
    AtomicCheckpointIO,
    _fsync_directory,
    _host_tag,
    _PauseAfterFirstWrite,
    _pid_alive,
    _seam_setting,
    _strip_file_protocol,
)
from lt_lightning.data.fingerprint import (
    FINGERPRINT_FIELDS,
    SPLIT_FIELDS,
    SPLIT_FILE_FIELDS,
    _counts_difference,
    _file_digest,
    _plain,
    _train_images_digest,
    data_fingerprint,
    fingerprint_difference,
)

__all__ = [
    "FINGERPRINT_FIELDS",
    "SLOW_SAVE_ENV",
    "SLOW_SAVE_SKIP_ENV",
    "SPLIT_FIELDS",
    "SPLIT_FILE_FIELDS",
    "AtomicCheckpointIO",
    "data_fingerprint",
    "fingerprint_difference",
]
_PRIVATE_ALIASES = (
    _TEMP_SUFFIX,
    _PauseAfterFirstWrite,
    _counts_difference,
    _file_digest,
    _fsync_directory,
    _host_tag,
    _pid_alive,
    _plain,
    _seam_setting,
    _strip_file_protocol,
    _train_images_digest,
)
