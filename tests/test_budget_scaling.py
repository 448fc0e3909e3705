"""A budget change rescales the whole recipe: ``--trainer.max_epochs N`` through the real CLI, one test per kind of
schedule (LR warm-up and milestones, cosine, DRW / DRS switch, progressive sampling, classifier stage, mixing stop,
BBN's alpha, expert-router stage, SSP pre-training, distillation teacher), and an absolute epoch beyond the run is an
error, never a silent no-op.

The configs write their schedules as fractions of the run (``lt_lightning.schedule``); each test reads the epochs
the fit resolved from the objects the CLI built.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lt_lightning.callbacks import (
    ClassifierRetraining,
    CumulativeLearning,
    DeferredReweighting,
    ResamplingSchedule,
)
from lt_lightning.callbacks.batch_mixing import BatchMixing
from lt_lightning.callbacks.expert_router_training import ExpertRouterTraining
from lt_lightning.cli import run as main
from lt_lightning.experiments import experiment_args
from lt_lightning.optim import WarmupCosineLR, WarmupMultiStepLR

REPO = Path(__file__).resolve().parents[1]
SHORT = [
    "--trainer.limit_train_batches=1",
    "--trainer.limit_val_batches=0",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.accelerator=cpu",
]


def fit(config: Path | str, epochs: int, *extra: str):
    """Fit a stand-alone config file, or a Digits-LT method by name, for ``epochs`` epochs."""
    files = ["-c", str(config)] if isinstance(config, Path) else experiment_args("digits_lt", config)
    return main(["fit", *files, f"--trainer.max_epochs={epochs}", *SHORT, *extra])


def callback(cli, kind: type):
    found = [c for c in cli.trainer.callbacks if isinstance(c, kind)]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)  # the configs log under ./logs
    return tmp_path


def test_ldam_drw_lr_schedule_and_drw_switch_follow_the_budget(in_tmp, tiny_cifar10) -> None:
    cli = main(
        ["fit", *experiment_args("cifar10_lt", "ldam_drw"), "--trainer.max_epochs=10", *SHORT]
        + [f"--data.init_args.root={tiny_cifar10}"]
    )
    scheduler = cli.trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(scheduler, WarmupMultiStepLR)
    assert (scheduler.warmup_epochs, scheduler.milestones) == (1, [8, 9])  # 5, [160, 180] of 200 scaled x0.05
    assert callback(cli, DeferredReweighting).resolved_switch_epoch == 8  # 160 of 200
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.0001)  # x0.0001 from epoch 9


def test_cosine_spans_the_run(in_tmp) -> None:
    cli = fit(REPO / "configs" / "quickstart.yaml", 4)
    scheduler = cli.trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(scheduler, WarmupCosineLR)
    assert (scheduler.max_epochs, scheduler.warmup_epochs) == (4, 1)
    # the last epoch (3) of a cosine over 4 epochs after 1 warm-up epoch: eta_min + (lr - eta_min)(1 + cos(2π/3))/2
    assert scheduler.lr_at(0.05, 3) == pytest.approx(0.05 * 0.5 * (1 + math.cos(2 * math.pi / 3)))
    assert scheduler.get_last_lr()[0] == 0.0  # annealed to eta_min at the end of the run


@pytest.mark.parametrize(("config", "epoch"), [("drs.yaml", 8), ("remix.yaml", 8)])
def test_deferred_switches_follow_the_budget(in_tmp, config, epoch) -> None:
    cli = fit(config.removesuffix(".yaml"), 10)
    kind = ResamplingSchedule if config == "drs.yaml" else DeferredReweighting
    assert callback(cli, kind).resolved_switch_epoch == epoch


def test_progressive_sampling_and_bbn_alpha_follow_the_budget(in_tmp) -> None:
    assert callback(fit("progressive", 5), ResamplingSchedule)._resolved_total == 5
    assert callback(fit("bbn", 5), CumulativeLearning)._resolved_total == 5


def test_classifier_stage_and_stage_one_cosine_follow_the_budget(in_tmp) -> None:
    # crt.yaml: 30 + 10 of 40 epochs; at 20 epochs: 15 + 5, the stage-1 cosine over the first 15
    cli = fit("crt", 20)
    stage = callback(cli, ClassifierRetraining)
    assert stage.resolved_start_epoch == 15 and stage.active


def test_mixup_stops_where_the_mislas_stage_starts(in_tmp) -> None:
    cli = fit("mislas", 8)
    start = callback(cli, ClassifierRetraining).resolved_start_epoch
    assert start == 6  # the last 0.25 of 8 epochs
    assert callback(cli, BatchMixing).resolved_stop_epoch == start


def test_router_stage_and_ride_drw_follow_the_budget(in_tmp) -> None:
    cli = fit("ride_router", 20)  # 30 + 5 of 35 epochs, DRW at 24
    assert callback(cli, ExpertRouterTraining).resolved_start_epoch == 17
    assert callback(cli, DeferredReweighting).resolved_switch_epoch == 14


@pytest.mark.parametrize("config", ["ssp.yaml", "distill.yaml"])
def test_pre_stage_follows_the_budget(in_tmp, config) -> None:
    fit(config.removesuffix(".yaml"), 3)
    (checkpoint,) = (in_tmp / "logs" / "prestages").glob("*/checkpoints/last.ckpt")
    assert torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"] == 2  # 3 epochs, like the fit


def test_an_absolute_milestone_beyond_the_run_is_an_error(in_tmp, tiny_cifar10) -> None:
    with pytest.raises(ValueError, match=r"milestones=160 is at or beyond the end of a run of trainer.max_epochs=10"):
        main(
            ["fit", *experiment_args("cifar10_lt", "ce"), "--trainer.max_epochs=10", *SHORT]
            + [
                f"--data.init_args.root={tiny_cifar10}",
                "--model.init_args.lr_scheduler.init_args.milestones=[160, 180]",
            ]
        )
