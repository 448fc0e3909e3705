"""Switch epochs as a fraction of max_epochs: DRW and DRS scale with the budget (0.8 = epoch 160 of 200)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import Tensor, nn

from lt_lightning.backbones.base import Backbone
from lt_lightning.callbacks import DeferredReweighting, ResamplingSchedule
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.losses import WeightedCrossEntropyLoss
from lt_lightning.module import LongTailModule
from lt_lightning.schedule import resolve_epoch


class TinyBackbone(Backbone):
    def __init__(self) -> None:
        super().__init__()
        self.num_features = 8
        self.fc = nn.Linear(3 * 8 * 8, 8)

    def forward_features(self, x: Tensor) -> Tensor:
        return torch.relu(self.fc(x.flatten(1)))


@pytest.mark.parametrize(
    ("value", "max_epochs", "epoch"), [(160, 200, 160), (0.8, 200, 160), (0.8, 40, 32), (0.8, 30, 24)]
)
def test_resolve_switch_epoch(value, max_epochs, epoch) -> None:
    assert resolve_epoch(value, max_epochs, "switch_epoch") == epoch


@pytest.mark.parametrize("value", [-1, 0.0, 1.0, 1.5, -0.2, True, "8"])
def test_bad_switch_epoch(value) -> None:
    with pytest.raises(ValueError, match="switch_epoch"):
        DeferredReweighting(switch_epoch=value)
    with pytest.raises(ValueError, match="switch_epoch"):
        ResamplingSchedule(schedule="drs", switch_epoch=value)


class EpochRecorder(L.Callback):
    def __init__(self, drw: DeferredReweighting, drs: ResamplingSchedule) -> None:
        self.drw, self.drs, self.seen = drw, drs, []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seen.append((trainer.current_epoch, self.drw.active, self.drs.mixing))


def test_fractions_resolve_against_max_epochs_in_a_fit(tmp_path) -> None:
    drw, drs = DeferredReweighting(switch_epoch=0.5), ResamplingSchedule(schedule="drs", switch_epoch=0.75)
    recorder = EpochRecorder(drw, drs)
    dm = SyntheticLTDataModule(num_classes=3, n_max=8, imbalance_ratio=2, batch_size=8)
    module = LongTailModule(TinyBackbone(), 3, dm.class_counts, criterion=WeightedCrossEntropyLoss(q=0.0))
    trainer = L.Trainer(
        max_epochs=4,
        limit_train_batches=1,
        limit_val_batches=1,
        callbacks=[drw, drs, recorder],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, dm)
    assert (drw.resolved_switch_epoch, drs.resolved_switch_epoch) == (2, 3)
    assert recorder.seen == [(0, False, 0.0), (1, False, 0.0), (2, True, 0.0), (3, True, 1.0)]
