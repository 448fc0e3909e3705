"""LIFT composes with the rest of the framework (issue 21): bf16 mixed precision, a test-time rule (post-hoc logit
adjustment as a third ``-c``) and DDP with 2 CPU processes, on Digits-LT with the tiny random CLIP of
``configs/method/digits_lt/lift.yaml``."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("open_clip")

from lt_lightning.cli import run as main
from lt_lightning.experiments import experiment_args
from tests.test_ddp import _cli, _ddp

DIGITS = experiment_args("digits_lt", "lift")
POSTHOC = Path(__file__).resolve().parents[2] / "configs" / "method" / "posthoc_logit_adjust.yaml"
SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def test_lift_in_bf16_with_posthoc_logit_adjustment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = [*DIGITS, "-c", str(POSTHOC), "--trainer.precision", "bf16-mixed"]
    fit = main(["fit", *args, *SHORT, *QUIET])
    assert fit.trainer.state.finished and fit.trainer.precision == "bf16-mixed"
    ckpt = next(tmp_path.rglob("last.ckpt"))
    test = main(["test", *args, "--ckpt_path", str(ckpt), "--trainer.limit_test_batches", "2", *QUIET])
    assert "test/posthoc_tau" in test.trainer.callback_metrics and "test/acc" in test.trainer.callback_metrics


@pytest.mark.ddp
def test_lift_fits_with_two_ddp_processes(tmp_path: Path) -> None:
    _cli(["fit", *DIGITS, *SHORT, *_ddp(2)], tmp_path)
    assert next(tmp_path.rglob("last.ckpt")).is_file()
