"""Which weights the CLI runs on (issue 18, silent failures 1 and 2), through the real CLI on Digits-LT.

``--ckpt_path last`` resumes / evaluates the newest ``last.ckpt`` of the run directory across logger versions (the
method configs keep checkpoints in ``logs/lightning_logs/version_N/checkpoints``), or stops naming where it looked;
``test`` / ``validate`` / ``predict`` without a checkpoint refuse unless ``--ckpt_path untrained`` asks for the
initial weights on purpose.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lt_lightning.cli import run as main
from lt_lightning.experiments import experiment_args

REPO = Path(__file__).resolve().parents[1]
CE = experiment_args("digits_lt", "ce")
FOCAL = experiment_args("digits_lt", "focal")
TINY = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "2"]
TINY += ["--trainer.enable_progress_bar", "false"]


def _last(tmp_path: Path, version: int) -> Path:
    return tmp_path / "logs" / "lightning_logs" / f"version_{version}" / "checkpoints" / "last.ckpt"


def _assert_weights_are(model: torch.nn.Module, ckpt: Path) -> None:
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    current = model.state_dict()
    assert saved.keys() == current.keys()
    for key, value in saved.items():
        assert torch.equal(current[key].cpu(), value), key


def test_ckpt_path_last_resumes_and_tests_the_newest_last_checkpoint_of_the_run(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = main(["fit", *CE, "--trainer.max_epochs", "1", *TINY])
    assert first.trainer.global_step == 2 and _last(tmp_path, 0).is_file()

    # the re-run's logger is version_1: "last" must still find version_0's last.ckpt and continue from it
    resumed = main(["fit", *CE, "--trainer.max_epochs", "2", "--ckpt_path", "last", *TINY])
    assert resumed.trainer.ckpt_path is not None
    assert Path(resumed.trainer.ckpt_path).resolve() == _last(tmp_path, 0).resolve()
    assert resumed.trainer.current_epoch == 2 and resumed.trainer.global_step == 4
    second = torch.load(_last(tmp_path, 1), map_location="cpu", weights_only=True)
    assert (second["epoch"], second["global_step"]) == (1, 4)

    # `test --ckpt_path last` evaluates the newest last.ckpt (version_1's), the same logits as loading it
    tested = main(["test", *CE, "--ckpt_path", "last", *TINY])
    assert Path(tested.trainer.ckpt_path).resolve() == _last(tmp_path, 1).resolve()
    _assert_weights_are(tested.model, _last(tmp_path, 1))
    assert "test/acc" in tested.trainer.callback_metrics
    loaded = type(tested.model).load_from_checkpoint(_last(tmp_path, 1))
    dm = tested.datamodule
    dm.setup("test")
    x = dm.augmentation(dm.test_dataset.images[:16])
    tested.model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(tested.model(x).logits, loaded(x).logits)

    # another method's runs share logs/lightning_logs: "last" never picks a checkpoint of another model config
    with pytest.raises(ValueError, match=r"--ckpt_path last.*other model config"):
        main(["test", *FOCAL, "--ckpt_path", "last", *TINY])


@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_ckpt_path_last_without_any_checkpoint_names_the_folders_it_searched(subcommand, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"--ckpt_path last.*no last\.ckpt.*logs/lightning_logs/\*/checkpoints"):
        main([subcommand, *CE, "--trainer.max_epochs", "1", "--ckpt_path", "last", *TINY])
    assert not list(tmp_path.glob("logs/lightning_logs/*/checkpoints/*.ckpt"))  # nothing was trained


def test_ckpt_path_last_finds_a_model_checkpoint_dirpath(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    dirpath = ["--trainer.callbacks.dirpath", str(tmp_path / "ckpts")]
    main(["fit", *CE, "--trainer.max_epochs", "1", *dirpath, *TINY])
    tested = main(["test", *CE, "--ckpt_path", "last", *dirpath, *TINY])
    assert Path(tested.trainer.ckpt_path).resolve() == (tmp_path / "ckpts" / "last.ckpt").resolve()
    _assert_weights_are(tested.model, tmp_path / "ckpts" / "last.ckpt")


@pytest.mark.parametrize("subcommand", ["test", "validate", "predict"])
def test_evaluating_without_a_checkpoint_refuses_unless_asked_for(subcommand, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"no checkpoint.*--ckpt_path untrained"):
        main([subcommand, *CE, *TINY])
    assert not list(tmp_path.rglob("per_class_accuracy.*"))  # no normal-looking report of random weights

    cli = main([subcommand, *CE, "--ckpt_path", "untrained", "--trainer.limit_predict_batches", "1", *TINY])
    assert cli.trainer.ckpt_path is None
    if subcommand != "predict":
        assert f"{'test' if subcommand == 'test' else 'val'}/acc" in cli.trainer.callback_metrics
