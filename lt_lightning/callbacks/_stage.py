"""``FrozenStage``: the mechanics every second training stage on a frozen stage-1 model shares.

Decoupled classifier re-training (cRT / LWS, Kang et al., ICLR 2020) and RIDE's expert-router stage (Wang et al.,
ICLR 2021) both freeze what stage 1 learned -- in ``eval()`` mode by default, so BatchNorm statistics stay
bit-identical (a subclass may keep BatchNorm in train mode: :func:`shift_batchnorm`) -- and train one part (the
classifier, per-class scales, the router) with their own loss, sampler, optimizer and LR schedule. A subclass
says *which* part (the hooks below); this base does the rest:

* **when**: the last ``epochs`` epochs of one fit (or from ``start_epoch``, an epoch or a fraction of
  ``trainer.max_epochs``), or a whole second fit from a stage-1 checkpoint (``init_from``: weights loaded and frozen
  in ``setup``, before DDP wraps the model, so plain ``ddp`` works; a mid-fit switch under DDP needs
  ``ddp_find_unused_parameters_true``, checked at setup; under ``fast_dev_run`` the switch runs at the first step);
* **sampling**: a :class:`~lt_lightning.data.staged.StagedSampler` installed in the datamodule keeps the dataloader
  fixed for the fit and switches to ``sampler`` (class-balanced by default) at the stage;
* **optimisation**: the module's optimizer and scheduler factories are swapped (fresh optimizer over the trainable
  parameters, cosine to 0 over the stage by default) and the loss is overridden without changing the state dict;
* **resume**: the stage is derived from the epoch and from the checkpointed ``active`` flag, read in
  ``on_load_checkpoint`` -- before Lightning builds (and restores) the optimizers -- so a run resumed before, at or
  after the switch is the run that never stopped; re-initialisations are seeded (every rank and every resume draws
  the same weights).
"""

from __future__ import annotations

import copy
import functools
import warnings
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from lt_lightning._checks import check_int
from lt_lightning._lightning_compat import ddp_finds_unused_parameters
from lt_lightning.callbacks._schedule import EpochSchedule
from lt_lightning.callbacks.data_fingerprint import check_init_from, data_mismatch_allowed
from lt_lightning.checkpoint_reader import read_checkpoint
from lt_lightning.data.base import SamplerFactory
from lt_lightning.data.staged import StagedSampler
from lt_lightning.module import LongTailModule
from lt_lightning.optim import WarmupCosineLR
from lt_lightning.schedule import EpochValue, resolve_epoch, resolve_length, validate_epoch_value
from lt_lightning.slots import clear_train_sampler, install_train_sampler, require_long_tail_module


def read_stage1_state(path: str, owner: str) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a Lightning checkpoint file, read by
    :func:`~lt_lightning.checkpoint_reader.read_checkpoint` (``weights_only=True``; a missing, foreign, unsafe or
    ``state_dict``-less file is a clear error)."""
    return dict(read_checkpoint(path, purpose=f"{owner}: init_from")["state_dict"])


def _staged_factory(switch_epoch: int, second: SamplerFactory | None, first: SamplerFactory | None) -> Any:
    """The stage's sampler factory around the run's ``first`` (the ``stage`` role of the training-sampler slot)."""
    return functools.partial(StagedSampler, switch_epoch=switch_epoch, first=first, second=second)


def shift_batchnorm(module: nn.Module) -> None:
    """Put ``module`` in ``eval()`` mode except its BatchNorm layers, which go to ``train()`` mode.

    MiSLAS's "shift learning on BatchNorm" (Zhong et al., CVPR 2021, Sec. 3.3): with the weights frozen
    (``requires_grad=False``), a forward pass in training normalises with the batch's statistics and moves the
    running mean and variance towards the current sampling's (class-balanced in stage 2); the affine parameters
    stay fixed. Only BatchNorm layers leave eval mode (the reference puts the whole backbone in ``train()``, the
    same for a ResNet, which has no dropout).
    """
    module.eval()
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.train()


def seeded_reset(module: nn.Module, seed: int) -> None:
    """``module.reset_parameters()`` drawn from a CPU generator seeded with ``seed`` (the same on every device)."""
    fresh = copy.deepcopy(module).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh.reset_parameters()
    module.load_state_dict(fresh.state_dict())


class FrozenStage(EpochSchedule):
    """Base of the second stages that train one part of a frozen stage-1 model.

    Args:
        start_epoch: first epoch (0-based) of the stage in a single fit, or a fraction of ``trainer.max_epochs`` in
            ``(0, 1)``; ``None``: the last ``epochs`` epochs. Not allowed with ``init_from``.
        epochs: length of the stage when ``start_epoch`` is ``None``: a number of epochs, or a fraction of the run in
            ``(0, 1)`` (at least one epoch; ``0.0476``: 10 of 210 epochs, 1 of a 20-epoch budget).
        init_from: a stage-1 checkpoint; the whole fit is then the stage (set ``trainer.max_epochs`` to its length).
        optimizer: optimizer factory of the stage over the trainable parameters; ``None``: the subclass's default.
        lr_scheduler: scheduler factory of the stage (stepped per epoch, counted from the stage's first epoch);
            ``None``: cosine annealing to 0 over the stage.
        criterion: loss of the stage; ``None``: the subclass's default.
        sampler: sampler factory of the stage; ``None``: class-balanced (``p_c = 1/C``). It must draw as many
            indices per epoch as the stage-1 sampler.
        seed: seed of the stage's re-initialisation.

    Attributes:
        active: whether the stage is on.
        resolved_start_epoch: the stage's first epoch (resolved at setup).
    """

    #: what the stage trains, for messages ("the classifier", "the router")
    trains: str = "a part of the model"
    #: the metric logged each epoch: 1 before the stage, 2 in it
    log_key: str = "stage"

    def __init__(
        self,
        start_epoch: int | float | None = None,
        epochs: EpochValue = 10,
        init_from: str | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        criterion: nn.Module | None = None,
        sampler: SamplerFactory | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1 or a fraction of the run in (0, 1), got {epochs!r}")
        validate_epoch_value(epochs, "epochs")
        if start_epoch is not None:
            validate_epoch_value(start_epoch, "start_epoch")
            if init_from is not None:
                raise ValueError(
                    f"start_epoch={start_epoch} is for a single fit; with init_from the whole fit is the stage"
                )
        if init_from is not None and not init_from:
            raise ValueError("init_from must be a checkpoint path or None, got ''")
        check_int("seed", seed)
        self.start_epoch = start_epoch
        self.epochs = epochs
        self.init_from = init_from
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.criterion = criterion
        self.sampler = sampler
        self.seed = seed
        self.active = False
        self.resolved_start_epoch: int | None = 0 if init_from is not None else None
        self._stage_length: int | None = None
        self._stage1_optimizer: Any = None

    # ------------------------------------------------------------------ hooks of the subclasses
    def _prepare(self, pl_module: pl.LightningModule) -> None:
        """Check (and adapt) the model's structure before anything is loaded (called at setup)."""

    def _is_stage1_weight(self, key: str) -> bool:
        """Whether ``key`` of a stage-1 checkpoint is loaded by ``init_from`` (default: backbone and classifier)."""
        return key.startswith(("backbone.", "classifier."))

    def _adapt_stage1_weights(self, weights: dict[str, torch.Tensor], pl_module: pl.LightningModule) -> dict:
        """Rename stage-1 weights for this model's structure (default: as they are)."""
        return weights

    def _freeze(self, pl_module: pl.LightningModule) -> None:  # pragma: no cover - interface
        """Freeze what stays fixed (``requires_grad_(False)`` and ``eval()``); idempotent."""
        raise NotImplementedError

    def _reinitialise(self, pl_module: pl.LightningModule) -> None:  # pragma: no cover - interface
        """Give the trained part its stage-start weights (seeded with ``self.seed``)."""
        raise NotImplementedError

    def _frozen_description(self) -> str:
        """How the frozen part runs, for the stage's log line."""
        return "the rest is frozen in eval mode"

    def _set_active(self, pl_module: pl.LightningModule, active: bool) -> None:
        """Switch stage-specific behaviour of the model on or off (e.g. scales, routing)."""

    def _default_criterion(self) -> nn.Module:  # pragma: no cover - interface
        raise NotImplementedError

    def _default_optimizer(self) -> Any:
        """The stage's optimizer factory when none is given: stage 1's."""
        return self._stage1_optimizer

    def _stage_optimizer(self, pl_module: pl.LightningModule) -> Any:
        """The optimizer factory of the stage: ``optimizer`` if given, else :meth:`_default_optimizer`."""
        return self.optimizer if self.optimizer is not None else self._default_optimizer()

    # ------------------------------------------------------------------ identity and state
    @property
    def state_key(self) -> str:
        return self._generate_state_key(**self._identity())

    def _identity(self) -> dict[str, Any]:
        return {"start_epoch": self.start_epoch, "epochs": self.epochs, "init_from": self.init_from}

    def state_dict(self) -> dict[str, Any]:
        return {"start_epoch": self.resolved_start_epoch, "active": self.active}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("start_epoch")
        if saved is not None and self.resolved_start_epoch is not None and saved != self.resolved_start_epoch:
            rank_zero_warn(
                f"{self._name}: resuming with start_epoch={self.resolved_start_epoch} but the checkpoint was "
                f"written with start_epoch={saved}"
            )

    # ------------------------------------------------------------------ setup
    def _resolve_start(self, trainer: pl.Trainer) -> int:
        max_epochs = trainer.max_epochs
        if max_epochs is None or max_epochs < 1:
            raise ValueError(f"{self._name} needs a finite trainer.max_epochs (the stage's length), got {max_epochs}")
        if self.init_from is not None:
            return 0
        if trainer.fast_dev_run:
            rank_zero_info(f"{self._name}: fast_dev_run: the stage switch runs at the first step (a wiring check)")
            return 0
        if self.start_epoch is None:
            start = max_epochs - resolve_length(self.epochs, max_epochs, "epochs", self._name, strict=False)
            if start < 1:
                raise ValueError(
                    f"{self._name}: a stage of epochs={self.epochs} leaves no stage-1 epoch in "
                    f"trainer.max_epochs={max_epochs}: raise max_epochs, lower epochs, or give init_from"
                )
            return start
        start = resolve_epoch(self.start_epoch, max_epochs, "start_epoch", self._name, strict=False)
        if not 1 <= start < max_epochs:
            raise ValueError(
                f"{self._name}: start_epoch={self.start_epoch} (epoch {start}) must be in [1, max_epochs="
                f"{max_epochs}): the stage would never run or have no stage 1 before it (use init_from for a "
                "stage-2-only fit)"
            )
        return start

    def _check_module(self, pl_module: pl.LightningModule) -> None:
        require_long_tail_module(pl_module, self)

    def _check_strategy(self, trainer: pl.Trainer) -> None:
        strategy = trainer.strategy
        if self.init_from is None and isinstance(strategy, DDPStrategy):
            if not ddp_finds_unused_parameters(strategy):
                raise ValueError(
                    f"{self._name} freezes part of the model in the middle of this fit, which DDP only allows with "
                    "unused parameters: use `strategy: ddp_find_unused_parameters_true`, or run the stage as a "
                    "second fit with `init_from` (plain ddp)"
                )

    def _setup_fit(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_module(pl_module)
        self._check_strategy(trainer)
        start = self._resolve_start(trainer)
        self.resolved_start_epoch = start
        self._stage_length = int(trainer.max_epochs) - start  # type: ignore[arg-type]
        self._stage1_optimizer = pl_module.optimizer_factory
        self._prepare(pl_module)
        self._install_sampler(trainer, start)
        if self.init_from is not None:
            self._load_stage1(pl_module, self.init_from)
            self._enter(trainer, pl_module, reinit=True, rebuild_optimizers=False)
        else:
            self.active = False
            self._set_active(pl_module, False)

    def _install_sampler(self, trainer: pl.Trainer, start: int) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "sampler") or not hasattr(datamodule, "train_labels"):
            found = "no datamodule" if datamodule is None else type(datamodule).__name__
            raise ValueError(
                f"{self._name} needs a LongTailDataModule (with a `sampler` hook and `train_labels`) to switch "
                f"to class-balanced sampling; got {found}"
            )
        # the stage wraps the run's sampler (data.sampler, or a ResamplingSchedule's installed before or after)
        install_train_sampler(datamodule, "stage", functools.partial(_staged_factory, start, self.sampler), self)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if trainer.datamodule is not None:
            clear_train_sampler(trainer.datamodule, "stage", self)  # leave the datamodule as it was given
        if isinstance(pl_module, LongTailModule):  # the stage's loss and optimizer stay, the slots are free
            pl_module.release_slot("criterion_override", self)
            pl_module.release_slot("optimization", self)

    def _load_stage1(self, pl_module: pl.LightningModule, path: str) -> None:
        trainer = pl_module._trainer
        datamodule = None if trainer is None else trainer.datamodule
        check_init_from(path, datamodule, self._name, data_mismatch_allowed(trainer))  # same data as stage 1
        state = read_stage1_state(path, self._name)
        counts = state.get("class_counts")
        if counts is None:
            raise ValueError(f"{self._name}: {path} has no class_counts: not an lt_lightning checkpoint")
        ours = pl_module.class_counts.detach().cpu().float()
        if counts.shape != ours.shape or not torch.equal(counts.float(), ours):
            raise ValueError(
                f"{self._name}: init_from {path} was trained on {counts.numel()} classes with counts "
                f"{counts.long().tolist()}, but this run has {ours.numel()} classes with counts {ours.long().tolist()}:"
                f" the stage must train {self.trains} on the training set of stage 1"
            )
        weights = {k: v for k, v in state.items() if self._is_stage1_weight(k)}
        weights = self._adapt_stage1_weights(weights, pl_module)
        missing, unexpected = pl_module.load_state_dict(weights, strict=False)
        missing = [k for k in missing if self._is_stage1_weight(k)]
        if missing or unexpected:
            raise ValueError(
                f"{self._name}: init_from {path} does not match this model: missing {missing[:8]}, "
                f"unexpected {list(unexpected)[:8]}"
            )
        rank_zero_info(f"{self._name}: loaded the stage-1 weights from {path}")

    # ------------------------------------------------------------------ the stage
    def _enter(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, reinit: bool, rebuild_optimizers: bool
    ) -> None:
        """Switch to the stage: freeze, re-initialise (``reinit``), swap loss, optimizer and schedule."""
        self._freeze(pl_module)
        if reinit:
            self._reinitialise(pl_module)
        self._set_active(pl_module, True)
        criterion = self.criterion if self.criterion is not None else self._default_criterion()
        pl_module.install_criterion_override(criterion, owner=self)
        scheduler = self.lr_scheduler
        if scheduler is None:
            scheduler = functools.partial(WarmupCosineLR, max_epochs=self._stage_length)
        pl_module.install_optimization(self, self._stage_optimizer(pl_module), scheduler, "epoch")
        self.active = True
        # the frozen parts are in eval mode on purpose when a fit starts inside the stage (init_from, resume)
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training")
        if rebuild_optimizers:
            trainer.strategy.setup_optimizers(trainer)
        rank_zero_info(
            f"{self._name}: stage from epoch {self.resolved_start_epoch} ({self._stage_length} epochs) trains "
            f"{self.trains}; {self._frozen_description()}"
        )

    def apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> bool:
        """Idempotent: enter the stage at its first epoch, and (re-)apply the frozen parts' mode."""
        if self.resolved_start_epoch is None:
            raise RuntimeError(f"{self._name}: the start epoch is resolved at setup (fit)")
        if epoch >= self.resolved_start_epoch and not self.active:
            self._enter(trainer, pl_module, reinit=True, rebuild_optimizers=True)
        if self.active:
            self._freeze(pl_module)  # train/eval mode is not checkpointed, and fit start calls model.train()
        return self.active

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn != "fit":
            return
        state = checkpoint.get("callbacks", {}).get(self.state_key) or {}
        if state.get("active") and not self.active:
            # after the switch: rebuild the stage's structure before Lightning creates (and restores) the optimizer
            self._enter(trainer, pl_module, reinit=False, rebuild_optimizers=False)

    def _apply_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> bool:
        return self.apply(trainer, pl_module, epoch)

    def _log_value(self, value: Any) -> float:
        return 2.0 if value else 1.0  # the stage number
