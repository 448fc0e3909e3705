"""Run one ``lt-lightning fit|test`` of the study and read the test report it writes.

Each call is the ordinary CLI path (``python -m lt_lightning <stage> -c ...``) with a CSV logger whose folder is
``<out>/<version>/`` (checkpoints under ``<out>/<version>/checkpoints/``, the test report
``<out>/<version>/per_class_accuracy.json`` written by :class:`~lt_lightning.callbacks.test_report.TestReport`) and
the progress bar off; its output goes to a log file. Two launchers:

* ``"subprocess"`` (default): a fresh Python process per command, as a user would type it. Each run can then use
  any Lightning strategy (several GPUs: ``--trainer.devices=4 --trainer.strategy=ddp`` in ``extra``), and a crash
  or an out-of-memory error stays in that run.
* ``"inprocess"``: :func:`lt_lightning.cli.run` in this process: no start-up cost per command (seconds on a small
  machine), for tests and small CPU studies; not for DDP strategies that re-launch the command line.

"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Launcher = Literal["subprocess", "inprocess"]
LAUNCHERS: tuple[str, ...] = ("subprocess", "inprocess")


@dataclass(frozen=True)
class Launch:
    """How study commands run: ``kind`` (``"subprocess"`` or ``"inprocess"``) and, for subprocesses, a ``prefix``
    put before ``python -m lt_lightning ...`` (e.g. ``("srun", "--ntasks-per-node=4")`` so that a multi-node run
    starts one process per device, as Lightning's SLURM environment expects).

    Raises:
        ValueError: an unknown ``kind``, or a ``prefix`` with the in-process launcher.
    """

    kind: Launcher = "subprocess"
    prefix: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {LAUNCHERS}, got {self.kind!r}")
        if self.prefix and self.kind != "subprocess":
            raise ValueError(f"a launch prefix {list(self.prefix)} needs the subprocess launcher, not {self.kind!r}")


_ERROR_LINE = re.compile(r"^\s*(?:[\w.]+(?:Error|Exception|Interrupt)\b.*|error: .*)$")


class RunFailed(RuntimeError):
    """A study command failed; the message is the command's own error line and where its full log is."""


def logger_args(out: Path, version: str) -> list[str]:
    """CLI arguments for CSV logs (and checkpoints) in ``<out>/<version>/`` without a progress bar."""
    return [
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={out}",
        "--trainer.logger.name=",
        f"--trainer.logger.version={version}",
        "--trainer.enable_progress_bar=false",
    ]


def error_summary(log_file: Path, max_chars: int = 600) -> str:
    """The last error line of a log (``ValueError: ...``, jsonargparse's ``error: ...``), else its last line."""
    try:
        lines = [line.rstrip() for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    errors = [i for i, line in enumerate(lines) if _ERROR_LINE.match(line)]
    if not errors:
        text = (lines or ["(empty log)"])[-1].strip()
    else:
        text = lines[errors[-1]].strip()
        # jsonargparse wraps an error raised in a class's __init__ (our ValueErrors) as "Does not validate against
        # any of the Union subtypes ... Errors:\n  - <the error>\n  - Expected a <class 'NoneType'>": quote it
        causes = [
            line.strip()[2:]
            for line in lines[errors[-1] + 1 :]
            if line.strip().startswith("- ") and not line.strip().startswith("- Expected a <class 'NoneType'>")
        ]
        if causes:
            text = f"{text.split(':')[0]}: {causes[0]}"
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def _run_inprocess(command: list[str], log: Any) -> int:
    from lt_lightning.cli import run  # local: the package imports this module; keep the import cheap

    quiet = [logging.getLogger(name) for name in ("lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.WARNING)
    try:
        with redirect_stdout(log), redirect_stderr(log):
            try:
                run(command)
            except SystemExit as exit_:  # jsonargparse reports bad arguments with sys.exit(2)
                code = exit_.code
                return 0 if code is None else (code if isinstance(code, int) else 1)
            except Exception:  # a run's failure is recorded, never raised into the study
                traceback.print_exc(file=log)
                return 1
        return 0
    finally:
        for lg, level in zip(quiet, levels, strict=True):
            lg.setLevel(level)


def lt_cli(stage: str, args: list[str], out: Path, version: str, launch: Launch | None = None) -> float:
    """Run ``lt-lightning <stage> *args`` logging to ``<out>/<version>/``; return its wall time in seconds.

    Output (stdout and stderr) goes to ``<out>/<version>.log``; ``launch`` (default: a plain subprocess) says how.

    Raises:
        RunFailed: the command exited with a non-zero status (the message holds its error line and the log path).
    """
    launch = Launch() if launch is None else launch
    out.mkdir(parents=True, exist_ok=True)
    log_file = out / f"{version}.log"
    command = [stage, *args, *logger_args(out, version)]
    start = time.time()
    with log_file.open("w") as log:
        log.write("lt-lightning " + " ".join(command) + "\n")
        log.flush()
        if launch.kind == "subprocess":
            code = subprocess.run(
                [*launch.prefix, sys.executable, "-m", "lt_lightning", *command],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            ).returncode
        else:
            code = _run_inprocess(command, log)
    if code != 0:
        raise RunFailed(
            f"`lt-lightning {stage}` exited with status {code}: {error_summary(log_file)} (log: {log_file})"
        )
    return time.time() - start


def find_checkpoint(directory: Path) -> Path | None:
    """``<directory>/checkpoints/last.ckpt``, else the newest ``*.ckpt`` there, else ``None``."""
    folder = directory / "checkpoints"
    last = folder / "last.ckpt"
    if last.is_file():
        return last
    found = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return found[-1] if found else None


def read_report(directory: Path) -> dict[str, Any]:
    """Top-1, many/medium/few and per-class accuracy from the ``per_class_accuracy.json`` of a test run.

    Raises:
        RunFailed: the test run wrote no report there.
    """
    path = directory / "per_class_accuracy.json"
    if not path.is_file():
        raise RunFailed(f"the test run wrote no report {path} (is the TestReport callback disabled?)")
    report = json.loads(path.read_text())
    groups = report.get("groups", {})
    classes = report.get("classes", {})
    return {
        "acc": report["scalars"]["acc"],
        "many": groups.get("many", {}).get("acc"),
        "medium": groups.get("medium", {}).get("acc"),
        "few": groups.get("few", {}).get("acc"),
        "per_class": classes.get("acc"),
        "train_counts": classes.get("train_count"),
        "class_names": classes.get("name"),
    }


__all__ = [
    "LAUNCHERS",
    "Launch",
    "Launcher",
    "RunFailed",
    "error_summary",
    "find_checkpoint",
    "logger_args",
    "lt_cli",
    "read_report",
]
