"""``GlobalLocalMixing``: GLMC's global (mixup) and local (CutMix) mixtures of instance-balanced and re-balanced
images, and its cumulative ``α``.

Du, Yang, Jia, Nan, Chen, Yang, "Global and Local Mixture Consistency Cumulative Learning for Long-tailed Visual
Recognitions", CVPR 2023 (ynu-yangpeng/GLMC: ``GLMC-2023/utils/util.py`` ``GLMC_mixed``, ``GLMC-2023/Trainer.py``
``train``). Each step pairs ``B`` instance-balanced images ``a`` (two augmented views ``a1``, ``a2``) with ``B``
re-balanced draws ``b`` (views ``b1``, ``b2``) position by position, draws ``lam ~ Beta(beta, beta)`` once and builds::

    global:  x_g = lam a1 + (1 - lam) b1                 (mixup of the first views)
    local:   x_l = a2 with a box of b2 pasted in         (CutMix of the second views, box area ≈ (1 - lam) H W)
    labels:  y_g = y_l = lam e(y_a) + (1 - lam) e(y_b)   (the same lam for both, as the reference)

The training batch comes from :class:`~lt_lightning.data.bilateral_sampler.PowerBilateralSampler` (any
:class:`~lt_lightning.data.bilateral_sampler.BilateralSampler`) with ``data.batch_size = 2 x branch_batch_size`` and
``data.views = 2``: on the device it is ``[a1; b1; a2; b2]`` (view-major), and the installed batch transform returns
``[x_g; x_l]`` with soft targets ``[y_g; y_l]`` (``2B`` rows), what :class:`~lt_lightning.losses.glmc.GLMCLoss`
reads. Every epoch ``e`` the callback sets the loss's cumulative weight (BBN's parabolic decay, as GLMC)::

    α(e) = 1 - (e / T)^2        (T = trainer.max_epochs unless total_epochs is given)

Randomness without state, as :class:`~lt_lightning.callbacks.batch_mixing.BatchMixing`: the draws of a step come
from a NumPy generator seeded with ``(seed, global_step, micro_batch, global_rank)``, ``α`` is a function of the
epoch, so a resumed run equals the run that never stopped; the checkpointed state is the configuration.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from lt_lightning._checks import check_int
from lt_lightning.callbacks._schedule import EpochSchedule
from lt_lightning.callbacks.bbn_schedule import parabolic_decay
from lt_lightning.data.bilateral_sampler import BilateralSampler
from lt_lightning.data.mixing import check_alpha, cutmix_box
from lt_lightning.losses._checks import target_distribution
from lt_lightning.slots import require_long_tail_module

__all__ = ["GlobalLocalMixing", "global_local_mix"]


def global_local_mix(
    x: Tensor, target: Tensor, lam: float, box: tuple[int, int, int, int], num_classes: int
) -> tuple[Tensor, Tensor]:
    """GLMC's two mixtures of a view-major batch ``[a1; b1; a2; b2]`` (``4B`` rows, ``B`` per block).

    Returns ``[x_g; x_l]`` (``2B`` images) and ``[y_g; y_l]`` (``[2B, C]`` float32) with
    ``x_g = lam a1 + (1 - lam) b1``, ``x_l = a2`` with ``b2``'s ``box = (top, bottom, left, right)`` pasted in, and
    ``y_g = y_l = lam e(y_a) + (1 - lam) e(y_b)``.

    Args:
        x: ``[4B, ..., H, W]`` float images: two views of ``[instance-balanced B | re-balanced B]``, view-major.
        target: ``[4B]`` class indices (or ``[4B, C]`` soft targets), repeated per view as ``x``.
        lam: mixing weight in ``[0, 1]``.
        box: CutMix box, half-open rows ``top:bottom`` and columns ``left:right``.
        num_classes: ``C``.
    """
    if not x.is_floating_point() or x.ndim < 3:
        raise ValueError(f"images must be floating point [4B, ..., H, W], got dtype {x.dtype}, shape {tuple(x.shape)}")
    rows = x.shape[0]
    if rows == 0 or rows % 4 or target.shape[0] != rows:
        raise ValueError(
            f"GLMC mixes a batch [a1; b1; a2; b2] of 4B rows (2 views of B instance-balanced + B re-balanced images), "
            f"got images of {rows} rows and target of shape {tuple(target.shape)}: set data.views 2 and a "
            "BilateralSampler with data.batch_size = 2 x branch_batch_size"
        )
    if not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    lam = float(lam)
    height, width = x.shape[-2], x.shape[-1]
    top, bottom, left, right = (int(v) for v in box)
    if not (0 <= top <= bottom <= height and 0 <= left <= right <= width):
        raise ValueError(f"box {box} does not lie in an image of {height}x{width}")
    b = rows // 4
    a1, b1, a2, b2 = x[:b], x[b : 2 * b], x[2 * b : 3 * b], x[3 * b :]
    mixed = a1 * lam + b1 * (1.0 - lam)
    cut = a2.clone()
    cut[..., top:bottom, left:right] = b2[..., top:bottom, left:right]
    t = target_distribution(target[: 2 * b], num_classes)
    y = lam * t[:b] + (1.0 - lam) * t[b:]
    return torch.cat([mixed, cut]), torch.cat([y, y])


class GlobalLocalMixing(EpochSchedule):
    """Install GLMC's global/local mixing as the training batch transform and set ``α(e) = 1 - (e / T)^2``.

    YAML (``trainer.callbacks``)::

        - class_path: lt_lightning.callbacks.glmc.GlobalLocalMixing
          init_args: {beta: 1.0}

    Args:
        beta: ``lam ~ Beta(beta, beta)``, ``beta > 0``. 1.0 is what the reference trains with: ``GLMC_mixed`` draws
            with its default ``alpha=1`` (the ``--beta 0.5`` of its commands feeds a draw that is never used).
        total_epochs: ``T`` of the cumulative weight; ``None`` (default): ``trainer.max_epochs`` (the reference's).
        seed: integer ``>= 0``, the base of every step's generator.

    Attributes:
        alpha: the ``α`` of the last epoch switch (``None`` before training).
    """

    log_key = "glmc/alpha"
    resume_consequence = "alpha differs from the run that wrote the checkpoint"

    def __init__(self, beta: float = 1.0, total_epochs: int | None = None, seed: int = 0) -> None:
        super().__init__()
        self.beta = check_alpha(beta, "beta")
        check_int("total_epochs", total_epochs, minimum=1, or_none=True)
        check_int("seed", seed, minimum=0)
        self.total_epochs = total_epochs
        self.seed = seed
        self._resolved_total: int | None = total_epochs
        self.alpha: float | None = None
        self._trainer: pl.Trainer | None = None
        self._module: pl.LightningModule | None = None
        self._batch_idx = 0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(beta=self.beta, total_epochs=self.total_epochs, seed=self.seed)

    def _config(self) -> dict[str, Any]:
        return {"schedule": "parabolic_decay", "total_epochs": self._resolved_total}

    # ------------------------------------------------------------------ the transform
    def generator(self, global_step: int, micro_batch: int = 0, rank: int = 0) -> np.random.Generator:
        """The generator of one batch: seeded by ``(seed, global_step, micro_batch, rank)``."""
        return np.random.default_rng([self.seed, int(global_step), int(micro_batch), int(rank)])

    def mix(self, x: Tensor, target: Tensor, rng: np.random.Generator, num_classes: int) -> tuple[Tensor, Tensor]:
        """Mix one batch with the draws of ``rng`` (``lam``, then the box)."""
        lam = float(rng.beta(self.beta, self.beta))
        box = cutmix_box(int(x.shape[-2]), int(x.shape[-1]), lam, rng)
        return global_local_mix(x, target, lam, box, num_classes)

    def _transform(self, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        trainer, module = self._trainer, self._module
        if trainer is None or module is None:
            raise RuntimeError("GlobalLocalMixing's transform runs inside a fit (set up by the callback)")
        micro = self._batch_idx % max(int(trainer.accumulate_grad_batches), 1)
        rng = self.generator(trainer.global_step, micro, trainer.global_rank)
        return self.mix(x, target, rng, int(module.num_classes))

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _criterion(pl_module: pl.LightningModule) -> Any:
        criterion = getattr(pl_module, "criterion", None)
        if criterion is None or not callable(getattr(criterion, "set_alpha", None)):
            found = "none" if criterion is None else type(criterion).__name__
            raise ValueError(
                "GlobalLocalMixing needs model.criterion with set_alpha(alpha) (lt_lightning.losses.glmc.GLMCLoss), "
                f"got {found}"
            )
        return criterion

    @staticmethod
    def _check_data(trainer: pl.Trainer) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not callable(getattr(datamodule, "build_train_sampler", None)):
            found = "no datamodule" if datamodule is None else type(datamodule).__name__
            raise ValueError(f"GlobalLocalMixing needs a LongTailDataModule with a BilateralSampler, got {found}")
        sampler = datamodule.build_train_sampler()
        if not isinstance(sampler, BilateralSampler):
            raise ValueError(
                "GLMC pairs instance-balanced with re-balanced images, but the datamodule's training sampler is "
                f"{type(sampler).__name__}: set data.sampler to lt_lightning.data.bilateral_sampler."
                "PowerBilateralSampler (init_args: branch_batch_size, q)"
            )
        batch_size = getattr(datamodule, "batch_size", None)
        if batch_size != 2 * sampler.branch_batch_size:
            raise ValueError(
                f"data.batch_size must be 2 x branch_batch_size = {2 * sampler.branch_batch_size} (instance-balanced "
                f"and re-balanced halves), got {batch_size}"
            )
        views = getattr(datamodule, "views", None)
        if views != 2:
            raise ValueError(f"GLMC mixes two augmented views of each image: set data.views 2, got {views}")

    # ------------------------------------------------------------------ hooks
    def _setup_fit(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        require_long_tail_module(pl_module, self)
        self._criterion(pl_module)
        self._check_data(trainer)
        if self.total_epochs is None:
            self._resolved_total = self.total_from_trainer(trainer)
        self._trainer, self._module = trainer, pl_module

    def alpha_at(self, epoch: int) -> float:
        """``α`` of the 0-based ``epoch``."""
        if self._resolved_total is None:
            raise RuntimeError("GlobalLocalMixing(total_epochs=None): T is taken from trainer.max_epochs at setup")
        return parabolic_decay(int(epoch), self._resolved_total)

    def apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> float:
        """Idempotent: install the transform (once) and set ``α(epoch)`` on the criterion; return ``α``."""
        self._trainer, self._module = trainer, pl_module
        if pl_module.slot_owner("train_batch_transform") is not self:
            pl_module.install_train_batch_transform(self._transform, owner=self)  # refuses another transform
        self.alpha = self.alpha_at(epoch)
        self._criterion(pl_module).set_alpha(self.alpha)
        return self.alpha

    def _apply_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> float:
        return self.apply(trainer, pl_module, epoch)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        self._batch_idx = batch_idx

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            pl_module.clear_train_batch_transform(owner=self)
        self._trainer = self._module = None
