"""``ResamplingSchedule`` through a real ``lightning.Trainer`` on tiny synthetic data.

The fit tests record the images of every training batch and compare them with the scheduled sampler's global order
for that epoch; the resume tests stop a run after two epochs, resume it from its checkpoint (with 0 and 2 worker
processes: Lightning issue #21938) and require the sampled order of the remaining epochs to equal the order of a run
that never stopped.
"""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor

from lt_lightning.callbacks.resampling_schedule import ResamplingSchedule
from lt_lightning.data.resampling import ClassPowerSampler, DeferredResampler, ProgressiveSampler
from lt_lightning.data.samplers import InstanceBalancedSampler
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.module import LongTailModule
from tests.helpers import StopAfter, TinyBackbone


def _synthetic(**kwargs) -> SyntheticLTDataModule:
    """3 classes, counts [16, 8, 4] (28 images of 3x2x2), batch 8, no augmentation (so batches are comparable)."""
    args = {"num_classes": 3, "n_max": 16, "imbalance_ratio": 4, "image_size": 2, "batch_size": 8, "seed": 3}
    return SyntheticLTDataModule(**{**args, "augment": False, **kwargs})


class RecordBatches(L.Callback):
    """Per epoch: the training images seen, the schedule's mixing and the train sampler's epoch."""

    def __init__(self, schedule: ResamplingSchedule | None = None) -> None:
        self.schedule = schedule
        self.images: dict[int, list[Tensor]] = {}
        self.mixing: dict[int, float | None] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.images.setdefault(trainer.current_epoch, []).append(batch[0].detach().clone())
        if self.schedule is not None:
            self.mixing[trainer.current_epoch] = self.schedule.mixing

    def seen(self, epoch: int) -> Tensor:
        return torch.cat(self.images[epoch])


def _fit(
    dm: SyntheticLTDataModule,
    schedule: ResamplingSchedule,
    tmp: Path,
    max_epochs: int = 4,
    stop_after: int | None = None,
    ckpt_path: str | None = None,
) -> tuple[L.Trainer, RecordBatches]:
    L.seed_everything(0, verbose=False)
    model = LongTailModule(TinyBackbone(), num_classes=dm.num_classes, class_counts=dm.class_counts)
    recorder = RecordBatches(schedule)
    callbacks = [schedule, recorder] + ([StopAfter(stop_after)] if stop_after else [])
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=tmp,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
    return trainer, recorder


def _expected(dm: SyntheticLTDataModule, sampler_cls, epoch: int, **kwargs) -> Tensor:
    order = sampler_cls(dm.train_labels, seed=dm.seed, **kwargs).global_indices(epoch)
    return dm.augmentation(dm.train_dataset.images[order])


# ---------------------------------------------------------------------------------------------- configuration
def test_mixing_at_by_hand_and_bad_arguments() -> None:
    drs = ResamplingSchedule("drs", switch_epoch=2)
    assert [drs.mixing_at(e) for e in range(5)] == [0.0, 0.0, 1.0, 1.0, 1.0]
    progressive = ResamplingSchedule("progressive", total_epochs=4)
    assert [progressive.mixing_at(e) for e in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert progressive.apply(3) == 0.75 and progressive.mixing == 0.75 and progressive.epoch == 3
    with pytest.raises(RuntimeError, match="set at setup"):
        ResamplingSchedule("progressive").mixing_at(1)  # total_epochs=None: T comes from the trainer

    for kwargs, match in [
        ({"schedule": "cosine"}, "schedule must be"),
        ({"schedule": "drs"}, "needs switch_epoch"),
        ({"schedule": "drs", "switch_epoch": -1}, "integer epoch >= 0"),
        ({"schedule": "drs", "switch_epoch": 2, "total_epochs": 4}, "total_epochs is for"),
        ({"schedule": "progressive", "switch_epoch": 2}, "switch_epoch is for"),
        ({"schedule": "progressive", "total_epochs": 0}, "total_epochs must be"),
        ({"schedule": "progressive", "total_epochs": 2.5}, "must be an integer"),
    ]:
        with pytest.raises(ValueError, match=match):
            ResamplingSchedule(**kwargs)


def test_state_keys_differ_per_configuration() -> None:
    keys = {
        ResamplingSchedule("drs", switch_epoch=2).state_key,
        ResamplingSchedule("drs", switch_epoch=3).state_key,
        ResamplingSchedule("progressive").state_key,
        ResamplingSchedule("progressive", total_epochs=4).state_key,
    }
    assert len(keys) == 4
    assert ResamplingSchedule("drs", switch_epoch=2).state_key == ResamplingSchedule("drs", switch_epoch=2).state_key


# ---------------------------------------------------------------------------------------------- fit
def test_progressive_fit_draws_the_scheduled_order_and_logs_the_mixing(tmp_path: Path) -> None:
    dm = _synthetic()
    schedule = ResamplingSchedule("progressive")  # T = trainer.max_epochs = 4
    trainer, rec = _fit(dm, schedule, tmp_path)
    assert sorted(rec.images) == [0, 1, 2, 3]
    for epoch in range(4):
        assert torch.equal(rec.seen(epoch), _expected(dm, ProgressiveSampler, epoch, total_epochs=4))
    assert rec.mixing == {0: 0.0, 1: 0.25, 2: 0.5, 3: 0.75}
    assert trainer.callback_metrics["resampling/mixing"].item() == 0.75
    assert dm.sampler is None  # the datamodule is left as it was given


def test_drs_fit_switches_at_the_epoch(tmp_path: Path) -> None:
    dm = _synthetic()
    _, rec = _fit(dm, ResamplingSchedule("drs", switch_epoch=2), tmp_path)
    for epoch in range(4):
        assert torch.equal(rec.seen(epoch), _expected(dm, DeferredResampler, epoch, switch_epoch=2))
    # before E the baseline's permutation, from E class-balanced
    for epoch in (0, 1):
        assert torch.equal(rec.seen(epoch), _expected(dm, InstanceBalancedSampler, epoch))
    assert rec.mixing == {0: 0.0, 1: 0.0, 2: 1.0, 3: 1.0}


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_needs_a_datamodule_with_a_sampler_hook_and_no_other_sampler(tmp_path: Path) -> None:
    dm = _synthetic(sampler=functools.partial(ClassPowerSampler, q=0.5))
    with pytest.raises(ValueError, match="already has a training sampler"):
        _fit(dm, ResamplingSchedule("drs", switch_epoch=1), tmp_path)

    dm = _synthetic()
    dm.setup("fit")
    model = LongTailModule(TinyBackbone(), num_classes=dm.num_classes, class_counts=dm.class_counts)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        callbacks=[ResamplingSchedule("drs", switch_epoch=1)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(ValueError, match="needs a LongTailDataModule"):
        trainer.fit(model, train_dataloaders=dm.train_dataloader())


# ---------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize(
    ("schedule", "num_workers"),
    [("progressive", 0), ("progressive", 2), ("drs", 2)],
)
def test_resume_draws_the_uninterrupted_order(tmp_path: Path, schedule: str, num_workers: int) -> None:
    def make() -> ResamplingSchedule:
        return ResamplingSchedule("drs", switch_epoch=3) if schedule == "drs" else ResamplingSchedule("progressive")

    _, full = _fit(_synthetic(num_workers=num_workers), make(), tmp_path / "full")
    stopped_trainer, stopped = _fit(_synthetic(num_workers=num_workers), make(), tmp_path / "stop", stop_after=2)
    assert sorted(stopped.images) == [0, 1]
    ckpt = tmp_path / "epoch1.ckpt"
    stopped_trainer.save_checkpoint(ckpt)

    resumed_schedule = make()
    resumed_trainer, resumed = _fit(
        _synthetic(num_workers=num_workers), resumed_schedule, tmp_path / "resumed", ckpt_path=str(ckpt)
    )
    assert sorted(resumed.images) == [2, 3]  # only the remaining epochs ran
    for epoch in (2, 3):
        assert torch.equal(resumed.seen(epoch), full.seen(epoch))  # not epoch 0's order (Lightning #21938)
        assert resumed.mixing[epoch] == full.mixing[epoch]
    assert not torch.equal(resumed.seen(2), full.seen(0))
    assert resumed_trainer.current_epoch == 4
    # the schedule's state came back from the checkpoint under its own key, and matched
    assert resumed_schedule.state_key in torch.load(ckpt, weights_only=False)["callbacks"]


def test_resume_with_a_different_schedule_warns(tmp_path: Path) -> None:
    trainer, _ = _fit(_synthetic(), ResamplingSchedule("progressive", total_epochs=4), tmp_path / "a", max_epochs=1)
    ckpt = tmp_path / "a.ckpt"
    trainer.save_checkpoint(ckpt)
    # the same state key (total_epochs=None resolves at setup), another resolved T
    state = torch.load(ckpt, weights_only=False)
    key = ResamplingSchedule("progressive", total_epochs=4).state_key
    state["callbacks"][ResamplingSchedule("progressive").state_key] = state["callbacks"].pop(key)
    torch.save(state, ckpt)
    with pytest.warns(UserWarning, match="resuming with"):
        _fit(_synthetic(), ResamplingSchedule("progressive"), tmp_path / "b", max_epochs=2, ckpt_path=str(ckpt))
