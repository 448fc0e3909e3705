"""RIDE's router loss: weighted binary cross-entropy of the routing decisions against hand numbers."""

from __future__ import annotations

import math

import pytest
import torch

from lt_lightning.losses.expert_router import ExpertRouterLoss, expert_router_loss
from lt_lightning.output import ModelOutput

# E = 3 experts, B = 4 images, labels 0; router targets [[0, 1, 1, 0], [0, 0, 1, 0]] (see the head tests)
EXPERTS = torch.tensor(
    [
        [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]],
        [[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 1.0]],
        [[1.0, 0.0], [0.0, 0.0], [5.0, 0.0], [0.0, 1.0]],
    ]
)
LABELS = torch.zeros(4, dtype=torch.long)


def test_hand_numbers_at_zero_logits() -> None:
    # sigma(0) = 1/2: a positive costs pos_weight * log 2, a negative log 2.
    # decision 0: targets [0, 1, 1, 0] -> (1 + 20 + 20 + 1) / 4 log 2; decision 1: [0, 0, 1, 0] -> (3 + 20) / 4 log 2
    got = expert_router_loss(torch.zeros(2, 4), EXPERTS, LABELS, pos_weight=20.0)
    assert got.item() == pytest.approx((42 / 4 + 23 / 4) / 2 * math.log(2), rel=1e-6)


def test_hand_numbers_at_nonzero_logits() -> None:
    # one decision (E = 2), one image, target 1 (wrong with expert 0, right with both): -w log sigma(r)
    experts = torch.tensor([[[0.0, 1.0]], [[3.0, 0.0]]])
    r = 0.7
    got = expert_router_loss(torch.tensor([[r]]), experts, torch.tensor([0]), pos_weight=5.0)
    assert got.item() == pytest.approx(5.0 * math.log(1 + math.exp(-r)), rel=1e-6)


def test_module_reads_the_router_logits_from_the_output() -> None:
    router_logits = torch.randn(2, 4)
    output = ModelOutput(EXPERTS.mean(0), torch.zeros(4, 1), EXPERTS, {"router_logits": router_logits})
    expected = expert_router_loss(router_logits, EXPERTS, LABELS, 100.0)
    torch.testing.assert_close(ExpertRouterLoss(pos_weight=100.0)(output, LABELS), expected)


def test_bad_input_raises_clear_errors() -> None:
    with pytest.raises(ValueError, match="pos_weight"):
        ExpertRouterLoss(pos_weight=0.0)
    with pytest.raises(ValueError, match="router logits"):
        ExpertRouterLoss()(ModelOutput(EXPERTS.mean(0), torch.zeros(4, 1), EXPERTS), LABELS)
    with pytest.raises(ValueError, match="router_logits must be"):
        expert_router_loss(torch.zeros(3, 4), EXPERTS, LABELS)
