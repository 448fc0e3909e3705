"""The report from hand-made cached results: UA / RA per seed, mean ± std, derived stages, Table 7, pending runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lt_lightning.study.config import parse_study
from lt_lightning.study.grid import build_units
from lt_lightning.study.report import write_report

STUDY = {
    "name": "hand",
    "seeds": [0, 1],
    "baseline": "ce",
    "methods": [
        {"name": "ce", "config": "ce.yaml", "family": "baseline", "stages": ["ncm"]},
        {"name": "bs", "config": "bs.yaml", "family": "re-balancing"},
        {"name": "crt", "from": "ce", "stage": "crt", "family": "module"},
        {"name": "late", "config": "late.yaml", "family": "augmentation"},
    ],
}
# (method, train set, seed) -> top-1; ("ce", ..., "crt") entries are the cRT stage after the CE fit
ACC = {
    ("ce", "lt", 0): 0.50, ("ce", "lt", 1): 0.54, ("ce", "balanced", 0): 0.80, ("ce", "balanced", 1): 0.82,
    ("bs", "lt", 0): 0.60, ("bs", "lt", 1): 0.62, ("bs", "balanced", 0): 0.75, ("bs", "balanced", 1): 0.84,
    ("crt", "lt", 0): 0.58, ("crt", "lt", 1): 0.60, ("crt", "balanced", 0): 0.81, ("crt", "balanced", 1): 0.80,
    ("ncm", "lt", 0): 0.55, ("ncm", "lt", 1): 0.57,
}  # fmt: skip


def _write(path: Path, acc: float) -> None:
    report = {"acc": acc, "many": acc + 0.1, "medium": acc, "few": acc - 0.1}
    report |= {"per_class": [acc] * 3, "train_counts": [30, 10, 3], "class_names": ["a", "b", "c"]}
    path.write_text(json.dumps(report))


def test_report_from_hand_made_numbers(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("ce", "bs", "late"):
        (tmp_path / f"{name}.yaml").write_text(f"# {name}\n")
    study = parse_study(STUDY)
    units = build_units(study)
    for unit in units:
        if unit.method.name == "late":
            continue  # never run: pending
        unit.directory.mkdir(parents=True)
        _write(unit.directory / "result.json", ACC[unit.method.name, unit.train_set, unit.seed])
        for stage in unit.stages:
            _write(unit.stage_file(stage), ACC[stage, unit.train_set, unit.seed])
    data = write_report(study, units, "lt-lightning study -c hand.yaml")
    bs = data["methods"]["bs"]
    # seed 0: UA = max(0.80, 0.75) = 0.80, RA = 0.60 / 0.80 = 0.75; seed 1: UA = max(0.82, 0.84), RA = 0.62 / 0.84
    assert bs["seeds"]["0"]["UA"] == 0.80 and bs["seeds"]["0"]["RA"] == pytest.approx(0.75)
    assert bs["seeds"]["1"]["UA"] == 0.84 and bs["seeds"]["1"]["RA"] == pytest.approx(0.62 / 0.84)
    assert bs["summary"]["RA"]["mean"] == pytest.approx((0.75 + 0.62 / 0.84) / 2)
    crt = data["methods"]["crt"]["seeds"]["0"]  # a stage of the CE runs: A_t and A_b from the cRT stages
    assert (crt["A_t"], crt["A_b"], crt["UA"]) == (0.58, 0.81, 0.81)
    assert data["methods"]["ce"]["seeds"]["1"]["stages"] == {"joint": 0.54, "ncm": 0.57}
    assert [p["method"] for p in data["pending"]] == ["late", "late", "late", "late"]

    report = (tmp_path / "reports" / "study" / "hand" / "report.md").read_text()
    # bs RA: 0.75 and 0.7381 -> mean 74.40, sample std |0.75 - 0.7381| / sqrt(2) = 0.84
    assert "| Class re-balancing | bs | 61.00 ± 1.41 | 82.00 ± 2.83 | 74.40 ± 0.84 | 79.50 ± 6.36 |" in report
    # crt: UA = max(0.80, 0.81) = 0.81 and max(0.82, 0.80) = 0.82; RA 0.58 / 0.81 = 0.7160, 0.60 / 0.82 = 0.7317
    assert "| Module improvement | crt | 59.00 ± 1.41 | 81.50 ± 0.71 | 72.39 ± 1.11 | 80.50 ± 0.71 |" in report
    assert "| Information augmentation | late | – | – | – | – |" in report
    assert "| ce | 52.00 ± 2.83 | 56.00 ± 1.41 | – | – |" in report  # Table 7: joint, NCM, cRT, LWS
    assert "## Runs not finished yet" in report
    assert (tmp_path / "reports" / "study" / "hand" / "fig4_accuracy_vs_relative_accuracy.png").is_file()
