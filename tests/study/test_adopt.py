"""``lt-lightning study --adopt-fits``: a finished fit of the same resolved config is copied into the study's cache
instead of trained again; any other fit is refused with the keys that differ."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lt_lightning.cli import main
from lt_lightning.study.adopt import config_differences, fit_differences
from tests.study._tiny import synthetic_config

pytestmark = pytest.mark.usefixtures("one_thread")

MODULE = "lt_lightning.module.LongTailModule"


def _model(**init_args) -> dict:
    return {"model": {"class_path": MODULE, "init_args": {"channels_last": False, **init_args}}}


def test_identical_configs_have_no_differences() -> None:
    config = {"seed_everything": 0, "trainer": {"max_epochs": 10, "callbacks": [{"class_path": "a.B"}]}, **_model()}
    assert config_differences(config, json.loads(json.dumps(config))) == []


def test_a_fit_saved_before_the_configs_were_composed_is_the_same_run() -> None:
    """Old single files listed the method's callbacks first; a composed config appends them after the CLI's default
    LR monitor and checkpoint. Lightning runs checkpoint callbacks last either way: the same run."""
    drw = {"class_path": "lt_lightning.callbacks.deferred_reweighting.DeferredReweighting", "init_args": {"beta": 0.9}}
    ckpt = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}}
    lrm = {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor", "init_args": {"logging_interval": "epoch"}}
    saved = {"trainer": {"max_epochs": 10, "callbacks": [drw, ckpt, lrm]}, **_model()}
    composed = {"trainer": {"max_epochs": 10, "callbacks": [lrm, ckpt, drw]}, **_model()}
    assert config_differences(saved, composed) != []  # key by key, the lists differ
    assert fit_differences(saved, composed) == []
    other = {"trainer": {"max_epochs": 10, "callbacks": [lrm, ckpt, {**drw, "init_args": {"beta": 0.99}}]}, **_model()}
    assert fit_differences(saved, other) == ["trainer.callbacks[0].init_args.beta: 0.9 in the source fit, 0.99 here"]


def test_keys_that_never_change_the_numbers_are_ignored() -> None:
    saved = {
        "trainer": {"logger": {"init_args": {"save_dir": "runs/a"}}, "enable_progress_bar": False},
        "ckpt_path": None,
    }
    resolved = {"trainer": {"logger": {"init_args": {"save_dir": "runs/b"}}, "enable_progress_bar": None}}
    resolved |= {"data_fingerprint": {"allow_data_mismatch": False}, "ckpt_path": "x.ckpt"}
    assert config_differences(saved, resolved) == []
    saved_model, resolved_model = _model(finite_check_every_n_steps=1), _model(finite_check_every_n_steps=50)
    assert config_differences(saved_model, resolved_model) == []


def test_an_option_added_since_is_accepted_only_at_its_default() -> None:
    saved = {"model": {"class_path": MODULE, "init_args": {}}}
    assert config_differences(saved, _model()) == []  # channels_last=False: LongTailModule's default
    diffs = config_differences(saved, _model(channels_last=True))
    assert diffs == ["model.init_args.channels_last: True here, absent in the source fit (not the default)"]
    # a parameter the subclass takes through **kwargs: its default is found on the parent class
    saved_data = {"data": {"class_path": "lt_lightning.data.cifar.CIFAR10LTDataModule", "init_args": {}}}
    resolved_data = {"data": {"class_path": "lt_lightning.data.cifar.CIFAR10LTDataModule", "init_args": {"views": 1}}}
    assert config_differences(saved_data, resolved_data) == []
    resolved_data["data"]["init_args"]["balanced_reference"] = True  # the balanced reference set: another run
    assert config_differences(saved_data, resolved_data) == [
        "data.init_args.balanced_reference: True here, absent in the source fit (not the default)"
    ]


def test_other_values_and_removed_keys_are_differences() -> None:
    saved = {"trainer": {"max_epochs": 10, "callbacks": [{"class_path": "a.B"}, {"class_path": "a.C"}]}, "seed": 0}
    resolved = {"trainer": {"max_epochs": 20, "callbacks": [{"class_path": "a.B"}]}}
    assert config_differences(saved, resolved) == [
        "seed: 0 in the source fit, absent here",
        "trainer.callbacks: [{'class_path': 'a.B'}, {'class_path': 'a.C'}] in the source fit, "
        "[{'class_path': 'a.B'}] here",
        "trainer.max_epochs: 10 in the source fit, 20 here",
    ]


def test_two_spellings_of_one_class_are_the_same_class() -> None:
    saved = {"classifier": {"class_path": "lt_lightning.heads.multi_expert.MultiExpertHead"}}
    assert config_differences(saved, {"classifier": {"class_path": "lt_lightning.heads.MultiExpertHead"}}) == []
    other = {"classifier": {"class_path": "lt_lightning.heads.linear.LinearHead"}}
    assert len(config_differences(saved, other)) == 1


STUDY = """name: tiny
seeds: [0]
baseline: ce
runs_dir: RUNS
report_dir: report
methods:
  - {name: ce, config: ce.yaml, family: baseline}
"""


def test_study_adopts_the_same_fit_and_trains_the_rest(tmp_path: Path, monkeypatch, capsys) -> None:
    synthetic_config(tmp_path / "ce.yaml")
    (tmp_path / "first.yaml").write_text(STUDY.replace("RUNS", "first"))
    (tmp_path / "second.yaml").write_text(STUDY.replace("RUNS", "second"))
    monkeypatch.chdir(tmp_path)
    main(["study", "-c", "first.yaml", "--launcher", "inprocess", "--no-report"])
    # another runs folder's layout: <runs>/<config stem>/fit
    (lt_unit,) = Path("first/ce").glob("lt-seed0-*")
    shutil.copytree(lt_unit / "fit", "table/ce/fit")
    json.dump({"fit_wall_s": 12.5}, Path("table/ce/result.json").open("w"))
    capsys.readouterr()

    main(["study", "-c", "second.yaml", "--launcher", "inprocess", "--no-report", "--adopt-fits", "table"])
    out = capsys.readouterr().out
    assert "ce [lt, seed 0]: adopted table/ce/fit" in out
    assert "ce [balanced, seed 0]: table/ce/fit is another run: data.init_args.balanced_reference" in out
    (adopted,) = Path("second/ce").glob("lt-seed0-*")
    assert json.loads((adopted / "fit.done.json").read_text())["adopted_from"] == "table/ce/fit"
    result, original = (json.loads((u / "result.json").read_text()) for u in (adopted, lt_unit))
    assert result["fit_adopted_from"] == "table/ce/fit" and result["fit_wall_s"] == 12.5
    assert result["acc"] == original["acc"] and result["per_class"] == original["per_class"]
    assert "done ce [balanced, seed 0]" in out  # the balanced run was trained

    capsys.readouterr()
    main(["study", "-c", "second.yaml", "--launcher", "inprocess", "--no-report", "--adopt-fits", "table"])
    assert "cached ce [lt, seed 0]" in capsys.readouterr().out  # adopted once, then cached


def test_an_unfinished_fit_is_adopted_and_resumed_to_the_uninterrupted_result(tmp_path: Path, monkeypatch) -> None:
    """A long fit killed mid-way in another runs folder moves into the study: copied, then resumed from its last
    checkpoint, it ends where the uninterrupted fit ends."""
    lt_unit = _two_epoch_fit_of_study_first(tmp_path, monkeypatch)
    shutil.copytree(lt_unit / "fit", "table/ce/fit")
    _keep_only_the_first_epoch(Path("table/ce/fit/checkpoints"))  # as if killed after epoch 1 of 2

    main(["study", "-c", "second.yaml", "--launcher", "inprocess", "--no-report", "--adopt-fits", "table"])
    (adopted,) = Path("second/ce").glob("lt-seed0-*")
    marker = json.loads((adopted / "fit.done.json").read_text())
    assert marker["resumed_from"].endswith("adopted-last.ckpt") and "adopted_from" not in marker
    result, original = (json.loads((u / "result.json").read_text()) for u in (adopted, lt_unit))
    assert result["acc"] == original["acc"] and result["per_class"] == original["per_class"]


def test_a_studys_own_runs_folder_is_searched_by_method_training_set_and_seed(tmp_path: Path, monkeypatch) -> None:
    """After a code change gives every run a new key, the study adopts its old finished fits from its runs folder."""
    synthetic_config(tmp_path / "ce.yaml")
    study = STUDY.replace("RUNS", "RUNS\ntrain_sets: [lt]")
    (tmp_path / "first.yaml").write_text(study.replace("RUNS", "first"))
    (tmp_path / "second.yaml").write_text(study.replace("RUNS", "second"))
    monkeypatch.chdir(tmp_path)
    main(["study", "-c", "first.yaml", "--launcher", "inprocess", "--no-report"])
    main(["study", "-c", "second.yaml", "--launcher", "inprocess", "--no-report", "--adopt-fits", "first"])
    (old,) = Path("first/ce").glob("lt-seed0-*")
    (new,) = Path("second/ce").glob("lt-seed0-*")
    assert json.loads((new / "fit.done.json").read_text())["adopted_from"] == str(old / "fit")
    result, original = (json.loads((u / "result.json").read_text()) for u in (new, old))
    assert result["acc"] == original["acc"]


def test_an_unfinished_fit_in_a_studys_runs_folder_is_resumed_under_the_new_key(tmp_path: Path, monkeypatch) -> None:
    """A study killed mid-fit, whose runs then get new keys, resumes the killed fit rather than training anew."""
    unit = _two_epoch_fit_of_study_first(tmp_path, monkeypatch)
    original = json.loads((unit / "result.json").read_text())
    shutil.copytree(unit, "killed/ce/" + unit.name)  # the study's layout, killed after epoch 1 of 2
    killed = Path("killed/ce") / unit.name
    (killed / "result.json").unlink()
    (killed / "fit.done.json").unlink()
    _keep_only_the_first_epoch(killed / "fit" / "checkpoints")

    main(["study", "-c", "second.yaml", "--launcher", "inprocess", "--no-report", "--adopt-fits", "killed"])
    (resumed,) = Path("second/ce").glob("lt-seed0-*")
    assert json.loads((resumed / "fit.done.json").read_text())["resumed_from"].endswith("adopted-last.ckpt")
    assert json.loads((resumed / "result.json").read_text())["acc"] == original["acc"]


def _keep_only_the_first_epoch(checkpoints: Path) -> None:
    """Leave a fit's checkpoints as a kill after epoch 1 would: the epoch-0 checkpoint as ``last.ckpt``, no other."""
    (first_epoch,) = checkpoints.glob("epoch=0-*.ckpt")
    for ckpt in checkpoints.glob("*.ckpt"):
        if ckpt != first_epoch:
            ckpt.unlink()
    first_epoch.rename(checkpoints / "last.ckpt")


def _two_epoch_fit_of_study_first(tmp_path: Path, monkeypatch) -> Path:
    """Studies ``first.yaml`` and ``second.yaml`` (long-tailed runs only) of a 2-epoch CE config that keeps every
    epoch's checkpoint, in ``tmp_path`` (the current directory); ``first`` run; its unit folder."""
    config = synthetic_config(tmp_path / "ce.yaml").read_text()
    config = config.replace("max_epochs: 1", "max_epochs: 2").replace(
        "{save_last: true}", "{save_last: true, save_top_k: -1}"
    )
    (tmp_path / "ce.yaml").write_text(config)
    study = STUDY.replace("RUNS", "RUNS\ntrain_sets: [lt]")
    (tmp_path / "first.yaml").write_text(study.replace("RUNS", "first"))
    (tmp_path / "second.yaml").write_text(study.replace("RUNS", "second"))
    monkeypatch.chdir(tmp_path)
    main(["study", "-c", "first.yaml", "--launcher", "inprocess", "--no-report"])
    (unit,) = Path("first/ce").glob("lt-seed0-*")
    return unit
