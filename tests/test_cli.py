"""The `lt-lightning` command line end to end: quick start fit -> test, the report, checkpoints, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lt_lightning.cli import run as main
from lt_lightning.experiments import experiment_args
from lt_lightning.module import LongTailModule

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


@pytest.fixture
def quickstart_fit(tmp_path, monkeypatch):
    """`lt-lightning fit -c configs/quickstart.yaml` shortened to 2 epochs of 4 batches, in a temporary directory."""
    monkeypatch.chdir(tmp_path)
    args = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "4", "--trainer.enable_progress_bar", "false"]
    cli = main(["fit", "-c", str(QUICKSTART), *args])
    return cli, tmp_path


def test_quickstart_fit_then_test_prints_shot_metrics_and_writes_the_plot(quickstart_fit, capsys) -> None:
    fit_cli, tmp_path = quickstart_fit
    ckpt = tmp_path / "logs" / "quickstart" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    assert (tmp_path / "logs" / "quickstart" / "version_0" / "metrics.csv").is_file()
    assert list((tmp_path / "logs" / "quickstart" / "tensorboard").glob("version_0/events.out.tfevents.*"))
    assert "val/acc_few" in fit_cli.trainer.callback_metrics
    capsys.readouterr()

    test_cli = main(["test", "-c", str(QUICKSTART), "--ckpt_path", str(ckpt)])
    out = capsys.readouterr().out
    for key in ("test/acc", "test/acc_many", "test/acc_medium", "test/acc_few"):
        assert key in out
        assert key in test_cli.trainer.callback_metrics
    for row in ("many-shot", "medium-shot", "few-shot"):
        assert row in out.lower().replace(" ", "-") or row.replace("-", " ") in out.lower()
    log_dir = Path(test_cli.trainer.log_dir)
    assert (log_dir / "per_class_accuracy.png").stat().st_size > 1000
    assert (log_dir / "per_class_accuracy.json").is_file()


def test_cli_checkpoint_loads_with_defaults_and_predicts_the_same(quickstart_fit) -> None:
    cli, tmp_path = quickstart_fit
    ckpt = tmp_path / "logs" / "quickstart" / "checkpoints" / "last.ckpt"
    loaded = LongTailModule.load_from_checkpoint(ckpt)  # the CLI saves its YAML config: weights_only=True works
    assert loaded.hparams["num_classes"] == 10
    assert torch.equal(loaded.class_counts, cli.model.class_counts)
    dm = cli.datamodule
    dm.setup("test")
    x = dm.augmentation(dm.test_dataset.images[:64])
    cli.model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(cli.model(x).logits, loaded(x).logits)


def test_class_prior_is_linked_from_the_datamodule(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = main(
        ["fit", "-c", str(QUICKSTART), "--data.init_args.imbalance_ratio", "5", "--trainer.fast_dev_run", "true"]
    )
    assert cli.model.class_counts.tolist() == cli.datamodule.class_counts
    assert cli.datamodule.class_counts[0] / cli.datamodule.class_counts[-1] == pytest.approx(5, rel=0.1)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--data.init_args.imbalance_ratio", "0"], "imbalance_ratio must be positive"),
        (["--data.init_args.imbalance_ratio", "-3"], "imbalance_ratio must be positive"),
        (["--data.init_args.batch_size", "0"], "batch_size must be >= 1"),
    ],
)
def test_bad_values_from_the_command_line_give_a_clear_error(tmp_path, monkeypatch, override, message) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        main(["fit", "-c", str(QUICKSTART), *override, "--trainer.fast_dev_run", "true"])


def test_missing_cifar_root_names_the_path_and_how_to_get_it(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = experiment_args("cifar10_lt", "ce")
    # jsonargparse re-raises instantiation errors as ValueError with the original message inside
    with pytest.raises((FileNotFoundError, ValueError), match=r"cifar-10-batches-py.*(download|make_cifar10)"):
        main(
            [
                "fit",
                *config,
                "--data.init_args.root",
                str(tmp_path / "nowhere"),
                "--trainer.fast_dev_run",
                "1",
            ]
        )


def test_console_script_shows_help() -> None:
    """The console script's help (``python -m lt_lightning`` is the entry of every DDP and study subprocess test)."""
    script = Path(sys.executable).with_name("lt-lightning")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "lt_lightning"]
    out = subprocess.run([*cmd, "test", "--help"], capture_output=True, text=True, check=True)
    assert "--test_report.enabled" in out.stdout


def test_console_script_exits_with_status_zero(tmp_path) -> None:
    """`lt-lightning fit ... && lt-lightning test ...` (the README's quick start) needs exit status 0."""
    script = Path(sys.executable).with_name("lt-lightning")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "lt_lightning"]
    args = ["fit", "-c", str(QUICKSTART), "--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false"]
    proc = subprocess.run([*cmd, *args], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LongTailCLI object" not in proc.stdout


def test_posthoc_logit_adjustment_config_fit_then_test(tmp_path, monkeypatch) -> None:
    """`test` with the post-hoc LA config sweeps tau on the validation set and logs the chosen tau."""
    monkeypatch.chdir(tmp_path)
    config = experiment_args("digits_lt", "posthoc_logit_adjust")
    fast = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--trainer.enable_progress_bar", "false"]
    fit = main(["fit", *config, *fast])
    ckpt = fit.trainer.checkpoint_callback.last_model_path
    test = main(["test", *config, "--ckpt_path", ckpt, "--trainer.enable_progress_bar", "false"])
    assert "test/posthoc_tau" in test.trainer.callback_metrics
    assert (Path(test.trainer.log_dir) / "posthoc_tau_sweep.json").is_file()


def test_an_interrupted_fit_exits_non_zero(tmp_path, monkeypatch) -> None:
    # Lightning 2.6 shuts down "gracefully" on Ctrl-C (and SIGTERM) and exits with status 1: the study and scripts
    # rely on it never to take a half-trained checkpoint for a finished run
    monkeypatch.chdir(tmp_path)
    args = ["fit", "-c", str(QUICKSTART), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3"]
    args += ["--trainer.limit_val_batches", "1", "--trainer.callbacks+=tests.helpers.InterruptAt"]
    args += ["--trainer.callbacks.step", "2", "--trainer.enable_progress_bar", "false"]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 1
