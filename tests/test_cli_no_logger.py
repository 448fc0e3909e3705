"""`--trainer.logger false` through the real CLI (issue 18, silent failure 6): every config runs without a logger
(``LearningRateMonitor`` is dropped), and each run writes into its own ``logs/no_logger/version_N``, never into the
current directory."""

from __future__ import annotations

import json
from pathlib import Path

from lt_lightning.cli import run as main
from lt_lightning.experiments import experiment_args

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
LDAM_DRW = experiment_args("digits_lt", "ldam_drw")
FAST = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "2"]
FIT = [*FAST, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_method_config_with_a_learning_rate_monitor_runs_without_a_logger(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.chdir(tmp_path)
    monitor = ["--trainer.callbacks+=lightning.pytorch.callbacks.LearningRateMonitor"]  # as the CIFAR configs have
    with caplog.at_level("INFO"):
        fit = main(["fit", *LDAM_DRW, *FIT, *monitor])
    assert "LearningRateMonitor dropped" in caplog.text
    run = tmp_path / "logs" / "no_logger" / "version_0"
    assert Path(fit.trainer.default_root_dir).resolve() == run
    assert {"config.yaml", "checkpoints/last.ckpt"} <= _files(run)

    test = main(["test", *LDAM_DRW, *FAST, *monitor, "--ckpt_path", "last"])  # found in version_0
    report = Path(test.trainer.log_dir).resolve()
    assert report == tmp_path / "logs" / "no_logger" / "version_1"
    assert {"config.yaml", "per_class_accuracy.json", "per_class_accuracy.png"} <= _files(report)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]  # nothing in the current directory


def test_quickstart_without_a_logger_never_overwrites_a_run(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", QUICKSTART, *FIT])
    ckpt = str(tmp_path / "logs" / "quickstart" / "checkpoints" / "last.ckpt")  # the config's own dirpath
    first = Path(main(["test", "-c", QUICKSTART, *FAST, "--ckpt_path", ckpt]).trainer.log_dir)
    first_report = json.loads((first / "per_class_accuracy.json").read_text())
    again = main(["test", "-c", QUICKSTART, *FAST, "--ckpt_path", ckpt, "--trainer.limit_test_batches", "1"])
    second = Path(again.trainer.log_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]
    runs = sorted(p.name for p in (tmp_path / "logs" / "no_logger").iterdir())
    assert runs == ["version_0", "version_1", "version_2"]  # fit, test, test: one folder each
    assert first != second
    for folder in (first, second):
        assert {"config.yaml", "per_class_accuracy.json", "per_class_accuracy.png"} <= _files(folder.resolve())
    assert json.loads((first / "per_class_accuracy.json").read_text()) == first_report  # not overwritten
    assert "limit_test_batches: 1" in (second / "config.yaml").read_text()
    assert "limit_test_batches: 1" not in (first / "config.yaml").read_text()


def test_a_given_default_root_dir_is_kept(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    fit = main(["fit", *LDAM_DRW, *FIT, "--trainer.default_root_dir", "mine"])
    assert Path(fit.trainer.default_root_dir).resolve() == tmp_path / "mine"
    assert {"config.yaml", "checkpoints/last.ckpt"} <= _files(tmp_path / "mine")
    assert not (tmp_path / "logs").exists()
