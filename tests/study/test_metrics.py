"""Relative accuracy on hand-made numbers (Zhang et al., TPAMI 2023, Sec. 4) and the seed statistics."""

from __future__ import annotations

import math

import pytest

from lt_lightning.study.metrics import format_mean_std, mean_std, relative_accuracy, upper_reference_accuracy


def test_upper_reference_is_the_better_balanced_run() -> None:
    assert upper_reference_accuracy(0.80, 0.75) == 0.80  # plain CE on balanced data is better: UA = A_v
    assert upper_reference_accuracy(0.80, 0.84) == 0.84  # the method also helps on balanced data: UA = A_b


def test_relative_accuracy_hand_computed() -> None:
    # A_t = 0.60, A_v = 0.80, A_b = 0.75: UA = 0.80, RA = 0.60 / 0.80 = 0.75
    assert relative_accuracy(0.60, 0.80, 0.75) == pytest.approx(0.75)
    # A_t = 0.63, A_v = 0.80, A_b = 0.84: UA = 0.84, RA = 0.63 / 0.84 = 0.75
    assert relative_accuracy(0.63, 0.80, 0.84) == pytest.approx(0.75)
    # the survey's Table 5, ImageNet-LT, 90 epochs: Softmax Acc 45.5, UA 57.3 -> RA 79.4; RIDE 55.5 / 60.2 -> 92.2
    assert 100 * relative_accuracy(0.455, 0.573, 0.573) == pytest.approx(79.4, abs=0.05)
    assert 100 * relative_accuracy(0.555, 0.573, 0.602) == pytest.approx(92.2, abs=0.05)
    # a long-tailed run better than both balanced runs: RA > 1 is allowed
    assert relative_accuracy(0.9, 0.8, 0.6) == pytest.approx(1.125)


@pytest.mark.parametrize(
    ("args", "name"), [((1.2, 0.5, 0.5), "A_t"), ((0.5, -0.1, 0.5), "A_v"), ((0.5, 0.5, math.nan), "A_b")]
)
def test_bad_accuracies_are_named(args, name) -> None:
    with pytest.raises(ValueError, match=name):
        relative_accuracy(*args)


def test_zero_upper_reference_is_undefined() -> None:
    with pytest.raises(ValueError, match="undefined"):
        relative_accuracy(0.0, 0.0, 0.0)


def test_mean_and_sample_std() -> None:
    mean, std, n = mean_std([0.5, 0.7, None, 0.6])
    assert (mean, n) == (pytest.approx(0.6), 3)
    assert std == pytest.approx(0.1)  # sqrt(((-0.1)^2 + 0.1^2 + 0) / 2)
    assert mean_std([0.4]) == (0.4, None, 1)
    assert mean_std([None]) == (None, None, 0)
    assert format_mean_std([0.5, 0.7, 0.6]) == "60.00 ± 10.00"
    assert format_mean_std([0.9325]) == "93.25"
    assert format_mean_std([]) == "–"
