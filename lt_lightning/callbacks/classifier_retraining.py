"""``ClassifierRetraining``: the second stage of decoupled training, classifier re-training (cRT) or learnable
weight scaling (LWS).

Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020, Sec. 4: stage 1
learns the representation jointly with the classifier (any loss, instance-balanced sampling); stage 2 keeps the
representation fixed and re-balances the classifier with class-balanced sampling for a few epochs (10 in the paper):

* **cRT** re-initialises the classifier and re-trains it, ``z = W f(x) + b`` with ``f`` frozen;
* **LWS** freezes the classifier too and learns one scale per class, ``z_c = s_c (w_c^T f(x) + b_c)``
  (:class:`~lt_lightning.heads.lws.LWSHead`).

At the stage switch this callback freezes the backbone in ``eval()`` mode (weights and BatchNorm statistics stay
bit-identical), re-initialises the classifier (cRT, seeded: every DDP rank and every resume draws the same weights)
or activates the scales (LWS), switches the loss to cross-entropy (``criterion``), sampling to class-balanced
(``sampler``; :class:`~lt_lightning.data.staged.StagedSampler` keeps the dataloader fixed for the fit), and builds a
fresh optimizer and LR schedule over the parameters left trainable (cosine over the stage by default).

Two ways to run it:

* **one fit** (``init_from`` unset): the stage is the last ``epochs`` epochs of the fit, or starts at ``start_epoch``
  (an epoch, or a fraction of ``trainer.max_epochs``). Freezing mid-run under DDP needs
  ``strategy: ddp_find_unused_parameters_true`` (checked at setup).
* **a second fit** from a stage-1 checkpoint (``init_from``): the whole fit is the stage; the backbone and classifier
  weights are loaded and frozen in ``setup``, before DDP wraps the model, so plain ``ddp`` works. The checkpoint must
  come from the same training set (its ``class_counts`` are compared).

Resume: the stage is derived from the epoch and from the callback's checkpointed ``active`` flag, which is read in
``on_load_checkpoint`` -- before Lightning builds the optimizers -- so a run resumed before, at or after the switch
gives the run that never stopped (same weights, same sampled order, same optimizer state).
"""

from __future__ import annotations

import copy
import functools
import os
import warnings
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from lt_lightning.callbacks._schedule import resolve_switch_epoch, validate_switch_epoch
from lt_lightning.data.base import SamplerFactory
from lt_lightning.data.staged import StagedSampler
from lt_lightning.heads.lws import LWSHead
from lt_lightning.losses.cross_entropy import CrossEntropyLoss
from lt_lightning.optim import WarmupCosineLR

__all__ = ["ClassifierRetraining"]

Method = Literal["crt", "lws"]


def read_stage1_state(path: str) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a Lightning checkpoint file (weights only when possible)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ClassifierRetraining: init_from checkpoint {path!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a checkpoint of a Python-built module pickles its backbone in hparams
        rank_zero_warn(f"ClassifierRetraining: {path} needs weights_only=False to load (pickled hyper-parameters)")
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"ClassifierRetraining: {path} is not a Lightning checkpoint (no 'state_dict')")
    return state


class ClassifierRetraining(Callback):
    """Decoupled training's stage 2: frozen representation, re-balanced classifier (cRT or LWS).

    YAML (``trainer.callbacks``)::

        - class_path: lt_lightning.callbacks.classifier_retraining.ClassifierRetraining
          init_args: {method: crt, epochs: 10}

    Args:
        method: ``"crt"`` (re-initialise and re-train the classifier) or ``"lws"`` (learn per-class scales).
        start_epoch: first epoch (0-based) of the stage in a single fit, or a fraction of ``trainer.max_epochs`` in
            ``(0, 1)``; ``None``: the last ``epochs`` epochs. Not allowed with ``init_from``.
        epochs: length of the stage when ``start_epoch`` is ``None`` (10 in Kang et al.).
        init_from: a stage-1 checkpoint; the whole fit is then the stage (set ``trainer.max_epochs`` to its length).
        optimizer: optimizer factory of the stage over the trainable parameters; ``None``: the module's own.
        lr_scheduler: scheduler factory of the stage (stepped per epoch, counted from the stage's first epoch);
            ``None``: cosine annealing to 0 over the stage (Kang et al.).
        criterion: loss of the stage; ``None``: softmax cross-entropy (the paper's stage 2).
        sampler: sampler factory of the stage; ``None``: class-balanced (``p_c = 1/C``). It must draw as many
            indices per epoch as the stage-1 sampler.
        seed: seed of cRT's classifier re-initialisation.

    Attributes:
        active: whether the stage is on (the backbone frozen).
        resolved_start_epoch: the stage's first epoch (resolved at setup).
    """

    def __init__(
        self,
        method: Method = "crt",
        start_epoch: int | float | None = None,
        epochs: int = 10,
        init_from: str | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        criterion: nn.Module | None = None,
        sampler: SamplerFactory | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if method not in ("crt", "lws"):
            raise ValueError(f"method must be 'crt' or 'lws', got {method!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
        if start_epoch is not None:
            validate_switch_epoch(start_epoch, "start_epoch")
            if init_from is not None:
                raise ValueError(
                    f"start_epoch={start_epoch} is for a single fit; with init_from the whole fit is the stage"
                )
        if init_from is not None and not init_from:
            raise ValueError("init_from must be a checkpoint path or None, got ''")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.method = method
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
        self._user_sampler: Any = None
        self._factory: Any = None

    # ------------------------------------------------------------------ identity and state
    @property
    def state_key(self) -> str:
        return self._generate_state_key(method=self.method, start_epoch=self.start_epoch, init_from=self.init_from)

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.method, "start_epoch": self.resolved_start_epoch, "active": self.active}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("start_epoch")
        if saved is not None and self.resolved_start_epoch is not None and saved != self.resolved_start_epoch:
            rank_zero_warn(
                f"ClassifierRetraining: resuming with start_epoch={self.resolved_start_epoch} but the checkpoint was "
                f"written with start_epoch={saved}"
            )

    # ------------------------------------------------------------------ setup
    def _resolve_start(self, trainer: pl.Trainer) -> int:
        max_epochs = trainer.max_epochs
        if max_epochs is None or max_epochs < 1:
            raise ValueError(
                f"ClassifierRetraining needs a finite trainer.max_epochs (the stage's length), got {max_epochs}"
            )
        if self.init_from is not None:
            return 0
        if trainer.fast_dev_run:
            rank_zero_info(
                "ClassifierRetraining: fast_dev_run: the stage switch runs at the first step (a wiring check)"
            )
            return 0
        if self.start_epoch is None:
            start = max_epochs - self.epochs
            if start < 1:
                raise ValueError(
                    f"ClassifierRetraining: a stage of epochs={self.epochs} leaves no stage-1 epoch in "
                    f"trainer.max_epochs={max_epochs}: raise max_epochs, lower epochs, or give init_from"
                )
            return start
        start = resolve_switch_epoch(self.start_epoch, max_epochs, "start_epoch")
        if not 1 <= start < max_epochs:
            raise ValueError(
                f"ClassifierRetraining: start_epoch={self.start_epoch} (epoch {start}) must be in [1, max_epochs="
                f"{max_epochs}): the stage would never run or have no stage 1 before it (use init_from for a "
                "stage-2-only fit)"
            )
        return start

    @staticmethod
    def _check_module(pl_module: pl.LightningModule) -> None:
        for name in ("backbone", "classifier", "set_criterion_override", "optimizer_factory", "class_counts"):
            if not hasattr(pl_module, name):
                raise ValueError(
                    f"ClassifierRetraining needs a LongTailModule; {type(pl_module).__name__} has no {name}"
                )

    def _check_strategy(self, trainer: pl.Trainer) -> None:
        strategy = trainer.strategy
        if self.init_from is None and isinstance(strategy, DDPStrategy):
            if not getattr(strategy, "_ddp_kwargs", {}).get("find_unused_parameters", False):
                raise ValueError(
                    "ClassifierRetraining freezes the backbone in the middle of this fit, which DDP only allows with "
                    "unused parameters: use `strategy: ddp_find_unused_parameters_true`, or run the stage as a "
                    "second fit with `init_from` (plain ddp)"
                )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._check_module(pl_module)
        self._check_strategy(trainer)
        start = self._resolve_start(trainer)
        self.resolved_start_epoch = start
        self._stage_length = int(trainer.max_epochs) - start  # type: ignore[operator]
        if start >= 1 and start >= int(trainer.max_epochs):  # pragma: no cover - _resolve_start guards it
            raise ValueError(f"start epoch {start} >= max_epochs {trainer.max_epochs}")
        self._stage1_optimizer = pl_module.optimizer_factory
        if self.method == "lws" and not isinstance(pl_module.classifier, LWSHead):
            pl_module.classifier = LWSHead.wrap(pl_module.classifier, pl_module.num_classes)
        if self.method == "crt" and not callable(getattr(pl_module.classifier, "reset_parameters", None)):
            raise ValueError(
                f"cRT re-initialises the classifier, but {type(pl_module.classifier).__name__} has no "
                "reset_parameters()"
            )
        self._install_sampler(trainer, start)
        if self.init_from is not None:
            self._load_stage1(pl_module, self.init_from)
            self._enter(trainer, pl_module, reinit=True, rebuild_optimizers=False)
        else:
            self.active = False
            self._set_scales_active(pl_module, False)

    def _install_sampler(self, trainer: pl.Trainer, start: int) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "sampler") or not hasattr(datamodule, "train_labels"):
            found = "no datamodule" if datamodule is None else type(datamodule).__name__
            raise ValueError(
                "ClassifierRetraining needs a LongTailDataModule (with a `sampler` hook and `train_labels`) to switch "
                f"to class-balanced sampling; got {found}"
            )
        self._user_sampler = datamodule.sampler if datamodule.sampler is not self._factory else self._user_sampler
        self._factory = functools.partial(
            StagedSampler, switch_epoch=start, first=self._user_sampler, second=self.sampler
        )
        datamodule.sampler = self._factory

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if stage == "fit" and datamodule is not None and getattr(datamodule, "sampler", None) is self._factory:
            datamodule.sampler = self._user_sampler  # leave the datamodule as it was given
        self._factory = None

    def _load_stage1(self, pl_module: pl.LightningModule, path: str) -> None:
        state = read_stage1_state(path)
        counts = state.get("class_counts")
        if counts is None:
            raise ValueError(f"ClassifierRetraining: {path} has no class_counts: not an lt_lightning checkpoint")
        ours = pl_module.class_counts.detach().cpu().float()
        if counts.shape != ours.shape or not torch.equal(counts.float(), ours):
            raise ValueError(
                f"ClassifierRetraining: init_from {path} was trained on {counts.numel()} classes with counts "
                f"{counts.long().tolist()}, but this run has {ours.numel()} classes with counts {ours.long().tolist()}:"
                " stage 2 must re-train the classifier on the training set of stage 1"
            )
        weights = {k: v for k, v in state.items() if k.startswith(("backbone.", "classifier."))}
        if isinstance(pl_module.classifier, LWSHead) and "classifier.scales" not in weights:
            weights = {k.replace("classifier.", "classifier.base.", 1): v for k, v in weights.items()}
        missing, unexpected = pl_module.load_state_dict(weights, strict=False)
        missing = [k for k in missing if k.startswith(("backbone.", "classifier.")) and k != "classifier.scales"]
        if missing or unexpected:
            raise ValueError(
                f"ClassifierRetraining: init_from {path} does not match this model's backbone/classifier: missing "
                f"{missing[:8]}, unexpected {list(unexpected)[:8]}"
            )
        rank_zero_info(f"ClassifierRetraining: loaded the stage-1 backbone and classifier from {path}")

    # ------------------------------------------------------------------ the stage
    @staticmethod
    def _set_scales_active(pl_module: pl.LightningModule, active: bool) -> None:
        if isinstance(pl_module.classifier, LWSHead):
            pl_module.classifier.active = active

    def _reinitialise_classifier(self, pl_module: pl.LightningModule) -> None:
        """cRT: fresh classifier weights drawn from a generator seeded with ``seed`` (device independent)."""
        head = pl_module.classifier
        fresh = copy.deepcopy(head).cpu()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            fresh.reset_parameters()
        head.load_state_dict(fresh.state_dict())

    def _freeze(self, pl_module: pl.LightningModule) -> None:
        pl_module.backbone.requires_grad_(False)
        pl_module.backbone.eval()
        classifier = pl_module.classifier
        if self.method == "lws":
            classifier.base.requires_grad_(False)
            classifier.scales.requires_grad_(True)
            classifier.base.eval()
        else:
            classifier.requires_grad_(True)

    def _enter(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, reinit: bool, rebuild_optimizers: bool
    ) -> None:
        """Switch to stage 2: freeze, re-initialise (``reinit``), swap loss, optimizer and schedule."""
        self._freeze(pl_module)
        if reinit:
            if self.method == "crt":
                self._reinitialise_classifier(pl_module)
            else:
                with torch.no_grad():
                    pl_module.classifier.scales.fill_(1.0)
        self._set_scales_active(pl_module, True)
        pl_module.set_criterion_override(self.criterion if self.criterion is not None else CrossEntropyLoss())
        pl_module.optimizer_factory = self.optimizer if self.optimizer is not None else self._stage1_optimizer
        if self.lr_scheduler is not None:
            pl_module.lr_scheduler_factory = self.lr_scheduler
        else:
            pl_module.lr_scheduler_factory = functools.partial(WarmupCosineLR, max_epochs=self._stage_length)
        pl_module.lr_scheduler_interval = "epoch"
        self.active = True
        # the frozen backbone is in eval mode on purpose when a fit starts inside the stage (init_from, resume)
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training")
        if rebuild_optimizers:
            trainer.strategy.setup_optimizers(trainer)
        rank_zero_info(
            f"ClassifierRetraining: {self.method} stage from epoch {self.resolved_start_epoch} "
            f"({self._stage_length} epochs): backbone frozen in eval mode"
        )

    def apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> bool:
        """Idempotent: enter the stage at its first epoch, and keep the frozen parts in eval mode."""
        if self.resolved_start_epoch is None:
            raise RuntimeError("ClassifierRetraining: the start epoch is resolved at setup (fit)")
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

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.apply(trainer, pl_module, trainer.current_epoch)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        active = self.apply(trainer, pl_module, trainer.current_epoch)
        pl_module.log(
            "classifier_retraining/stage",
            2.0 if active else 1.0,
            on_step=False,
            on_epoch=True,
            batch_size=1,
            sync_dist=False,
        )
