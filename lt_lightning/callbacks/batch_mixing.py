"""``BatchMixing``: mixup, CutMix or Remix applied to every training batch on the device, with soft targets.

The callback installs a batch transform (``LongTailModule.train_batch_transform``) that ``training_step`` applies
before the forward pass; validation, test and predict batches are never mixed. The formulas are the pure functions
of :mod:`lt_lightning.data.mixing`:

* ``method="mixup"`` (Zhang et al., ICLR 2018): ``x~ = lam x_i + (1 - lam) x_j``, ``y~ = lam y_i + (1 - lam) y_j``;
* ``method="cutmix"`` (Yun et al., ICCV 2019): a box of ``x_j`` pasted into ``x_i``, label weight = kept area;
* ``method="remix"`` (Chou et al., ECCV-W 2020): mixup's images, labels pushed to the minority class of a pair
  (``kappa``, ``tau``; the class counts are the module's ``class_counts``).

``lam ~ Beta(alpha, alpha)`` once per batch and the partner ``j = perm[i]`` is a random permutation of the batch, as
in the papers' code. With ``prob < 1`` a batch is mixed with probability ``prob`` (CutMix's ``cutmix_prob``) and
otherwise passes unchanged. ``stop_epoch`` (an epoch, or a fraction of ``trainer.max_epochs``) turns mixing off from
that epoch on -- e.g. before a classifier re-training stage, as MiSLAS's stage 2 trains without mixup.

Randomness without state: the draws of a batch come from a NumPy generator seeded with
``(seed, global_step, micro_batch, global_rank)`` (``micro_batch`` = the batch's index within gradient accumulation),
so a run resumed from any checkpoint -- mid-epoch or at an epoch boundary -- draws what the uninterrupted run drew,
and under DDP each process mixes its own shard with its own draws. Nothing is checkpointed.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from lt_lightning._checks import check_float, check_int, check_probability
from lt_lightning.callbacks._schedule import EpochSchedule
from lt_lightning.data.mixing import check_alpha, cutmix, cutmix_box, mix_targets, mixup, remix_label_weights
from lt_lightning.schedule import resolve_length, validate_epoch_value
from lt_lightning.slots import require_long_tail_module

__all__ = ["BatchMixing"]

Method = Literal["mixup", "cutmix", "remix"]


class BatchMixing(EpochSchedule):
    """Mix every training batch (mixup, CutMix or Remix) until ``stop_epoch``.

    YAML (``trainer.callbacks``)::

        - class_path: lt_lightning.callbacks.batch_mixing.BatchMixing
          init_args: {method: remix, alpha: 1.0, kappa: 3.0, tau: 0.5}

    Args:
        method: ``"mixup"``, ``"cutmix"`` or ``"remix"``.
        alpha: ``lam ~ Beta(alpha, alpha)``, ``alpha > 0`` (1.0 in the mixup, CutMix and Remix CIFAR recipes).
        kappa: Remix's count ratio ``> 1`` that makes a pair majority/minority (3 in the paper).
        tau: Remix's image-weight threshold in ``(0, 1]`` (0.5 in the paper).
        prob: probability in ``[0, 1]`` that a batch is mixed (1: every batch; CutMix's CIFAR recipe uses 0.5).
        stop_epoch: first epoch without mixing: an integer epoch, a fraction of ``trainer.max_epochs`` in
            ``(0, 1)``, or a negative value for "the last ``k`` epochs train without mixing": ``-k`` epochs, or
            ``-f`` with ``f`` in ``(0, 1)`` a fraction of the run resolved as a stage's length
            (``k = max(1, round(f · T))``: MiSLAS's ``-0.0476`` stops mixing exactly where its classifier stage of
            ``epochs: 0.0476`` starts, at any budget); ``None``: mix until the end of the fit.
        seed: integer ``>= 0``, the base of every batch's generator.

    Attributes:
        active: whether the transform is installed (after the last epoch switch).
        resolved_stop_epoch: ``stop_epoch`` as an epoch (resolved at setup), ``None`` when mixing never stops.
    """

    log_key = "batch_mixing/active"

    def __init__(
        self,
        method: Method = "mixup",
        alpha: float = 1.0,
        kappa: float = 3.0,
        tau: float = 0.5,
        prob: float = 1.0,
        stop_epoch: int | float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if method not in ("mixup", "cutmix", "remix"):
            raise ValueError(f"method must be 'mixup', 'cutmix' or 'remix', got {method!r}")
        alpha = check_alpha(alpha)
        check_float("kappa", kappa, minimum=1, exclusive_minimum=True)
        check_float("tau", tau, minimum=0, maximum=1, exclusive_minimum=True, what="a finite number in (0, 1]")
        check_probability("prob", prob)
        if isinstance(stop_epoch, (int, float)) and not isinstance(stop_epoch, bool) and stop_epoch < 0:
            validate_epoch_value(-stop_epoch, "stop_epoch (negated: the epochs without mixing at the end)")
        elif stop_epoch is not None:
            stop_epoch = validate_epoch_value(stop_epoch, "stop_epoch")
        check_int("seed", seed, minimum=0)
        self.method = method
        self.alpha = alpha
        self.kappa = float(kappa)
        self.tau = float(tau)
        self.prob = float(prob)
        self.stop_epoch = stop_epoch
        self.seed = seed
        self.active = False
        self.resolved_stop_epoch: int | None = stop_epoch if isinstance(stop_epoch, int) and stop_epoch >= 0 else None
        self._trainer: pl.Trainer | None = None
        self._module: pl.LightningModule | None = None
        self._batch_idx = 0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            method=self.method, alpha=self.alpha, kappa=self.kappa, tau=self.tau, prob=self.prob,
            stop_epoch=self.stop_epoch, seed=self.seed,
        )  # fmt: skip

    # ------------------------------------------------------------------ the transform
    def generator(self, global_step: int, micro_batch: int = 0, rank: int = 0) -> np.random.Generator:
        """The generator of one batch: seeded by ``(seed, global_step, micro_batch, rank)``."""
        return np.random.default_rng([self.seed, int(global_step), int(micro_batch), int(rank)])

    def mix(self, x: Tensor, target: Tensor, rng: np.random.Generator, num_classes: int, class_counts: Tensor | None):
        """Mix one batch with the draws of ``rng`` (the coin for ``prob``, then ``lam``, the permutation, the box)."""
        if self.prob < 1.0 and not rng.random() < self.prob:
            return x, target
        lam = float(rng.beta(self.alpha, self.alpha))
        perm = torch.from_numpy(rng.permutation(x.shape[0])).to(x.device)
        if self.method == "mixup":
            return mixup(x, target, lam, perm, num_classes)
        if self.method == "cutmix":
            box = cutmix_box(int(x.shape[-2]), int(x.shape[-1]), lam, rng)
            return cutmix(x, target, box, perm, num_classes)
        if class_counts is None:
            raise ValueError("Remix needs the training class counts (the module's class_counts)")
        images, _ = mixup(x, target, lam, perm, num_classes)
        weights = remix_label_weights(lam, target, perm, class_counts, self.kappa, self.tau)
        return images, mix_targets(target, perm, weights, num_classes)

    def _transform(self, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        trainer, module = self._trainer, self._module
        if trainer is None or module is None:
            raise RuntimeError("BatchMixing's transform runs inside a fit (set up by the callback)")
        micro = self._batch_idx % max(int(trainer.accumulate_grad_batches), 1)
        rng = self.generator(trainer.global_step, micro, trainer.global_rank)
        return self.mix(x, target, rng, int(module.num_classes), getattr(module, "class_counts", None))

    # ------------------------------------------------------------------ hooks
    def _setup_fit(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        require_long_tail_module(pl_module, self)
        max_epochs = trainer.max_epochs
        if self.stop_epoch is not None and self.stop_epoch < 0:
            if trainer.fast_dev_run:  # a one-step wiring check: as a stage switch there, the end comes first
                self.resolved_stop_epoch = 0
            else:
                if max_epochs is None or max_epochs < 1:
                    raise ValueError(f"stop_epoch={self.stop_epoch} counts from the end, but max_epochs={max_epochs}")
                last = resolve_length(-self.stop_epoch, max_epochs, "stop_epoch", "BatchMixing", strict=False)
                if max_epochs - last < 1:
                    raise ValueError(
                        f"stop_epoch={self.stop_epoch} leaves no epoch with mixing: trainer.max_epochs is {max_epochs}"
                    )
                self.resolved_stop_epoch = max_epochs - last
        elif self.stop_epoch is not None:
            self.resolved_stop_epoch = self.resolve_point(self.stop_epoch, trainer, "stop_epoch")
        self._trainer, self._module = trainer, pl_module

    def _installed(self, pl_module: pl.LightningModule) -> bool:
        return pl_module.slot_owner("train_batch_transform") is self

    def apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> bool:
        """Idempotent: install the transform before ``stop_epoch``, remove it from then on; return ``active``."""
        self._trainer, self._module = trainer, pl_module
        stop = self.resolved_stop_epoch
        active = stop is None or epoch < stop
        if active and not self._installed(pl_module):
            pl_module.install_train_batch_transform(self._transform, owner=self)  # refuses another transform
        elif not active:
            pl_module.clear_train_batch_transform(owner=self)
        self.active = active
        return active

    def _apply_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> bool:
        return self.apply(trainer, pl_module, epoch)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        self._batch_idx = batch_idx

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            pl_module.clear_train_batch_transform(owner=self)  # leave the module as it was given
        self.active = False
        self._trainer = self._module = None
