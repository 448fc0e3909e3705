"""Per-epoch wall time of ``lt-lightning fit`` vs a bare PyTorch loop on the real CIFAR-10-LT (rho = 100) training set.

Two sides doing the same work, each in a fresh subprocess, alternating (``fit, bare`` then ``bare, fit``, ...):

* **fit**: the real CLI, ``lt-lightning fit -c CONFIG --data.init_args.root ROOT`` (:func:`lt_lightning.cli.run`,
  in the child process), with everything the config brings: its loggers (CSV + TensorBoard), ``ModelCheckpoint``
  (last + latest epoch, written each epoch), ``LearningRateMonitor``, the rich progress bar, the validation epoch,
  the 200-epoch LR schedule. The only addition is a callback that records when each training epoch starts and
  stops the run after ``--epochs`` epochs (so the schedule is the full run's). The run writes under a temporary
  directory (its working directory), never into the repository.
* **bare**: ``benchmarks/overhead.py``'s :func:`train_bare`, the project's one bare loop, on the same training
  tensors (built by the config's datamodule class), batch size 128, the same ResNet-32 + linear head, SGD (lr 0.1,
  momentum 0.9, weight decay 2e-4), pad-4 crop + flip on ``uint8`` tensors, ``channels_last`` as the config sets it,
  and the same validation images evaluated each epoch (``--no-validation``: neither side validates).

A run is ``--epochs`` epochs: the first is a warm-up, each later one is timed by a steady-state clock (start of one
training epoch to the start of the next; the last one ends at ``on_train_end`` / the end of the bare loop), so a
timed epoch holds the training steps, the validation epoch, the checkpoint writes and the logging. The ratio is
``bare_time / fit_time`` per repeat (>= 0.95 is the target), reported with its median; also the torch version, the
torch thread count, the CPU model and the 1-minute load average before and after (on a shared machine, quote the
ratio, not the absolute times). On Linux it also reports each epoch's wall time minus the time the main thread
waited for a core (``/proc/thread-self/schedstat``): the epoch without other processes' load, exact with
``--threads 1`` (the worker threads of ``--threads 2`` are not counted).

    .venv/bin/python /work/shared/data/make_cifar10.py ~/lt_data                      # once: CIFAR-10 pickles
    .venv/bin/python benchmarks/epoch_ratio.py --root ~/lt_data                        # 2 epochs x 2 repeats per side
    .venv/bin/python benchmarks/epoch_ratio.py --root ~/lt_data --epochs 3 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "configs" / "data" / "cifar10_lt.yaml"  # the CIFAR-10-LT recipe alone: CE
SIDES = ("fit", "bare")


def epoch_seconds(marks: list[float]) -> list[float]:
    """``marks`` = [start of epoch 0, start of epoch 1, ..., end of the last epoch] -> seconds of each epoch."""
    return [b - a for a, b in zip(marks[:-1], marks[1:], strict=True)]


# ---------------------------------------------------------------------------------------------------- child: fit
def child_fit(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from lightning.pytorch import Callback

    from lt_lightning import cli

    sys.path.insert(0, str(REPO / "benchmarks"))
    from overhead import run_queue_wait

    torch.set_num_threads(args.threads)
    marks: list[float] = []
    cpu_marks: list[float] = []
    wait_marks: list[float] = []
    info: dict[str, Any] = {}

    class EpochClock(Callback):
        """Marks each training epoch's start and the end of training; stops the fit after ``args.epochs`` epochs."""

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            marks.append(time.perf_counter())
            cpu_marks.append(time.process_time())
            wait_marks.append(run_queue_wait())

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.current_epoch + 1 >= args.epochs:
                trainer.should_stop = True

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            marks.append(time.perf_counter())
            cpu_marks.append(time.process_time())
            wait_marks.append(run_queue_wait())
            info["train_batches"] = int(trainer.num_training_batches)
            info["val_batches"] = [int(n) for n in trainer.num_val_batches]
            info["channels_last"] = bool(getattr(pl_module, "channels_last", False))

    class TimedCLI(cli.LongTailCLI):
        def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
            return super()._instantiate_trainer(config, [*callbacks, EpochClock()])

    argv = ["fit", "-c", str(args.config), f"--data.init_args.root={args.root}"]
    if not args.validation:
        argv += ["--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0"]
    if args.limit_train_batches:
        argv += [f"--trainer.limit_train_batches={args.limit_train_batches}"]
    TimedCLI(args=argv)
    if len(marks) != args.epochs + 1:
        raise RuntimeError(f"fit ran {len(marks) - 1} epochs, expected {args.epochs}")
    return {
        "epoch_s": epoch_seconds(marks),
        "cpu_s": epoch_seconds(cpu_marks),
        "wait_s": epoch_seconds(wait_marks),
        **info,
    }


# --------------------------------------------------------------------------------------------------- child: bare
def child_bare(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from lt_lightning.run_identity import resolve

    sys.path.insert(0, str(REPO / "benchmarks"))
    from overhead import train_bare  # the project's one bare loop

    from lt_lightning.class_path import import_class_path

    torch.set_num_threads(args.threads)
    config = resolve(["-c", str(args.config)])
    data_cfg = config["data"]
    init = {**data_cfg.get("init_args", {}), "root": str(args.root)}
    datamodule = import_class_path(data_cfg["class_path"])(**init)
    datamodule.setup("fit")
    train, val = datamodule.train_dataset, datamodule.val_dataset
    channels_last = bool(config["model"].get("init_args", {}).get("channels_last", False))
    validation = (val.images, val.labels) if args.validation and len(val) else None
    images, labels = train.images, train.labels
    if args.limit_train_batches:  # a random subset of that many batches (Lightning: the first batches of an epoch)
        keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        keep = keep[: args.limit_train_batches * datamodule.batch_size]
        images, labels = images[keep], labels[keep]
    timings = train_bare(
        images,
        labels,
        epochs=args.epochs,
        batch_size=datamodule.batch_size,
        seed=int(config.get("seed_everything", 0)),
        device=torch.device("cpu"),
        channels_last=channels_last,
        validation=validation,
        eval_batch_size=datamodule.eval_batch_size,
    )
    return {
        "epoch_s": [t.epoch_s for t in timings],
        "cpu_s": [t.cpu_s for t in timings],
        "wait_s": [t.wait_s for t in timings],
        "train_batches": len(timings[0].step_s),
        "val_images": 0 if validation is None else len(val),
        "channels_last": channels_last,
    }


# --------------------------------------------------------------------------------------------------------- parent
def run_side(side: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one side in a fresh subprocess (working directory: a temporary folder) and return its JSON record."""
    with tempfile.TemporaryDirectory(prefix=f"epoch_ratio_{side}_") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            side,
            "--out",
            str(out),
            "--root",
            str(args.root),
            "--config",
            str(args.config),
            "--epochs",
            str(args.epochs),
            "--threads",
            str(args.threads),
            *([] if args.validation else ["--no-validation"]),
            f"--limit-train-batches={args.limit_train_batches}",
        ]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        log = Path(tmp) / "log.txt"
        with log.open("w") as f:
            status = subprocess.call(cmd, cwd=tmp, stdout=f, stderr=subprocess.STDOUT, env=env)
        if status:
            sys.stderr.write(log.read_text()[-4000:])
            raise SystemExit(f"the {side} side failed with status {status}")
        return json.loads(out.read_text())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="folder holding cifar-10-batches-py")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the fit config; default cifar10_lt/ce")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run, the first a warm-up; default 2")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side, order alternating; default 2")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on both sides; default 2")
    parser.add_argument(
        "--no-validation",
        dest="validation",
        action="store_false",
        help="neither side validates (fit: limit_val_batches 0, no sanity check); default: both do",
    )
    parser.add_argument(
        "--limit-train-batches",
        type=int,
        default=0,
        help="train on that many batches per epoch on both sides (0, the default: the whole training set)",
    )
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.limit_train_batches < 0:
        parser.error(f"--limit-train-batches must be >= 0, got {args.limit_train_batches}")
    for name in ("epochs", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is a warm-up)")
    args.root = args.root.expanduser().resolve()
    args.config = args.config.expanduser().resolve()
    return args


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(REPO))  # the checkout's lt_lightning when run as a script
    from lt_lightning.study import provenance

    args = parse_args(argv)
    if args.child is not None:
        record = child_fit(args) if args.child == "fit" else child_bare(args)
        args.out.write_text(json.dumps(record))
        return
    import torch

    load_before = os.getloadavg()
    times: dict[str, list[float]] = {side: [] for side in SIDES}  # timed epochs (all but the first), all repeats
    cpu: dict[str, list[float]] = {side: [] for side in SIDES}  # their process CPU seconds
    busy: dict[str, list[float]] = {side: [] for side in SIDES}  # wall minus the main thread's run-queue wait
    ratios: list[float] = []
    cpu_ratios: list[float] = []
    busy_ratios: list[float] = []
    for repeat in range(args.repeats):
        order = SIDES if repeat % 2 == 0 else SIDES[::-1]
        per_repeat: dict[str, float] = {}
        per_repeat_cpu: dict[str, float] = {}
        per_repeat_busy: dict[str, float] = {}
        for side in order:
            record = run_side(side, args)
            timed = record["epoch_s"][1:]
            times[side].extend(timed)
            per_repeat[side] = statistics.median(timed)
            cpu[side].extend(record["cpu_s"][1:])
            per_repeat_cpu[side] = statistics.median(record["cpu_s"][1:])
            unloaded = [w - q for w, q in zip(record["epoch_s"], record["wait_s"], strict=True)][1:]
            busy[side].extend(unloaded)
            per_repeat_busy[side] = statistics.median(unloaded)
            shown = ", ".join(f"{s:.2f}" for s in record["epoch_s"])
            extra = {k: v for k, v in record.items() if k not in ("epoch_s", "cpu_s", "wait_s")}
            extra["cpu_s"] = [round(s, 2) for s in record["cpu_s"]]
            extra["run_queue_wait_s"] = [round(s, 2) for s in record["wait_s"]]
            print(f"repeat {repeat + 1} {side:4s}: epochs [{shown}] s (first = warm-up); {extra}", flush=True)
        ratios.append(per_repeat["bare"] / per_repeat["fit"])
        cpu_ratios.append(per_repeat_cpu["bare"] / per_repeat_cpu["fit"])
        busy_ratios.append(per_repeat_busy["bare"] / per_repeat_busy["fit"])
        print(
            f"repeat {repeat + 1}: ratio bare/fit {ratios[-1]:.3f} wall, {cpu_ratios[-1]:.3f} CPU time, "
            f"{busy_ratios[-1]:.3f} wall minus run-queue wait "
            f"(load average {os.getloadavg()[0]:.2f})",
            flush=True,
        )
    load_after = os.getloadavg()
    fit_s, bare_s = statistics.median(times["fit"]), statistics.median(times["bare"])
    print()
    print(
        f"machine: {provenance.cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
        f"threads {args.threads}; "
        f"1-min load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(
        f"config: {args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config}, "
        f"{args.epochs} epochs per run (first = warm-up), {args.repeats} repeats, "
        f"validation {'on' if args.validation else 'off'}, "
        f"training batches per epoch {args.limit_train_batches or 'all'}"
    )
    print(f"fit:  {fit_s:.2f} s per epoch (median of {len(times['fit'])} timed epochs)")
    print(f"bare: {bare_s:.2f} s per epoch (median of {len(times['bare'])} timed epochs)")
    print(
        f"ratio bare/fit: {statistics.median(ratios):.3f} "
        f"(median of per-repeat ratios {[round(r, 3) for r in ratios]}); "
        "target >= 0.95"
    )
    print(
        f"ratio bare/fit in process CPU time: {statistics.median(cpu_ratios):.3f} "
        f"(per repeat {[round(r, 3) for r in cpu_ratios]}; fit {statistics.median(cpu['fit']):.2f} s, "
        f"bare {statistics.median(cpu['bare']):.2f} s per epoch: robust to other processes' load, not to their "
        "cache and memory-bandwidth pressure)"
    )
    print(
        f"ratio bare/fit in wall time minus the main thread's run-queue wait: {statistics.median(busy_ratios):.3f} "
        f"(per repeat {[round(r, 3) for r in busy_ratios]}; fit {statistics.median(busy['fit']):.2f} s, "
        f"bare {statistics.median(busy['bare']):.2f} s per epoch: the wall time without other processes' load, "
        "exact with --threads 1)"
    )
    if not args.limit_train_batches:
        print(f"200 epochs at the fit rate: {200 * fit_s / 3600:.2f} h")


if __name__ == "__main__":
    main()
