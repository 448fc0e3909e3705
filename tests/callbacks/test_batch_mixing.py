"""``BatchMixing`` through a real ``lightning.Trainer`` on tiny data: training batches mixed, evaluation batches not,
``stop_epoch``, per-step seeding and resume.

What the model sees is recorded by a probe in the module's forward and a pre-hook on the criterion (its input
targets), and compared with :meth:`BatchMixing.mix` re-run from a fresh generator of the same global step.
"""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import Tensor

from lt_lightning.callbacks.batch_mixing import BatchMixing
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.module import LongTailModule
from tests.helpers import SaveMidEpoch, StopAfter, TinyBackbone, assert_equal_states, quiet_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_EPOCHS = 3


def _data() -> SyntheticLTDataModule:
    """3 classes, counts [16, 8, 4], images 3x4x4, batch 8 (4 steps per epoch), no augmentation."""
    args = {"num_classes": 3, "n_max": 16, "imbalance_ratio": 4, "image_size": 4, "batch_size": 8, "seed": 3}
    return SyntheticLTDataModule(**args, augment=False, val_per_class=4)


class ProbeModule(LongTailModule):
    """``LongTailModule`` whose forward reports its input to ``probe`` (a plain attribute: not in hparams)."""

    probe = None

    def forward(self, x: Tensor):
        if self.probe is not None:
            self.probe(x)
        return super().forward(x)


class Record(L.Callback):
    """Per step: the batch, what the model and the loss received; validation inputs; whether a transform is set."""

    def __init__(self) -> None:
        self.steps: dict[int, dict[str, Tensor]] = {}
        self.val_batches: list[Tensor] = []
        self.val_inputs: list[Tensor] = []
        self.transform_set: dict[int, bool] = {}
        self._trainer: L.Trainer | None = None
        self._handle = None

    def _model_input(self, x: Tensor) -> None:
        trainer = self._trainer
        if trainer.training:
            self.steps[trainer.global_step]["x_model"] = x.detach().clone()
        elif trainer.validating and not trainer.sanity_checking:
            self.val_inputs.append(x.detach().clone())

    def _loss_input(self, module, args) -> None:
        self.steps[self._trainer.global_step]["y_loss"] = args[1].detach().clone()

    def on_fit_start(self, trainer, pl_module) -> None:
        self._trainer = trainer
        pl_module.probe = self._model_input
        self._handle = pl_module.criterion.register_forward_pre_hook(self._loss_input)  # default CE: not in hparams

    def on_fit_end(self, trainer, pl_module) -> None:
        pl_module.probe = None
        self._handle.remove()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.steps[trainer.global_step] = {"x": batch[0].detach().clone(), "y": batch[1].detach().clone()}
        self.transform_set[trainer.current_epoch] = pl_module.train_batch_transform is not None

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self.val_batches.append(batch[0].detach().clone())


def _fit(
    callbacks: list[L.Callback], tmp: Path, max_epochs: int = MAX_EPOCHS, ckpt_path: str | None = None
) -> tuple[L.Trainer, ProbeModule, Record]:
    dm = _data()
    L.seed_everything(0, verbose=False)
    model = ProbeModule(TinyBackbone(in_features=48, num_features=4), num_classes=3, class_counts=dm.class_counts)
    record = Record()
    trainer = quiet_trainer(
        tmp, callbacks=[*callbacks, record], max_epochs=max_epochs, num_sanity_val_steps=0, limit_val_batches=1
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
    return trainer, model, record


def _expected(callback: BatchMixing, step: int, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The mix of step ``step`` recomputed from a fresh generator (single process, no accumulation)."""
    return callback.mix(x, y, callback.generator(step, 0, 0), 3, torch.tensor([16.0, 8.0, 4.0]))


# ---------------------------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "manifold"}, "method must be"),
        ({"alpha": 0.0}, "alpha must be a finite number > 0"),
        ({"alpha": -1.0}, "alpha must be a finite number > 0"),
        ({"kappa": 1.0}, "kappa must be"),
        ({"tau": 0.0}, "tau must be"),
        ({"prob": 1.5}, "prob must be"),
        ({"stop_epoch": -1.0}, "stop_epoch"),
        ({"stop_epoch": 1.5}, "stop_epoch"),
        ({"seed": -1}, "seed must be"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BatchMixing(**kwargs)


def test_draws_depend_on_step_micro_batch_and_rank() -> None:
    mixing = BatchMixing("mixup", seed=4)
    draws = {key: mixing.generator(*key).random() for key in [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]}
    assert len(set(draws.values())) == 4  # every DDP rank (and accumulation micro-batch) mixes with its own draws
    assert mixing.generator(7, 0, 1).random() == mixing.generator(7, 0, 1).random()
    assert BatchMixing("mixup", seed=5).generator(0).random() != draws[(0, 0, 0)]


def test_prob_zero_passes_every_batch_unchanged() -> None:
    x, y = torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 2, 0])
    out_x, out_y = BatchMixing("cutmix", prob=0.0).mix(x, y, np.random.default_rng(0), 3, None)
    assert out_x is x and out_y is y


# ---------------------------------------------------------------------------------------------- in a fit
@pytest.mark.parametrize("method", ["mixup", "cutmix", "remix"])
def test_training_batches_are_mixed_and_validation_is_untouched(tmp_path: Path, method: str) -> None:
    mixing = BatchMixing(method, alpha=1.0, seed=2)
    _, model, rec = _fit([mixing], tmp_path, max_epochs=2)
    assert len(rec.steps) == 8
    changed = 0
    for step, seen in rec.steps.items():
        x, y = _expected(BatchMixing(method, alpha=1.0, seed=2), step, seen["x"], seen["y"])
        assert torch.equal(seen["x_model"], x), step
        assert torch.equal(seen["y_loss"], y), step
        assert y.shape == (seen["x"].shape[0], 3) and torch.allclose(y.sum(dim=1), torch.ones(y.shape[0]))
        changed += not torch.equal(seen["x_model"], seen["x"])
    assert changed == len(rec.steps)
    # validation sees its batches as they are
    assert len(rec.val_inputs) == 2
    for batch, seen in zip(rec.val_batches, rec.val_inputs, strict=True):
        assert torch.equal(batch, seen)
    assert model.train_batch_transform is None  # cleared when the fit ends


def test_stop_epoch_turns_mixing_off(tmp_path: Path) -> None:
    trainer, model, rec = _fit([BatchMixing("mixup", stop_epoch=0.5)], tmp_path, max_epochs=2)  # epoch 1 of 2
    assert rec.transform_set == {0: True, 1: False}
    for step, seen in rec.steps.items():
        if step < 4:
            assert seen["y_loss"].ndim == 2
        else:
            assert torch.equal(seen["y_loss"], seen["y"]) and torch.equal(seen["x_model"], seen["x"])
    assert trainer.callback_metrics["batch_mixing/active"] == 0.0


@pytest.mark.parametrize("stop_epoch", [1, 0.5, -1])
def test_stop_epoch_as_epoch_fraction_or_from_the_end_agree(tmp_path: Path, stop_epoch: int | float) -> None:
    mixing = BatchMixing("mixup", stop_epoch=stop_epoch)
    _, _, rec = _fit([mixing], tmp_path, max_epochs=2)
    assert mixing.resolved_stop_epoch == 1 and rec.transform_set == {0: True, 1: False}


def test_stop_epoch_from_the_end_must_leave_a_mixed_epoch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stop_epoch=-2 leaves no epoch with mixing: trainer.max_epochs is 2"):
        _fit([BatchMixing("mixup", stop_epoch=-2)], tmp_path, max_epochs=2)


def test_two_transforms_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="would replace another train_batch_transform"):
        _fit([BatchMixing("mixup"), BatchMixing("cutmix")], tmp_path, max_epochs=1)


# ---------------------------------------------------------------------------------------------- resume
def test_resume_at_an_epoch_boundary_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    _, full, full_rec = _fit([BatchMixing("remix")], tmp_path / "full")
    trainer, _, _ = _fit([BatchMixing("remix"), StopAfter(1)], tmp_path / "a")
    ckpt = tmp_path / "stopped.ckpt"
    trainer.save_checkpoint(ckpt)
    _, resumed, rec = _fit([BatchMixing("remix")], tmp_path / "b", ckpt_path=str(ckpt))
    assert_equal_states(full.state_dict(), resumed.state_dict())
    assert sorted(rec.steps) == list(range(4, 12))
    for step in rec.steps:
        assert torch.equal(rec.steps[step]["x_model"], full_rec.steps[step]["x_model"])
        assert torch.equal(rec.steps[step]["y_loss"], full_rec.steps[step]["y_loss"])


def test_mid_epoch_resume_draws_what_the_uninterrupted_run_drew(tmp_path: Path) -> None:
    # the train loader skips the trained batches of the resumed epoch and BatchMixing's draws depend on the global
    # step only: every resumed step sees the data and the mix of the uninterrupted run's step
    ckpt = tmp_path / "mid.ckpt"
    _, _, full_rec = _fit([BatchMixing("cutmix", seed=1), SaveMidEpoch(1, ckpt, batch_idx=1)], tmp_path / "a")
    saved = copy.deepcopy(torch.load(ckpt, weights_only=False)["global_step"])
    assert saved == 6
    _, _, rec = _fit([BatchMixing("cutmix", seed=1)], tmp_path / "b", ckpt_path=str(ckpt))
    assert sorted(rec.steps) == list(range(6, 12))
    for records in (full_rec, rec):
        for step, seen in records.steps.items():
            x, y = _expected(BatchMixing("cutmix", seed=1), step, seen["x"], seen["y"])
            assert torch.equal(seen["x_model"], x) and torch.equal(seen["y_loss"], y), step
    for step in range(6, 12):
        assert torch.equal(rec.steps[step]["x"], full_rec.steps[step]["x"])
        assert torch.equal(rec.steps[step]["x_model"], full_rec.steps[step]["x_model"])
        assert torch.equal(rec.steps[step]["y_loss"], full_rec.steps[step]["y_loss"])
