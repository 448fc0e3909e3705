"""`lt-lightning study -c /abs/path/study.yaml` from another directory (issue 18): method configs and budget files
named by relative paths are found from the study file, not from the current directory.

Before the fix, run from elsewhere, every method config was looked up in the current directory: every run failed
with "config file(s) not found".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lt_lightning.study.config import load_study, missing_files, resolve_config_path
from lt_lightning.study.grid import build_units
from tests.study._tiny import BALANCED_SOFTMAX, synthetic_config

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[2]

#: like the shipped configs/study/*.yaml: paths from the project root, two folders above the study file
STUDY = """name: tiny
seeds: [0]
baseline: ce
runs_dir: runs
report_dir: report
budget: [configs/budget/one.yaml]
methods:
  - {name: ce, config: configs/methods/ce.yaml, family: baseline}
  - {name: bs, config: configs/methods/bs.yaml, family: re-balancing}
"""


def _project(root: Path) -> Path:
    """``root/configs/{methods,budget,study}``; returns the study file."""
    for folder in ("methods", "budget", "study"):
        (root / "configs" / folder).mkdir(parents=True)
    synthetic_config(root / "configs" / "methods" / "ce.yaml")
    synthetic_config(root / "configs" / "methods" / "bs.yaml", BALANCED_SOFTMAX)
    (root / "configs" / "budget" / "one.yaml").write_text("trainer:\n  max_epochs: 1\n")
    study = root / "configs" / "study" / "tiny.yaml"
    study.write_text(STUDY)
    return study


def test_resolve_config_path(tmp_path: Path, monkeypatch) -> None:
    study = _project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    found = resolve_config_path("configs/methods/ce.yaml", study.parent)
    assert found == str((tmp_path / "project" / "configs" / "methods" / "ce.yaml").resolve())  # absolute: not below
    (study.parent / "ce.yaml").write_text("{}\n")
    assert resolve_config_path("ce.yaml", study.parent) == str((study.parent / "ce.yaml").resolve())  # its folder
    assert resolve_config_path("/abs/x.yaml", study.parent) == "/abs/x.yaml"
    assert resolve_config_path("nowhere.yaml", study.parent) == "nowhere.yaml"  # left to the current directory
    (elsewhere / "mine.yaml").write_text("{}\n")
    assert resolve_config_path("mine.yaml", study.parent) == "mine.yaml"
    monkeypatch.chdir(tmp_path / "project")
    assert resolve_config_path("configs/methods/ce.yaml", study.parent) == "configs/methods/ce.yaml"  # as before


def test_the_shipped_studies_resolve_from_any_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for path in sorted((REPO / "configs" / "study").glob("*.yaml")):
        study = load_study(path)
        assert missing_files(study) == [], path
        assert study.data_config is None or Path(study.data_config).is_relative_to(REPO / "configs"), path
        for method in study.methods:
            assert method.config is None or Path(method.config).is_relative_to(REPO / "configs"), method
    monkeypatch.chdir(REPO)
    study = load_study("configs/study/digits_lt.yaml")
    assert study.data_config == "configs/data/digits_lt.yaml"  # as written
    assert all(m.config is None or m.config.startswith("configs/method/") for m in study.methods)


def test_cache_keys_do_not_depend_on_the_current_directory(tmp_path: Path, monkeypatch) -> None:
    study = _project(tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    here = [(u.key, u.directory.name) for u in build_units(load_study(study))]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert [(u.key, u.directory.name) for u in build_units(load_study(study))] == here


@pytest.mark.slow
def test_study_runs_from_another_directory(tmp_path: Path) -> None:
    study = _project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    script = Path(sys.executable).with_name("lt-lightning")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "lt_lightning"]
    cmd += ["study", "-c", str(study.resolve()), "--launcher", "inprocess"]

    listed = subprocess.run([*cmd, "--list"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count(": to run (") == 4

    ran = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "4 runs: 4 run now, 0 cached, 0 failed" in ran.stdout
    assert len(list(elsewhere.glob("runs/*/*/result.json"))) == 4  # runs_dir: relative to the current directory
    assert (elsewhere / "runs" / "report" / "report.md").is_file()

    listed = subprocess.run([*cmd, "--list"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert listed.stdout.count(": done (") == 4
