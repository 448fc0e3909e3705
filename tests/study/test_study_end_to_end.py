"""`lt-lightning study` end to end on a tiny synthetic study: run, kill, resume without re-running finished runs;
failing runs are reported and the rest of the grid still runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lt_lightning.cli import main
from lt_lightning.study.config import load_study
from lt_lightning.study.grid import build_units
from tests.study._tiny import BALANCED_SOFTMAX, folder_config, synthetic_config

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[2]

STUDY = """name: tiny
seeds: [0]
baseline: ce
runs_dir: runs
report_dir: report
methods:
  - {name: ce, config: ce.yaml, family: baseline, stages: [ncm]}
  - {name: bs, config: bs.yaml, family: re-balancing}
"""


def _results(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.glob("runs/*/*/result.json"))}


def _cached(out: str) -> int:
    return sum(line.startswith("cached ") for line in out.splitlines())


@pytest.mark.slow
def test_study_runs_is_killed_and_resumes(tmp_path: Path, monkeypatch, capsys) -> None:
    synthetic_config(tmp_path / "ce.yaml")
    synthetic_config(tmp_path / "bs.yaml", BALANCED_SOFTMAX)
    (tmp_path / "study.yaml").write_text(STUDY)
    command = [sys.executable, "-m", "lt_lightning", "study", "-c", "study.yaml", "--launcher", "inprocess"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with (tmp_path / "killed.log").open("w") as log:
        proc = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + 300
        while len(_results(tmp_path)) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the study we started, killed mid-grid
        proc.wait()
    monkeypatch.chdir(tmp_path)
    complete = [u for u in build_units(load_study("study.yaml")) if u.done()]  # result + every stage it needs
    finished = _results(tmp_path)
    assert complete, (tmp_path / "killed.log").read_text()
    assert len(finished) < 4, "the study finished before it could be killed"
    assert not (tmp_path / "report").exists()

    main(["study", "-c", "study.yaml", "--launcher", "inprocess", "--publish"])  # resume: exits normally (status 0)
    out = capsys.readouterr().out
    after = _results(tmp_path)
    assert len(after) == 4
    for path, mtime in finished.items():
        assert after[path] == mtime  # finished runs were not run again
    assert _cached(out) == len(complete) and "0 failed" in out

    data = json.loads((tmp_path / "report" / "study.json").read_text())
    ce, bs = data["methods"]["ce"]["seeds"]["0"], data["methods"]["bs"]["seeds"]["0"]
    assert ce["A_v"] == ce["A_b"] == bs["A_v"]  # A_v: plain CE on the balanced reference set
    assert bs["UA"] == max(bs["A_v"], bs["A_b"]) and bs["RA"] == pytest.approx(bs["A_t"] / bs["UA"])
    assert ce["stages"]["ncm"] is not None and data["failed"] == [] and data["pending"] == []
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Table 5" in report and "## Table 6" in report and "## Table 7" in report
    assert (
        f"| Class re-balancing | bs | {100 * bs['A_t']:.2f} | {100 * bs['UA']:.2f} | {100 * bs['RA']:.2f} |" in report
    )
    for png in ("fig4_accuracy_vs_relative_accuracy.png", "per_class_accuracy.png"):
        assert (tmp_path / "report" / png).stat().st_size > 5000

    published = (tmp_path / "report" / "report.md").stat().st_mtime_ns
    main(["study", "-c", "study.yaml", "--launcher", "inprocess"])  # everything cached: nothing runs again
    assert _cached(capsys.readouterr().out) == 4
    assert _results(tmp_path) == after
    # without --publish the report goes to the runs folder: the published one is untouched
    assert (tmp_path / "runs" / "report" / "report.md").is_file()
    assert (tmp_path / "report" / "report.md").stat().st_mtime_ns == published


def test_failing_runs_are_reported_and_the_rest_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    # classes of 12 / 10 / 3 images, 1 test + 1 val each held out: N = 19 -> 6 per class, class 2 has 1
    folder_config(tmp_path / "ce.yaml", tmp_path / "images", [12, 10, 3])
    (tmp_path / "broken.yaml").write_text("model:\n  class_path: lt_lightning.module.NoSuchModule\n")
    study = STUDY.replace("stages: [ncm]", "").replace("bs.yaml", "broken.yaml").replace("name: bs", "name: broken")
    study += "  - {name: missing, config: missing.yaml, family: module}\n"
    (tmp_path / "study.yaml").write_text(study)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["study", "-c", "study.yaml", "--launcher", "inprocess"])
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    assert "done ce [lt, seed 0]" in out  # the rest of the grid ran
    data = json.loads((tmp_path / "runs" / "report" / "study.json").read_text())
    errors = {(f["method"], f["train_set"]): f["errors"][0]["error"] for f in data["failed"]}
    assert set(errors) == {
        ("ce", "balanced"),
        ("broken", "lt"),
        ("broken", "balanced"),
        ("missing", "lt"),
        ("missing", "balanced"),
    }
    assert "class 2 ('class_2') has 1 images" in errors["ce", "balanced"]
    assert "NoSuchModule" in errors["broken", "lt"]
    assert "missing.yaml" in errors["missing", "lt"]
    assert data["methods"]["ce"]["seeds"]["0"]["A_t"] is not None
    assert data["methods"]["ce"]["seeds"]["0"]["RA"] is None  # no balanced run: no UA, no RA
    report = (tmp_path / "runs" / "report" / "report.md").read_text()
    assert "## Failed runs" in report and "class_2" in report
