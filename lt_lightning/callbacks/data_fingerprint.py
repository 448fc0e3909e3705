"""``DataFingerprint``: every checkpoint records the data it was trained on; resuming on other data refuses.

A checkpoint resumed on another dataset, split or set of class counts trains on in silence: the optimizer state and
the class prior (the module's ``class_counts`` buffer) come from the checkpoint, the batches from the new data, and
the curves look continuous. The callback stores :func:`~lt_lightning.checkpointing.data_fingerprint` of the
datamodule in its state (``checkpoint["callbacks"]["DataFingerprint"]["data_fingerprint"]``) at every save, and on
resume compares it with the current datamodule's: a difference raises ``ValueError`` naming each differing field
with both values, unless ``allow_data_mismatch`` (then a warning). ``validate`` / ``test`` / ``predict`` from a
checkpoint only warn (evaluating a model on other data is legitimate). A checkpoint without a fingerprint (written
before this callback, or without a datamodule) is not checked; one line says so.

When the comparison runs: Lightning (2.6) calls the datamodule's and the callbacks' ``setup`` first (the fingerprint
is computed there, after the datamodule's ``setup``, which may drop unreadable training images), then restores the
checkpoint (``load_state_dict``: compared there). Under DDP every process holds the same data and loads the same
file, so every process reaches the same decision without a collective (and raises at the same point).

:func:`check_init_from` does the same for checkpoints whose *weights* start a fit (``init_from``, a distillation
teacher, a self-supervised pre-training): they must come from this fit's training data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lt_lightning._lightning_compat import loaded_checkpoint
from lt_lightning.checkpoint_reader import read_checkpoint
from lt_lightning.checkpointing import data_fingerprint, fingerprint_difference

__all__ = [
    "STATE_FIELD",
    "DataFingerprint",
    "check_init_from",
    "check_resume",
    "data_mismatch_allowed",
    "fingerprint_of_checkpoint",
]

STATE_FIELD = "data_fingerprint"
"""Key of the fingerprint in the callback's state dict."""

_OVERRIDE = "--data_fingerprint.allow_data_mismatch true"
_NOT_LOADED = object()


def fingerprint_of_checkpoint(checkpoint: Any) -> dict[str, Any] | None:
    """The data fingerprint stored in a loaded Lightning checkpoint dict by :class:`DataFingerprint`, or ``None``."""
    if not isinstance(checkpoint, Mapping):
        return None
    states = checkpoint.get("callbacks")
    if not isinstance(states, Mapping):
        return None
    preferred = [states.get(DataFingerprint.__qualname__)]
    for state in [*preferred, *states.values()]:
        if isinstance(state, Mapping) and isinstance(state.get(STATE_FIELD), Mapping):
            return dict(state[STATE_FIELD])
    return None


def data_mismatch_allowed(trainer: pl.Trainer | None) -> bool:
    """Whether the trainer's :class:`DataFingerprint` callback allows a data mismatch (``False`` without one)."""
    callbacks = getattr(trainer, "callbacks", None) or []
    return any(isinstance(c, DataFingerprint) and c.allow_data_mismatch for c in callbacks)


def check_resume(trainer: pl.Trainer | None, checkpoint: Mapping[str, Any]) -> None:
    """Compare a checkpoint being restored with the data now, *before* its weights are loaded.

    For a LightningModule's ``on_load_checkpoint`` (Lightning calls it before loading the weights, and the callbacks'
    ``load_state_dict`` after): with a different number of classes the weights fail to load with a size mismatch
    before :class:`DataFingerprint` would speak. Does nothing without a trainer (``load_from_checkpoint``) or
    without a :class:`DataFingerprint` callback.
    """
    for callback in getattr(trainer, "callbacks", None) or []:
        if isinstance(callback, DataFingerprint):
            callback.check_checkpoint(checkpoint)


def _load_for_fingerprint(path: str, owner: str) -> Any:
    """Load ``path`` on the CPU, memory-mapped where possible (the tensors are not read then), by the one reader
    (:func:`~lt_lightning.checkpoint_reader.read_checkpoint`: ``weights_only=True``, unsafe files refused)."""
    return read_checkpoint(path, purpose=f"{owner}: init_from", mmap=True, require_state_dict=False)


def check_init_from(
    path_or_checkpoint: str | os.PathLike | Mapping[str, Any],
    datamodule: Any,
    owner: str,
    allow_mismatch: bool = False,
) -> str | None:
    """Refuse a checkpoint whose weights start this fit when it was trained on other data than ``datamodule``'s.

    Call it where ``init_from`` / teacher / pre-training checkpoints are loaded, before their weights. A path is
    loaded memory-mapped (its tensors are not read), so checking a path before loading it costs little; a dict
    already loaded works too. A checkpoint without a fingerprint (older files, plain torch files) and a fit without a
    datamodule are not checked (one info line).

    Args:
        path_or_checkpoint: a checkpoint path or the loaded checkpoint dict.
        datamodule: the fit's datamodule (``trainer.datamodule``), or ``None``.
        owner: who loads it, for the message (e.g. ``"ClassifierRetraining"``).
        allow_mismatch: warn instead of raising (pass :func:`data_mismatch_allowed` ``(trainer)`` so that
            ``--data_fingerprint.allow_data_mismatch true`` is the one override).

    Returns:
        The difference (as :func:`~lt_lightning.checkpointing.fingerprint_difference` words it) or ``None``.

    Raises:
        ValueError: the data differ and ``allow_mismatch`` is false (the message names each differing field).
        FileNotFoundError: ``path_or_checkpoint`` is a path that does not exist.
        lt_lightning.checkpoint_reader.UnsafeCheckpointError: the file holds pickled types ``weights_only=True``
            loading refuses (a ``ValueError`` naming them).
    """
    if isinstance(path_or_checkpoint, Mapping):
        checkpoint, where = path_or_checkpoint, "the checkpoint"
    else:
        path = os.fspath(path_or_checkpoint)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{owner}: init_from checkpoint {path!r} does not exist")
        checkpoint, where = _load_for_fingerprint(path, owner), path
    saved = fingerprint_of_checkpoint(checkpoint)
    if saved is None:
        rank_zero_info(f"{owner}: {where} has no data fingerprint (older or not lt_lightning's): data not checked")
        return None
    if datamodule is None:
        rank_zero_info(f"{owner}: no datamodule in this fit: the data of {where} is not checked")
        return None
    difference = fingerprint_difference(saved, data_fingerprint(datamodule))
    if difference is None:
        return None
    message = f"{owner}: {where} was trained on other data than this fit: {difference}"
    if allow_mismatch:
        rank_zero_warn(f"{message} (used anyway: allow_data_mismatch)")
        return difference
    raise ValueError(f"{message}. Use a checkpoint of this training data, or pass {_OVERRIDE} to use it anyway")


class DataFingerprint(Callback):
    """Record the data fingerprint in every checkpoint; refuse to resume on other data unless told to.

    Registered by default by the ``lt-lightning`` CLI (``--data_fingerprint.allow_data_mismatch true`` is the
    override). In Python: ``Trainer(callbacks=[DataFingerprint()])``.

    Args:
        allow_data_mismatch: resume (and use ``init_from`` checkpoints, see :func:`check_init_from`) on other data
            with a warning naming the differences, instead of raising.

    Attributes:
        fingerprint: the current datamodule's fingerprint (after ``setup``; ``None`` without a datamodule).
        difference: the difference found with the loaded checkpoint's fingerprint, or ``None``.
    """

    def __init__(self, allow_data_mismatch: bool = False) -> None:
        super().__init__()
        if not isinstance(allow_data_mismatch, bool):
            raise ValueError(f"allow_data_mismatch must be true or false, got {allow_data_mismatch!r}")
        self.allow_data_mismatch = allow_data_mismatch
        self.fingerprint: dict[str, Any] | None = None
        self.difference: str | None = None
        self._saved: Any = _NOT_LOADED
        self._stage: str | None = None
        self._trainer: pl.Trainer | None = None
        self._compared = False

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer, self._stage = trainer, str(getattr(stage, "value", stage))  # TrainerFn -> "fit", "test", ...
        self._saved, self._compared, self.difference = _NOT_LOADED, False, None
        datamodule = trainer.datamodule
        self.fingerprint = None if datamodule is None else data_fingerprint(datamodule)

    def state_dict(self) -> dict[str, Any]:
        return {STATE_FIELD: self.fingerprint, "version": 1}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._compared:  # already compared before the weights loaded (check_resume)
            return
        self._saved = state_dict.get(STATE_FIELD)
        if self._trainer is not None:
            self._compare()

    def check_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        """Compare the fingerprint of a loaded checkpoint dict now (see :func:`check_resume`); once per run."""
        if self._trainer is None or self._compared:
            return
        saved = fingerprint_of_checkpoint(checkpoint)
        if saved is None:
            return  # no fingerprint: on_fit_start says so
        self._saved = saved
        self._compare()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """A restore that failed before the comparison (e.g. a size mismatch of the classifier on data with another
        number of classes): name the data difference on the exception (a PEP 678 note) and in a warning."""
        if self._compared or self.fingerprint is None:
            return
        loaded = loaded_checkpoint(trainer)
        saved = fingerprint_of_checkpoint(loaded)
        if saved is None:
            return
        difference = fingerprint_difference(saved, self.fingerprint)
        if difference is None:
            return
        self.difference = difference
        where = getattr(trainer, "ckpt_path", None) or "the checkpoint"
        note = f"DataFingerprint: {where} was trained on other data than this run's datamodule: {difference}"
        if hasattr(exception, "add_note"):
            exception.add_note(note)
        rank_zero_warn(note)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._saved is not _NOT_LOADED:
            if not self._compared:
                self._compare()
        elif trainer.ckpt_path is not None:
            # Lightning calls load_state_dict only for a checkpoint holding this callback's state; a strategy that
            # restores after on_fit_start reaches load_state_dict later, and the comparison happens there.
            if not getattr(trainer.strategy, "restore_checkpoint_after_setup", False):
                rank_zero_info(
                    f"DataFingerprint: {trainer.ckpt_path} has no data fingerprint (written before lt_lightning "
                    "recorded one): its data is not checked"
                )

    # ------------------------------------------------------------------ comparison
    def _compare(self) -> None:
        self._compared = True
        trainer = self._trainer
        where = getattr(trainer, "ckpt_path", None) or "the checkpoint"
        saved = self._saved
        if not isinstance(saved, Mapping):
            rank_zero_info(f"DataFingerprint: {where} was saved without a datamodule: its data is not checked")
            return
        if self.fingerprint is None:
            rank_zero_info(f"DataFingerprint: no datamodule in this run: the data of {where} is not checked")
            return
        self.difference = fingerprint_difference(saved, self.fingerprint)
        if self.difference is None:
            return
        if self._stage == "fit" and not self.allow_data_mismatch:
            raise ValueError(
                f"DataFingerprint: {where} was trained on other data than this run's datamodule: {self.difference}. "
                f"Resume with the data it was trained on, or pass {_OVERRIDE} "
                "(DataFingerprint(allow_data_mismatch=True)) to resume anyway"
            )
        action = "resuming anyway (allow_data_mismatch)" if self._stage == "fit" else f"running {self._stage} anyway"
        rank_zero_warn(
            f"DataFingerprint: {where} was trained on other data than this run's datamodule: {self.difference}; "
            f"{action}"
        )
