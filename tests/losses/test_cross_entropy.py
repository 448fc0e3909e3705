"""Softmax cross-entropy against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from lt_lightning.losses import CrossEntropyLoss, cross_entropy
from lt_lightning.output import ModelOutput


def test_cross_entropy_hand_computed() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), 0.0]])
    target = torch.tensor([1, 1])
    # p(y=1) = 3/4 for the first row, 1/3 for the second.
    expected = -(math.log(3 / 4) + math.log(1 / 3)) / 2
    assert cross_entropy(logits, target).item() == pytest.approx(expected, rel=1e-6)
    out = ModelOutput(logits=logits, features=torch.zeros(2, 4))
    assert CrossEntropyLoss()(out, target).item() == pytest.approx(expected, rel=1e-6)


def test_soft_targets_equal_hard_targets_when_one_hot() -> None:
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    soft = torch.nn.functional.one_hot(target, 4).float()
    assert cross_entropy(logits, soft).item() == pytest.approx(cross_entropy(logits, target).item(), rel=1e-6)


def test_label_smoothing_hand_computed() -> None:
    logits = torch.tensor([[0.0, 0.0]])
    # uniform prediction: loss is log 2 whatever the smoothing.
    assert cross_entropy(logits, torch.tensor([0]), label_smoothing=0.2).item() == pytest.approx(math.log(2))


@pytest.mark.parametrize("eps", [-0.1, 1.0])
def test_bad_label_smoothing(eps: float) -> None:
    with pytest.raises(ValueError, match="label_smoothing"):
        CrossEntropyLoss(label_smoothing=eps)


def test_bad_logits_shape() -> None:
    with pytest.raises(ValueError, match="logits"):
        cross_entropy(torch.zeros(3), torch.tensor([0, 1, 2]))
