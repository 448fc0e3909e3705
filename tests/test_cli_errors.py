"""`lt-lightning` errors (issue 18): a few lines naming the message and the option, not tracebacks; discoverability.

Each case failed before the fix: a constructor ``ValueError`` printed a 74-116-line double traceback with a Namespace
dump, a 1-channel backbone on RGB data failed inside the first convolution (a 151-line traceback), a text file as
``--ckpt_path`` gave ``KeyError: 101``, ``--trainer.accelerator gpu`` without a GPU ``MisconfigurationException: No
supported gpu backend found!`` with its traceback, ``--help`` did not list ``study``, ``--version`` was an unknown
argument, the progress bar showed no validation accuracy and ``study --help`` printed reStructuredText markup.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import RichProgressBar
from torch import nn

from lt_lightning.cli import main, run
from lt_lightning.cli_errors import (
    backbone_in_channels,
    check_channels,
    check_checkpoint_file,
    data_channels,
    short_error,
)
from lt_lightning.experiments import experiment_args

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
FOCAL = experiment_args("digits_lt", "focal")
CIFAR_CE = experiment_args("cifar10_lt", "ce")
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.logger", "false"]


def _short_exit(capsys, args: list[str]) -> str:
    """Run ``main(args)``, expect exit status 1, return stderr from its ``error:`` line on."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Namespace(" not in err, err
    assert "error: " in err, err
    return err[err.index("error: ") :]


# ---------------------------------------------------------------------------------------------- constructor errors
@pytest.mark.parametrize(
    ("config", "override", "message", "option"),
    [
        (
            FOCAL,
            ["--model.init_args.criterion.init_args.gamma", "-1"],
            "gamma must be a finite number >= 0, got -1.0",
            "option: --model.init_args.criterion.init_args.gamma (lt_lightning.losses.focal.FocalLoss)",
        ),
        (
            ["-c", QUICKSTART],
            ["--data.init_args.imbalance_ratio", "0"],
            "imbalance_ratio must be positive",
            "option: --data.init_args.imbalance_ratio (lt_lightning.data.digits.DigitsLTDataModule)",
        ),
    ],
)
def test_a_constructor_error_is_a_few_lines_with_its_option(
    tmp_path, monkeypatch, capsys, config, override, message, option
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LT_LIGHTNING_DEBUG", raising=False)
    err = _short_exit(capsys, ["fit", *config, *override, *QUIET])
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: ") and message in lines[0]
    assert lines[1].strip() == option
    assert "--debug" in lines[-1] and "LT_LIGHTNING_DEBUG=1" in lines[-1]
    assert len(lines) == 3


def test_debug_flag_and_environment_keep_the_traceback(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["fit", *FOCAL, "--model.init_args.criterion.init_args.gamma", "-1", *QUIET]
    with pytest.raises(ValueError, match="gamma must be a finite number"):
        main([*args, "--debug"])  # the flag is taken out before parsing (jsonargparse would refuse it)
    monkeypatch.setenv("LT_LIGHTNING_DEBUG", "1")
    with pytest.raises(ValueError, match="gamma must be a finite number"):
        main(args)
    with pytest.raises(ValueError, match="gamma must be a finite number"):
        run(args)  # Python callers always get the exception


def test_console_script_prints_the_short_error_and_exits_non_zero(tmp_path) -> None:
    script = Path(sys.executable).with_name("lt-lightning")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "lt_lightning"]
    env = {k: v for k, v in os.environ.items() if k != "LT_LIGHTNING_DEBUG"}
    args = ["fit", *FOCAL, "--model.init_args.criterion.init_args.gamma", "-1", *QUIET]
    proc = subprocess.run([*cmd, *args], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "Namespace(" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 4, proc.stderr  # "Seed set to 0" + the three lines
    assert "option: --model.init_args.criterion.init_args.gamma" in proc.stderr


def test_short_error_of_an_error_without_option() -> None:
    text = short_error(ValueError("bad thing"))
    assert text.splitlines()[0] == "error: bad thing" and len(text.splitlines()) == 2


def test_only_errors_of_the_input_are_shortened() -> None:
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from lt_lightning.cli_errors import OPTION_ATTRIBUTE, is_user_error

    assert is_user_error(ValueError("x")) and is_user_error(FileNotFoundError("x"))
    assert is_user_error(MisconfigurationException("x"))
    assert not is_user_error(RuntimeError("x")) and not is_user_error(KeyError(101))  # bugs keep their traceback
    built = TypeError("x")
    setattr(built, OPTION_ATTRIBUTE, "model.init_args.backbone (B)")  # raised by a class of the config
    assert is_user_error(built)


# ---------------------------------------------------------------------------------------------- channel mismatch
def test_a_one_channel_backbone_on_rgb_data_stops_before_training(tmp_path, monkeypatch, capsys, tiny_cifar10) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["fit", "-c", QUICKSTART, "--data.class_path", "lt_lightning.data.cifar.CIFAR10LTDataModule"]
    args += ["--data.init_args.root", str(tiny_cifar10), *QUIET]
    with pytest.raises(ValueError, match="channel mismatch") as error:
        run(args)
    message = str(error.value)
    assert "in_channels=1" in message and "gives 3-channel images" in message
    assert "--model.init_args.backbone.init_args.in_channels 3" in message
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing trained
    err = _short_exit(capsys, args)
    assert err.startswith("error: channel mismatch") and len(err.strip().splitlines()) == 2


def test_a_digits_checkpoint_tested_with_a_cifar_config_names_the_checkpoint(
    tmp_path, monkeypatch, tiny_cifar10
) -> None:
    monkeypatch.chdir(tmp_path)
    fit = ["fit", "-c", QUICKSTART, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1"]
    fit += ["--trainer.limit_val_batches", "0", *QUIET]
    cli = run(fit)
    ckpt = cli.trainer.checkpoint_callback.last_model_path
    assert Path(ckpt).is_file()
    with pytest.raises(ValueError, match="channel mismatch") as error:
        run(["test", *CIFAR_CE, "--data.init_args.root", str(tiny_cifar10), "--ckpt_path", ckpt, *QUIET])
    message = str(error.value)
    assert "in_channels=1" in message and "3-channel" in message and f"--ckpt_path {ckpt}" in message
    assert "trained on 1-channel images" in message


class _Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)


class _Data:
    mean = (0.5, 0.5, 0.5)


def test_channel_helpers() -> None:
    from lt_lightning.backbones.resnet_cifar import ResNet20

    assert backbone_in_channels(ResNet20(in_channels=1)) == 1
    assert backbone_in_channels(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1))) == 3  # the first Conv2d
    assert backbone_in_channels(_Flat()) is None  # flat features: nothing to check
    assert data_channels(_Data()) == 3
    data = _Data()
    data.channels = 1  # an explicit attribute wins over the mean
    assert data_channels(data) == 1

    class Model(nn.Module):
        def __init__(self, backbone: nn.Module) -> None:
            super().__init__()
            self.backbone = backbone

    check_channels(Model(ResNet20(in_channels=3)), _Data())  # equal: no error
    check_channels(Model(_Flat()), _Data())  # unknown: no error
    with pytest.raises(ValueError, match=r"in_channels=1\) but the data \(_Data\) gives 3-channel"):
        check_channels(Model(ResNet20(in_channels=1)), _Data())


# ---------------------------------------------------------------------------------------------- ckpt_path, accelerator
@pytest.mark.parametrize("content", [b"hello world\n", b""])
def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path, monkeypatch, capsys, content) -> None:
    monkeypatch.chdir(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(content)
    err = _short_exit(capsys, ["test", "-c", QUICKSTART, "--ckpt_path", str(notes), *QUIET])
    lines = err.strip().splitlines()
    assert len(lines) == 2 and f"--ckpt_path {notes} is not a checkpoint" in lines[0]
    assert "KeyError" not in err


def test_checkpoint_magic_accepts_torch_save_files(tmp_path) -> None:
    path = tmp_path / "x.ckpt"
    torch.save({"a": 1}, path)
    check_checkpoint_file(str(path))  # a zip archive
    torch.save({"a": 1}, path, _use_new_zipfile_serialization=False)
    check_checkpoint_file(str(path))  # the legacy pickle


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="this machine has a GPU")
def test_gpu_accelerator_without_a_gpu_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    err = _short_exit(capsys, ["fit", "-c", QUICKSTART, "--trainer.accelerator", "gpu", *QUIET])
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("error: --trainer.accelerator gpu: this machine has no GPU")
    assert "--trainer.accelerator cpu" in lines[0]


# ---------------------------------------------------------------------------------------------- discoverability
def test_help_lists_study_and_version_prints_the_versions(capsys) -> None:
    import lightning

    from lt_lightning import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "{fit,validate,test,predict,study}" in out
    assert "study" in out.split("Available subcommands:")[1] and "empirical study" in out
    assert "--debug" in out and "--version" in out
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"lt-lightning {__version__} (torch {torch.__version__}, lightning {lightning.__version__}")
    with pytest.raises(ValueError, match="study is a command of its own"):
        run(["study"])


def test_study_help_is_plain_text(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["study", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":mod:" not in out and ":class:" not in out and ":func:" not in out
    assert "lt_lightning.study.grid" in out and "SLURM array (each task one shard" in out
    assert "--extra trainer.max_epochs=2 trainer.accelerator=gpu --report-dir X" in out


def test_plain_text_of_rst() -> None:
    from lt_lightning.study.cli import plain_text

    rst = "a ``b`` :mod:`c.d` :class:`~e.F` :func:`g <h.i>` example::"
    assert plain_text(rst) == "a b c.d F g example:"


def test_fit_progress_bar_shows_validation_accuracy(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["fit", "-c", QUICKSTART, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
    args += ["--trainer.limit_val_batches", "1", "--trainer.logger", "false"]
    cli = run(args)
    shown = cli.trainer.progress_bar_metrics
    assert {"val/acc", "val/acc_balanced"} <= set(shown)
    assert not {"val/acc_many", "val/acc_medium", "val/acc_few"} & set(shown)
    bar = next(c for c in cli.trainer.callbacks if isinstance(c, RichProgressBar))
    metrics = bar.get_metrics(cli.trainer, cli.model)
    assert metrics["val/acc"] == pytest.approx(float(cli.trainer.callback_metrics["val/acc"]))
    assert "val/acc_balanced" in metrics
