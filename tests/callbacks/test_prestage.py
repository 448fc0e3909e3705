"""``run_prestage``: an earlier stage fitted in a subprocess once (cached), a failure with the tail of its log, and a
single step under ``fast_dev_run``."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from lt_lightning.callbacks._prestage import prestage_folder, resolve_config, resolve_config_args, run_prestage

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]

TINY_DIGITS = """\
seed_everything: 0
trainer:
  max_epochs: 1
  limit_train_batches: 3
  limit_val_batches: 1
  num_sanity_val_steps: 0
  accelerator: cpu
  devices: 1
  enable_model_summary: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {save_last: true}
data:
  class_path: lt_lightning.data.digits.DigitsLTDataModule
  init_args: {batch_size: 32}
model:
  class_path: lt_lightning.module.LongTailModule
  init_args:
    backbone:
      class_path: lt_lightning.backbones.resnet_cifar.ResNet20
      init_args: {in_channels: 1}
"""


def _trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    args = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False}
    return L.Trainer(default_root_dir=tmp_path, **(args | kwargs))


def test_fast_dev_run_fits_one_step_once_and_a_second_call_reuses_it(tmp_path: Path) -> None:
    config = tmp_path / "stage.yaml"
    config.write_text(TINY_DIGITS)
    trainer = _trainer(tmp_path, fast_dev_run=True)
    checkpoint = run_prestage(trainer, config, [], tmp_path / "prestages", owner="test")
    folder = checkpoint.parent.parent
    assert checkpoint.is_file() and (folder / "done").is_file() and not (folder / "failed").exists()
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 1  # max_steps=1, not the config's 3 batches
    written = (folder / "stage.log").stat().st_mtime_ns, checkpoint.stat().st_mtime_ns

    again = run_prestage(trainer, config, [], tmp_path / "prestages", owner="test")
    assert again == checkpoint
    assert ((folder / "stage.log").stat().st_mtime_ns, checkpoint.stat().st_mtime_ns) == written  # no second fit
    # the folder is keyed by the config's text and the arguments: other arguments or another text, another stage
    fast = ["--trainer.max_steps=1", "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0"]
    assert prestage_folder(config, fast, tmp_path / "prestages") == folder
    assert prestage_folder(config, [*fast, "--seed_everything=1"], tmp_path / "prestages") != folder
    config.write_text(TINY_DIGITS.replace("batch_size: 32", "batch_size: 16"))
    assert prestage_folder(config, fast, tmp_path / "prestages") != folder


def test_a_failed_stage_raises_with_the_tail_of_its_log(tmp_path: Path) -> None:
    config = tmp_path / "stage.yaml"
    config.write_text(TINY_DIGITS)
    trainer = _trainer(tmp_path, max_epochs=1)
    bad = ["--data.init_args.imbalance_ratio=-3"]
    with pytest.raises(
        RuntimeError, match=r"(?s)test: the earlier stage .* failed \(exit status \d+\):.*imbalance_ratio"
    ):
        run_prestage(trainer, config, bad, tmp_path / "prestages", owner="test")
    folder = prestage_folder(config, bad, tmp_path / "prestages")
    assert (folder / "failed").is_file() and not (folder / "done").exists()
    assert "imbalance_ratio" in (folder / "stage.log").read_text()


def test_configs_are_found_in_the_checkout_from_any_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    found = resolve_config("configs/method/balanced_softmax.yaml")
    assert found == REPO / "configs" / "method" / "balanced_softmax.yaml"
    local = tmp_path / "configs" / "method" / "balanced_softmax.yaml"
    local.parent.mkdir(parents=True)
    local.write_text(TINY_DIGITS)
    assert resolve_config("configs/method/balanced_softmax.yaml").resolve() == local  # cwd first
    with pytest.raises(FileNotFoundError, match="pre-stage config 'nope.yaml' does not exist"):
        resolve_config("nope.yaml")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_prestage(_trainer(tmp_path), "nope.yaml", [], tmp_path / "prestages")


def test_config_arguments_are_resolved_and_their_text_is_part_of_the_cache_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    budget = "configs/budget/ldam_drw_10ep.yaml"
    in_checkout = str(REPO / budget)
    assert resolve_config_args(["-c", budget, "--config=" + budget, "--trainer.max_epochs=3"]) == (
        ["-c", in_checkout, "--config=" + in_checkout, "--trainer.max_epochs=3"],
        [Path(in_checkout), Path(in_checkout)],
    )
    with pytest.raises(FileNotFoundError, match="'nope.yaml' does not exist"):
        resolve_config_args(["-c", "nope.yaml"])
    stage = tmp_path / "stage.yaml"
    stage.write_text(TINY_DIGITS)
    local = tmp_path / "budget.yaml"
    local.write_text("trainer:\n  max_epochs: 2\n")
    first = prestage_folder(stage, ["-c", str(local)], tmp_path)
    assert prestage_folder(stage, ["-c", "budget.yaml"], tmp_path) == first  # same file, however it is named
    local.write_text("trainer:\n  max_epochs: 3\n")
    assert prestage_folder(stage, ["-c", str(local)], tmp_path) != first  # an edited budget is a new stage
    assert prestage_folder(stage, [], tmp_path) != first
