"""Softmax equalization loss (ESQL) against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lt_lightning.losses.equalization import EqualizationLoss, equalization_tail_mask, softmax_equalization_loss
from lt_lightning.output import ModelOutput

ONES = torch.ones(1, 3)
ZEROS = torch.zeros(1, 3)


def test_tail_mask_uses_strict_frequency_threshold() -> None:
    counts = torch.tensor([90.0, 9.0, 1.0])  # f = (0.9, 0.09, 0.01)
    assert equalization_tail_mask(counts, 0.05).tolist() == [False, False, True]
    assert equalization_tail_mask(counts, 0.09).tolist() == [False, False, True]  # 0.09 is not < 0.09
    assert equalization_tail_mask(counts, 0.1).tolist() == [False, True, True]
    assert equalization_tail_mask(counts, 0.0).tolist() == [False, False, False]


def test_hand_computed_drops() -> None:
    logits = torch.zeros(1, 3)
    tail = torch.tensor([False, True, True])
    target = torch.tensor([0])
    # beta = 1 everywhere: both tail negatives dropped, only the target is left -> p = 1, loss 0.
    assert softmax_equalization_loss(logits, target, tail, beta=ONES).item() == pytest.approx(0.0, abs=1e-7)
    # beta = (1, 0, 1): only class 2 dropped -> p = 1/2.
    beta = torch.tensor([[1.0, 0.0, 1.0]])
    assert softmax_equalization_loss(logits, target, tail, beta=beta).item() == pytest.approx(math.log(2), rel=1e-6)
    # beta = 0: nothing dropped -> cross-entropy log 3.
    assert softmax_equalization_loss(logits, target, tail, beta=ZEROS).item() == pytest.approx(math.log(3), rel=1e-6)
    # The target itself is a tail class: it is never dropped; the other tail class (1) is.
    assert softmax_equalization_loss(logits, torch.tensor([2]), tail, beta=ONES).item() == pytest.approx(
        math.log(2), rel=1e-6
    )


def test_hand_computed_nonzero_logits() -> None:
    # z = (0, log 2, log 5), class 1 tail and dropped: p_0 = 1 / (1 + 5).
    logits = torch.tensor([[0.0, math.log(2.0), math.log(5.0)]])
    tail = torch.tensor([False, True, False])
    assert softmax_equalization_loss(logits, torch.tensor([0]), tail, beta=ONES).item() == pytest.approx(
        math.log(6), rel=1e-6
    )


def test_dropped_tail_negative_gets_no_gradient() -> None:
    logits = torch.randn(1, 3, requires_grad=True)
    tail = torch.tensor([False, False, True])
    softmax_equalization_loss(logits, torch.tensor([0]), tail, beta=ONES).backward()
    assert logits.grad[0, 2].item() == 0.0
    assert logits.grad[0, 1].item() > 0.0  # head negative still discouraged
    ce_logits = logits.detach().clone().requires_grad_(True)
    F.cross_entropy(ce_logits, torch.tensor([0])).backward()
    assert ce_logits.grad[0, 2].item() > 0.0


@pytest.mark.parametrize(("threshold", "gamma"), [(0.5, 0.0), (0.0, 0.9)])
def test_degenerate_settings_are_cross_entropy(threshold: float, gamma: float) -> None:
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(16, 4, generator=g), torch.randint(0, 4, (16,), generator=g)
    loss = EqualizationLoss(threshold=threshold, gamma=gamma)
    loss.set_class_counts(torch.tensor([100.0, 10.0, 3.0, 1.0]))
    out = ModelOutput(logits=logits, features=torch.zeros(16, 1))
    assert loss(out, target).item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-6)


def test_beta_is_bernoulli_gamma_per_sample_and_class() -> None:
    # Zero logits, 3 classes, classes 1 and 2 tail, target 0: loss = log(1 + (1 - b1) + (1 - b2)), so
    # E[loss] = 2 γ (1 - γ) log 2 + (1 - γ)^2 log 3 when b1, b2 ~ Bernoulli(γ) independently.
    gamma, rows = 0.6, 20000
    g = torch.Generator().manual_seed(1)
    logits = torch.zeros(rows, 3)
    tail = torch.tensor([False, True, True])
    got = softmax_equalization_loss(logits, torch.zeros(rows, dtype=torch.long), tail, gamma=gamma, generator=g)
    expected = 2 * gamma * (1 - gamma) * math.log(2) + (1 - gamma) ** 2 * math.log(3)
    assert got.item() == pytest.approx(expected, abs=0.01)


def test_soft_targets() -> None:
    logits = torch.zeros(1, 3)
    tail = torch.tensor([False, True, True])
    # Class 2 has target mass: kept; class 1 dropped -> p = (1/2, -, 1/2), loss = log 2.
    soft = torch.tensor([[0.5, 0.0, 0.5]])
    assert softmax_equalization_loss(logits, soft, tail, beta=ONES).item() == pytest.approx(math.log(2), rel=1e-6)
    g = torch.Generator().manual_seed(2)
    logits, target = torch.randn(6, 3, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])
    beta = torch.rand(6, 3, generator=g) < 0.5
    assert softmax_equalization_loss(logits, F.one_hot(target, 3).float(), tail, beta=beta).item() == pytest.approx(
        softmax_equalization_loss(logits, target, tail, beta=beta).item(), rel=1e-6
    )


def test_module_buffer_and_validation() -> None:
    loss = EqualizationLoss(threshold=0.1, gamma=0.9)
    with pytest.raises(ValueError, match="set_class_counts"):
        loss(ModelOutput(logits=torch.zeros(1, 3), features=torch.zeros(1, 1)), torch.tensor([0]))
    loss.set_class_counts(torch.tensor([90.0, 9.0, 1.0]))
    assert loss.tail_mask.tolist() == [False, True, True]
    assert "tail_mask" in loss.state_dict()
    for kwargs, name in (
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"gamma": -0.1}, "gamma"),
        ({"gamma": 1.1}, "gamma"),
    ):
        with pytest.raises(ValueError, match=name):
            EqualizationLoss(**kwargs)
    with pytest.raises(ValueError, match="tail_mask"):
        softmax_equalization_loss(torch.zeros(1, 3), torch.tensor([0]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="beta"):
        softmax_equalization_loss(torch.zeros(1, 3), torch.tensor([0]), torch.tensor([True] * 3), beta=torch.ones(2, 3))
