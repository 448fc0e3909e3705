"""The one-GPU table (``lt-lightning study --parallel``) and ``benchmarks/gpu_smoke.py`` end to end on the CPU with a
tiny budget.

Both launch the ordinary CLI in subprocesses; on a GPU they run the same way with ``--accelerator gpu``
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


def test_gpu_table_study_on_cpu_runs_units_side_by_side_into_the_study_cache(tmp_path: Path) -> None:
    """The one-GPU table (docs/gpu.md): ``lt-lightning study -c configs/study/cifar10_lt_200ep.yaml --parallel N`` with
    the fast overlay and the training set on the device, here on the CPU with a tiny budget and one seed."""
    root = tmp_path / "data"
    write_tiny_cifar10(root, train_per_class=100, test_per_class=1)
    budget = tmp_path / "budget.yaml"
    budget.write_text(
        "trainer:\n  max_epochs: 1\n  limit_train_batches: 1\ndata:\n  init_args:\n    val_per_class: 1\n"
    )
    runs, report = tmp_path / "runs", tmp_path / "report"
    command = [sys.executable, "-m", "lt_lightning", "study", "-c", str(REPO / "configs/study/cifar10_lt_200ep.yaml")]
    command += ["--methods", "ce", "balanced_softmax", "tau_norm", "crt", "--seeds", "0", "--parallel", "2"]
    command += ["--runs-dir", str(runs), "--report-dir", str(report), "--overlay", str(budget)]
    command += ["--overlay", str(REPO / "configs/trainer/fast_bf16.yaml")]
    command += [
        "--extra",
        f"data.init_args.root={root}",
        "trainer.accelerator=cpu",
        "data.init_args.train_set_on_device=true",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 runs: 2 run now, 0 cached, 0 failed" in proc.stdout

    data = json.loads((report / "study.json").read_text())
    assert all(
        data["methods"][m]["seeds"]["0"]["A_t"] is not None for m in ("ce", "balanced_softmax", "tau_norm", "crt")
    )
    (ce_unit,) = (runs / "ce").glob("lt-seed0-*")
    fit_config = yaml.safe_load((ce_unit / "fit" / "config.yaml").read_text())
    assert fit_config["trainer"]["precision"] == "bf16-mixed" and fit_config["trainer"]["max_epochs"] == 1
    assert fit_config["data"]["init_args"]["train_set_on_device"] is True
    # cRT's stage as a second fit from the CE checkpoint (its length: 10 of crt.yaml's 210 epochs of a 1-epoch run
    # rounds to 1); tau-norm tests the CE checkpoint itself
    (overlay_file,) = ce_unit.glob("crt-*/stage_overlay.yaml")
    overlay = yaml.safe_load(overlay_file.read_text())
    (stage,) = [c for c in overlay["trainer"]["callbacks"] if c["class_path"].endswith("ClassifierRetraining")]
    assert stage["init_args"]["init_from"] == str((ce_unit / "fit" / "checkpoints" / "last.ckpt").resolve())
    assert not list(ce_unit.glob("tau_norm-*_fit"))
    text = (report / "report.md").read_text()
    assert "| tau_norm | `" in text and "reported top-1 (source)" in text


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
    expected = ["digits_lt/crt", "imagenet_lt/ce", "imagenet_lt/lift", "configs/pretext/digits_lt_rotation.yaml"]
    assert [r.name for r in some] == expected
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
