"""Post-hoc logit adjustment and the τ sweep against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from lt_lightning.posthoc import DEFAULT_TAUS, adjust_logits, tau_sweep

# Training counts (3, 1): log π_0 - log π_1 = log 3 ≈ 1.0986.
COUNTS = [3, 1]
# Validation set: three class-0 samples with margin z_0 - z_1 = 1 and one class-1 sample with margin 0.5.
# After adjustment the margin is m - τ log 3: class 0 stays right while τ < 1/log 3 ≈ 0.910, class 1 becomes
# right once τ > 0.5/log 3 ≈ 0.455.
LOGITS = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
TARGETS = torch.tensor([0, 0, 0, 1])


def test_adjust_logits_hand_computed() -> None:
    adjusted = adjust_logits(torch.zeros(1, 2), COUNTS, tau=1.0)
    assert adjusted.tolist()[0] == pytest.approx([-math.log(0.75), -math.log(0.25)], rel=1e-6)
    adjusted = adjust_logits(torch.tensor([[2.0, 1.0]]), [1.0, 1.0], tau=0.5)
    assert adjusted.tolist()[0] == pytest.approx([2.0 + 0.5 * math.log(2), 1.0 + 0.5 * math.log(2)], rel=1e-6)


def test_tau_zero_leaves_logits_unchanged() -> None:
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(adjust_logits(logits, [10, 5, 1], tau=0.0), logits)


def test_sweep_curve_and_best_tau() -> None:
    result = tau_sweep(LOGITS, TARGETS, COUNTS, taus=[0.0, 0.5, 1.0])
    assert result.taus.tolist() == [0.0, 0.5, 1.0]
    assert result.acc.tolist() == pytest.approx([0.75, 1.0, 0.25])
    assert result.acc_balanced.tolist() == pytest.approx([0.5, 1.0, 0.5])
    # Both training classes have fewer than 20 images: few-shot; no many-/medium-shot class -> NaN.
    assert result.acc_few.tolist() == pytest.approx([0.5, 1.0, 0.5])
    assert torch.isnan(result.acc_many).all() and torch.isnan(result.acc_medium).all()
    assert result.best_tau == 0.5
    assert result.best_acc_balanced == pytest.approx(1.0)
    rows = result.as_rows()
    assert rows[0]["tau"] == 0.0 and rows[0]["acc"] == pytest.approx(0.75)
    assert set(rows[0]) == {"tau", "acc", "acc_balanced", "acc_many", "acc_medium", "acc_few"}


def test_ties_go_to_the_smallest_tau_whatever_the_order() -> None:
    result = tau_sweep(LOGITS, TARGETS, COUNTS, taus=[0.6, 0.5, 0.7, 1.5])
    assert result.acc_balanced.tolist() == pytest.approx([1.0, 1.0, 1.0, 0.5])
    assert result.best_tau == 0.5


def test_shot_groups_follow_the_thresholds() -> None:
    result = tau_sweep(LOGITS, TARGETS, [300, 10], taus=[0.0], many_threshold=100, few_threshold=20)
    assert result.acc_many.tolist() == pytest.approx([1.0])
    assert result.acc_few.tolist() == pytest.approx([0.0])


def test_default_grid() -> None:
    assert DEFAULT_TAUS[0] == 0.0 and DEFAULT_TAUS[-1] == 2.0 and len(DEFAULT_TAUS) == 21
    result = tau_sweep(LOGITS, TARGETS, COUNTS)
    assert 0.455 < result.best_tau < 0.910
    assert result.best_acc_balanced == pytest.approx(1.0)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="tau"):
        adjust_logits(LOGITS, COUNTS, tau=-1.0)
    with pytest.raises(ValueError, match="tau"):
        tau_sweep(LOGITS, TARGETS, COUNTS, taus=[0.0, -0.5])
    with pytest.raises(ValueError, match="taus"):
        tau_sweep(LOGITS, TARGETS, COUNTS, taus=[])
    with pytest.raises(ValueError, match=r"class\(es\) \[1\]"):
        tau_sweep(LOGITS, TARGETS, [3, 0])
    with pytest.raises(ValueError, match="class_counts"):
        adjust_logits(LOGITS, [1, 2, 3])
    with pytest.raises(ValueError, match="targets"):
        tau_sweep(LOGITS, TARGETS[:3], COUNTS)
    with pytest.raises(ValueError, match="targets"):
        tau_sweep(LOGITS, torch.nn.functional.one_hot(TARGETS, 2).float(), COUNTS)
    with pytest.raises(ValueError, match="targets"):
        tau_sweep(LOGITS, torch.tensor([0, 0, 0, 2]), COUNTS)
    with pytest.raises(ValueError, match="logits"):
        adjust_logits(torch.zeros(3), COUNTS)
