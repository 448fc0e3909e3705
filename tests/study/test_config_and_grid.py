"""The study YAML schema, every configs/study/*.yaml, and the grid's order, cache keys and shards (no training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lt_lightning.experiments import method_config, methods
from lt_lightning.study.config import FAMILIES, load_study, missing_files, parse_study
from lt_lightning.study.grid import build_units, check_fit_finished, parse_shard, shard_units
from lt_lightning.study.launch import Launch, RunFailed, error_summary

REPO = Path(__file__).resolve().parents[2]
STUDIES = sorted((REPO / "configs" / "study").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_every_study_config_parses_and_its_files_exist(path: Path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)  # study paths are relative to the repository root
    study = load_study(path)
    assert missing_files(study) == []
    assert study.method(study.baseline).family == "baseline"
    assert {m.family for m in study.methods} <= set(FAMILIES)


def test_digits_study_covers_every_digits_experiment(monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    study = load_study(REPO / "configs" / "study" / "digits_lt.yaml")
    assert study.data_config == "configs/data/digits_lt.yaml"
    listed = {m.config for m in study.methods if m.config}
    shipped = {str(method_config("digits_lt", m).relative_to(REPO)) for m in methods("digits_lt")}
    assert listed == shipped


def _study(**changes) -> dict:
    raw = {
        "name": "t",
        "methods": [
            {"name": "ce", "config": "ce.yaml", "family": "baseline", "stages": ["ncm"]},
            {"name": "focal", "config": "focal.yaml", "family": "re-balancing"},
            {"name": "crt", "from": "ce", "stage": "crt", "family": "module"},
        ],
        "seeds": [0, 1],
    }
    return raw | changes


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bogus": 1}, "unknown study keys"),
        ({"methods": [{"name": "ce", "config": "a.yaml", "family": "rebalancing"}]}, "family must be one of"),
        ({"methods": [{"name": "ce", "config": "a.yaml", "family": "baseline", "stages": ["tau"]}]}, "stages must be"),
        ({"methods": [{"name": "ce", "family": "baseline"}]}, "give config"),
        ({"methods": [{"name": "x", "from": "ce", "family": "module"}]}, "give config|either stage"),
        (
            {"methods": [{"name": "x", "from": "ce", "stage": "crt", "config": "a.yaml", "family": "module"}]},
            "either stage",
        ),
        (
            {"methods": [{"name": "x", "from": "ce", "stage": "crt", "seeds": [1], "family": "module"}]},
            "source's seeds",
        ),
        ({"methods": [{"name": "ce", "config": "a.yaml", "family": "baseline", "seeds": [1, 1]}]}, "distinct"),
        ({"train_sets": ["balanced"]}, "train_sets must be"),
        ({"train_sets": ["lt", "val"]}, "train_sets must be"),
        ({"test_distributions": [["sideways", 2]]}, "test_distributions"),
        ({"test_distributions": [["uniform", 2]]}, "uniform: exactly 1"),
        ({"test_distributions": [["forward", 0.5]]}, "ratio >= 1"),
        ({"reported": 3}, "reported must be"),
        ({"methods": [{"name": "x", "from": "y", "stage": "crt", "family": "module"}]}, "must name a method"),
        ({"seeds": [0, 0]}, "distinct integers"),
        ({"baseline": "nope"}, "baseline 'nope' is not one of"),
        ({"data": {"balanced_reference": True}}, "must not set balanced_reference"),
        ({"stage2_epochs": 0}, "stage2_epochs must be"),
        ({"data_config": 3}, "data_config must be a path"),
    ],
)
def test_bad_study_is_a_clear_error(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_study(_study(**changes))


def test_data_config_is_the_first_file_of_every_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("d.yaml", "ce.yaml", "focal.yaml"):
        (tmp_path / name).write_text("a: 1\n")
    units = build_units(parse_study(_study(data_config="d.yaml")))
    assert all(list(u.args[:4]) == ["-c", "d.yaml", "-c", f"{u.method.name}.yaml"] for u in units)
    assert list(units[0].files) == ["d.yaml", "ce.yaml"]


def test_stages_needed_and_grid_order(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ce.yaml").write_text("a: 1\n")
    (tmp_path / "focal.yaml").write_text("a: 2\n")
    study = parse_study(_study())
    units = build_units(study)
    labels = [(u.method.name, u.train_set, u.seed, u.stages) for u in units]
    assert labels[:4] == [
        ("ce", "lt", 0, ("ncm", "crt")),  # its own Table 7 stage + the stage of the derived method crt
        ("ce", "balanced", 0, ("crt",)),  # only what A_b of the derived method needs
        ("focal", "lt", 0, ()),
        ("focal", "balanced", 0, ()),
    ]
    assert len(units) == 8 and len({u.directory for u in units}) == 8
    assert "--data.init_args.balanced_reference=true" in units[1].args
    assert "--seed_everything=1" in units[4].args and "--data.init_args.seed=1" in units[4].args


def test_cache_key_follows_config_contents_and_arguments(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ce.yaml").write_text("a: 1\n")
    (tmp_path / "focal.yaml").write_text("a: 2\n")
    study = parse_study(_study())
    first = build_units(study)[0]
    assert build_units(study)[0].key == first.key
    assert build_units(study, ["--trainer.max_epochs=2"])[0].key != first.key
    (tmp_path / "ce.yaml").write_text("a: 3\n")
    assert build_units(study)[0].key != first.key


def test_shards_cover_the_grid_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    units = build_units(parse_study(_study()))
    shards = [shard_units(units, (k, 3)) for k in (1, 2, 3)]
    assert sorted(str(u.directory) for s in shards for u in s) == sorted(str(u.directory) for u in units)
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "2", "a/b"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_method_subset_keeps_the_baseline_and_sources(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    study = parse_study(_study(seeds=[0]))
    assert {u.method.name for u in build_units(study, methods=["focal"])} == {"ce", "focal"}  # ce: A_v
    assert {u.method.name for u in build_units(study, methods=["crt"])} == {"ce"}  # crt is a stage of ce's runs
    with pytest.raises(ValueError, match=r"--methods \['nope'\]"):
        build_units(study, methods=["nope"])


def test_launch_settings_and_error_summary(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="launcher must be one of"):
        Launch("bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs the subprocess launcher"):
        Launch("inprocess", ("srun",))
    log = tmp_path / "fit.log"
    log.write_text(
        "Traceback (most recent call last):\n  ...\nValueError: Does not validate against any of the Union subtypes\n"
        "Subtypes: [...]\nErrors:\n  - balanced_reference: class 2 has 1 images\n  - Expected a <class 'NoneType'>\n"
    )
    assert error_summary(log) == "ValueError: balanced_reference: class 2 has 1 images"
    log.write_text("epoch 0\nKeyError: 'x'\nsome trailing line\n")
    assert error_summary(log) == "KeyError: 'x'"


def test_a_fit_that_stopped_early_is_not_cached_as_finished(tmp_path: Path) -> None:
    import torch

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.yaml").write_text("trainer:\n  max_epochs: 40\n")
    torch.save({"epoch": 9, "global_step": 300}, tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(RunFailed, match="the fit stopped after epoch 10 of 40 without an error"):
        check_fit_finished(tmp_path)
    torch.save({"epoch": 39, "global_step": 1200}, tmp_path / "checkpoints" / "last.ckpt")
    check_fit_finished(tmp_path)  # all 40 epochs
    check_fit_finished(tmp_path / "nothing")  # no checkpoint: nothing to compare
