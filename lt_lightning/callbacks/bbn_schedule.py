"""``CumulativeLearning``: BBN's adaptor ``α``, moved from the conventional to the re-balancing branch each epoch.

Zhou, Cui, Wei, Chen, "BBN: Bilateral-Branch Network with Cumulative Learning for Long-Tailed Visual Recognition",
CVPR 2020, Eq. (2), the "parabolic decay" of megvii-research/BBN (``lib/core/combiner.py``)::

    α(T) = 1 - (T / T_max)^2

with ``T`` the number of epochs already trained: the reference counts epochs from 1 and uses
``1 - ((epoch - 1) / div_epoch)^2``, i.e. ``α = 1 - (e / T_max)^2`` at the 0-based epoch ``e`` -- ``α = 1`` (only the
conventional branch) in the first epoch, decreasing to ``1 - ((T_max - 1) / T_max)^2`` in the last. ``T_max`` is
``trainer.max_epochs`` unless ``total_epochs`` is given (the reference's ``div_epoch`` is ``MAX_EPOCH``, except for
its 90- and 180-epoch iNaturalist runs where it is 100 and 200: ``total_epochs`` reproduces those). Beyond ``T_max``
``α`` stays 0.

Every epoch the callback sets ``α`` on the module's backbone (:class:`~lt_lightning.backbones.bbn.BBNResNetCifar`:
features ``2 [α f_c ‖ (1 - α) f_r]``) and criterion (:class:`~lt_lightning.losses.bbn.BilateralLoss`:
``α E(z, y_c) + (1 - α) E(z, y_r)``) through their ``set_alpha``. At inference the backbone uses ``α = 0.5``
whatever was set. ``α`` is a function of the epoch: :meth:`CumulativeLearning.apply` is idempotent and runs from
``on_train_start`` (also after a mid-epoch resume, where ``on_train_epoch_start`` is skipped) and
``on_train_epoch_start``, so a resumed run equals one that never stopped; the checkpointed state is the
configuration (a resume with a different ``T_max`` warns). ``bbn/alpha`` is logged each epoch.

At setup it checks that the parts fit together, so a wrong config fails at start-up: the backbone and criterion
have ``set_alpha``, the datamodule's training sampler is a
:class:`~lt_lightning.data.bilateral_sampler.BilateralSampler` and ``data.batch_size = 2 x branch_batch_size``.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from lt_lightning._checks import check_int
from lt_lightning.callbacks._schedule import EpochSchedule
from lt_lightning.data.bilateral_sampler import BilateralSampler

__all__ = ["CumulativeLearning", "parabolic_decay"]


def parabolic_decay(epoch: int, total_epochs: int) -> float:
    """BBN's ``α = 1 - (epoch / total_epochs)^2`` at the 0-based ``epoch``, 0 from ``epoch >= total_epochs``."""
    check_int("total_epochs", total_epochs, minimum=1)
    check_int("epoch", epoch, minimum=0)
    return max(0.0, 1.0 - (epoch / total_epochs) ** 2)


class CumulativeLearning(EpochSchedule):
    """Set BBN's ``α(e) = 1 - (e / T_max)^2`` on the backbone and the criterion at every epoch ``e``.

    YAML (``trainer.callbacks``)::

        - class_path: lt_lightning.callbacks.bbn_schedule.CumulativeLearning

    Args:
        total_epochs: ``T_max``; ``None`` (default) takes ``trainer.max_epochs`` at setup (the reference's choice).

    Attributes:
        alpha: the ``α`` of the last :meth:`apply` (``None`` before training starts).
        epoch: the epoch :meth:`apply` was last called with.
    """

    log_key = "bbn/alpha"
    resume_consequence = "alpha differs from the run that wrote the checkpoint"

    def __init__(self, total_epochs: int | None = None) -> None:
        super().__init__()
        check_int("total_epochs", total_epochs, minimum=1, or_none=True)
        self.total_epochs = total_epochs
        self._resolved_total: int | None = total_epochs
        self.alpha: float | None = None
        self.epoch: int | None = None

    # ------------------------------------------------------------------ identity and state
    @property
    def state_key(self) -> str:
        return self._generate_state_key(total_epochs=self.total_epochs)

    def _config(self) -> dict[str, Any]:
        return {"schedule": "parabolic_decay", "total_epochs": self._resolved_total}

    # ------------------------------------------------------------------ schedule
    def alpha_at(self, epoch: int) -> float:
        """``α`` of the 0-based ``epoch``."""
        if self._resolved_total is None:
            raise RuntimeError("CumulativeLearning(total_epochs=None): T_max is taken from trainer.max_epochs at setup")
        return parabolic_decay(int(epoch), self._resolved_total)

    @staticmethod
    def _part(pl_module: pl.LightningModule, name: str, expected: str) -> Any:
        part = getattr(pl_module, name, None)
        if part is None or not callable(getattr(part, "set_alpha", None)):
            found = "none" if part is None else type(part).__name__
            raise ValueError(
                f"CumulativeLearning needs `{type(pl_module).__name__}.{name}` with set_alpha(alpha) ({expected}); "
                f"got {found}"
            )
        return part

    def _parts(self, pl_module: pl.LightningModule) -> tuple[Any, Any]:
        backbone = self._part(pl_module, "backbone", "lt_lightning.backbones.bbn.BBNResNetCifar")
        criterion = self._part(pl_module, "criterion", "lt_lightning.losses.bbn.BilateralLoss")
        return backbone, criterion

    @staticmethod
    def _check_data(trainer: pl.Trainer) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not callable(getattr(datamodule, "build_train_sampler", None)):
            found = "no datamodule" if datamodule is None else type(datamodule).__name__
            raise ValueError(
                "CumulativeLearning needs a LongTailDataModule (trainer.fit(..., datamodule=...) or the CLI's `data`) "
                f"whose training sampler is a BilateralSampler; got {found}"
            )
        sampler = datamodule.build_train_sampler()
        if not isinstance(sampler, BilateralSampler):
            raise ValueError(
                f"BBN trains on [conventional half | reversed half] batches, but the datamodule's training sampler is "
                f"{type(sampler).__name__}: set data.sampler to lt_lightning.data.bilateral_sampler.BilateralSampler "
                "(init_args: branch_batch_size)"
            )
        batch_size = getattr(datamodule, "batch_size", None)
        if batch_size != 2 * sampler.branch_batch_size:
            raise ValueError(
                f"data.batch_size must be 2 x BilateralSampler.branch_batch_size = {2 * sampler.branch_batch_size} "
                f"(one conventional and one reversed half per batch), got {batch_size}"
            )

    # ------------------------------------------------------------------ hooks
    def _setup_fit(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._parts(pl_module)
        self._check_data(trainer)
        if self.total_epochs is None:
            self._resolved_total = self.total_from_trainer(trainer, "T_max")

    def apply(self, pl_module: pl.LightningModule, epoch: int) -> float:
        """Set ``α(epoch)`` on the backbone and the criterion (idempotent); returns it."""
        backbone, criterion = self._parts(pl_module)
        self.epoch = int(epoch)
        self.alpha = self.alpha_at(self.epoch)
        backbone.set_alpha(self.alpha)
        criterion.set_alpha(self.alpha)
        return self.alpha

    def _apply_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> float:
        return self.apply(pl_module, epoch)
