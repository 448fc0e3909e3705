"""``lt-lightning predict`` writes the top-k classes to CSV and JSON (issue 18), through the real CLI on Digits-LT.

What must hold: the predictions are those of ``test`` (same checkpoint, same test-time rules: the JSON's top-1
accuracy equals ``test/acc``); a folder of image files reaches the model exactly like the test images (same
probabilities for the same pixels); a bad source or option stops with one clear message; under DDP the files equal
the one-process ones.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lt_lightning.cli import run as main
from lt_lightning.data.digits import DigitsLTDataModule
from lt_lightning.experiments import experiment_args
from tests.test_ddp import _cli, _ddp

REPO = Path(__file__).resolve().parents[1]
CE = tuple(experiment_args("digits_lt", "ce"))
POSTHOC = tuple(experiment_args("digits_lt", "posthoc_logit_adjust"))
TAU_NORM = tuple(experiment_args("digits_lt", "tau_norm"))
NCM = tuple(experiment_args("digits_lt", "ncm"))
#: the test-time rule each config installs (LongTailModule.test_output applies it in test and predict alike)
RULES = {CE: [], POSTHOC: ["logit offset (post-hoc logit adjustment)"], TAU_NORM: ["test head"], NCM: ["test head"]}
FIT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.enable_progress_bar", "false"]
QUIET = ["--trainer.enable_progress_bar", "false"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("config", list(RULES), ids=["ce", "posthoc_logit_adjust", "tau_norm", "ncm"])
def test_predict_writes_the_test_predictions_with_the_test_time_rules(tmp_path, monkeypatch, config) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", *config, *FIT])
    tested = main(["test", *config, "--ckpt_path", "last", *QUIET])
    test_acc = float(tested.trainer.callback_metrics["test/acc"])

    out = tmp_path / "out" / "preds"
    main(["predict", *config, "--ckpt_path", "last", "--prediction.output", str(out), "--prediction.top_k", "3"])
    summary = json.loads((tmp_path / "out" / "preds.json").read_text())
    rows = _read_csv(tmp_path / "out" / "preds.csv")

    assert summary["num_images"] == len(rows) == 400 and summary["top_k"] == 3
    assert summary["source"] == "test" and summary["checkpoint"].endswith("last.ckpt")
    assert summary["top1_accuracy"] == pytest.approx(test_acc, abs=1e-6)
    rules = summary["test_time_rules"]
    assert len(rules) == len(RULES[config])
    assert all(r.startswith(e) for r, e in zip(rules, RULES[config], strict=True))
    assert list(rows[0]) == ["id", "true_class", "class_1", "prob_1", "class_2", "prob_2", "class_3", "prob_3"]
    assert [r["id"] for r in rows[:2]] == ["test[0]", "test[1]"]
    for row, record in zip(rows, summary["predictions"], strict=True):
        probs = [float(row[f"prob_{j}"]) for j in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and 0.0 <= sum(probs) <= 1.0 + 1e-5
        assert row["class_1"] == record["top_k"][0]["class"] and row["true_class"] == record["true_class"]


def test_predict_on_a_folder_gives_the_test_images_probabilities(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", *CE, *FIT])
    on_test = main(["predict", *CE, "--ckpt_path", "last", "--prediction.output", "test_preds", *QUIET])
    assert on_test.trainer.callbacks  # the CLI ran

    data = DigitsLTDataModule(imbalance_ratio=10.0)  # the config's data
    data.setup("test")
    folder = tmp_path / "my_digits" / "nested"
    folder.mkdir(parents=True)
    chosen = [0, 7, 123, 399]
    for i in chosen:  # the test images' exact pixels, as 8-bit grey PNGs
        Image.fromarray(data.test_dataset[i][0][0].numpy(), mode="L").save(folder / f"img_{i:03d}.png")
    (folder / "notes.txt").write_text("not an image")

    source = ["--prediction.source", "my_digits", "--prediction.output", "folder_preds.csv", "--prediction.top_k", "10"]
    main(["predict", *CE, "--ckpt_path", "last", *source, *QUIET])
    folder_rows = _read_csv(tmp_path / "folder_preds.csv")
    assert [r["id"] for r in folder_rows] == [str(Path("my_digits") / "nested" / f"img_{i:03d}.png") for i in chosen]
    assert "true_class" not in folder_rows[0]
    summary = json.loads((tmp_path / "folder_preds.json").read_text())
    assert "top1_accuracy" not in summary and summary["num_images"] == 4

    test_json = json.loads((tmp_path / "test_preds.json").read_text())["predictions"]
    for i, row in zip(chosen, folder_rows, strict=True):
        expected = {top["class"]: top["prob"] for top in test_json[i]["top_k"]}  # top 5 of the test run
        got = {row[f"class_{j}"]: float(row[f"prob_{j}"]) for j in range(1, 11)}
        for name, prob in expected.items():
            assert got[name] == pytest.approx(prob, abs=2e-6), (i, name)


def test_predict_on_the_training_split_has_one_row_per_training_image(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", *CE, *FIT])
    source = ["--prediction.source", "train", "--prediction.output", "p", "--prediction.formats", "[csv]"]
    main(["predict", *CE, "--ckpt_path", "last", *source, *QUIET])
    rows = _read_csv(tmp_path / "p.csv")
    counts = np.bincount([int(r["true_class"]) for r in rows], minlength=10)
    assert counts.tolist() == [114, 88, 68, 52, 40, 31, 24, 19, 14, 11]
    assert not (tmp_path / "p.json").exists()


def test_limited_predict_batches_write_the_predicted_images_with_a_warning(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", *CE, *FIT])
    with pytest.warns(UserWarning, match=r"64 of the 400 images of 'test' were predicted"):
        main(
            [
                "predict",
                *CE,
                "--ckpt_path",
                "last",
                "--trainer.limit_predict_batches",
                "1",
                "--prediction.output",
                "p",
            ]
        )
    assert len(_read_csv(tmp_path / "p.csv")) == 64


def test_predict_refuses_a_source_that_is_neither_a_split_nor_a_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", *CE, *FIT])
    with pytest.raises(ValueError, match=r"'no_such_dir' is neither a split .*--prediction\.source"):
        main(["predict", *CE, "--ckpt_path", "last", "--prediction.source", "no_such_dir", *QUIET])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image file"):
        main(["predict", *CE, "--ckpt_path", "last", "--prediction.source", "empty", *QUIET])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"top_k": 0}, "top_k must be"), ({"formats": ["xml"]}, "formats must be"), ({"source": ""}, "source must be")],
)
def test_prediction_writer_rejects_bad_options(kwargs, match) -> None:
    from lt_lightning.callbacks.prediction_writer import PredictionWriter

    with pytest.raises(ValueError, match=match):
        PredictionWriter(**kwargs)


@pytest.mark.ddp
def test_ddp_predict_writes_the_one_process_files(tmp_path: Path) -> None:
    _cli(["fit", *CE, *FIT], tmp_path)
    for devices in (1, 2):
        output = ["--prediction.output", f"p{devices}"]
        _cli(["predict", *CE, "--ckpt_path", "last", *output, *_ddp(devices)], tmp_path)
    one, two = (_read_csv(tmp_path / f"p{d}.csv") for d in (1, 2))
    assert len(one) == 400 and [r["id"] for r in two] == [r["id"] for r in one]
    for a, b in zip(one, two, strict=True):
        assert a["class_1"] == b["class_1"] and float(a["prob_1"]) == pytest.approx(float(b["prob_1"]), abs=1e-5)
