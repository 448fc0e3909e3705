"""``TestReport``: a real ``Trainer.test`` on a tiny ``LongTailModule``, then the table, the PNG and the JSON."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger
from rich.console import Console
from torch import Tensor, nn

from lt_lightning.backbones.base import Backbone
from lt_lightning.callbacks import TestReport
from lt_lightning.callbacks.test_report import (
    build_report,
    plot_confusion_matrix,
    plot_per_class_accuracy,
    plot_reliability,
    report_table,
)
from lt_lightning.data.base import LongTailDataModule, TensorImageDataset
from lt_lightning.metrics import SCALAR_KEYS, CalibrationMetric, LongTailAccuracy
from lt_lightning.module import LongTailModule

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# training counts: class 0 many-shot (> 100), 1 and 2 medium-shot, 3 few-shot (< 20)
TRAIN_COUNTS = (120, 50, 25, 5)
# test images per class: class 2 (medium) has none, so its accuracy is undefined
TEST_COUNTS = (7, 6, 0, 5)
# the class each test image will be predicted as (TinyBackbone + identity head predict the brightness bin):
# class 0: 5/7 right, class 1: 3/6, class 3: 1/5
TEST_PREDICTIONS = (0, 0, 0, 0, 0, 1, 3) + (1, 1, 1, 0, 0, 3) + (3, 0, 1, 1, 2)
# hand-computed results
PER_CLASS = (5 / 7, 3 / 6, math.nan, 1 / 5)
EXPECTED = {
    "acc": 9 / 18,
    "acc_balanced": (5 / 7 + 3 / 6 + 1 / 5) / 3,
    "acc_many": 5 / 7,
    "acc_medium": 3 / 6,  # class 2 has no test image: left out of the mean
    "acc_few": 1 / 5,
}
# the logits are one-hot at the predicted class: every confidence is e / (e + 3), in bin 7 of 15
CONF = math.e / (math.e + 3)
# NLL: -log(CONF) for a right prediction, -log(1 / (e + 3)) for a wrong one = log(e + 3) - [right]
EXPECTED_CALIBRATION = {
    "ece": abs(9 / 18 - CONF),
    "ece_many": abs(5 / 7 - CONF),
    "ece_medium": abs(3 / 6 - CONF),
    "ece_few": abs(1 / 5 - CONF),
    "nll": math.log(math.e + 3) - 9 / 18,
    "nll_many": math.log(math.e + 3) - 5 / 7,
    "nll_medium": math.log(math.e + 3) - 3 / 6,
    "nll_few": math.log(math.e + 3) - 1 / 5,
}
# rows: true class, columns: prediction (TEST_PREDICTIONS)
CONFUSION = [[5, 1, 0, 1], [2, 3, 0, 1], [0, 0, 0, 0], [1, 2, 1, 1]]
BRIGHTNESS = (32, 96, 160, 224)  # uint8 value of an image predicted as class k


class TinyBackbone(Backbone):
    """One-hot of the image's mean brightness in 4 bins: with an identity head, the prediction is the bin.

    Images are normalised with mean 0.5 and std 0.25, so the mean pixel lies in ``[-2, 2]``; bin ``k`` covers
    ``[-2 + k, -1 + k)``. A parameter-free, deterministic stand-in for a trained network.
    """

    def __init__(self) -> None:
        super().__init__()
        self.num_features = 4
        self.scale = nn.Parameter(torch.ones(()))  # something for the optimizer to own

    def forward_features(self, x: Tensor) -> Tensor:
        bins = (x.flatten(1).mean(dim=1) + 2.0).floor().clamp(0, 3).long()
        return nn.functional.one_hot(bins, 4).to(x.dtype) * self.scale


class TinyData(LongTailDataModule):
    """Random 1x4x4 uint8 images with the long-tailed training counts above and an unbalanced test set."""

    mean = (0.5,)
    std = (0.25,)

    def __init__(self, batch_size: int = 16) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=4, augment=False)
        labels = torch.repeat_interleave(torch.arange(len(TRAIN_COUNTS)), torch.tensor(TRAIN_COUNTS))
        self._set_class_info(labels, len(TRAIN_COUNTS), class_names=["cat", "dog", "owl", "yak"])
        self.test_labels = torch.repeat_interleave(torch.arange(len(TEST_COUNTS)), torch.tensor(TEST_COUNTS))
        gen = torch.Generator().manual_seed(0)
        self.train_images = torch.randint(0, 256, (len(labels), 1, 4, 4), generator=gen, dtype=torch.uint8)
        brightness = torch.tensor([BRIGHTNESS[k] for k in TEST_PREDICTIONS], dtype=torch.uint8)
        self.test_images = brightness.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()

    def setup(self, stage: str) -> None:
        self.train_dataset = TensorImageDataset(self.train_images, self.train_labels)
        self.val_dataset = TensorImageDataset(self.test_images, self.test_labels)
        self.test_dataset = TensorImageDataset(self.test_images, self.test_labels)


def make_model(data: TinyData, **kwargs: int) -> LongTailModule:
    model = LongTailModule(TinyBackbone(), data.num_classes, data.class_counts, **kwargs)
    with torch.no_grad():
        model.classifier.fc.weight.copy_(torch.eye(4))
        model.classifier.fc.bias.zero_()
    return model


def make_trainer(tmp_path: Path, callback: TestReport, logger: bool = True) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(tmp_path) if logger else False,
        default_root_dir=tmp_path,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )


def predicted_counts(model: LongTailModule, data: TinyData) -> tuple[np.ndarray, np.ndarray]:
    """Per-class correct/total from the model's own arg-max predictions (independent of the metric)."""
    model.eval()
    with torch.no_grad():
        x = data.augmentation(data.test_images, train=False)
        pred = model(x).logits.argmax(dim=1).numpy()
    target = data.test_labels.numpy()
    total = np.bincount(target, minlength=len(TRAIN_COUNTS))
    correct = np.bincount(target[pred == target], minlength=len(TRAIN_COUNTS))
    return correct, total


def as_float(value: float | None) -> float:
    return math.nan if value is None else value


# ---------------------------------------------------------------------------------------------- real Trainer.test
def test_report_after_trainer_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = TinyData()
    model = make_model(data)
    callback = TestReport()
    trainer = make_trainer(tmp_path, callback)
    logged = trainer.test(model, datamodule=data, verbose=False)[0]

    log_dir = Path(trainer.log_dir)
    assert log_dir == tmp_path / "lightning_logs" / "version_0"
    json_path, png_path = log_dir / "per_class_accuracy.json", log_dir / "per_class_accuracy.png"
    reliability_path, confusion_path = log_dir / "reliability.png", log_dir / "confusion_matrix.png"
    files = {
        "json": str(json_path),
        "png": str(png_path),
        "reliability_png": str(reliability_path),
        "confusion_png": str(confusion_path),
    }
    assert callback.last_paths == files
    for path in (png_path, reliability_path, confusion_path):
        assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 5000
    report = json.loads(json_path.read_text())

    # the JSON numbers are the metric's numbers
    results = model.last_test_results
    for key in SCALAR_KEYS:
        value, expected = as_float(report["scalars"][key]), float(results[key])
        assert value == expected or (math.isnan(value) and math.isnan(expected)), key
        logged_value = float(logged[f"test/{key}"])
        assert value == logged_value or (math.isnan(value) and math.isnan(logged_value)), key
    np.testing.assert_array_equal(
        [as_float(a) for a in report["classes"]["acc"]], results["per_class"].numpy()
    )  # NaN == NaN for assert_array_equal
    assert report["classes"]["test_correct"] == results["correct"].tolist()
    assert report["classes"]["test_total"] == list(TEST_COUNTS)
    # ... and they agree with the model's own predictions
    correct, total = predicted_counts(model, data)
    assert report["classes"]["test_correct"] == correct.tolist()
    assert report["test_images"] == int(total.sum()) == sum(TEST_COUNTS)
    assert report["test_correct"] == int(correct.sum())
    assert report["scalars"]["acc"] == pytest.approx(correct.sum() / total.sum(), abs=1e-6)
    # ... and with the hand-computed numbers
    assert report["classes"]["test_correct"] == [5, 3, 0, 1]
    for key, want in EXPECTED.items():
        assert report["scalars"][key] == pytest.approx(want, abs=1e-6), key
    np.testing.assert_allclose([as_float(a) for a in report["classes"]["acc"]], PER_CLASS, atol=1e-6)

    # per-class columns, groups and ordering
    assert report["classes"]["train_count"] == list(TRAIN_COUNTS)
    assert report["classes"]["name"] == ["cat", "dog", "owl", "yak"]
    assert report["classes"]["group"] == ["many", "medium", "medium", "few"]
    assert report["classes"]["acc"][2] is None  # no test image: null, not 0
    assert report["order_by_train_count"] == [0, 1, 2, 3]
    assert report["thresholds"] == {"many": 100, "few": 20}
    medium = report["groups"]["medium"]
    assert (medium["num_classes"], medium["num_classes_tested"], medium["test_images"]) == (2, 1, 6)
    assert medium["acc"] == pytest.approx(correct[1] / total[1])
    assert report["groups"]["few"]["test_correct"] == int(correct[3])
    assert report["files"] == files
    assert report["ckpt_path"] is None

    # calibration: logged, stored, in the JSON, equal to the hand-computed numbers
    calibration = report["calibration"]
    for key, want in EXPECTED_CALIBRATION.items():
        assert float(logged[f"test/{key}"]) == pytest.approx(want, abs=1e-6), key
        assert float(results[key]) == float(logged[f"test/{key}"]), key
        group = key.partition("_")[2]
        value = calibration[key] if not group else calibration["groups"][group][key.partition("_")[0]]
        assert value == float(results[key]), key
    reliability = calibration["reliability"]
    assert reliability["count"] == [0] * 7 + [18] + [0] * 7
    assert reliability["accuracy"][7] == pytest.approx(0.5) and reliability["confidence"][7] == pytest.approx(CONF)
    assert reliability["accuracy"][0] is None and len(reliability["bin_edges"]) == 16
    assert report["confusion_matrix"] == CONFUSION

    # the table went to the console
    out = capsys.readouterr().out
    assert "Test accuracy (long-tailed)" in out
    for row in ("overall top-1", "class-balanced", "many-shot", "medium-shot", "few-shot"):
        assert row in out
    cells = [[c.strip() for c in re.split(r"[│|]", line)[1:-1]] for line in out.splitlines()]
    rows = {c[0]: c[1:] for c in cells if len(c) == 4}
    # accuracy (%), classes (k/n: only k have test images), test images
    assert rows["overall top-1"] == ["50.00", "3/4", "18"]
    assert rows["class-balanced"] == [f"{100 * EXPECTED['acc_balanced']:.2f}", "3/4", "18"]
    assert rows["many-shot"] == ["71.43", "1", "7"]
    assert rows["medium-shot"] == ["50.00", "1/2", "6"]
    assert rows["few-shot"] == ["20.00", "1", "5"]


def test_without_logger_writes_to_default_root_dir_and_plot_off(tmp_path: Path) -> None:
    data = TinyData()
    model = make_model(data)
    callback = TestReport(plot=False, filename="report")
    make_trainer(tmp_path, callback, logger=False).test(model, datamodule=data, verbose=False)
    assert (tmp_path / "report.json").is_file()
    assert not list(tmp_path.rglob("*.png"))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["files"] == {
        "json": str(tmp_path / "report.json"),
        "png": None,
        "reliability_png": None,
        "confusion_png": None,
    }
    assert report["calibration"]["ece"] == pytest.approx(EXPECTED_CALIBRATION["ece"], abs=1e-6)
    assert report["confusion_matrix"] == CONFUSION
    assert report["scalars"]["acc"] == pytest.approx(float(model.last_test_results["acc"]))


def test_thresholds_come_from_the_module_hparams(tmp_path: Path) -> None:
    data = TinyData()
    # many > 30: classes 0 and 1; few < 10: class 3; medium: class 2
    model = make_model(data, many_threshold=30, few_threshold=10)
    make_trainer(tmp_path, TestReport(plot=False), logger=False).test(model, datamodule=data, verbose=False)
    report = json.loads((tmp_path / "per_class_accuracy.json").read_text())
    assert report["thresholds"] == {"many": 30, "few": 10}
    assert report["classes"]["group"] == ["many", "many", "medium", "few"]
    assert report["groups"]["many"]["num_classes"] == 2
    assert report["scalars"]["acc_medium"] is None  # class 2 has no test image
    assert report["scalars"]["acc_many"] == pytest.approx((5 / 7 + 3 / 6) / 2, abs=1e-6)
    assert report["scalars"]["acc_many"] == float(model.last_test_results["acc_many"])


def test_disabled_does_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = TinyData()
    make_trainer(tmp_path, TestReport(enabled=False), logger=False).test(make_model(data), datamodule=data)
    assert not list(tmp_path.rglob("per_class_accuracy.*"))
    assert "Test accuracy (long-tailed)" not in capsys.readouterr().out


def test_module_without_results_warns_once(tmp_path: Path) -> None:
    callback = TestReport()
    trainer = make_trainer(tmp_path, callback, logger=False)
    model = BoringModel()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.test(model, verbose=False)
        trainer.test(model, verbose=False)
    ours = [w for w in caught if "TestReport" in str(w.message)]
    assert len(ours) == 1
    assert "last_test_results" in str(ours[0].message)
    assert not list(tmp_path.rglob("per_class_accuracy.*"))
    assert callback.last_paths == {}


@pytest.mark.parametrize("filename", ["", "a/b", "..", "a\\b"])
def test_bad_filename_raises(filename: str) -> None:
    with pytest.raises(ValueError, match="filename"):
        TestReport(filename=filename)


def test_cli_parser_accepts_the_callback_arguments() -> None:
    """lt_lightning/cli.py registers the callback with ``add_lightning_class_args(TestReport, "test_report")``."""
    parser = LightningArgumentParser()
    parser.add_lightning_class_args(TestReport, "test_report")
    config = parser.parse_args(["--test_report.plot", "false", "--test_report.filename", "tail"])
    callback = parser.instantiate_classes(config)["test_report"]
    assert isinstance(callback, TestReport)
    assert (callback.enabled, callback.plot, callback.filename) == (True, False, "tail")


# ---------------------------------------------------------------------------------------------- pure functions
def hand_results(class_counts: list[int] | None = None) -> dict[str, Tensor]:
    metric = LongTailAccuracy(3, class_counts or [500, 50, 5])
    # class 0: 1/2 right, class 1: no test image, class 2: 2/4 right
    metric.update(torch.tensor([0, 2, 2, 2, 0, 0]), torch.tensor([0, 0, 2, 2, 2, 2]))
    return metric.compute()


def test_build_report_hand_computed() -> None:
    # training counts not sorted by class index: class 0 few, 1 many, 2 medium
    counts = [5, 500, 50]
    report = build_report(hand_results(counts), counts, class_names=["a", "b", "c"])
    assert report["classes"]["group"] == ["few", "many", "medium"]
    assert report["classes"]["name"] == ["a", "b", "c"]
    assert report["order_by_train_count"] == [1, 2, 0]
    assert report["classes"]["acc"] == [0.5, None, 0.5]
    assert report["classes"]["test_correct"] == [1, 0, 2]
    assert report["classes"]["test_total"] == [2, 0, 4]
    assert report["scalars"] == {
        "acc": 0.5,
        "acc_balanced": 0.5,
        "acc_many": None,  # its only class has no test image
        "acc_medium": 0.5,
        "acc_few": 0.5,
    }
    assert (report["num_classes"], report["num_classes_tested"], report["test_images"]) == (3, 2, 6)
    assert report["groups"]["many"] == {
        "acc": None,
        "num_classes": 1,
        "num_classes_tested": 0,
        "test_images": 0,
        "test_correct": 0,
    }
    assert report["groups"]["medium"] == {
        "acc": 0.5,
        "num_classes": 1,
        "num_classes_tested": 1,
        "test_images": 4,
        "test_correct": 2,
    }
    assert report["thresholds"] == {"many": 100, "few": 20}
    json.dumps(report, allow_nan=False)  # NaN-free, serialisable


def test_build_report_without_class_counts() -> None:
    report = build_report(hand_results(), None)
    assert report["groups"] == {}
    assert report["classes"]["train_count"] is None
    assert report["classes"]["group"] == [None, None, None]
    assert report["order_by_train_count"] == [0, 1, 2]
    console = Console(record=True, width=100)
    console.print(report_table(report))
    assert "?" in console.export_text()
    assert plot_per_class_accuracy(report).startswith(PNG_MAGIC)


def test_report_table_text() -> None:
    report = build_report(hand_results(), [500, 50, 5])
    console = Console(record=True, width=100)
    console.print(report_table(report))
    lines = {line.split("│")[1].strip(): line for line in console.export_text().splitlines() if "-shot" in line}
    assert set(lines) == {"many-shot", "medium-shot", "few-shot"}
    assert "50.00" in lines["many-shot"] and "50.00" in lines["few-shot"]
    assert "–" in lines["medium-shot"] and "0/1" in lines["medium-shot"]  # undefined, not 0.00


@pytest.mark.parametrize(
    ("results", "counts", "match"),
    [
        ({"acc": torch.tensor(1.0)}, [1, 2, 3], "lacks the keys"),
        (None, [1, 2], "class_counts has 2 entries"),
    ],
)
def test_build_report_bad_input(results: dict[str, Tensor] | None, counts: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_report(hand_results() if results is None else results, counts)


# ---------------------------------------------------------------------------------------------- calibration plots
def test_build_report_without_calibration_keys_has_no_calibration() -> None:
    report = build_report(hand_results(), [500, 50, 5])
    assert "calibration" not in report and "confusion_matrix" not in report


def test_confusion_matrix_plot_100_classes_head_first_without_cell_text(monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.axes import Axes

    gen = torch.Generator().manual_seed(0)
    counts = torch.randint(1, 500, (100,), generator=gen)
    accuracy, calibration = LongTailAccuracy(100, counts), CalibrationMetric(100, counts)
    logits, target = torch.randn(1000, 100, generator=gen), torch.randint(0, 100, (1000,), generator=gen)
    accuracy.update(logits, target)
    calibration.update(logits, target)
    report = build_report({**accuracy.compute(), **calibration.compute()}, counts)
    assert report["order_by_train_count"][0] == int(counts.argmax())
    assert np.asarray(report["confusion_matrix"]).sum() == 1000
    texts: list[str] = []
    monkeypatch.setattr(Axes, "text", lambda self, x, y, s, **kw: texts.append(s))
    assert plot_confusion_matrix(report).startswith(PNG_MAGIC)
    assert texts == []  # 100 classes: no per-cell numbers
    assert plot_reliability(report).startswith(PNG_MAGIC)
    small = build_report({**hand_results(), **hand_calibration()}, [500, 50, 5])
    plot_confusion_matrix(small)
    assert texts == ["0.50", "0.50", "0.50", "0.50"]  # the four non-empty cells of 2 tested classes


def hand_calibration() -> dict[str, Tensor]:
    metric = CalibrationMetric(3, [500, 50, 5])
    # the predictions of hand_results() as logits
    metric.update(
        10 * nn.functional.one_hot(torch.tensor([0, 2, 2, 2, 0, 0]), 3).float(), torch.tensor([0, 0, 2, 2, 2, 2])
    )
    return metric.compute()
