"""Class weights from counts (inverse power, effective number) and the shared loss checks, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from lt_lightning.losses._checks import check_finite_loss, check_logits_target, target_distribution
from lt_lightning.losses.weighting import (
    effective_number_weights,
    inverse_power_weights,
    normalize_class_weights,
    validate_class_weights,
)

# ---------------------------------------------------------------- inverse power


def test_inverse_frequency_hand_computed() -> None:
    # n = [1, 4], q = 1: w ∝ [1, 1/4], sum to C = 2 -> [1.6, 0.4]
    w = inverse_power_weights([1, 4], q=1.0)
    assert w.dtype == torch.float32
    assert w.tolist() == pytest.approx([1.6, 0.4], rel=1e-6)


def test_square_root_weights_hand_computed() -> None:
    # n = [1, 4, 16], q = 1/2: w ∝ [1, 1/2, 1/4] (sum 7/4), times 3 / (7/4) = 12/7
    w = inverse_power_weights([1, 4, 16], q=0.5)
    assert w.tolist() == pytest.approx([12 / 7, 6 / 7, 3 / 7], rel=1e-6)
    assert float(w.sum()) == pytest.approx(3.0)


def test_q_zero_is_uniform_even_with_an_empty_class() -> None:
    assert inverse_power_weights([7, 3, 0], q=0.0).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("q", [-0.5, math.nan, math.inf])
def test_bad_q(q: float) -> None:
    with pytest.raises(ValueError, match="q must be"):
        inverse_power_weights([3, 2], q=q)


def test_zero_count_names_the_class() -> None:
    with pytest.raises(ValueError, match=r"class\(es\) \[1\]"):
        inverse_power_weights([5, 0, 2], q=1.0)


# ---------------------------------------------------------------- effective number


def test_effective_number_hand_computed() -> None:
    # beta = 1/2, n = [1, 2]: (1 - b)/(1 - b^n) = [0.5/0.5, 0.5/0.75] = [1, 2/3]; sum 5/3, times 2/(5/3) -> [1.2, 0.8]
    w = effective_number_weights([1, 2], beta=0.5)
    assert w.tolist() == pytest.approx([1.2, 0.8], rel=1e-6)


def test_effective_number_ldam_drw_value() -> None:
    # beta = 0.9999 on n = [5000, 50] (CIFAR-10-LT rho=100 head and tail), hand-computed in float64
    beta, n = 0.9999, [5000, 50]
    raw = [(1 - beta) / (1 - beta**k) for k in n]
    expected = [r * 2 / sum(raw) for r in raw]
    assert effective_number_weights(n, beta).tolist() == pytest.approx(expected, rel=1e-6)


def test_beta_zero_is_uniform() -> None:
    assert effective_number_weights([500, 20, 1], beta=0.0).tolist() == [1.0, 1.0, 1.0]


def test_beta_close_to_one_tends_to_inverse_frequency() -> None:
    counts = [5000, 500, 50]
    w = effective_number_weights(counts, beta=1 - 1e-9)
    assert w.tolist() == pytest.approx(inverse_power_weights(counts, q=1.0).tolist(), rel=1e-4)


@pytest.mark.parametrize("beta", [-0.1, 1.0, 1.5, math.nan])
def test_bad_beta(beta: float) -> None:
    with pytest.raises(ValueError, match="beta must be in"):
        effective_number_weights([3, 2], beta=beta)


def test_effective_number_zero_count_names_the_class() -> None:
    with pytest.raises(ValueError, match=r"class\(es\) \[0, 2\]"):
        effective_number_weights([0, 4, 0], beta=0.9)


def test_bad_counts() -> None:
    with pytest.raises(ValueError, match="class_counts"):
        effective_number_weights([3, -1], beta=0.9)


# ---------------------------------------------------------------- weights validation


def test_normalize_and_validate() -> None:
    assert normalize_class_weights(torch.tensor([1.0, 3.0])).tolist() == [0.5, 1.5]
    with pytest.raises(ValueError, match="positive sum"):
        normalize_class_weights(torch.zeros(3))
    assert validate_class_weights([2.0, 0.0], num_classes=2).tolist() == [2.0, 0.0]
    with pytest.raises(ValueError, match="3 entries but the loss has 2 classes"):
        validate_class_weights([1.0, 1.0, 1.0], num_classes=2)
    for bad in ([1.0, -1.0], [math.nan, 1.0], [0.0, 0.0]):
        with pytest.raises(ValueError, match="finite, non-negative"):
            validate_class_weights(bad)


# ---------------------------------------------------------------- shared checks


def test_check_finite_loss_passes_finite_values_through() -> None:
    loss = torch.tensor(1.5)
    assert check_finite_loss(loss, step=3, target=torch.tensor([0, 1])) is loss


def test_check_finite_loss_names_step_kind_and_batch_classes() -> None:
    target = torch.tensor([7, 3, 0, 3])
    with pytest.raises(FloatingPointError, match=r"^loss is nan at step 12; batch classes: \[0, 3, 7\]$"):
        check_finite_loss(torch.tensor(math.nan), step=12, target=target)
    with pytest.raises(FloatingPointError, match=r"^loss is inf at step 5; "):
        check_finite_loss(torch.tensor(math.inf), step=5, target=target)
    with pytest.raises(FloatingPointError, match=r"^loss is -inf at an unknown step; batch classes: unknown$"):
        check_finite_loss(torch.tensor([1.0, -math.inf]))


def test_check_finite_loss_soft_targets_list_classes_with_mass() -> None:
    soft = torch.tensor([[0.7, 0.0, 0.3, 0.0], [0.0, 0.0, 1.0, 0.0]])
    with pytest.raises(FloatingPointError, match=r"batch classes: \[0, 2\]$"):
        check_finite_loss(torch.tensor(math.nan), step=0, target=soft)


def test_check_logits_target() -> None:
    logits = torch.zeros(2, 3)
    assert check_logits_target(logits, torch.tensor([0, 2])) is False
    assert check_logits_target(logits, torch.full((2, 3), 1 / 3)) is True
    with pytest.raises(ValueError, match="logits must be"):
        check_logits_target(torch.zeros(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="integer class indices"):
        check_logits_target(logits, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="batch size"):
        check_logits_target(logits, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="does not match"):
        check_logits_target(logits, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="floating point"):
        check_logits_target(logits, torch.zeros(2, 3, dtype=torch.long))
    assert target_distribution(torch.tensor([1, 0]), 3).tolist() == [[0, 1, 0], [1, 0, 0]]


def test_check_finite_loss_abbreviates_long_class_lists() -> None:
    with pytest.raises(FloatingPointError, match=r"batch classes: \[0, 1, .*, 99, \.\.\.\] \(20 more\)$"):
        check_finite_loss(torch.tensor(math.nan), step=1, target=torch.arange(120))


def test_non_finite_loss_watch_names_the_first_bad_step_and_its_classes_after_the_fact() -> None:
    from lt_lightning.losses._checks import NonFiniteLossWatch

    watch = NonFiniteLossWatch()
    watch.raise_if_seen()  # nothing recorded
    watch.record(torch.tensor(0.5), 0, torch.tensor([0, 1]), 4)
    watch.raise_if_seen()  # finite
    watch.record(torch.tensor(float("inf")), 3, torch.tensor([2, 1, 2]), 4)
    watch.record(torch.tensor(float("nan")), 4, torch.tensor([0, 3]), 4)  # later: not the one named
    with pytest.raises(FloatingPointError, match=r"loss is inf at step 3; batch classes: \[1, 2\]"):
        watch.raise_if_seen()
    soft = NonFiniteLossWatch()
    soft.record(torch.tensor([1.0, float("nan")]), 7, torch.tensor([[0.5, 0.0, 0.5], [0.3, 0.0, 0.7]]), 3)
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 7; batch classes: \[0, 2\]"):
        soft.raise_if_seen()
    soft.reset()
    soft.raise_if_seen()
