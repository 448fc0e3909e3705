"""Post-hoc logit adjustment at test time, with ``τ`` chosen by a sweep on the validation set.

Menon et al., "Long-tail learning via logit adjustment", ICLR 2021, Eq. (9): a model trained with plain
cross-entropy predicts ``argmax_y z_y - τ log π_y``. Before testing, this callback runs the model over the
**validation** loader, evaluates every ``τ`` of the grid (per-class correct counts per ``τ``, summed over
processes, so the sweep is exact under DDP), picks the ``τ`` with the best class-balanced validation accuracy
(ties: the smallest), and sets the module's :attr:`~lt_lightning.module.LongTailModule.test_logit_offset` to
``τ log π``. The test set is never looked at to choose ``τ``. The curve is written to ``<log_dir>/<filename>.json``
and ``test/posthoc_tau`` is logged. With ``tau`` given, no sweep runs. ``predict`` applies the same rule (its own
sweep on the validation set).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lt_lightning.callbacks._sweep import check_sweep_arguments, write_sweep_curve
from lt_lightning.losses.logit_adjustment import log_prior_from_counts
from lt_lightning.metrics.long_tail_accuracy import long_tail_accuracy_compute, shot_group_masks
from lt_lightning.slots import require_long_tail_module


class PostHocLogitAdjustment(Callback):
    """Subtract ``τ log π`` from the test logits; ``τ`` from a validation sweep unless given.

    Args:
        taus: the grid of the sweep (default ``0, 0.1, ..., 2``), each ``>= 0``.
        tau: a fixed ``τ >= 0`` (no sweep).
        filename: name (without ``.json``) of the sweep curve written into the run's log dir.
    """

    def __init__(
        self, taus: Sequence[float] | None = None, tau: float | None = None, filename: str = "posthoc_tau_sweep"
    ) -> None:
        self.taus, self.tau, self.filename = check_sweep_arguments(taus, tau, filename)
        self.chosen_tau: float | None = None
        self.curve: dict[str, list[float]] = {}

    def _validation_counts(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, log_prior: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``correct[T, C]`` and ``total[C]`` of the adjusted validation predictions, summed over processes."""
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "val_dataloader"):
            raise ValueError("PostHocLogitAdjustment needs a datamodule with a validation set to choose tau")
        if getattr(datamodule, "val_dataset", None) is None:
            datamodule.setup("validate")
        taus = torch.tensor(self.taus, device=pl_module.device).view(-1, 1, 1)
        c = pl_module.num_classes
        correct = torch.zeros(len(self.taus), c, dtype=torch.long, device=pl_module.device)
        total = torch.zeros(c, dtype=torch.long, device=pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            for batch in datamodule.val_dataloader():
                batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                x, y = datamodule.on_after_batch_transfer(batch, 0)
                logits = pl_module(x).logits.float()
                preds = (logits.unsqueeze(0) - taus * log_prior).argmax(dim=-1)  # [T, B]
                hits = preds == y.unsqueeze(0)
                correct += torch.stack([torch.bincount(y[h], minlength=c) for h in hits])
                total += torch.bincount(y, minlength=c)
        pl_module.train(was_training)
        correct = trainer.strategy.reduce(correct, reduce_op="sum")
        total = trainer.strategy.reduce(total, reduce_op="sum")
        if int(total.sum()) == 0:
            raise ValueError("the validation set is empty: PostHocLogitAdjustment cannot choose tau (give `tau`)")
        return correct, total

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer, pl_module)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer, pl_module)

    def _install(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Choose ``τ`` (sweep on the validation set unless given) and set the module's ``test_logit_offset``."""
        counts = require_long_tail_module(pl_module, self).class_counts
        log_prior = log_prior_from_counts(counts).to(pl_module.device)
        if self.tau is not None:
            self.chosen_tau = self.tau
        else:
            correct, total = self._validation_counts(trainer, pl_module, log_prior)
            groups = shot_group_masks(
                counts.long(), pl_module.hparams.get("many_threshold", 100), pl_module.hparams.get("few_threshold", 20)
            )
            results = [long_tail_accuracy_compute(correct[i], total, groups) for i in range(len(self.taus))]
            keys = ("acc", "acc_balanced", "acc_many", "acc_medium", "acc_few")
            self.curve = {"tau": list(self.taus)} | {k: [float(r[k]) for r in results] for k in keys}
            balanced = torch.tensor(self.curve["acc_balanced"])
            self.chosen_tau = self.taus[int(torch.nonzero(balanced == balanced.max())[0])]
            write_sweep_curve(
                trainer,
                self.filename,
                {"chosen_tau": self.chosen_tau, "criterion": "acc_balanced (validation)", **self.curve},
            )
        pl_module.install_test_logit_offset(self.chosen_tau * log_prior, owner=self)
        rank_zero_info(f"PostHocLogitAdjustment: tau = {self.chosen_tau} (chosen on the validation set)")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.chosen_tau is not None:
            pl_module.log("test/posthoc_tau", float(self.chosen_tau))

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.clear_test_logit_offset(owner=self)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.clear_test_logit_offset(owner=self)
