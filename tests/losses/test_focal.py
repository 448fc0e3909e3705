"""Softmax focal loss against hand-computed numbers; γ = 0 is cross-entropy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lt_lightning.losses.cross_entropy import cross_entropy
from lt_lightning.losses.focal import FocalLoss, focal_loss
from lt_lightning.output import ModelOutput

# rows: p(y) = 3/4, 2/3, 1/2 for targets [1, 0, 1]
LOGITS = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), 0.0], [0.0, 0.0]])
TARGET = torch.tensor([1, 0, 1])
GAMMA2 = [(1 / 4) ** 2 * math.log(4 / 3), (1 / 3) ** 2 * math.log(3 / 2), (1 / 2) ** 2 * math.log(2)]


def out(logits: Tensor) -> ModelOutput:
    return ModelOutput(logits=logits, features=torch.zeros(logits.shape[0], 1))


def test_focal_hand_computed() -> None:
    assert focal_loss(LOGITS, TARGET, gamma=2.0, reduction="none").tolist() == pytest.approx(GAMMA2, rel=1e-6)
    assert focal_loss(LOGITS, TARGET, gamma=2.0).item() == pytest.approx(sum(GAMMA2) / 3, rel=1e-6)
    assert FocalLoss(gamma=2.0)(out(LOGITS), TARGET).item() == pytest.approx(sum(GAMMA2) / 3, rel=1e-6)


def test_weighted_focal_hand_computed() -> None:
    # counts [4, 1], q = 1 -> w = [0.4, 1.6]; w_y = [1.6, 0.4, 1.6]
    w_y = [1.6, 0.4, 1.6]
    weighted = [w * v for w, v in zip(w_y, GAMMA2, strict=True)]
    loss = FocalLoss(gamma=2.0, weighted_q=1.0)
    loss.set_class_counts(torch.tensor([4.0, 1.0]))
    assert loss.class_weights.tolist() == pytest.approx([0.4, 1.6])
    assert loss(out(LOGITS), TARGET).item() == pytest.approx(sum(weighted) / 3, rel=1e-6)
    got = focal_loss(LOGITS, TARGET, 2.0, torch.tensor([0.4, 1.6]), reduction="weighted_mean")
    assert got.item() == pytest.approx(sum(weighted) / 3.6, rel=1e-6)


def test_gamma_zero_is_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(16, 6, generator=g), torch.randint(0, 6, (16,), generator=g)
    assert focal_loss(logits, target, gamma=0.0).item() == pytest.approx(cross_entropy(logits, target).item(), rel=1e-6)
    loss = FocalLoss(gamma=0.0)
    loss.set_class_counts(torch.tensor([50.0, 20, 10, 5, 2, 1]))
    assert loss(out(logits), target).item() == pytest.approx(cross_entropy(logits, target).item(), rel=1e-6)


def test_equals_ldam_drw_focal_when_unweighted() -> None:
    # kaidic/LDAM-DRW losses.py: p = exp(-CE); ((1 - p)^gamma * CE).mean()
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(32, 10, generator=g) * 3, torch.randint(0, 10, (32,), generator=g)
    ce = F.cross_entropy(logits, target, reduction="none")
    reference = ((1 - torch.exp(-ce)) ** 1.0 * ce).mean()
    assert focal_loss(logits, target, gamma=1.0).item() == pytest.approx(reference.item(), rel=1e-5)


def test_soft_targets_are_the_expected_hard_loss() -> None:
    one_hot = F.one_hot(TARGET, 2).float()
    assert torch.allclose(
        focal_loss(LOGITS, one_hot, 2.0, reduction="none"), focal_loss(LOGITS, TARGET, 2.0, reduction="none")
    )
    # row 1 (p = [1/4, 3/4]) with targets 0.3 / 0.7: 0.3 (3/4)^2 log 4 + 0.7 (1/4)^2 log(4/3)
    expected = 0.3 * (3 / 4) ** 2 * math.log(4) + 0.7 * (1 / 4) ** 2 * math.log(4 / 3)
    got = focal_loss(LOGITS[:1], torch.tensor([[0.3, 0.7]]), gamma=2.0)
    assert got.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_gradient_matches_the_naive_formula_and_stays_finite_when_confident(gamma: float) -> None:
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(8, 5, generator=g, dtype=torch.float64) * 2).requires_grad_()
    target = torch.randint(0, 5, (8,), generator=g)
    focal_loss(logits, target, gamma).backward()
    naive_logits = logits.detach().clone().requires_grad_()
    p = naive_logits.softmax(1).gather(1, target[:, None]).squeeze(1)
    (-((1 - p) ** gamma) * p.log()).mean().backward()
    assert torch.allclose(logits.grad, naive_logits.grad)
    confident = torch.tensor([[60.0, -60.0, 0.0]], requires_grad=True)
    loss = focal_loss(confident, torch.tensor([0]), gamma) + focal_loss(
        confident, torch.tensor([[0.9, 0.1, 0.0]]), gamma
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(confident.grad).all()


def test_weights_switch_and_reset() -> None:
    loss = FocalLoss(gamma=1.0)
    loss.set_class_counts(torch.tensor([4.0, 1.0]))
    assert loss.class_weights.tolist() == [1.0, 1.0]
    loss.set_class_weights(torch.tensor([0.4, 1.6]))
    assert loss(out(LOGITS), TARGET).item() == pytest.approx(
        focal_loss(LOGITS, TARGET, 1.0, torch.tensor([0.4, 1.6])).item()
    )
    loss.set_class_weights(None)
    assert loss.class_weights.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="3 entries"):
        loss.set_class_weights(torch.ones(3))


def test_needs_counts_only_when_weighted() -> None:
    assert FocalLoss(gamma=2.0)(out(LOGITS), TARGET).item() == pytest.approx(sum(GAMMA2) / 3, rel=1e-6)
    with pytest.raises(ValueError, match="needs the class counts"):
        FocalLoss(weighted_q=1.0)(out(LOGITS), TARGET)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gamma": -1.0}, "gamma"),
        ({"gamma": math.nan}, "gamma"),
        ({"weighted_q": -0.5}, "weighted_q"),
        ({"reduction": "avg"}, "reduction"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FocalLoss(**kwargs)
    if "gamma" in kwargs:
        with pytest.raises(ValueError, match="gamma"):
            focal_loss(LOGITS, TARGET, kwargs["gamma"])
