"""``benchmarks/results_table.py --seeds``: rows with several seeds give mean ± std, each seed its own cached run.

Digits-LT, 1 epoch of 2 batches per fit (the seeds only need to differ, not to be good).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _table(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "benchmarks" / "results_table.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=900, check=False)


def test_seeds_run_each_seed_once_and_report_mean_and_std(tmp_path: Path) -> None:
    runs, out = tmp_path / "runs", tmp_path / "table.md"
    common = ["--dataset", "digits_lt", "--runs", str(runs), "--out", str(out)]
    extra = [
        "--extra",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.enable_progress_bar=false",
    ]
    rows = ["ce", "tau_norm@ce", "balanced_softmax"]
    proc = _table(
        *common, "--methods", *rows, "--seeds", "0", "1", "--seeded", "ce", "tau_norm@ce", *extra, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    base = runs / "digits_lt"
    # seed 0 is the configs' own seed_everything: the plain folder; seed 1 gets its own; balanced_softmax one run
    assert sorted(p.name for p in base.iterdir()) == [
        "balanced_softmax",
        "ce",
        "ce-seed1",
        "tau_norm_on_ce",
        "tau_norm_on_ce-seed1",
    ]
    fit1 = yaml.safe_load((base / "ce-seed1" / "fit" / "config.yaml").read_text())
    assert fit1["seed_everything"] == 1 and fit1["data"]["init_args"]["seed"] == 1
    fit0 = yaml.safe_load((base / "ce" / "fit" / "config.yaml").read_text())
    assert fit0["seed_everything"] == 0 and fit0["data"]["init_args"]["seed"] == 0
    # tau-norm of seed 1 tests the seed-1 CE checkpoint
    test1 = yaml.safe_load((base / "tau_norm_on_ce-seed1" / "test" / "config.yaml").read_text())
    assert test1["ckpt_path"] == str(base / "ce-seed1" / "fit" / "checkpoints" / "last.ckpt")

    results = {p.name: json.loads((p / "result.json").read_text()) for p in base.iterdir()}
    assert [results["ce"]["seed"], results["ce-seed1"]["seed"], results["balanced_softmax"]["seed"]] == [0, 1, 0]
    accs = [results["ce"]["acc"], results["ce-seed1"]["acc"]]
    assert accs[0] != accs[1]  # the seeds change the run
    mean, std = 100 * statistics.fmean(accs), 100 * statistics.stdev(accs)
    text = out.read_text()
    ce = "`configs/data/digits_lt.yaml + configs/method/ce.yaml`"
    assert f"| ce | {ce} | 0, 1 | {mean:.2f} ± {std:.2f} | +0.00 |" in text
    bs = 100 * results["balanced_softmax"]["acc"]
    config = "`configs/data/digits_lt.yaml + configs/method/balanced_softmax.yaml`"
    assert f"| balanced_softmax | {config} | 0 | {bs:.2f} | {bs - mean:+.2f} |" in text

    # again: everything comes from the cache (no new run folder, same table)
    proc = _table(*common, "--methods", *rows, "--seeds", "0", "1", "--seeded", "ce", "tau_norm@ce", cwd=tmp_path)
    assert proc.returncode == 0 and out.read_text().split("```")[2] == text.split("```")[2]

    bad = _table(*common, "--methods", "ce", "--seeded", "ce", cwd=tmp_path)
    assert bad.returncode == 2 and "--seeded needs --seeds" in bad.stderr
