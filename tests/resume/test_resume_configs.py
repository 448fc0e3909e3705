"""Resume conformance over every Digits-LT experiment config (discovered: a new config joins without new code).

For each Digits-LT experiment (``-c configs/data/digits_lt.yaml -c <method config>``),
shortened to 2 training batches per epoch and 26 fewer epochs (a
two-stage config keeps its stage 2), the real CLI instantiates the run and one uninterrupted fit writes checkpoints
at the stop points:

* ``mid-epoch``: after the first batch of epoch 1;
* ``boundary``: at the end of epoch 1 (after its last batch, before epoch 2 starts);
* ``switch-E``: after the first batch of every epoch ``E`` where the training set-up changed -- detected, not
  declared: the training criterion (class and buffers: DRW's weights), the trainable parameters (a frozen
  backbone), the classifier, the batch transform (mixing on/off), the sampler's draw rule or BBN's α differ from the
  previous epoch's (at most the first two such epochs; BBN's α and progressive sampling change every epoch).

A fresh CLI resumes from each (``ckpt_path``) and must end with bit-identical weights and buffers, the same
labels in the same order in every batch it trained, and the same logged validation metrics and training loss (its
epoch mean included). The configs outside :data:`IN_CI` are marked ``slow`` and run with ``LT_LIGHTNING_SLOW=1``
(the whole sweep: ``LT_LIGHTNING_SLOW=1 pytest tests/resume``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import lightning as L
import pytest
import torch

from lt_lightning.cli import LongTailCLI
from lt_lightning.experiments import experiment_args, experiment_configs, methods
from tests.helpers import assert_equal_states, composed_yaml

REPO = Path(__file__).resolve().parents[2]
CONFIGS = methods("digits_lt")  # by name: -c configs/data/digits_lt.yaml -c <method config>
#: one config per kind of schedule switch, run in CI (the rest are ``slow``)
IN_CI = {
    "ce",  # plain: mid-epoch and boundary
    "ldam_drw",  # deferred re-weighting switch
    "drs",  # deferred re-sampling: the sampler switches
    "crt",  # classifier re-training in the fit: frozen backbone, new head, class-balanced sampler
    "mislas",  # mixup stops, then LWS fine-tuning with label-aware smoothing
    "bbn",  # cumulative learning: alpha every epoch, bilateral sampler
    "paco",  # momentum encoder and queue in the callback state
    "sade",  # multi-expert losses
    "weight_balancing",  # a classifier variant with checkpointed state (the MaxNorm threshold), projected per epoch
    "proco",  # per-class vMF statistics in loss buffers, and their epoch in loss buffers, swapped at each epoch start
}
SLOW = os.environ.get("LT_LIGHTNING_SLOW") == "1"
BATCHES = 2


def _params():
    for config in CONFIGS:
        marks = [] if config in IN_CI else [pytest.mark.slow]
        if config not in IN_CI and not SLOW:
            marks.append(pytest.mark.skip(reason="slow: LT_LIGHTNING_SLOW=1 runs every config"))
        yield pytest.param(config, id=config, marks=marks)


def _short_epochs(config: str) -> int:
    epochs = int(composed_yaml(experiment_configs("digits_lt", config))["trainer"]["max_epochs"])
    return max(epochs - 26, 4)


class RecordBatches(L.Callback):
    """``(epoch, batch_idx) -> labels`` of every training batch, and a signature of the training set-up per epoch."""

    def __init__(self) -> None:
        self.labels: dict[tuple[int, int], torch.Tensor] = {}
        self.setup_signature: dict[int, str] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.labels[(trainer.current_epoch, batch_idx)] = batch[1].detach().clone()
        if batch_idx == 0:
            self.setup_signature[trainer.current_epoch] = _signature(trainer, pl_module)


def _signature(trainer: L.Trainer, module) -> str:
    """What a schedule switch changes (not the learning rate, which most schedules change every epoch)."""
    digest = hashlib.sha256()
    criterion = getattr(module, "training_criterion", None) or getattr(module, "criterion", None)
    parts = [type(criterion).__name__, type(getattr(module, "classifier", None)).__name__]
    parts.append(str(getattr(module, "train_batch_transform", None) is not None))
    parts.append(",".join(n for n, p in module.named_parameters() if p.requires_grad))
    parts.append(str(getattr(criterion, "alpha", None)))  # BBN's cumulative-learning alpha
    sampler = getattr(trainer.train_dataloader, "sampler", None)
    stage = getattr(sampler, "stage_sampler", None)
    parts.append(type(stage() if callable(stage) else sampler).__name__)
    digest.update("|".join(parts).encode())
    probabilities = getattr(sampler, "class_probabilities", None)  # DRS / progressive: p_c(epoch)
    if callable(probabilities):
        digest.update(probabilities(trainer.current_epoch).numpy().tobytes())
    if isinstance(criterion, torch.nn.Module):
        for tensor in criterion.state_dict().values():
            digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


class SaveAt(L.Callback):
    """Write ``<directory>/<name>.ckpt`` after batch ``index`` of ``epoch`` for each ``(name, epoch, index)``."""

    def __init__(self, directory: Path, points: list[tuple[str, int, int]]) -> None:
        self.directory, self.points = directory, points

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for name, epoch, index in self.points:
            if trainer.current_epoch == epoch and batch_idx == index:
                trainer.save_checkpoint(self.directory / f"{name}.ckpt")


def _shorten_prestages(trainer: L.Trainer, tmp: Path) -> None:
    """A teacher or pre-training fitted within the command: 1 epoch of 2 batches, in this test's folder."""
    short = ["--trainer.max_epochs=1", f"--trainer.limit_train_batches={BATCHES}", "--trainer.limit_val_batches=1"]
    for callback in trainer.callbacks:
        for name in ("args", "teacher_args"):
            if isinstance(getattr(callback, name, None), list) and hasattr(callback, "prestage_dir"):
                setattr(callback, name, [*getattr(callback, name), *short])
                callback.prestage_dir = str(tmp / "prestages")


def _cli(config: str, tmp: Path, epochs: int) -> LongTailCLI:
    args = [
        *experiment_args("digits_lt", config),
        f"--trainer.max_epochs={epochs}",
        f"--trainer.limit_train_batches={BATCHES}",
        "--trainer.limit_val_batches=1",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={tmp}",
    ]
    return LongTailCLI(args=args, run=False)


def _fit(config: str, tmp: Path, epochs: int, extra=(), ckpt_path: str | None = None):
    cli = _cli(config, tmp, epochs)
    recorder = RecordBatches()
    cli.trainer.callbacks.extend([recorder, *extra])
    _shorten_prestages(cli.trainer, tmp)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path, weights_only=False)
    return cli.trainer, cli.model, recorder


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("config", _params())
def test_resume_from_every_stop_point_is_the_uninterrupted_run(config: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # ModelCheckpoint dirs, pre-stages and logs stay in the test's folder
    epochs = _short_epochs(config)
    # a first uninterrupted run finds the switches, a second writes the checkpoints (same run, same numbers)
    _, probe_model, probe = _fit(config, tmp_path / "probe", epochs)
    signatures = [probe.setup_signature[e] for e in range(epochs)]
    switches = [e for e in range(1, epochs) if signatures[e] != signatures[e - 1]][:2]
    points = [("mid-epoch", 1, 0), ("boundary", 1, BATCHES - 1)] + [(f"switch-{e}", e, 0) for e in switches]
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    full_trainer, full_model, full = _fit(config, tmp_path / "full", epochs, [SaveAt(ckpts, points)])
    assert_equal_states(full_model.state_dict(), probe_model.state_dict())  # the run is deterministic on CPU
    for name, epoch, index in points:
        trainer, model, resumed = _fit(config, tmp_path / name, epochs, ckpt_path=str(ckpts / f"{name}.ckpt"))
        first = (epoch, index + 1) if index + 1 < BATCHES else (epoch + 1, 0)
        assert min(resumed.labels) == first, name
        assert len(resumed.labels) == epochs * BATCHES - (epoch * BATCHES + index + 1), name
        for key, labels in resumed.labels.items():
            assert torch.equal(labels, full.labels[key]), (name, key)  # the sampled order
        assert_equal_states(model.state_dict(), full_model.state_dict())
        for metric, value in full_trainer.callback_metrics.items():
            if metric.startswith(("val/", "train/loss")):
                assert torch.allclose(trainer.callback_metrics[metric], value, rtol=0, atol=0, equal_nan=True), (
                    name,
                    metric,
                )
