"""``CalibrationMetric``: ECE (Guo et al., ICML 2017) and NLL, per shot group, reliability curve, confusion matrix."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from lt_lightning.metrics import CALIBRATION_SCALAR_KEYS, CalibrationMetric, expected_calibration_error

# 4 images, 2 classes; class 0 many-shot (200 training images), class 1 few-shot (5)
PROBS = torch.tensor([[0.90, 0.10], [0.65, 0.35], [0.25, 0.75], [0.88, 0.12]])
TARGET = torch.tensor([0, 1, 1, 0])
# predictions 0, 0, 1, 0: right, wrong, right, right; confidences 0.90, 0.65, 0.75, 0.88
# 15 bins of width 1/15: 0.90 and 0.88 in bin 13, 0.65 in bin 9, 0.75 in bin 11


def hand_metric() -> CalibrationMetric:
    metric = CalibrationMetric(2, [200, 5])
    metric.update(PROBS.log(), TARGET)
    return metric


def test_hand_computed_example() -> None:
    out = hand_metric().compute()
    # bin 13: 2 images, accuracy 1, confidence 0.89; bin 9: 1 image, 0 vs 0.65; bin 11: 1 image, 1 vs 0.75
    ece = 2 / 4 * abs(1 - 0.89) + 1 / 4 * 0.65 + 1 / 4 * 0.25
    assert ece == pytest.approx(0.28)
    assert float(out["ece"]) == pytest.approx(ece, abs=1e-6)
    assert float(out["ece_many"]) == pytest.approx(0.11, abs=1e-6)  # images 0 and 3 (true class 0)
    assert float(out["ece_few"]) == pytest.approx((0.65 + 0.25) / 2, abs=1e-6)  # images 1 and 2
    assert math.isnan(float(out["ece_medium"])) and math.isnan(float(out["nll_medium"]))  # empty group: NaN, not 0
    assert float(out["nll"]) == pytest.approx(-(math.log(0.9) + math.log(0.35) + math.log(0.75) + math.log(0.88)) / 4)
    assert float(out["nll_many"]) == pytest.approx(-(math.log(0.9) + math.log(0.88)) / 2)
    assert float(out["nll_few"]) == pytest.approx(-(math.log(0.35) + math.log(0.75)) / 2)
    assert out["reliability_count"].tolist() == [0] * 9 + [1, 0, 1, 0, 2, 0]
    acc, conf = out["reliability_acc"], out["reliability_conf"]
    assert (float(acc[9]), float(acc[11]), float(acc[13])) == (0.0, 1.0, 1.0)
    torch.testing.assert_close(conf[[9, 11, 13]], torch.tensor([0.65, 0.75, 0.89]))
    assert torch.isnan(acc[0]) and torch.isnan(conf[14])  # empty bins
    assert out["confusion_matrix"].tolist() == [[2, 0], [1, 1]]
    assert out["confusion_matrix"].dtype == torch.long
    torch.testing.assert_close(
        out["nll_per_class"],
        torch.tensor([-(math.log(0.9) + math.log(0.88)) / 2, -(math.log(0.35) + math.log(0.75)) / 2]),
    )
    for key in CALIBRATION_SCALAR_KEYS:
        assert out[key].ndim == 0 and out[key].dtype == torch.float32


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_torchmetrics_and_cross_entropy(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(700, 10, generator=gen) * (1 + seed)
    target = torch.randint(0, 10, (700,), generator=gen)
    metric = CalibrationMetric(10, [300, 200, 150, 101, 100, 50, 20, 19, 5, 1])
    for chunk in range(0, 700, 128):
        metric.update(logits[chunk : chunk + 128], target[chunk : chunk + 128])
    out = metric.compute()
    reference = MulticlassCalibrationError(num_classes=10, n_bins=15, norm="l1")(logits.softmax(dim=1), target)
    assert float(out["ece"]) == pytest.approx(float(reference), abs=1e-6)
    nll = torch.nn.functional.cross_entropy(logits, target)
    assert float(out["nll"]) == pytest.approx(float(nll), abs=1e-6)
    # per group: the same references over the images of the group's classes
    for name, classes in (("many", [0, 1, 2, 3]), ("medium", [4, 5, 6]), ("few", [7, 8, 9])):
        mask = torch.isin(target, torch.tensor(classes))
        ref = MulticlassCalibrationError(num_classes=10, n_bins=15, norm="l1")(logits[mask].softmax(1), target[mask])
        assert float(out[f"ece_{name}"]) == pytest.approx(float(ref), abs=1e-6), name
        ce = torch.nn.functional.cross_entropy(logits[mask], target[mask])
        assert float(out[f"nll_{name}"]) == pytest.approx(float(ce), abs=1e-6), name
    expected = torch.zeros(10, 10, dtype=torch.long)
    expected.index_put_((target, logits.argmax(1)), torch.ones(700, dtype=torch.long), accumulate=True)
    assert torch.equal(out["confusion_matrix"], expected)


def test_low_precision_logits_are_upcast() -> None:
    logits = torch.randn(64, 5, generator=torch.Generator().manual_seed(3))
    target = torch.arange(64) % 5
    full, half = CalibrationMetric(5), CalibrationMetric(5)
    full.update(logits.bfloat16().float(), target)
    half.update(logits.bfloat16(), target)
    for key, value in full.compute().items():
        torch.testing.assert_close(half.compute()[key], value, equal_nan=True)


def test_without_class_counts_groups_are_nan_until_set() -> None:
    metric = CalibrationMetric(2)
    metric.update(PROBS.log(), TARGET)
    out = metric.compute()
    assert all(math.isnan(float(out[f"{m}_{g}"])) for m in ("ece", "nll") for g in ("many", "medium", "few"))
    assert float(out["ece"]) == pytest.approx(0.28, abs=1e-6)  # overall does not need the groups
    metric.reset()
    metric.set_class_counts([200, 5])
    metric.update(PROBS.log(), TARGET)
    assert float(metric.compute()["ece_many"]) == pytest.approx(0.11, abs=1e-6)


def test_expected_calibration_error_formula() -> None:
    count, conf, correct = torch.tensor([2, 0, 2]), torch.tensor([1.2, 0.0, 1.0]), torch.tensor([1, 0, 2])
    # |1 - 1.2| + |2 - 1.0| over 4 images
    assert float(expected_calibration_error(count, conf, correct)) == pytest.approx(1.2 / 4)
    assert math.isnan(float(expected_calibration_error(count * 0, conf * 0, correct * 0)))


# ---------------------------------------------------------------------------------------------- DDP merge
def test_summed_states_of_two_halves_equal_one_metric_on_all() -> None:
    gen = torch.Generator().manual_seed(7)
    counts = [400, 120, 100, 60, 20, 12, 3]
    logits = torch.randn(101, 7, generator=gen) * 2
    target = torch.randint(0, 7, (101,), generator=gen)
    full, rank0, rank1 = (CalibrationMetric(7, counts) for _ in range(3))
    full.update(logits, target)
    rank0.update(logits[0::2], target[0::2])
    rank1.update(logits[1::2], target[1::2])
    for name in ("bin_count", "bin_correct", "count", "confusion"):
        assert torch.equal(getattr(rank0, name) + getattr(rank1, name), getattr(full, name)), name
        assert full._reductions[name].__name__ == "dim_zero_sum"
    for name in ("bin_conf", "nll_sum"):
        torch.testing.assert_close(getattr(rank0, name) + getattr(rank1, name), getattr(full, name))
        assert full._reductions[name].__name__ == "dim_zero_sum"
    expected = full.compute()
    rank0.merge_state(rank1)  # torchmetrics' reduction path, as sync uses it
    for key, value in rank0.compute().items():
        torch.testing.assert_close(value, expected[key], equal_nan=True)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("preds", "target", "match"),
    [
        (torch.zeros(4, 3), TARGET, "preds"),
        (torch.zeros(4, dtype=torch.long), TARGET, "preds"),
        (PROBS, TARGET.float(), "target"),
        (PROBS[:3], TARGET, "batch size"),
        (PROBS, torch.tensor([0, 1, 2, 0]), "target"),
    ],
)
def test_bad_input_raises(preds: torch.Tensor, target: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CalibrationMetric(2).update(preds, target)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2, "num_bins": 0}, "num_bins"),
        ({"num_classes": 2, "class_counts": [1]}, "class_counts"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CalibrationMetric(**kwargs)  # type: ignore[arg-type]
