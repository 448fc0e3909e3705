"""``EpochSchedule``: the base of the callbacks whose effect is a function of the epoch.

Deferred re-weighting, the re-sampling schedule, BBN's cumulative learning, the batch-mixing stop and the classifier
stages switch something at set epochs (epochs or fractions of the run, :mod:`lt_lightning.schedule`). What they share
is written here once, in Lightning's order of hooks (PITFALLS.md, "Epoch-driven changes and resume"):

* **validate** (``setup``, fit only): :meth:`EpochSchedule._setup_fit` checks the parts it needs and resolves its
  epochs against ``trainer.max_epochs`` (:meth:`EpochSchedule.resolve_point`; strict unless ``fast_dev_run``), so a
  wrong configuration fails at start-up, not at the switch;
* **warn** on resume: the checkpointed state is the configuration (:meth:`EpochSchedule._config`); a run resumed with
  another one warns (the run then differs from the one that wrote the checkpoint);
* **apply**: an idempotent ``_apply_epoch(epoch)`` -- everything derives from the epoch -- called from
  ``on_train_start`` (which also runs after a mid-epoch resume, where ``on_train_epoch_start`` is skipped) and
  ``on_train_epoch_start``, so a resumed run replays the switches already made and equals the run that never stopped;
* **log**: ``log_key`` once per epoch, a function of the epoch, identical on every rank (no sync).

The pattern of Lightning's ``BaseFinetuning`` (state per instance via ``state_key``) and mmpretrain's
``SwitchRecipeHook`` (re-applies the earlier switches when resuming).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from lt_lightning.schedule import EpochValue, resolve_epoch

__all__ = ["EpochSchedule"]


class EpochSchedule(Callback):
    """Base of the epoch-schedule callbacks: validate at setup, warn on a resumed configuration, apply per epoch, log.

    Subclasses implement :meth:`_setup_fit` and :meth:`_apply_epoch`, and :meth:`_config` when their configuration
    is checkpointed.
    """

    #: the metric logged at each epoch start (``None``: none)
    log_key: str | None = None
    #: the end of the warning when a run resumes with another configuration
    resume_consequence: str = "the run differs from the one that wrote the checkpoint"

    def __init__(self) -> None:
        super().__init__()
        self._loaded: dict[str, Any] | None = None

    @property
    def _name(self) -> str:
        return type(self).__name__

    # ------------------------------------------------------------------ hooks of the subclasses
    def _setup_fit(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check the parts and resolve the epochs (``setup`` of a fit)."""

    def _apply_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> Any:  # pragma: no cover
        """Apply the schedule at ``epoch`` (idempotent); return the logged value."""
        raise NotImplementedError

    def _config(self) -> dict[str, Any] | None:
        """The checkpointed configuration (``None``: nothing is checkpointed)."""
        return None

    def _log_value(self, value: Any) -> float:
        return float(value)

    # ------------------------------------------------------------------ helpers
    def resolve_point(self, value: EpochValue, trainer: pl.Trainer, name: str) -> int:
        """The 0-based epoch of ``value`` (an epoch or a fraction of ``trainer.max_epochs``; strict unless
        ``fast_dev_run``): :func:`lt_lightning.schedule.resolve_epoch` with this callback's name."""
        return resolve_epoch(value, trainer.max_epochs, name, self._name, not trainer.fast_dev_run)

    def total_from_trainer(self, trainer: pl.Trainer, symbol: str = "T", spelled: str | None = None) -> int:
        """``trainer.max_epochs`` as the length ``symbol`` of a schedule built with ``total_epochs=None``.

        Raises:
            ValueError: the trainer has no positive ``max_epochs`` (``spelled`` names the callback's call, default
                ``<Name>(total_epochs=None)``).
        """
        max_epochs = trainer.max_epochs
        if max_epochs is None or max_epochs < 1:
            call = spelled or f"{self._name}(total_epochs=None)"
            raise ValueError(f"{call} takes {symbol} from trainer.max_epochs, which is {max_epochs}: set total_epochs")
        return int(max_epochs)

    # ------------------------------------------------------------------ written once
    def state_dict(self) -> dict[str, Any]:
        config = self._config()
        return {} if config is None else config

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = dict(state_dict)

    def _check_resumed_config(self) -> None:
        config = self._config()
        if self._loaded is not None and config is not None and self._loaded != config:
            rank_zero_warn(
                f"{self._name}: resuming with {config} but the checkpoint was written with {self._loaded}: "
                f"{self.resume_consequence}"
            )
        self._loaded = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._setup_fit(trainer, pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_resumed_config()
        self._apply_epoch(trainer, pl_module, trainer.current_epoch)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = self._apply_epoch(trainer, pl_module, trainer.current_epoch)
        if self.log_key is not None:
            # a function of the epoch, identical on every rank: no sync needed
            pl_module.log(
                self.log_key, self._log_value(value), on_step=False, on_epoch=True, batch_size=1, sync_dist=False
            )
