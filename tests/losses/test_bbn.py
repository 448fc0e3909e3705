"""BBN's bilateral loss ``α E(z, y_c) + (1 - α) E(z, y_r)`` against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lt_lightning.backbones.bbn import BBNResNetCifar
from lt_lightning.losses.bbn import BilateralLoss, bilateral_loss, split_bilateral_target
from lt_lightning.losses.logit_adjustment import BalancedSoftmaxLoss
from lt_lightning.module import LongTailModule
from lt_lightning.output import ModelOutput


def _ce_by_hand(rows: list[list[float]], target: list[int]) -> float:
    total = 0.0
    for z, y in zip(rows, target, strict=True):
        total += -(z[y] - math.log(sum(math.exp(v) for v in z)))
    return total / len(rows)


def test_bilateral_loss_by_hand() -> None:
    rows = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]
    logits = torch.tensor(rows)
    target = torch.tensor([0, 1, 2, 2])  # y_c = [0, 1] (conventional half), y_r = [2, 2] (reversed half)
    alpha = 0.3
    expected = alpha * _ce_by_hand(rows, [0, 1]) + (1 - alpha) * _ce_by_hand(rows, [2, 2])
    assert bilateral_loss(logits, target, alpha).item() == pytest.approx(expected, rel=1e-6)
    loss = BilateralLoss(alpha=alpha)
    assert loss(ModelOutput(logits=logits, features=torch.zeros(2, 4)), target).item() == pytest.approx(expected, 1e-6)


def test_alpha_one_and_zero_are_the_branch_losses() -> None:
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 4, (10,), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(bilateral_loss(logits, target, 1.0), F.cross_entropy(logits, target[:5]))
    assert torch.allclose(bilateral_loss(logits, target, 0.0), F.cross_entropy(logits, target[5:]))


def test_soft_targets() -> None:
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    soft = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.0, 1.0]])
    expected = 0.5 * F.cross_entropy(logits, soft[:2]) + 0.5 * F.cross_entropy(logits, soft[2:])
    assert torch.allclose(bilateral_loss(logits, soft, 0.5), expected)


def test_base_criterion_gets_the_class_counts_through_the_module() -> None:
    """A class-prior-aware base loss (balanced softmax) inside BilateralLoss is told the counts by the module."""
    counts = [8, 4, 2]
    criterion = BilateralLoss(criterion=BalancedSoftmaxLoss(), alpha=0.75)
    LongTailModule(BBNResNetCifar(depth=8, widths=(2, 2, 2)), num_classes=3, class_counts=counts, criterion=criterion)
    logits = torch.tensor([[0.2, 0.1, -0.3], [1.0, -1.0, 0.5]])
    target = torch.tensor([0, 2, 1, 1])
    log_prior = torch.log(torch.tensor(counts, dtype=torch.float32) / 14)
    adjusted = logits + log_prior  # balanced softmax: CE on z + log pi
    expected = 0.75 * F.cross_entropy(adjusted, target[:2]) + 0.25 * F.cross_entropy(adjusted, target[2:])
    value = criterion(ModelOutput(logits=logits, features=torch.zeros(2, 4)), target)
    assert torch.allclose(value, expected, atol=1e-6)


def test_gradient_weights_the_halves_by_alpha() -> None:
    logits = torch.zeros(1, 2, requires_grad=True)
    # y_c = 0, y_r = 1: d/dz = softmax - (alpha e_0 + (1 - alpha) e_1) = [0.5 - alpha, alpha - 0.5]
    bilateral_loss(logits, torch.tensor([0, 1]), 0.8).backward()
    assert torch.allclose(logits.grad, torch.tensor([[-0.3, 0.3]]))


def test_bad_input_is_a_clear_error() -> None:
    logits = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="both halves"):
        bilateral_loss(logits, torch.zeros(3, dtype=torch.long), 0.5)  # same rows: the batch was not split
    with pytest.raises(ValueError, match="both halves"):
        split_bilateral_target(torch.zeros(5, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="logits must be"):
        bilateral_loss(torch.zeros(6), torch.zeros(12, dtype=torch.long), 0.5)
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="alpha must be"):
            bilateral_loss(logits, torch.zeros(6, dtype=torch.long), bad)
        with pytest.raises(ValueError, match="alpha must be"):
            BilateralLoss(alpha=bad)
    with pytest.raises(RuntimeError, match="CumulativeLearning"):
        BilateralLoss()(ModelOutput(logits=logits, features=logits), torch.zeros(6, dtype=torch.long))
    loss = BilateralLoss()
    loss.set_alpha(0.25)
    assert loss.alpha == 0.25
    loss.set_alpha(None)
    assert loss.alpha is None
