"""Fit and test one config with several seeds; print each seed's accuracy and the mean ± standard deviation.

Every number the README reports carries its seed spread: this is the command beside it. Each seed runs the ordinary
``lt-lightning fit -c CONFIG --seed_everything S`` then ``lt-lightning test`` on its last checkpoint, in its own
folder ``<runs>/seed<S>/`` (the config's relative log and checkpoint paths land there), so the config is used as a
user would use it. A seed whose ``result.json`` exists is not run again (a killed sweep resumes). The summary --
per-seed top-1 / many / medium / few, mean ± sample standard deviation (n - 1), torch version and CPU -- is printed
and written to ``<runs>/summary.json``.

    python benchmarks/seeds.py -c configs/quickstart.yaml --seeds 0 1 2 3 4 --runs runs/quickstart_seeds
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's lt_lightning when run as a script

from epoch_ratio import cpu_model  # noqa: E402  (benchmarks/, the script's own folder)

from lt_lightning.study.launch import read_report  # noqa: E402
from lt_lightning.study.metrics import mean_std  # noqa: E402

KEYS = ("acc", "many", "medium", "few")


def _cli(stage: str, args: list[str], cwd: Path, log: Path) -> float:
    start = time.time()
    with log.open("w") as out:
        code = subprocess.call([sys.executable, "-m", "lt_lightning", stage, *args], cwd=cwd, stdout=out, stderr=out)
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-5:])
        raise RuntimeError(f"`lt-lightning {stage}` failed with status {code} (log {log}):\n{tail}")
    return time.time() - start


def _newest(folder: Path, pattern: str) -> Path:
    found = sorted(folder.rglob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no {pattern} under {folder}")
    return found[-1]


def run_seed(config: Path, seed: int, runs: Path, extra: list[str]) -> dict:
    """Fit then test ``config`` with ``seed`` in ``<runs>/seed<seed>/`` (or read its cached result)."""
    folder = runs / f"seed{seed}"
    result_file = folder / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    common = ["-c", str(config), f"--seed_everything={seed}", "--trainer.enable_progress_bar=false", *extra]
    fit_s = _cli("fit", common, folder, folder / "fit.log")
    checkpoint = _newest(folder, "last.ckpt")
    _cli("test", [*common, f"--ckpt_path={checkpoint.resolve()}"], folder, folder / "test.log")
    report = read_report(_newest(folder, "per_class_accuracy.json").parent)
    result = {"seed": seed, **{k: report[k] for k in KEYS}, "fit_wall_s": round(fit_s, 1)}
    result_file.write_text(json.dumps(result, indent=1))
    return result


def summarise(rows: list[dict]) -> dict:
    """Mean and sample standard deviation (in %) of each key over the seeds; ``None`` where a group is empty."""
    out: dict = {}
    for key in KEYS:
        mean, std, n = mean_std([None if r.get(key) is None else 100 * r[key] for r in rows])
        out[key] = None if n == 0 else {"mean": round(mean, 2), "std": round(std or 0.0, 2)}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True, help="the config, e.g. configs/quickstart.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--runs", required=True, help="folder of the per-seed runs and summary.json")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further CLI arguments of every run")
    args = parser.parse_args(argv)
    if len(args.seeds) < 2 or len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds needs at least 2 distinct seeds, got {args.seeds}")
    config, runs = Path(args.config).resolve(), Path(args.runs).resolve()
    rows = []
    for seed in args.seeds:
        rows.append(run_seed(config, seed, runs, args.extra))
        row = rows[-1]
        cells = " ".join(f"{k} {'–' if row[k] is None else f'{100 * row[k]:.2f}'}" for k in KEYS)
        print(f"seed {seed}: {cells} (fit {row['fit_wall_s']} s)", flush=True)
    import torch  # after the runs: keep the start-up of a cached summary cheap

    summary = {
        "config": str(Path(args.config)),
        "seeds": args.seeds,
        "runs": rows,
        "summary": summarise(rows),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
    }
    (runs / "summary.json").write_text(json.dumps(summary, indent=1))
    parts = [f"{k} {v['mean']:.2f} ± {v['std']:.2f}" for k, v in summary["summary"].items() if v is not None]
    print(f"{len(rows)} seeds: " + ", ".join(parts) + f" (torch {summary['torch']}, {summary['cpu']})")
    return summary


if __name__ == "__main__":
    main()
