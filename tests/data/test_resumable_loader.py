"""Mid-epoch resume is the uninterrupted run: :class:`ResumableDataLoader` skips the trained batches of the resumed
epoch, and each training batch re-seeds the global generators from ``(seed, epoch, batch, rank)`` so the device
augmentation (and any random loss) draws what the uninterrupted run drew."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from lt_lightning.data.resumable import ResumableDataLoader
from lt_lightning.data.samplers import InstanceBalancedSampler
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.module import LongTailModule
from tests.helpers import SaveMidEpoch, TinyBackbone, assert_equal_states


def _synthetic(**kwargs) -> SyntheticLTDataModule:
    """4 classes, 54 training images of 3x4x4, batch 8 (7 batches per epoch), crop + flip augmentation."""
    args = {"num_classes": 4, "n_max": 24, "imbalance_ratio": 4, "image_size": 4, "batch_size": 8, "seed": 3}
    dm = SyntheticLTDataModule(**{**args, **kwargs})
    dm.crop_padding, dm.horizontal_flip = 1, True
    return dm


class RecordSteps(L.Callback):
    """``(epoch, batch_idx) -> (augmented images, labels)`` of every training step."""

    def __init__(self) -> None:
        self.steps: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.steps[(trainer.current_epoch, batch_idx)] = (batch[0].detach().clone(), batch[1].detach().clone())


def _fit(tmp: Path, callbacks=(), ckpt_path: str | None = None, num_workers: int = 0, max_epochs: int = 3):
    L.seed_everything(0, verbose=False)
    dm = _synthetic(num_workers=num_workers)
    model = LongTailModule(TinyBackbone(48, 6), num_classes=dm.num_classes, class_counts=dm.class_counts)
    recorder = RecordSteps()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        callbacks=[recorder, *callbacks],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
    return trainer, model, recorder


@pytest.mark.parametrize(("epoch", "batch_idx"), [(1, 2), (0, 0), (1, 6), (2, 5)])
def test_resume_mid_epoch_is_the_uninterrupted_run(tmp_path: Path, epoch: int, batch_idx: int) -> None:
    ckpt = tmp_path / "mid.ckpt"
    full_trainer, full_model, full = _fit(tmp_path / "a", [SaveMidEpoch(epoch, ckpt, batch_idx)])
    trainer, model, resumed = _fit(tmp_path / "b", ckpt_path=str(ckpt))
    per_epoch = 7
    if batch_idx + 1 < per_epoch:  # resumed within the epoch: the next batch, not the epoch's first
        assert min(resumed.steps) == (epoch, batch_idx + 1)
    else:  # the last batch: the next epoch from its beginning
        assert min(resumed.steps) == (epoch + 1, 0)
    assert len(resumed.steps) == 3 * per_epoch - (epoch * per_epoch + batch_idx + 1)
    for key, (images, labels) in resumed.steps.items():
        assert torch.equal(labels, full.steps[key][1]), key  # the sampled order
        assert torch.equal(images, full.steps[key][0]), key  # the augmentation draws
    assert_equal_states(model.state_dict(), full_model.state_dict())  # bit-identical weights
    assert trainer.global_step == full_trainer.global_step
    assert "val/acc" in trainer.callback_metrics
    for name, value in full_trainer.callback_metrics.items():  # the logged metrics of the last epoch
        assert torch.allclose(trainer.callback_metrics[name], value, rtol=0, atol=0, equal_nan=True), name  # exact


def test_resume_mid_epoch_with_worker_processes(tmp_path: Path) -> None:
    ckpt = tmp_path / "mid.ckpt"
    _, full_model, full = _fit(tmp_path / "a", [SaveMidEpoch(1, ckpt, 3)], num_workers=2, max_epochs=2)
    _, model, resumed = _fit(tmp_path / "b", ckpt_path=str(ckpt), num_workers=2, max_epochs=2)
    assert min(resumed.steps) == (1, 4)
    for key, (images, labels) in resumed.steps.items():
        assert torch.equal(labels, full.steps[key][1]) and torch.equal(images, full.steps[key][0]), key
    assert_equal_states(model.state_dict(), full_model.state_dict())


def test_augmentation_draws_differ_across_steps_and_epochs(tmp_path: Path) -> None:
    _, _, rec = _fit(tmp_path, max_epochs=2)
    dm = _synthetic()
    dm.setup("fit")
    sampler = InstanceBalancedSampler(dm.train_labels, seed=dm.seed)
    plain = dm.augmentation(dm.train_dataset.images[sampler.global_indices(0)[:8]])
    assert not torch.equal(rec.steps[(0, 0)][0], plain)  # augmented
    assert not torch.equal(rec.steps[(0, 0)][0], rec.steps[(0, 1)][0][: plain.shape[0]])


def _loader(batch_size: int = 8) -> ResumableDataLoader:
    sampler = InstanceBalancedSampler(torch.arange(20) % 3, seed=1)
    sampler.set_epoch(4)
    return ResumableDataLoader(range(20), batch_size=batch_size, sampler=sampler)


def test_loader_state_skips_the_trained_batches_of_its_epoch_only() -> None:
    loader = _loader()
    loader.progress = lambda: 1
    state = loader.state_dict()
    assert state == {"epoch": 4, "batches": 1, "batch_size": 8, "num_batches": 3}
    order = InstanceBalancedSampler(torch.arange(20) % 3, seed=1).global_indices(4).tolist()
    fresh = _loader()
    fresh.load_state_dict(state)
    assert torch.cat(list(fresh)).tolist() == order[8:]
    assert torch.cat(list(fresh)).tolist() == order  # one-shot: the next pass is whole again
    other_epoch = _loader()
    other_epoch.load_state_dict(state)
    other_epoch.sampler.set_epoch(5)  # the checkpoint's epoch was finished: nothing is skipped in the next one
    assert len(torch.cat(list(other_epoch))) == 20


@pytest.mark.parametrize("batches", [0, 3])
def test_loader_state_at_an_epoch_boundary_skips_nothing_and_allows_another_batch_size(batches: int) -> None:
    loader = _loader(batch_size=4)
    loader.load_state_dict({"epoch": 4, "batches": batches, "batch_size": 8, "num_batches": 3})
    assert len(torch.cat(list(loader))) == 20


def test_loader_refuses_a_mid_epoch_resume_with_another_batch_size() -> None:
    with pytest.raises(ValueError, match="had batch_size 8, this one has 4: a mid-epoch resume cannot skip the 1"):
        _loader(batch_size=4).load_state_dict({"epoch": 4, "batches": 1, "batch_size": 8, "num_batches": 3})


def test_sampler_skip_must_be_a_count() -> None:
    with pytest.raises(ValueError, match="skip must be an integer >= 0"):
        InstanceBalancedSampler(torch.arange(4)).resume_within_epoch(0, -1)
