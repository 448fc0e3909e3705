"""Smoke check of every shipped run on one accelerator: a few steps of ``fit`` (stage switches included), then
``test``, and a pass/fail table with the error line of each failure.

A run is a list of config files. By default: ``configs/quickstart.yaml``, every shipped experiment (``-c
configs/data/<dataset>.yaml -c <method config>``, the pairs of :func:`lt_lightning.experiments.shipped`, named
``<dataset>/<method>``) and ``configs/pretext/*.yaml`` (a stand-alone config is named by its path). ``--configs``
takes any mix of experiment names (``digits_lt/ldam_drw``), patterns over them (``'digits_lt/*'``, fnmatch) and globs
of stand-alone YAML files (``'configs/pretext/*.yaml'``). Each run is the ordinary ``lt-lightning fit`` for
``--epochs`` epochs (default 3) of ``--limit-train-batches`` batches: every schedule is a fraction of the run, so in 3
epochs a DRW / DRS switch, a classifier stage (cRT, LWS, MiSLAS), a router stage and a pre-stage all happen. Then
``lt-lightning test`` on its ``last.ckpt`` with ``--limit-test-batches``. Every command gets
``--trainer.accelerator``, ``devices=1``, the fast path of ``configs/trainer/fast_bf16.yaml`` (bf16 autocast,
channels_last) unless ``--no-fast``, and ``data.init_args.train_set_on_device`` for the in-memory datamodules (CIFAR,
Digits) unless ``--no-train-set-on-device``: the settings of the GPU table (docs/gpu.md). CIFAR runs read ``--root``;
a run whose data root (from its resolved config) does not exist is listed as skipped. Logs:
``<runs>/<name>/{fit,test}.log`` (``<runs>/digits_lt/ldam_drw/fit.log``; a stand-alone config's path without
``.yaml``); the table is printed and written with the error lines to ``<runs>/gpu_smoke.json``; the exit status is 1
when a run failed.

    python benchmarks/gpu_smoke.py --accelerator gpu --root data --parallel 8
    python benchmarks/gpu_smoke.py --accelerator cpu --configs digits_lt/ldam_drw 'configs/pretext/digits_lt_*.yaml'
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import glob
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's lt_lightning when run as a script

from lt_lightning import experiments  # noqa: E402
from lt_lightning.data.cifar import CIFAR10_DIR, CIFAR100_DIR  # noqa: E402
from lt_lightning.run_identity import resolve  # noqa: E402
from lt_lightning.study.launch import RunFailed, find_checkpoint, lt_cli  # noqa: E402

#: the quick start, every shipped experiment (``*/*`` matches every ``<dataset>/<method>``) and the pretext configs
DEFAULT_CONFIGS = ("configs/quickstart.yaml", "*/*", "configs/pretext/*.yaml")
#: datamodules whose training set is an in-memory TensorImageDataset (train_set_on_device applies)
IN_MEMORY = ("CIFAR10LTDataModule", "CIFAR100LTDataModule", "DigitsLTDataModule", "SyntheticLTDataModule")
#: the folder a CIFAR datamodule reads under its root
CIFAR_FOLDER = {"CIFAR10LTDataModule": CIFAR10_DIR, "CIFAR100LTDataModule": CIFAR100_DIR}


@dataclass(frozen=True)
class Run:
    """What one row of the table runs: ``configs`` in order, named ``name``, logged under ``<runs>/<folder>``."""

    name: str
    configs: tuple[Path, ...]
    folder: Path


def experiment_runs() -> dict[str, Run]:
    """Every shipped experiment by its name ``<dataset>/<method>``, in :func:`experiments.shipped`'s order."""
    return {
        f"{d}/{m}": Run(f"{d}/{m}", tuple(experiments.experiment_configs(d, m)), Path(d, m))
        for d, m in experiments.shipped()
    }


def config_run(config: Path) -> Run:
    """A stand-alone config, named by its path relative to the repository (else its absolute path)."""
    if config.is_relative_to(REPO):
        name = str(config.relative_to(REPO))
        return Run(name, (config,), Path(name).with_suffix(""))
    return Run(str(config), (config,), Path("other", config.stem))


def find_runs(patterns: list[str]) -> list[Run]:
    """The runs of ``patterns``, each once, in the patterns' order: a pattern matching experiment names (fnmatch:
    ``digits_lt/ldam_drw``, ``digits_lt/*``) gives those experiments, any other is a glob of stand-alone YAML files
    (relative to the repository unless absolute), sorted.

    Raises:
        ValueError: a pattern matches neither an experiment nor a YAML file.
    """
    shipped = experiment_runs()
    runs: dict[str, Run] = {}
    for pattern in patterns:
        found = [run for name, run in shipped.items() if fnmatch.fnmatchcase(name, pattern)]
        if not found:
            files = {Path(p).resolve() for p in glob.glob(str(REPO / pattern), recursive=True)}
            found = [config_run(p) for p in sorted(files) if p.suffix in (".yaml", ".yml")]
        if not found:
            raise ValueError(
                f"{pattern!r} matches no shipped experiment (<dataset>/<method>, e.g. digits_lt/ldam_drw) "
                "and no YAML file"
            )
        runs |= {run.name: run for run in found if run.name not in runs}
    return list(runs.values())


def config_args(configs: tuple[Path, ...] | list[Path]) -> list[str]:
    return [arg for config in configs for arg in ("-c", str(config))]


def data_args(run: Run, args: argparse.Namespace) -> list[str] | str:
    """The data arguments of ``run``'s commands, or why it is skipped (its data root, or the CIFAR folder under it,
    does not exist), from the data section of its resolved config (the configs and ``--override``).

    Raises:
        ValueError: the configs do not resolve (``--print_config`` fails).
    """
    data = resolve([*config_args(run.configs), *args.override]).get("data") or {}
    data_class = str(data.get("class_path", "")).rsplit(".", 1)[-1]
    extra = []
    root = (data.get("init_args") or {}).get("root")
    if data_class.startswith("CIFAR"):
        root = args.root or root
        extra.append(f"--data.init_args.root={root}")
    data_dir = Path(root, CIFAR_FOLDER.get(data_class, "")) if root is not None else None
    if data_dir is not None and not data_dir.is_dir():
        return f"skipped: no data at {data_dir}" + (" (give --root)" if data_class in CIFAR_FOLDER else "")
    if args.train_set_on_device and data_class in IN_MEMORY:
        extra.append("--data.init_args.train_set_on_device=true")
    return extra


def switches(metrics: Path) -> str:
    """The stage and switch flags a fit logged (``*/stage``, ``*/active``) as ``name first->last``: the evidence that
    a stage switch happened (e.g. ``drw/active 0->1``, ``classifier_retraining/stage 1->2``)."""
    if not metrics.is_file():
        return ""
    with metrics.open(newline="") as f:
        rows = list(csv.DictReader(f))
    found = []
    for key in rows[0] if rows else []:
        values = [float(r[key]) for r in rows if r[key]] if key.endswith(("/stage", "/active")) else []
        if values:
            found.append(f"{key} {values[0]:g}->{values[-1]:g}")
    return ", ".join(found)


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def smoke(run: Run, args: argparse.Namespace) -> dict:
    """Fit ``run`` for a few steps, then test its last checkpoint; the row of the table."""
    row: dict = {"run": run.name, "configs": [_relative(c) for c in run.configs], "status": "pass"}
    row |= {"fit_s": None, "test_s": None, "switches": "", "error": ""}
    try:
        extra = data_args(run, args)
    except ValueError as error:  # the configs do not parse: the fit would fail the same way
        return row | {"status": "FAIL (fit)", "error": str(error)}
    if isinstance(extra, str):
        return row | {"status": "skipped", "error": extra}
    out = Path(args.runs) / run.folder
    fast = [REPO / "configs" / "trainer" / "fast_bf16.yaml"] if args.fast else []
    configs = config_args([*run.configs, *fast])
    trainer = [f"--trainer.accelerator={args.accelerator}", "--trainer.devices=1", *extra, *args.override]
    stage = "fit"
    try:
        fit = [f"--trainer.max_epochs={args.epochs}", f"--trainer.limit_train_batches={args.limit_train_batches}"]
        fit.append(f"--trainer.limit_val_batches={args.limit_val_batches}")
        row["fit_s"] = round(lt_cli("fit", [*configs, *trainer, *fit], out, "fit"), 1)
        row["switches"] = switches(out / "fit" / "metrics.csv")
        stage = "test"
        ckpt = find_checkpoint(out / "fit")
        if ckpt is None:
            raise RunFailed(f"the fit wrote no checkpoint under {out / 'fit' / 'checkpoints'}")
        test = [f"--trainer.limit_test_batches={args.limit_test_batches}", f"--ckpt_path={ckpt}"]
        row["test_s"] = round(lt_cli("test", [*configs, *trainer, *test], out, "test"), 1)
    except RunFailed as error:
        row |= {"status": f"FAIL ({stage})", "error": str(error)}
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs",
        nargs="+",
        default=list(DEFAULT_CONFIGS),
        help="runs: experiment names or patterns (digits_lt/ldam_drw, 'digits_lt/*') and globs of stand-alone YAML "
        "files (default: configs/quickstart.yaml, every shipped experiment, configs/pretext/*.yaml)",
    )
    parser.add_argument("--accelerator", default="gpu", help="trainer.accelerator (cpu for a check)")
    parser.add_argument("--root", default=None, help="data root of the CIFAR configs")
    parser.add_argument("--runs", default="runs/gpu_smoke", help="where logs and checkpoints go")
    parser.add_argument("--epochs", type=int, default=3, help="max_epochs of each fit (>= 2 for stage switches)")
    parser.add_argument("--limit-train-batches", type=int, default=4, help="training batches per epoch")
    parser.add_argument("--limit-val-batches", type=int, default=2, help="validation batches per epoch")
    parser.add_argument("--limit-test-batches", type=int, default=2, help="test batches")
    parser.add_argument("--parallel", type=int, default=1, help="runs at once")
    parser.add_argument("--fast", action=argparse.BooleanOptionalAction, default=True, help="configs/trainer/fast_bf16")
    parser.add_argument(
        "--train-set-on-device", action=argparse.BooleanOptionalAction, default=True, help="data on the device"
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help="a CLI argument for every command, after the run's configs, e.g. --override=--seed_everything=1 or "
        "--override=--config=overlay.yaml (an overlay on every run)",
    )
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error(f"--parallel must be >= 1, got {args.parallel}")
    try:
        runs = find_runs(args.configs)
    except ValueError as error:
        parser.error(str(error))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.parallel)))
    start = time.time()
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        rows = list(pool.map(lambda run: smoke(run, args), runs))
    total = round(time.time() - start, 1)
    print("| run | status | fit s | test s | switches | error |\n|---|---|---|---|---|---|")
    for r in rows:
        times = f"{r['fit_s'] or ''} | {r['test_s'] or ''}"
        print(f"| {r['run']} | {r['status']} | {times} | {r['switches']} | {r['error']} |")
    failed = [r["run"] for r in rows if r["status"].startswith("FAIL")]
    passed = sum(r["status"] == "pass" for r in rows)
    print(f"\n{passed} passed, {len(failed)} failed, {len(rows) - passed - len(failed)} skipped in {total} s")
    summary = {"accelerator": args.accelerator, "fast": args.fast, "total_wall_s": total, "rows": rows}
    Path(args.runs).mkdir(parents=True, exist_ok=True)
    (Path(args.runs) / "gpu_smoke.json").write_text(json.dumps(summary, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
