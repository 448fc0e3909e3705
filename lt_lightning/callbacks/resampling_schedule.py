"""``ResamplingSchedule``: re-sampling whose class probabilities change with the epoch, configured under
``trainer.callbacks``.

Schedules (``p^IB_c = n_c / N`` instance-balanced, ``p^CB_c = 1 / C`` class-balanced, mixing ``a(t)``):

* ``"progressive"`` -- progressively-balanced sampling, Kang et al., "Decoupling Representation and Classifier for
  Long-Tailed Recognition", ICLR 2020, Eq. 2: ``p_c(t) = (1 - t/T) p^IB_c + (t/T) p^CB_c``, ``a(t) = min(t/T, 1)``.
* ``"drs"`` -- deferred re-sampling, Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin
  Loss", NeurIPS 2019: instance-balanced before epoch ``E``, class-balanced from ``E`` (``a = [t >= E]``).

How it reaches the sampler: the train dataloader is built once (Lightning then calls ``set_epoch`` on its sampler
every epoch), so the callback does not change a sampler between epochs. In ``setup`` it installs a sampler factory
in the datamodule (``datamodule.sampler``, the hook of :class:`~lt_lightning.data.base.LongTailDataModule`) that
builds a :class:`~lt_lightning.data.resampling.ProgressiveSampler` or
:class:`~lt_lightning.data.resampling.DeferredResampler`, whose draw for epoch ``t`` is a pure function of
``(seed, t)`` -- the schedule lives inside the sampler. The datamodule's ``train_dataloader`` sets the right epoch
before worker processes start (Lightning issue #21938), so the order after a resume equals the uninterrupted run's,
with or without workers, and every DDP rank draws its shard of the same global list.

The callback's state is derived from the epoch: an idempotent :meth:`ResamplingSchedule.apply` (called from
``on_train_start``, which also runs after a mid-epoch resume, and ``on_train_epoch_start``) records and logs the
mixing ``a(t)`` as ``resampling/mixing``. Its checkpointed state is its configuration; resuming with a different one
warns.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import lightning.pytorch as pl

from lt_lightning._checks import check_int
from lt_lightning.callbacks._schedule import EpochSchedule
from lt_lightning.data.resampling import DeferredResampler, ProgressiveSampler, progressive_mixing
from lt_lightning.schedule import validate_epoch_value
from lt_lightning.slots import clear_train_sampler, install_train_sampler

__all__ = ["ResamplingSchedule"]

Schedule = Literal["progressive", "drs"]


class ResamplingSchedule(EpochSchedule):
    """Install and steer an epoch-scheduled re-sampler (progressively-balanced or DRS) in the datamodule.

    YAML (``trainer.callbacks``)::

        - class_path: lt_lightning.callbacks.resampling_schedule.ResamplingSchedule
          init_args: {schedule: drs, switch_epoch: 160}

    Args:
        schedule: ``"progressive"`` (Kang et al. 2020) or ``"drs"`` (Cao et al. 2019).
        switch_epoch: ``E`` of ``"drs"`` (0-based epoch from which sampling is class-balanced), or a fraction of
            ``trainer.max_epochs`` in ``(0, 1)`` (``0.8``: epoch 160 of 200); not used by ``"progressive"``.
        total_epochs: ``T`` of ``"progressive"``; ``None`` takes ``trainer.max_epochs`` at setup. Not used by
            ``"drs"``.

    Attributes:
        mixing: the class-balance mixing ``a(t)`` of the current epoch (``None`` before training starts).
        epoch: the epoch :meth:`apply` was last called with.
    """

    log_key = "resampling/mixing"
    resume_consequence = "the sampled order differs from the run that wrote the checkpoint"

    def __init__(
        self,
        schedule: Schedule = "progressive",
        switch_epoch: int | float | None = None,
        total_epochs: int | None = None,
    ) -> None:
        super().__init__()
        if schedule not in ("progressive", "drs"):
            raise ValueError(f"schedule must be 'progressive' or 'drs', got {schedule!r}")
        check_int("total_epochs", total_epochs, or_none=True)
        if schedule == "drs":
            if switch_epoch is None:
                raise ValueError("schedule='drs' needs switch_epoch (an epoch >= 0 or a fraction in (0, 1)), got None")
            validate_epoch_value(switch_epoch, "switch_epoch")
            if total_epochs is not None:
                raise ValueError(f"total_epochs is for schedule='progressive'; got total_epochs={total_epochs}")
        else:
            if switch_epoch is not None:
                raise ValueError(f"switch_epoch is for schedule='drs'; got switch_epoch={switch_epoch}")
            if total_epochs is not None and total_epochs < 1:
                raise ValueError(f"total_epochs must be >= 1 or None, got {total_epochs}")
        self.schedule = schedule
        self.switch_epoch = switch_epoch
        #: the 0-based DRS switch epoch (a fraction is resolved against ``trainer.max_epochs`` at setup)
        self.resolved_switch_epoch: int | None = switch_epoch if isinstance(switch_epoch, int) else None
        self.total_epochs = total_epochs
        self._resolved_total: int | None = total_epochs
        self.mixing: float | None = None
        self.epoch: int | None = None

    # ------------------------------------------------------------------ identity and state
    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            schedule=self.schedule, switch_epoch=self.switch_epoch, total_epochs=self.total_epochs
        )

    def _config(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "switch_epoch": self.resolved_switch_epoch,
            "total_epochs": self._resolved_total,
        }

    # ------------------------------------------------------------------ schedule
    def mixing_at(self, epoch: int) -> float:
        """Class-balance mixing ``a(epoch)``: ``min(epoch / T, 1)`` (progressive) or ``[epoch >= E]`` (DRS)."""
        if self.schedule == "drs":
            if self.resolved_switch_epoch is None:
                raise RuntimeError(f"ResamplingSchedule: switch_epoch={self.switch_epoch} is resolved at setup (fit)")
            return 0.0 if epoch < self.resolved_switch_epoch else 1.0
        if self._resolved_total is None:
            raise RuntimeError("ResamplingSchedule(schedule='progressive'): total_epochs is set at setup (fit)")
        return progressive_mixing(epoch, self._resolved_total)

    def sampler_factory(self) -> Any:
        """The factory ``(labels, num_replicas, rank, seed) -> EpochSampler`` installed in the datamodule."""
        if self.schedule == "drs":
            if self.resolved_switch_epoch is None:
                raise RuntimeError(f"ResamplingSchedule: switch_epoch={self.switch_epoch} is resolved at setup (fit)")
            return functools.partial(DeferredResampler, switch_epoch=self.resolved_switch_epoch)
        if self._resolved_total is None:
            raise RuntimeError("ResamplingSchedule(schedule='progressive'): total_epochs is set at setup (fit)")
        return functools.partial(ProgressiveSampler, total_epochs=self._resolved_total)

    # ------------------------------------------------------------------ hooks
    def _setup_fit(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "sampler") or not hasattr(datamodule, "train_labels"):
            found = "no datamodule" if datamodule is None else type(datamodule).__name__
            raise ValueError(
                "ResamplingSchedule needs a LongTailDataModule (trainer.fit(..., datamodule=...) or the CLI's `data`) "
                f"with a `sampler` hook and `train_labels`; got {found}"
            )
        if self.schedule == "progressive" and self.total_epochs is None:
            spelled = "ResamplingSchedule(schedule='progressive', total_epochs=None)"
            self._resolved_total = self.total_from_trainer(trainer, spelled=spelled)
        if self.schedule == "drs":
            switch_epoch: int | float = self.switch_epoch  # type: ignore[assignment]
            self.resolved_switch_epoch = self.resolve_point(switch_epoch, trainer, "switch_epoch")
        # the run's sampler: refuses a data.sampler or another callback's; a classifier stage (FrozenStage) wraps
        # it whether it was installed before or after this callback
        install_train_sampler(datamodule, "base", self.sampler_factory(), self)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.datamodule is not None:
            clear_train_sampler(trainer.datamodule, "base", self)  # leave the datamodule as it was given

    def apply(self, epoch: int) -> float:
        """Record the mixing of ``epoch`` (idempotent; the sampler itself derives its draw from the epoch)."""
        self.epoch = int(epoch)
        self.mixing = self.mixing_at(self.epoch)
        return self.mixing

    def _apply_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> float:
        return self.apply(epoch)
