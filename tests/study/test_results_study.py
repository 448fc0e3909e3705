"""A results-table study (what ``benchmarks/results_table.py``, ``decoupled_table.py``, ``test_agnostic_table.py`` and
``seeds.py`` did, folded into ``lt-lightning study``): long-tailed runs only, per-method seeds, methods applied on
another method's fit (a test-time rule and a classifier stage given by their configs), test distributions, and the
papers' numbers beside ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lt_lightning.cli import main
from lt_lightning.study.config import load_study
from lt_lightning.study.grid import build_units, classifier_stage_overlay
from tests.study._tiny import BALANCED_SOFTMAX, synthetic_config

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = """name: table
data_config: data.yaml
train_sets: [lt]
seeds: [0]
baseline: ce
reported: reported.json
test_distributions: [[forward, 2], [uniform, 1]]
runs_dir: runs
report_dir: report
methods:
  - {name: ce, config: ce.yaml, family: baseline, seeds: [0, 1]}
  - {name: bs, config: bs.yaml, family: re-balancing}
  - {name: tau_norm, from: ce, config: tau.yaml, family: module}
  - {name: crt, from: ce, config: crt.yaml, family: module}
"""
TAU = """trainer:
  callbacks+:
    - class_path: lt_lightning.callbacks.tau_normalization.TauNormalization
      init_args: {taus: [0.0, 1.0]}
"""
CRT = """trainer:
  max_epochs: 2
  callbacks+:
    - class_path: lt_lightning.callbacks.classifier_retraining.ClassifierRetraining
      init_args: {method: crt, epochs: 0.5}
"""


def _write_study(root: Path) -> None:
    synthetic_config(root / "data.yaml")
    (root / "ce.yaml").write_text("seed_everything: 0\n")
    bs = synthetic_config(root / "bs_full.yaml", BALANCED_SOFTMAX).read_text()
    (root / "bs.yaml").write_text(bs[bs.index("model:") :])
    (root / "bs_full.yaml").unlink()
    (root / "tau.yaml").write_text(TAU)
    (root / "crt.yaml").write_text(CRT)
    (root / "reported.json").write_text(json.dumps({"ce": [70.0, "paper A"], "tau_norm": [75.5, "paper B"]}))
    (root / "study.yaml").write_text(STUDY)


def test_grid_of_a_results_study(tmp_path: Path, monkeypatch) -> None:
    """No balanced runs, every seed of a method, derived methods as stages of their source's long-tailed runs."""
    _write_study(tmp_path)
    monkeypatch.chdir(tmp_path)
    units = build_units(load_study("study.yaml"))
    assert [(u.method.name, u.train_set, u.seed) for u in units] == [("ce", "lt", 0), ("bs", "lt", 0), ("ce", "lt", 1)]
    ce = units[0]
    assert ce.stages == ("@tau_norm", "@crt", "dist:forward:2", "dist:uniform:1")
    assert units[1].stages == ("dist:forward:2", "dist:uniform:1")
    assert ce.args_of("@crt")[:4] == ("-c", "data.yaml", "-c", "crt.yaml")
    # a stage's folder follows what it computes: another stage config is another folder
    before = ce.stage_version("@tau_norm")
    (tmp_path / "tau.yaml").write_text(TAU.replace("1.0]", "2.0]"))
    assert build_units(load_study("study.yaml"))[0].stage_version("@tau_norm") != before


def test_classifier_stage_overlay_runs_the_stage_alone(tmp_path: Path, monkeypatch) -> None:
    """A classifier-stage config becomes a second fit of the stage's length from the checkpoint; a test-time rule
    has no overlay."""
    import yaml

    _write_study(tmp_path)
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "stage1.ckpt"
    overlay = classifier_stage_overlay(["-c", "data.yaml", "-c", "crt.yaml"], ckpt, tmp_path / "out")
    written = yaml.safe_load(overlay.read_text())
    assert written["trainer"]["max_epochs"] == 1  # 0.5 of the config's 2 epochs
    stage = [c for c in written["trainer"]["callbacks"] if c["class_path"].endswith("ClassifierRetraining")]
    assert stage[0]["init_args"]["init_from"] == str(ckpt) and "epochs" not in stage[0]["init_args"]
    assert classifier_stage_overlay(["-c", "data.yaml", "-c", "tau.yaml"], ckpt, tmp_path / "out2") is None


@pytest.mark.slow
def test_results_study_end_to_end(tmp_path: Path, monkeypatch, capsys) -> None:
    _write_study(tmp_path)
    monkeypatch.chdir(tmp_path)
    main(["study", "-c", "study.yaml", "--launcher", "inprocess", "--publish"])
    out = capsys.readouterr().out
    assert "0 failed" in out, out
    assert not list((tmp_path / "runs").glob("*/balanced-*"))
    data = json.loads((tmp_path / "report" / "study.json").read_text())
    ce, tau, crt = (data["methods"][m] for m in ("ce", "tau_norm", "crt"))
    assert sorted(ce["seeds"]) == sorted(tau["seeds"]) == ["0", "1"] and list(data["methods"]["bs"]["seeds"]) == ["0"]
    for method in (ce, tau, crt):
        assert all(s["A_t"] is not None and s["RA"] is None for s in method["seeds"].values())
    assert all(v is not None for s in ce["seeds"].values() for v in s["distributions"].values())
    stage_runs = [r["stages"]["@crt"] for r in data["runs"] if r["method"] == "ce"]
    assert all(r["kind"] == "classifier stage" and r["fit_wall_s"] > 0 for r in stage_runs)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Results" in report and "## Table 5" not in report and "## Test-agnostic evaluation" in report
    row = next(line for line in report.splitlines() if line.startswith("| tau_norm |"))
    assert "75.5 (paper B)" in row and "+5.50" in row and "test-time rule on the source's fit" in row
    # a second call runs nothing
    main(["study", "-c", "study.yaml", "--launcher", "inprocess"])
    assert "3 runs: 0 run now, 3 cached" in capsys.readouterr().out


def test_seeds_option_keeps_only_those_runs(tmp_path: Path, monkeypatch) -> None:
    from lt_lightning.study.cli import only_seeds

    _write_study(tmp_path)
    monkeypatch.chdir(tmp_path)
    study = load_study("study.yaml")
    assert [(u.method.name, u.seed) for u in build_units(only_seeds(study, [1]))] == [("ce", 1)]
    kept = only_seeds(study, [1])
    assert [m.name for m in kept.methods] == ["ce", "tau_norm", "crt"]  # bs runs with seed 0 only
    assert [(u.method.name, u.seed) for u in build_units(only_seeds(study, [0]))] == [("ce", 0), ("bs", 0)]
    with pytest.raises(ValueError, match=r"--seeds \[7\] are not seeds"):
        only_seeds(study, [7])
