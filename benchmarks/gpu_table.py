"""The whole results table at once on one GPU: several ordinary fits side by side, then the table from the cache.

A CIFAR ResNet-32 leaves a large GPU mostly idle, so this launches ``--parallel`` method runs concurrently, each the
ordinary ``lt-lightning fit`` then ``test`` of ``benchmarks/results_table.py`` (``-c configs/data/<dataset>.yaml -c
<method config>``, :func:`lt_lightning.experiments.experiment_configs`; its :func:`run_method`, in a thread per run:
results land in the same cache, ``<runs>/<dataset>/<method>/{fit,test,result.json}``, a finished run is
skipped and a killed fit resumes from its ``last.ckpt``; per-run logs ``fit.log`` / ``test.log`` beside them). Every
run gets the settings of ``<runs>/<dataset>/gpu_table.yaml``, written here and passed as the budget config of both
stages: the ``--budget`` file's content, ``trainer.accelerator`` / ``devices: 1``, the fast path
(``configs/trainer/fast_bf16.yaml``: bf16 autocast, channels_last) unless ``--no-fast``, the training set held on the
device (``data.init_args.train_set_on_device``) unless ``--no-train-set-on-device``, and ``--limit-train-batches``.

When every run has succeeded the Markdown table is built from the cache by ``results_table.py`` (nothing is trained
again). A wall-time summary (per run and in all) is printed and written to ``<runs>/<dataset>/gpu_table.json``; the
exit status is 1 when a run failed.

    python benchmarks/gpu_table.py --dataset cifar10_lt --root data --runs runs/gpu --parallel 12 \\
        --out docs/results/cifar10_lt_200ep_gpu.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path

import results_table  # benchmarks/ is sys.path[0] when this runs as a script
import yaml
from results_table import REPO, row_dir, run_method

from lt_lightning import experiments
from lt_lightning.run_identity import RESOLVE_LOCK

#: taken by this script's prints: ``run_identity.resolve`` (results_table's runs resolve their configs in this script's
#: threads) swaps the process's stdout under the same lock, so a progress line never lands in a resolved YAML
OUTPUT = RESOLVE_LOCK

#: the first rows of the 200-epoch CIFAR-10-LT table (issue 17), in its order; the other methods follow, sorted.
#: ``METHOD@ce`` rows are measured on the CE fit (test-time rules, cRT's stage as a second fit: results_table.py)
TABLE_ORDER = ("ce", "ldam_drw", "balanced_softmax", "posthoc_logit_adjust@ce", "tau_norm@ce", "ncm@ce", "crt@ce")
TABLE_ORDER += ("ride", "sade", "mislas", "bbn")


def default_methods(dataset: str) -> list[str]:
    """The table's rows first, then every other method shipped for the dataset (:func:`lt_lightning.experiments.
    methods`) except the authors' ``*_paper`` recipes (they run their own epoch counts; name them in ``--methods`` to
    include them)."""
    names = experiments.methods(dataset)
    first = [m for m in TABLE_ORDER if m.split("@")[0] in names]
    taken = {m.split("@")[0] for m in first}
    return first + [m for m in names if m not in taken and not m.endswith("_paper")]


def submit_all(pool: ThreadPoolExecutor, run_args: argparse.Namespace, methods: list[str]) -> dict[str, Future]:
    """Submit every method; a ``METHOD@BASE`` row waits for BASE's run first (never two fits of BASE at once).

    Plain rows are queued first, so every base holds a worker before a waiting row can take one."""
    futures: dict[str, Future] = {}
    for method in sorted(methods, key=lambda m: "@" in m):
        base = futures.get(method.split("@", 1)[1]) if "@" in method else None
        futures[method] = pool.submit(lambda m=method, b=base: (b.result() if b else None, timed_run(run_args, m))[1])
    return futures


def merge(base: dict, extra: dict) -> dict:
    """``base`` updated by ``extra``, nested dicts merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def run_settings(args: argparse.Namespace) -> dict:
    """The settings every run gets (written as ``gpu_table.yaml``)."""
    settings = yaml.safe_load(Path(args.budget).read_text()) if args.budget else {}
    if args.fast:
        settings = merge(settings, yaml.safe_load((REPO / "configs" / "trainer" / "fast_bf16.yaml").read_text()))
    trainer: dict = {"accelerator": args.accelerator, "devices": 1}
    if args.limit_train_batches is not None:
        trainer["limit_train_batches"] = args.limit_train_batches
    settings = merge(settings, {"trainer": trainer})
    if args.train_set_on_device:
        settings = merge(settings, {"data": {"init_args": {"train_set_on_device": True}}})
    return settings


def device_name(accelerator: str) -> str:
    """The GPU's name from ``nvidia-smi`` (the parent never initialises CUDA), else the accelerator."""
    if accelerator != "cpu" and shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
        found = subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip()
        if found:
            return found.splitlines()[0]
    return accelerator


def timed_run(args: argparse.Namespace, method: str) -> dict:
    """One method through ``results_table.run_method``: its status, wall time and (on failure) error line."""
    cached = (row_dir(args.runs, args.dataset, method) / "result.json").is_file()
    start = time.time()
    try:
        result = run_method(args, method)
    except Exception as error:  # a failed run is reported, the others go on
        return {"method": method, "status": "failed", "wall_s": round(time.time() - start, 1), "error": str(error)}
    row = {"method": method, "status": "cached" if cached else "ok", "wall_s": round(time.time() - start, 1)}
    return row | {"fit_wall_s": result.get("fit_wall_s"), "acc": result.get("acc")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar10_lt", help="a dataset with a recipe in configs/data")
    parser.add_argument("--methods", nargs="+", default=None, help="method names (default: the table, then the rest)")
    parser.add_argument("--budget", default=None, help="a budget config (default: the recipe's own epochs)")
    parser.add_argument("--root", default=None, help="data root passed as --data.init_args.root")
    parser.add_argument("--runs", default="runs/gpu", help="where runs and cached results go")
    parser.add_argument("--out", default=None, help="the Markdown table to write once every run has succeeded")
    parser.add_argument(
        "--reported", default=None, help="published numbers for the table (results_table.py --reported)"
    )
    parser.add_argument("--parallel", type=int, default=12, help="runs at once")
    parser.add_argument("--accelerator", default="gpu", help="trainer.accelerator of every run (cpu for a check)")
    parser.add_argument("--limit-train-batches", type=float, default=None, help="trainer.limit_train_batches")
    parser.add_argument("--fast", action=argparse.BooleanOptionalAction, default=True, help="configs/trainer/fast_bf16")
    parser.add_argument(
        "--train-set-on-device", action=argparse.BooleanOptionalAction, default=True, help="data on the device"
    )
    parser.add_argument("--threads", type=int, default=None, help="OMP threads per run (default: cores / parallel)")
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error(f"--parallel must be >= 1, got {args.parallel}")
    if args.limit_train_batches is not None and args.limit_train_batches >= 1:
        args.limit_train_batches = int(args.limit_train_batches)  # a count of batches, not a fraction
    methods = args.methods or default_methods(args.dataset)
    if not methods:
        shipped = sorted({d for d, _ in experiments.shipped()})
        parser.error(f"no method shipped for --dataset {args.dataset} (datasets: {', '.join(shipped)})")
    table_dir = Path(args.runs) / args.dataset
    table_dir.mkdir(parents=True, exist_ok=True)
    settings_file = table_dir / "gpu_table.yaml"
    settings_file.write_text(yaml.safe_dump(run_settings(args), sort_keys=False))
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.parallel)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # the runs inherit it; 12 runs x all cores oversubscribe
    run_args = argparse.Namespace(
        dataset=args.dataset, runs=args.runs, budget=str(settings_file), root=args.root, extra=[]
    )

    start = time.time()
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        futures = submit_all(pool, run_args, methods)
        for future in as_completed(futures.values()):  # progress as runs end; the table keeps the methods' order
            row = future.result()
            line = f"[{time.time() - start:7.1f} s] {row['method']}: {row['status']} ({row['wall_s']} s)"
            with OUTPUT:
                print(line, flush=True)
        rows = [futures[m].result() for m in methods]
    summary = {
        "device": device_name(args.accelerator),
        "parallel": args.parallel,
        "omp_threads": int(os.environ["OMP_NUM_THREADS"]),
        "settings": str(settings_file),
        "total_wall_s": round(time.time() - start, 1),
        "failed": [r["method"] for r in rows if r["status"] == "failed"],
        "runs": rows,
    }
    (table_dir / "gpu_table.json").write_text(json.dumps(summary, indent=1))
    print(f"\n{'method':24} {'status':8} {'wall s':>8} {'fit s':>8} {'top-1':>7}  error")
    for r in rows:
        acc = "" if r.get("acc") is None else f"{100 * r['acc']:.2f}"
        fit = r.get("fit_wall_s") or ""
        print(f"{r['method']:24} {r['status']:8} {r['wall_s']:8} {fit:>8} {acc:>7}  {r.get('error', '')}")
    print(f"\n{len(rows)} runs, {args.parallel} at once on {summary['device']}: {summary['total_wall_s']} s in all")
    print(f"summary: {table_dir / 'gpu_table.json'}")
    if summary["failed"]:
        print(f"failed: {' '.join(summary['failed'])} (logs: {table_dir}/<method>/fit.log, test.log)")
        return 1
    if args.out:
        table = ["--dataset", args.dataset, "--methods", *methods, "--budget", str(settings_file), "--runs", args.runs]
        table += ["--root", args.root] if args.root else []
        table += ["--reported", args.reported] if args.reported else []
        results_table.main([*table, "--out", args.out])
    return 0


if __name__ == "__main__":
    sys.exit(main())
