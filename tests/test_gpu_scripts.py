"""``benchmarks/gpu_table.py`` and ``benchmarks/gpu_smoke.py`` end to end on the CPU with a tiny budget.

Both scripts launch the ordinary CLI in subprocesses; on a GPU they run the same way with ``--accelerator gpu``
(docs/performance.md). Here: the tiny generated CIFAR-10 (2 methods, 1 epoch of 1 batch) and 3 Digits-LT experiments (3
epochs of 2 batches: the DRW switch and cRT's classifier stage happen).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.cifar_files import write_tiny_cifar10

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "benchmarks" / name), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=900, check=False)


def test_default_methods_put_the_table_rows_first() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_table
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    methods = gpu_table.default_methods("cifar10_lt")
    assert methods[:11] == list(gpu_table.TABLE_ORDER)
    assert "focal" in methods and not any(m.endswith("_paper") for m in methods) and len(set(methods)) == len(methods)
    assert "crt@ce" in methods and "crt" not in methods and "tau_norm" not in methods  # measured on the CE fit
    assert gpu_table.merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}, "d": 3}


def test_gpu_table_on_cpu_runs_concurrently_and_builds_the_table_from_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_tiny_cifar10(root, train_per_class=100, test_per_class=1)
    budget = tmp_path / "budget.yaml"
    budget.write_text("trainer:\n  max_epochs: 1\ndata:\n  init_args:\n    val_per_class: 1\n")
    runs, table = tmp_path / "runs", tmp_path / "table.md"
    common = ["--budget", str(budget), "--root", str(root), "--runs", str(runs), "--parallel", "2"]
    common += ["--accelerator", "cpu", "--limit-train-batches", "1", "--out", str(table)]
    rows = ["crt@ce", "ce", "balanced_softmax", "tau_norm@ce"]  # rows on the CE fit wait for it, whatever the order
    proc = _script("gpu_table.py", "--methods", *rows, *common, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    out = runs / "cifar10_lt"
    summary = json.loads((out / "gpu_table.json").read_text())
    assert [r["method"] for r in summary["runs"]] == rows
    assert [r["status"] for r in summary["runs"]] == ["ok"] * 4 and summary["failed"] == []
    # cRT's stage as a second fit from the CE checkpoint; tau-norm tests the CE checkpoint itself (no fit of its own)
    overlay = yaml.safe_load((out / "crt_on_ce" / "stage_overlay.yaml").read_text())
    (stage,) = [c for c in overlay["trainer"]["callbacks"] if c["class_path"].endswith("ClassifierRetraining")]
    assert stage["init_args"]["init_from"] == str((out / "ce" / "fit" / "checkpoints" / "last.ckpt").resolve())
    assert stage["init_args"]["method"] == "crt" and overlay["trainer"]["max_epochs"] == 1
    assert (out / "crt_on_ce" / "fit" / "checkpoints" / "last.ckpt").is_file()
    assert not (out / "tau_norm_on_ce" / "fit").exists() and (out / "tau_norm_on_ce" / "result.json").is_file()
    assert "test-time rule applied on the ce fit" in (out / "tau_norm_on_ce" / "result.json").read_text()
    assert summary["parallel"] == 2 and summary["device"] == "cpu" and summary["total_wall_s"] > 0
    settings = yaml.safe_load((out / "gpu_table.yaml").read_text())
    assert settings["trainer"] == {"max_epochs": 1, "precision": "bf16-mixed", "accelerator": "cpu", "devices": 1} | {
        "limit_train_batches": 1
    }
    assert settings["data"]["init_args"] == {"val_per_class": 1, "train_set_on_device": True}
    assert settings["model"]["init_args"]["channels_last"] is True
    for method in ("ce", "balanced_softmax"):  # results_table.py's cache layout, with per-run logs
        assert (out / method / "result.json").is_file() and (
            out / method / "fit" / "checkpoints" / "last.ckpt"
        ).is_file()
        assert (out / method / "fit.log").is_file() and (out / method / "test.log").is_file()
        fit_config = yaml.safe_load((out / method / "fit" / "config.yaml").read_text())
        assert fit_config["data"]["init_args"]["train_set_on_device"] is True
        assert fit_config["trainer"]["precision"] == "bf16-mixed"
    text = table.read_text()
    assert "| ce | `configs/data/cifar10_lt.yaml + configs/method/ce.yaml` |" in text and "| balanced_softmax |" in text
    assert "wall s" in proc.stdout and "4 runs, 2 at once on cpu" in proc.stdout

    # again with a method that does not exist: the finished runs come from the cache, the bad one fails, exit 1
    proc = _script("gpu_table.py", "--methods", *rows, "no_such_method", *common, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "gpu_table.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["cached"] * 4 + ["failed"]
    assert summary["failed"] == ["no_such_method"] and "no method 'no_such_method'" in summary["runs"][4]["error"]
    assert "failed: no_such_method" in proc.stdout


def test_gpu_smoke_finds_experiments_by_name_and_pattern_and_configs_by_glob(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_smoke
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    from lt_lightning.experiments import experiment_configs, shipped

    runs = gpu_smoke.find_runs(list(gpu_smoke.DEFAULT_CONFIGS))
    names = [r.name for r in runs]
    pretext = sorted(f"configs/pretext/{p.name}" for p in (REPO / "configs" / "pretext").glob("*.yaml"))
    assert names == ["configs/quickstart.yaml", *(f"{d}/{m}" for d, m in shipped()), *pretext]
    ldam_drw = runs[names.index("digits_lt/ldam_drw")]
    assert list(ldam_drw.configs) == experiment_configs("digits_lt", "ldam_drw")
    assert ldam_drw.folder == Path("digits_lt", "ldam_drw")
    assert runs[0].configs == (REPO / "configs" / "quickstart.yaml",) and runs[0].folder == Path("configs/quickstart")
    some = gpu_smoke.find_runs(["digits_lt/crt", "imagenet_lt/*", "configs/pretext/digits_lt_r*.yaml", "digits_lt/crt"])
    assert [r.name for r in some] == ["digits_lt/crt", "imagenet_lt/ce", "configs/pretext/digits_lt_rotation.yaml"]
    (tmp_path / "mine.yaml").write_text("seed_everything: 1\n")  # outside the repository: its path, runs/other/<stem>
    (mine,) = gpu_smoke.find_runs([str(tmp_path / "*.yaml")])
    assert mine.name == str(tmp_path / "mine.yaml") and mine.folder == Path("other", "mine")
    with pytest.raises(ValueError, match="digits_lt/no_such_method"):
        gpu_smoke.find_runs(["digits_lt/no_such_method"])


def test_gpu_smoke_on_cpu_fits_with_stage_switches_tests_and_reports(tmp_path: Path) -> None:
    names = [f"digits_lt/{m}" for m in ("ce", "ldam_drw", "crt")]
    args = ["--accelerator", "cpu", "--configs", *names, "imagenet_lt/ce"]
    args += ["--runs", str(tmp_path / "smoke"), "--parallel", "2", "--limit-train-batches", "2"]
    args += ["--limit-val-batches", "1", "--limit-test-batches", "1"]
    proc = _script("gpu_smoke.py", *args, cwd=tmp_path)  # cwd without data/: the ImageNet-LT run is skipped
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["run"]: r for r in json.loads((tmp_path / "smoke" / "gpu_smoke.json").read_text())["rows"]}
    assert [rows[n]["status"] for n in names] == ["pass", "pass", "pass"]
    assert rows["imagenet_lt/ce"]["status"] == "skipped"
    assert rows["digits_lt/ldam_drw"]["configs"] == ["configs/data/digits_lt.yaml", "configs/method/ldam_drw.yaml"]
    assert rows["digits_lt/ldam_drw"]["switches"] == "drw/active 0->1"
    assert rows["digits_lt/crt"]["switches"] == "classifier_retraining/stage 1->2"
    assert "| digits_lt/ldam_drw | pass |" in proc.stdout and "3 passed, 0 failed, 1 skipped" in proc.stdout
    fit_config = yaml.safe_load((tmp_path / "smoke/digits_lt/ce/fit/config.yaml").read_text())
    assert fit_config["data"]["init_args"]["train_set_on_device"] is True and fit_config["trainer"]["max_epochs"] == 3

    # a failing run (a broken overlay on every run): its error line in the table, exit 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": {"init_args": {"batch_size": 0}}}))
    args = ["--accelerator", "cpu", "--configs", "digits_lt/ce", f"--override=--config={bad}"]
    proc = _script("gpu_smoke.py", *args, "--runs", str(tmp_path / "bad"), cwd=tmp_path)
    assert proc.returncode == 1
    assert "FAIL (fit)" in proc.stdout and "batch_size must be >= 1, got 0" in proc.stdout
