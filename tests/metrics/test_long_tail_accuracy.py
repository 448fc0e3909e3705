"""``LongTailAccuracy`` against a numpy reference and hand-computed numbers.

Shot groups follow Kang et al. (ICLR 2020): many-shot ``n_c > 100``, few-shot ``n_c < 20``, medium-shot otherwise
(the boundary values 100 and 20 are medium). Classes without test samples are left out of every mean.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

import lt_lightning.metrics.long_tail_accuracy as lta
from lt_lightning.metrics import (
    SCALAR_KEYS,
    LongTailAccuracy,
    long_tail_accuracy_compute,
    shot_group_masks,
)

ALL_KEYS = {*SCALAR_KEYS, "per_class", "correct", "total"}


def numpy_reference(
    pred_idx: np.ndarray, target: np.ndarray, class_counts: np.ndarray, many: int = 100, few: int = 20
) -> dict[str, object]:
    """Per-class correct/total with plain loops, then every reported number from its definition."""
    num_classes = len(class_counts)
    correct = np.zeros(num_classes, dtype=np.int64)
    total = np.zeros(num_classes, dtype=np.int64)
    for p, y in zip(pred_idx.tolist(), target.tolist(), strict=True):
        total[y] += 1
        correct[y] += int(p == y)
    per_class = [correct[c] / total[c] if total[c] > 0 else math.nan for c in range(num_classes)]

    def mean_over(classes: list[int]) -> float:
        values = [per_class[c] for c in classes if total[c] > 0]
        return float(np.mean(values)) if values else math.nan

    return {
        "acc": correct.sum() / total.sum(),
        "acc_balanced": mean_over(list(range(num_classes))),
        "acc_many": mean_over([c for c in range(num_classes) if class_counts[c] > many]),
        "acc_medium": mean_over([c for c in range(num_classes) if few <= class_counts[c] <= many]),
        "acc_few": mean_over([c for c in range(num_classes) if class_counts[c] < few]),
        "per_class": np.array(per_class),
        "correct": correct,
        "total": total,
    }


def assert_matches(result: dict[str, torch.Tensor], expected: dict[str, object]) -> None:
    assert set(result) == ALL_KEYS
    for key in SCALAR_KEYS:
        assert result[key].ndim == 0, key
        value, want = float(result[key]), float(expected[key])  # type: ignore[arg-type]
        if math.isnan(want):
            assert math.isnan(value), f"{key}: expected NaN, got {value}"
        else:
            assert value == pytest.approx(want, abs=1e-6), key
    np.testing.assert_allclose(result["per_class"].numpy(), expected["per_class"], atol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(result["correct"].numpy(), expected["correct"])
    np.testing.assert_array_equal(result["total"].numpy(), expected["total"])


# ---------------------------------------------------------------------------------------------- numpy reference
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("as_scores", [True, False])
def test_matches_numpy_reference(seed: int, as_scores: bool) -> None:
    rng = np.random.default_rng(seed)
    num_classes = 9
    # three classes per group, boundary values included: many > 100, few < 20, 20 <= medium <= 100.
    counts = np.array([500, 101, 250, 100, 20, 57, 19, 1, 5])
    absent = {3, 7}  # a medium and a few-shot class without any test sample
    present = np.array([c for c in range(num_classes) if c not in absent])
    metric = LongTailAccuracy(num_classes, counts.tolist())
    all_pred, all_target = [], []
    for batch_size in (17, 1, 40, 8):
        target = rng.choice(present, size=batch_size)
        # biased predictions so per-class accuracies differ: right with probability 0.6, else a random class.
        pred_idx = np.where(rng.random(batch_size) < 0.6, target, rng.integers(0, num_classes, size=batch_size))
        if as_scores:
            scores = rng.normal(size=(batch_size, num_classes))
            scores[np.arange(batch_size), pred_idx] = scores.max(axis=1) + 1.0  # arg-max is pred_idx
            preds = torch.from_numpy(scores).float()
        else:
            preds = torch.from_numpy(pred_idx)
        metric.update(preds, torch.from_numpy(target))
        all_pred.append(pred_idx)
        all_target.append(target)
    expected = numpy_reference(np.concatenate(all_pred), np.concatenate(all_target), counts)
    result = metric.compute()
    assert_matches(result, expected)
    assert torch.isnan(result["per_class"][sorted(absent)]).all()
    assert not torch.isnan(result["per_class"][present]).any()


def test_scores_and_indices_give_identical_results() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(50, 6, generator=gen)
    target = torch.randint(0, 6, (50,), generator=gen)
    counts = [300, 150, 80, 40, 10, 3]
    from_scores, from_indices, from_probs = (LongTailAccuracy(6, counts) for _ in range(3))
    from_scores.update(logits, target)
    from_indices.update(logits.argmax(dim=1), target)
    from_probs.update(logits.softmax(dim=1), target)
    a, b, c = from_scores.compute(), from_indices.compute(), from_probs.compute()
    for key in ALL_KEYS:
        torch.testing.assert_close(a[key], b[key], equal_nan=True)
        torch.testing.assert_close(a[key], c[key], equal_nan=True)


# ---------------------------------------------------------------------------------------------- hand-computed
def test_hand_computed_example() -> None:
    # counts: classes 0, 1 many (> 100); 2 medium; 3 few (< 20).
    metric = LongTailAccuracy(num_classes=4, class_counts=[500, 300, 50, 5])
    target = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3])
    preds = torch.tensor([0, 1, 1, 1, 1, 0, 2, 2, 0, 3, 0, 0, 0])
    metric.update(preds, target)
    out = metric.compute()
    # per class: 1/2, 3/4, 2/3, 1/4; overall 7/13.
    torch.testing.assert_close(out["per_class"], torch.tensor([0.5, 0.75, 2 / 3, 0.25]))
    assert out["acc"].item() == pytest.approx(7 / 13)
    assert out["acc_balanced"].item() == pytest.approx((0.5 + 0.75 + 2 / 3 + 0.25) / 4)
    assert out["acc_many"].item() == pytest.approx((0.5 + 0.75) / 2)
    assert out["acc_medium"].item() == pytest.approx(2 / 3)
    assert out["acc_few"].item() == pytest.approx(0.25)
    assert out["correct"].tolist() == [1, 3, 2, 1]
    assert out["total"].tolist() == [2, 4, 3, 4]
    assert out["correct"].dtype == torch.long and out["total"].dtype == torch.long
    assert out["per_class"].dtype == torch.float32 and out["acc"].dtype == torch.float32


def test_docstring_example() -> None:
    assert doctest.testmod(lta, raise_on_error=False).failed == 0


def test_balanced_accuracy_differs_from_top1_on_imbalanced_test_set() -> None:
    # 9 test images of class 0 all right, 1 of class 1 wrong: top-1 0.9, class-balanced (1 + 0) / 2.
    metric = LongTailAccuracy(2, [200, 10])
    metric.update(torch.tensor([0] * 9 + [0]), torch.tensor([0] * 9 + [1]))
    out = metric.compute()
    assert out["acc"].item() == pytest.approx(0.9)
    assert out["acc_balanced"].item() == pytest.approx(0.5)
    assert out["acc_many"].item() == pytest.approx(1.0)
    assert out["acc_few"].item() == pytest.approx(0.0)  # a real 0, not an empty group
    assert math.isnan(out["acc_medium"].item())


# ---------------------------------------------------------------------------------------------- absent classes
def test_class_absent_from_test_targets() -> None:
    metric = LongTailAccuracy(3, [500, 50, 5])
    # class 1 never appears in the targets, although it is predicted (wrongly) for a class-0 image.
    metric.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 0, 2, 2]))
    out = metric.compute()
    assert out["per_class"][0].item() == pytest.approx(0.5)
    assert math.isnan(out["per_class"][1].item())
    assert out["per_class"][2].item() == pytest.approx(1.0)
    assert out["acc_balanced"].item() == pytest.approx((0.5 + 1.0) / 2)  # mean over the present classes only
    assert math.isnan(out["acc_medium"].item())  # its only class has no test image: NaN, not 0
    assert out["total"].tolist() == [2, 0, 2]


def test_empty_shot_group_is_nan_not_zero() -> None:
    metric = LongTailAccuracy(3, [500, 400, 300])  # all many-shot
    metric.update(torch.tensor([0, 1, 0]), torch.tensor([0, 1, 2]))
    out = metric.compute()
    assert out["acc_many"].item() == pytest.approx(2 / 3)
    assert math.isnan(out["acc_medium"].item())
    assert math.isnan(out["acc_few"].item())


def test_without_class_counts_groups_are_nan_until_set() -> None:
    metric = LongTailAccuracy(3)
    metric.update(torch.tensor([0, 1, 0]), torch.tensor([0, 1, 2]))
    out = metric.compute()
    assert out["acc"].item() == pytest.approx(2 / 3)
    assert all(math.isnan(out[k].item()) for k in ("acc_many", "acc_medium", "acc_few"))
    # the module sends float32 counts through set_class_counts (ClassPriorAware)
    metric.set_class_counts(torch.tensor([500.0, 50.0, 5.0]))
    out = metric.compute()
    assert (out["acc_many"].item(), out["acc_medium"].item(), out["acc_few"].item()) == (1.0, 1.0, 0.0)


def test_reset_clears_counts_but_keeps_class_counts() -> None:
    metric = LongTailAccuracy(2, [200, 10])
    metric.update(torch.tensor([0, 0]), torch.tensor([0, 1]))
    metric.reset()
    assert metric.correct.tolist() == [0, 0] and metric.total.tolist() == [0, 0]
    metric.update(torch.tensor([1]), torch.tensor([1]))
    out = metric.compute()
    assert out["acc"].item() == 1.0 and out["acc_few"].item() == 1.0
    assert math.isnan(out["acc_many"].item())


# ---------------------------------------------------------------------------------------------- thresholds
def test_default_threshold_boundaries_are_medium() -> None:
    groups = shot_group_masks(torch.tensor([101, 100, 20, 19]))
    assert groups.many.tolist() == [True, False, False, False]
    assert groups.medium.tolist() == [False, True, True, False]
    assert groups.few.tolist() == [False, False, False, True]
    metric = LongTailAccuracy(4, [101, 100, 20, 19])
    # class 0 right, 1 and 2 wrong/right, 3 wrong: many 1, medium (0 + 1) / 2, few 0.
    metric.update(torch.tensor([0, 0, 2, 0]), torch.tensor([0, 1, 2, 3]))
    out = metric.compute()
    assert (out["acc_many"].item(), out["acc_medium"].item(), out["acc_few"].item()) == (1.0, 0.5, 0.0)


def test_configurable_thresholds() -> None:
    counts = [11, 10, 5, 4]
    groups = shot_group_masks(torch.tensor(counts), many_threshold=10, few_threshold=5)
    assert groups.many.tolist() == [True, False, False, False]
    assert groups.medium.tolist() == [False, True, True, False]
    assert groups.few.tolist() == [False, False, False, True]
    metric = LongTailAccuracy(4, counts, many_threshold=10, few_threshold=5)
    metric.update(torch.tensor([0, 0, 2, 0]), torch.tensor([0, 1, 2, 3]))
    out = metric.compute()
    assert (out["acc_many"].item(), out["acc_medium"].item(), out["acc_few"].item()) == (1.0, 0.5, 0.0)
    # with the defaults every class is few-shot
    default = LongTailAccuracy(4, counts)
    default.update(torch.tensor([0, 0, 2, 0]), torch.tensor([0, 1, 2, 3]))
    out = default.compute()
    assert math.isnan(out["acc_many"].item()) and math.isnan(out["acc_medium"].item())
    assert out["acc_few"].item() == pytest.approx(0.5)


def test_equal_thresholds_leave_only_the_threshold_value_medium() -> None:
    groups = shot_group_masks(torch.tensor([51, 50, 49]), many_threshold=50, few_threshold=50)
    assert groups.many.tolist() == [True, False, False]
    assert groups.medium.tolist() == [False, True, False]
    assert groups.few.tolist() == [False, False, True]


@pytest.mark.parametrize(
    ("many", "few", "match"),
    [
        (20, 100, "few_threshold must be <= many_threshold"),
        (-1, 0, "many_threshold"),
        (100, -5, "few_threshold"),
        (100.0, 20, "many_threshold"),
        (100, 2.5, "few_threshold"),
        (True, 0, "many_threshold"),
    ],
)
def test_bad_thresholds_raise(many: object, few: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LongTailAccuracy(3, [500, 50, 5], many_threshold=many, few_threshold=few)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        shot_group_masks(torch.tensor([500, 50, 5]), many_threshold=many, few_threshold=few)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- DDP merge
def test_summed_states_of_two_halves_equal_one_metric_on_all() -> None:
    """Simulated DDP: each process counts its shard; ``dist_reduce_fx="sum"`` adds the counts."""
    gen = torch.Generator().manual_seed(7)
    counts = [400, 120, 100, 60, 20, 12, 3]
    logits = torch.randn(101, 7, generator=gen)  # odd size: uneven shards
    target = torch.randint(0, 7, (101,), generator=gen)
    target[target == 4] = 5  # class 4 absent from the test set
    full, rank0, rank1 = (LongTailAccuracy(7, counts) for _ in range(3))
    full.update(logits, target)
    rank0.update(logits[0::2], target[0::2])  # the unpadded strided shards of the evaluation sampler
    rank1.update(logits[1::2], target[1::2])
    correct, total = rank0.correct + rank1.correct, rank0.total + rank1.total
    assert torch.equal(correct, full.correct) and torch.equal(total, full.total)
    merged = long_tail_accuracy_compute(correct, total, full.shot_groups())
    expected = full.compute()
    for key in ALL_KEYS:
        torch.testing.assert_close(merged[key], expected[key], equal_nan=True)
    # torchmetrics' own reduction path (the one sync uses) gives the same numbers
    rank0.merge_state(rank1)
    for key, value in rank0.compute().items():
        torch.testing.assert_close(value, expected[key], equal_nan=True)


def test_states_are_summed_counts() -> None:
    metric = LongTailAccuracy(3, [500, 50, 5])
    assert metric._reductions["correct"].__name__ == "dim_zero_sum"
    assert metric._reductions["total"].__name__ == "dim_zero_sum"


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad_label", [3, -1, 10])
def test_target_out_of_range_raises(bad_label: int) -> None:
    metric = LongTailAccuracy(3, [500, 50, 5])
    with pytest.raises(ValueError, match=rf"target must be in \[0, 3\), got value {bad_label}"):
        metric.update(torch.tensor([0, 1]), torch.tensor([0, bad_label]))
    assert metric.total.sum().item() == 0  # nothing was counted


@pytest.mark.parametrize(
    ("preds", "target", "match"),
    [
        (torch.zeros(4, 2), torch.tensor([0, 1, 2, 0]), r"preds must be \[B, 3\]"),
        (torch.zeros(4), torch.tensor([0, 1, 2, 0]), "integer class indices"),
        (torch.zeros(4, 3, 2), torch.tensor([0, 1, 2, 0]), "preds must be"),
        (torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2, 0]), "batch size"),
        (torch.tensor([0, 1]), torch.tensor([0.0, 1.0]), "target must be"),
        (torch.tensor([0, 1]), torch.tensor([[0, 1]]), "target must be"),
    ],
)
def test_bad_shapes_and_dtypes_raise(preds: torch.Tensor, target: torch.Tensor, match: str) -> None:
    metric = LongTailAccuracy(3, [500, 50, 5])
    with pytest.raises(ValueError, match=match):
        metric.update(preds, target)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2.0}, "num_classes"),
        ({"num_classes": 3, "class_counts": [1, 2]}, "class_counts has 2 entries"),
        ({"num_classes": 2, "class_counts": [1.5, 2]}, "whole numbers"),
        ({"num_classes": 2, "class_counts": [-1, 2]}, "non-negative"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LongTailAccuracy(**kwargs)  # type: ignore[arg-type]
