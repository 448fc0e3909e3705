"""Run an earlier training stage (a distillation teacher, a self-supervised pre-training) within the same command.

A method that needs the checkpoint of another fit (knowledge distillation needs a teacher; SSP needs a pretext
model) takes either that checkpoint or the config of the earlier stage. Given a config, :func:`run_prestage` fits
it with the ordinary ``lt-lightning fit`` path in a subprocess (so its trainer, seed and loggers are its own) and
returns the path of its ``last.ckpt``:

* the stage's folder is ``<directory>/<config stem>-<hash>``, the hash over the config file's text and the extra
  arguments: running the same command again, or resuming the main fit, finds the finished stage and reuses it;
* under DDP only global rank 0 runs the stage; the other processes wait for its ``done`` marker (a file, not a
  collective, so a stage longer than the process group's timeout is fine), then all meet at a barrier. The folder
  must be on a filesystem every process sees (multi-node: a shared one);
* a main fit under ``fast_dev_run`` runs the stage for one training step (``max_steps=1``), enough to test the
  wiring on a clean checkout;
* the stage follows the main fit's budget: :func:`budget_arguments` gives it ``relative_epochs ·
  trainer.max_epochs`` epochs (SSP pre-trains 200 epochs before a 200-epoch fit, 10 before a 10-epoch budget), and
  the stage config's schedules, written as fractions of the run, scale with it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.utilities import rank_zero_info

from lt_lightning._checks import check_float


def resolve_config(config: str | Path) -> Path:
    """``config`` as given (relative to the working directory), else relative to the lt_lightning checkout (so
    ``configs/...`` paths in shipped configs work from any directory)."""
    path = Path(config).expanduser()
    if path.is_file():
        return path
    in_checkout = Path(__file__).resolve().parents[2] / path
    if not path.is_absolute() and in_checkout.is_file():
        return in_checkout
    raise FileNotFoundError(f"pre-stage config {str(config)!r} does not exist (nor under {in_checkout.parent})")


def resolve_config_args(args: Sequence[str]) -> tuple[list[str], list[Path]]:
    """``args`` with every ``-c X`` / ``--config X`` / ``--config=X`` file resolved as :func:`resolve_config` does
    (so a pre-stage's ``["-c", "configs/budget/ldam_drw_10ep.yaml"]`` works from any directory), and those files
    (``-c`` / ``--config`` ones first, then ``--config=`` ones)."""
    out = [str(a) for a in args]
    files: list[Path] = []
    inline: list[Path] = []
    for i, arg in enumerate(out):
        if arg in ("-c", "--config") and i + 1 < len(out):
            out[i + 1] = str(resolve_config(out[i + 1]).resolve())
            files.append(Path(out[i + 1]))
        elif arg.startswith("--config="):
            inline.append(resolve_config(arg.split("=", 1)[1]).resolve())
            out[i] = f"--config={inline[-1]}"
    return out, files + inline


def cli_value(value: Any) -> str | None:
    """``value`` as a command-line value (``null``, ``true`` / ``false``, a number, a string or a path), or ``None``
    when it is not a plain value (a list, a dict, an object)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return None


def recorded_data_arguments(datamodule: pl.LightningDataModule, skip: frozenset[str] | set[str]) -> list[str]:
    """``--data.init_args.NAME=VALUE`` for the arguments ``datamodule`` was built with, to fit an earlier stage on it.

    The arguments are the datamodule's record of them, ``datamodule.hparams``
    (:class:`~lt_lightning.data.datamodule.LongTailDataModule` calls ``save_hyperparameters``: the values given in
    Python, or the YAML values under the CLI), in their order; LightningCLI's own entries (``_class_path``,
    ``_instantiator``), the names in ``skip`` and values that are not plain (lists, dicts: :func:`cli_value`) are left
    out. A datamodule that records nothing gives ``[]`` (one info line says so).
    """
    hparams = getattr(datamodule, "hparams", None)
    if not isinstance(hparams, Mapping) or not hparams:
        rank_zero_info(
            f"{type(datamodule).__name__} records no arguments (save_hyperparameters): none are passed to the earlier "
            "stage, whose config keeps its own data arguments"
        )
        return []
    arguments = []
    for name, value in hparams.items():
        if name.startswith("_") or name in skip:
            continue
        text = cli_value(value)
        if text is not None:
            arguments.append(f"--data.init_args.{name}={text}")
    return arguments


def check_relative_epochs(value: float | None) -> float | None:
    """``value`` if it is ``None`` or a finite number ``> 0`` (the earlier stage's epochs per epoch of this fit)."""
    value = check_float("relative_epochs", value, minimum=0, exclusive_minimum=True, or_none=True)
    return None if value is None else float(value)


def budget_arguments(trainer: pl.Trainer, relative_epochs: float | None) -> list[str]:
    """``["--trainer.max_epochs=N"]``, ``N = max(1, round(relative_epochs · trainer.max_epochs))``: the earlier
    stage's length follows this fit's budget (``[]`` for ``None``, or when this fit has no epoch budget)."""
    max_epochs = trainer.max_epochs
    if relative_epochs is None or max_epochs is None or max_epochs < 1:
        return []
    return [f"--trainer.max_epochs={max(1, round(relative_epochs * max_epochs))}"]


def prestage_folder(config: str | Path, args: Sequence[str], directory: str | Path) -> Path:
    """``<directory>/<config stem>-<hash of the config text, the args and the text of configs the args name>``."""
    path = resolve_config(config)
    args, files = resolve_config_args(args)
    payload = path.read_bytes() + "\0".join(a for a in args if not Path(a).is_absolute()).encode()
    for extra in files:
        payload += b"\0" + extra.read_bytes()
    digest = hashlib.sha256(payload).hexdigest()[:10]
    return Path(directory) / f"{path.stem}-{digest}"


def run_prestage(
    trainer: pl.Trainer,
    config: str | Path,
    args: Sequence[str] = (),
    directory: str | Path = "logs/prestages",
    owner: str = "pre-stage",
) -> Path:
    """Fit ``config`` (``lt-lightning fit -c config *args``) once, on global rank 0; return its ``last.ckpt``.

    Args:
        trainer: the main fit's trainer (its rank, strategy and ``fast_dev_run``).
        config: the earlier stage's YAML (it must keep a ``ModelCheckpoint`` with ``save_last: true``).
        args: further CLI arguments of the stage (e.g. ``["-c", "configs/budget/ldam_drw_10ep.yaml"]``).
        directory: where stage folders go.
        owner: the callback's name, for messages.

    Raises:
        FileNotFoundError: ``config`` does not exist.
        RuntimeError: the stage's fit failed or wrote no ``last.ckpt``.
    """
    args, _ = resolve_config_args(args)
    if trainer.fast_dev_run:
        args = [*args, "--trainer.max_steps=1", "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0"]
    config = resolve_config(config)
    folder = prestage_folder(config, args, directory)
    checkpoint = folder / "checkpoints" / "last.ckpt"
    done, failed = folder / "done", folder / "failed"
    if trainer.is_global_zero:
        if not (done.is_file() and checkpoint.is_file()):
            folder.mkdir(parents=True, exist_ok=True)
            failed.unlink(missing_ok=True)
            logger = [
                "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
                f"--trainer.logger.save_dir={folder.parent}",
                f"--trainer.logger.name={folder.name}",
                "--trainer.logger.version=",
            ]
            single = ["--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.strategy=auto"]
            quiet = ["--trainer.enable_progress_bar=false"]
            command = [sys.executable, "-m", "lt_lightning", "fit", "-c", str(config), *args, *logger, *single, *quiet]
            rank_zero_info(f"{owner}: fitting the earlier stage in {folder}: {' '.join(command)}")
            result = subprocess.run(command, capture_output=True, text=True)
            (folder / "stage.log").write_text(result.stdout + result.stderr)
            if result.returncode != 0 or not checkpoint.is_file():
                failed.write_text(str(result.returncode))
                tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
                reason = f"exit status {result.returncode}" if result.returncode else f"no {checkpoint}"
                raise RuntimeError(f"{owner}: the earlier stage `{' '.join(command)}` failed ({reason}):\n{tail}")
            done.write_text("ok")
        else:
            rank_zero_info(f"{owner}: reusing the finished earlier stage {checkpoint}")
    else:
        while not done.is_file():
            if failed.is_file():
                raise RuntimeError(f"{owner}: the earlier stage in {folder} failed on rank 0 (see {folder}/stage.log)")
            time.sleep(2.0)
    trainer.strategy.barrier(f"{owner}-prestage")
    return checkpoint
