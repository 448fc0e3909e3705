"""Composed configs (issue 19): ``-c configs/data/D.yaml -c configs/method/M.yaml``, the CLI's defaults, run identity.

The invariant itself (every shipped composition resolves to the run its old single file resolved to; the baseline
was made from the single files) is ``tests/test_configs.py::test_config_resolves_as_its_baseline``; this file checks
the parts it rests on with hand-made configs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lt_lightning import experiments
from lt_lightning.callbacks.knowledge_distillation import KnowledgeDistillation
from lt_lightning.run_identity import resolve, run_identity, run_key
from lt_lightning.study.grid import unit_key

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CKPT = "lightning.pytorch.callbacks.ModelCheckpoint"
LRM = "lightning.pytorch.callbacks.LearningRateMonitor"
DRW = "lt_lightning.callbacks.deferred_reweighting.DeferredReweighting"
DIGITS = "data:\n  class_path: lt_lightning.data.digits.DigitsLTDataModule\n"


def _classes(resolved: dict) -> list[str]:
    return [c["class_path"] for c in resolved["trainer"]["callbacks"]]


def test_cli_defaults_give_checkpoint_lr_monitor_and_loggers(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").write_text(DIGITS)
    resolved = resolve(["-c", str(tmp_path / "d.yaml")])
    assert _classes(resolved) == [LRM, CKPT]
    checkpoint = resolved["trainer"]["callbacks"][1]["init_args"]
    assert checkpoint["save_last"] is True and checkpoint["save_top_k"] == 1 and checkpoint["monitor"] is None
    loggers = [lg["class_path"].rsplit(".", 1)[-1] for lg in resolved["trainer"]["logger"]]
    assert loggers == ["CSVLogger", "TensorBoardLogger"]


def test_method_callbacks_append_to_the_defaults_across_files(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").write_text(DIGITS)
    (tmp_path / "m.yaml").write_text(f"trainer:\n  callbacks+:\n    - class_path: {DRW}\n")
    resolved = resolve(["-c", str(tmp_path / "d.yaml"), "-c", str(tmp_path / "m.yaml")])
    assert _classes(resolved) == [LRM, CKPT, DRW]
    # the same run as one file listing the method's callback first and the checkpoint after it
    (tmp_path / "one.yaml").write_text(
        DIGITS + f"trainer:\n  callbacks:\n    - class_path: {DRW}\n    - class_path: {CKPT}\n"
        "      init_args: {save_last: true, save_top_k: 1}\n"
    )
    single = resolve(["-c", str(tmp_path / "one.yaml")])
    assert _classes(single) == [DRW, CKPT]
    assert run_identity(single) == run_identity(resolved) and run_key(single) == run_key(resolved)


def test_run_identity_ignores_what_never_computes_and_keeps_what_does() -> None:
    resolved = {
        "seed_everything": 0,
        "ckpt_path": "a.ckpt",
        "trainer": {
            "max_epochs": 3,
            "logger": [{"class_path": "x"}],
            "enable_progress_bar": True,
            "callbacks": [{"class_path": CKPT}, {"class_path": LRM}, {"class_path": DRW, "init_args": {"beta": 0.9}}],
        },
    }
    identity = run_identity(resolved)
    assert identity == {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 3,
            "callbacks": [{"class_path": DRW, "init_args": {"beta": 0.9}}, {"class_path": CKPT}],
        },
    }
    assert resolved["trainer"]["logger"] and resolved["ckpt_path"] == "a.ckpt"  # the input is left as it was
    changed = {**resolved, "trainer": {**resolved["trainer"], "max_epochs": 4}}
    assert run_key(changed) != run_key(resolved)


def test_registry_prefers_the_dataset_method_file_and_names_what_exists() -> None:
    assert experiments.method_config("cifar10_lt", "ldam_drw") == CONFIGS / "method" / "ldam_drw.yaml"
    assert experiments.method_config("digits_lt", "crt") == CONFIGS / "method" / "digits_lt" / "crt.yaml"
    assert experiments.experiment_args("cifar10_lt", "ce") == [
        "-c",
        str(CONFIGS / "data" / "cifar10_lt.yaml"),
        "-c",
        str(CONFIGS / "method" / "ce.yaml"),
    ]
    assert "balanced_softmax_paper" in experiments.methods("cifar100_lt")
    assert "balanced_softmax_paper" not in experiments.methods("digits_lt")
    assert experiments.methods("imagenet_lt") == experiments.methods("inat2018") == ["ce", "lift"]
    # Places-LT is the ImageNet-LT recipe with Places-LT's data: two data files, then the method (DATA_FILES)
    assert experiments.experiment_configs("places_lt", "lift") == [
        CONFIGS / "data" / "imagenet_lt.yaml",
        CONFIGS / "data" / "places_lt.yaml",
        CONFIGS / "method" / "places_lt" / "lift.yaml",
    ]
    assert experiments.experiment_configs("places_lt", "ce")[-1] == CONFIGS / "method" / "ce.yaml"
    with pytest.raises(FileNotFoundError, match="no method 'nope'.*ldam_drw"):
        experiments.method_config("cifar10_lt", "nope")
    with pytest.raises(FileNotFoundError, match="no data config"):
        experiments.data_config("mnist_lt")


def test_every_method_file_is_shipped_somewhere() -> None:
    """A method file no dataset uses would be a config without an experiment (and without an invariant)."""
    used = {experiments.method_config(d, m) for d, m in experiments.shipped()}
    files = set((CONFIGS / "method").rglob("*.yaml"))
    assert files - used == set()


def test_teacher_config_takes_composed_files_and_refuses_bad_ones() -> None:
    callback = KnowledgeDistillation(
        teacher_config=["configs/data/digits_lt.yaml", "configs/method/balanced_softmax.yaml"]
    )
    assert callback.teacher_config == ["configs/data/digits_lt.yaml", "configs/method/balanced_softmax.yaml"]
    assert KnowledgeDistillation(teacher_config="t.yaml").teacher_config == ["t.yaml"]
    for bad in ([], [""], ["a.yaml", 3]):
        with pytest.raises(ValueError, match="teacher_config must be a non-empty path or list of paths"):
            KnowledgeDistillation(teacher_config=bad)


def test_study_key_follows_the_run_not_the_files(tmp_path: Path) -> None:
    """Splitting a config into data + method files, or editing a comment, keeps a study unit's cache key."""
    drw = (
        f"trainer:\n  callbacks:\n    - class_path: {DRW}\n      init_args: {{beta: 0.99}}\n"
        f"    - class_path: {CKPT}\n      init_args: {{save_last: true, save_top_k: 1}}\n"
    )
    (tmp_path / "one.yaml").write_text(DIGITS + drw)
    (tmp_path / "d.yaml").write_text("# the data\n" + DIGITS)
    (tmp_path / "m.yaml").write_text(
        f"trainer:\n  callbacks+:\n    - class_path: {DRW}\n      init_args: {{beta: 0.99}}\n"
    )
    one = unit_key([str(tmp_path / "one.yaml")], ["--seed_everything=0"])
    assert unit_key([str(tmp_path / "d.yaml"), str(tmp_path / "m.yaml")], ["--seed_everything=0"]) == one
    assert unit_key([str(tmp_path / "one.yaml")], ["--seed_everything=1"]) != one
    (tmp_path / "one.yaml").write_text(DIGITS + drw.replace("0.99", "0.9"))
    assert unit_key([str(tmp_path / "one.yaml")], ["--seed_everything=0"]) != one


def test_checkpointing_off_drops_the_default_checkpoint(tmp_path: Path, monkeypatch) -> None:
    """``--trainer.enable_checkpointing false`` with the default ModelCheckpoint runs, without checkpoints."""
    from lt_lightning.cli import run

    monkeypatch.chdir(tmp_path)
    args = [*experiments.experiment_args("digits_lt", "ce"), "--trainer.enable_checkpointing", "false"]
    cli = run(["fit", *args, "--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false"])
    assert cli.trainer.state.finished and cli.trainer.checkpoint_callbacks == []
