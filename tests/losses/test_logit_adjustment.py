"""Balanced softmax and the logit-adjusted loss against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lt_lightning.backbones.base import Backbone
from lt_lightning.losses._checks import target_distribution
from lt_lightning.losses.logit_adjustment import (
    BalancedSoftmaxLoss,
    LogitAdjustedLoss,
    balanced_softmax_loss,
    log_prior_from_counts,
    logit_adjusted_loss,
)
from lt_lightning.module import LongTailModule
from lt_lightning.output import ModelOutput


def out(logits: Tensor) -> ModelOutput:
    return ModelOutput(logits=logits, features=torch.zeros(logits.shape[0], 2))


def test_log_prior_hand_computed() -> None:
    lp = log_prior_from_counts(torch.tensor([3.0, 1.0]))
    assert lp.dtype == torch.float32
    assert lp.tolist() == pytest.approx([math.log(0.75), math.log(0.25)], rel=1e-6)


def test_balanced_softmax_hand_computed() -> None:
    # z = 0, pi = (3/4, 1/4): softmax(z + log pi) = pi.
    logits = torch.zeros(2, 2)
    lp = log_prior_from_counts(torch.tensor([3.0, 1.0]))
    expected = -(math.log(0.75) + math.log(0.25)) / 2
    assert balanced_softmax_loss(logits, torch.tensor([0, 1]), lp).item() == pytest.approx(expected, rel=1e-6)
    loss = BalancedSoftmaxLoss()
    loss.set_class_counts(torch.tensor([3.0, 1.0]))
    assert loss(out(logits), torch.tensor([0, 1])).item() == pytest.approx(expected, rel=1e-6)


def test_logit_adjusted_tau_two_hand_computed() -> None:
    # z + 2 log pi ∝ (9/16, 1/16) -> softmax = (0.9, 0.1).
    lp = log_prior_from_counts(torch.tensor([3.0, 1.0]))
    logits = torch.zeros(1, 2)
    assert logit_adjusted_loss(logits, torch.tensor([1]), lp, tau=2.0).item() == pytest.approx(-math.log(0.1), rel=1e-6)
    assert logit_adjusted_loss(logits, torch.tensor([0]), lp, tau=2.0).item() == pytest.approx(-math.log(0.9), rel=1e-6)


def test_nonzero_logits_hand_computed() -> None:
    # z = (log 2, 0), pi = (1/3, 2/3), tau = 1: z + log pi = (log 2/3, log 2/3) -> p = (1/2, 1/2).
    lp = log_prior_from_counts(torch.tensor([10.0, 20.0]))
    logits = torch.tensor([[math.log(2.0), 0.0]])
    assert logit_adjusted_loss(logits, torch.tensor([0]), lp, tau=1.0).item() == pytest.approx(math.log(2), rel=1e-6)


def test_tau_zero_is_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(8, 5, generator=g), torch.randint(0, 5, (8,), generator=g)
    lp = log_prior_from_counts(torch.tensor([50.0, 20.0, 9.0, 4.0, 1.0]))
    assert logit_adjusted_loss(logits, target, lp, tau=0.0).item() == pytest.approx(
        F.cross_entropy(logits, target).item(), rel=1e-6
    )


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_uniform_counts_are_cross_entropy(tau: float) -> None:
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(8, 4, generator=g), torch.randint(0, 4, (8,), generator=g)
    ce = F.cross_entropy(logits, target).item()
    for loss in (LogitAdjustedLoss(tau=tau), BalancedSoftmaxLoss()):
        loss.set_class_counts(torch.full((4,), 7.0))
        assert loss(out(logits), target).item() == pytest.approx(ce, rel=1e-6)


def test_balanced_softmax_equals_tau_one() -> None:
    g = torch.Generator().manual_seed(2)
    logits, target = torch.randn(6, 3, generator=g), torch.randint(0, 3, (6,), generator=g)
    counts = torch.tensor([30.0, 6.0, 2.0])
    bs, la = BalancedSoftmaxLoss(), LogitAdjustedLoss(tau=1.0)
    bs.set_class_counts(counts)
    la.set_class_counts(counts)
    assert bs(out(logits), target).item() == pytest.approx(la(out(logits), target).item(), rel=1e-7)


def test_soft_targets() -> None:
    lp = log_prior_from_counts(torch.tensor([3.0, 1.0]))
    logits = torch.zeros(1, 2)
    soft = torch.tensor([[0.5, 0.5]])
    expected = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))
    assert balanced_softmax_loss(logits, soft, lp).item() == pytest.approx(expected, rel=1e-6)
    g = torch.Generator().manual_seed(3)
    logits, target = torch.randn(5, 3, generator=g), torch.tensor([0, 1, 2, 0, 1])
    lp3 = log_prior_from_counts(torch.tensor([5.0, 3.0, 1.0]))
    one_hot = F.one_hot(target, 3).float()
    assert logit_adjusted_loss(logits, one_hot, lp3, 1.5).item() == pytest.approx(
        logit_adjusted_loss(logits, target, lp3, 1.5).item(), rel=1e-6
    )


def test_target_distribution() -> None:
    assert target_distribution(torch.tensor([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    soft = torch.tensor([[0.2, 0.8]])
    assert torch.equal(target_distribution(soft, 2), soft)
    with pytest.raises(ValueError, match="soft target"):
        target_distribution(soft, 3)
    with pytest.raises(ValueError, match="target"):
        target_distribution(torch.zeros(2, 2, dtype=torch.long), 2)


@pytest.mark.parametrize("tau", [-0.1, float("nan"), float("inf")])
def test_bad_tau(tau: float) -> None:
    with pytest.raises(ValueError, match="tau"):
        LogitAdjustedLoss(tau=tau)
    with pytest.raises(ValueError, match="tau"):
        logit_adjusted_loss(torch.zeros(1, 2), torch.tensor([0]), torch.zeros(2), tau=tau)


def test_zero_count_names_the_class() -> None:
    with pytest.raises(ValueError, match=r"class\(es\) \[2\]"):
        BalancedSoftmaxLoss().set_class_counts(torch.tensor([5.0, 3.0, 0.0]))
    with pytest.raises(ValueError, match="class"):
        LogitAdjustedLoss().set_class_counts(torch.tensor([0.0, 3.0]))


def test_shape_errors_and_missing_prior() -> None:
    with pytest.raises(ValueError, match="log_prior"):
        logit_adjusted_loss(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(2))
    with pytest.raises(ValueError, match="logits"):
        balanced_softmax_loss(torch.zeros(3), torch.tensor([0]), torch.zeros(3))
    with pytest.raises(ValueError, match="set_class_counts"):
        LogitAdjustedLoss()(out(torch.zeros(1, 2)), torch.tensor([0]))


class _TinyBackbone(Backbone):
    def __init__(self) -> None:
        super().__init__()
        self.num_features = 4
        self.fc = nn.Linear(12, 4)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1))


def test_prior_reaches_the_loss_through_the_module_and_is_saved() -> None:
    criterion = LogitAdjustedLoss(tau=1.0)
    module = LongTailModule(_TinyBackbone(), num_classes=3, class_counts=[6, 3, 1], criterion=criterion)
    expected = [math.log(0.6), math.log(0.3), math.log(0.1)]
    assert criterion.log_prior.tolist() == pytest.approx(expected, rel=1e-6)
    state = module.state_dict()
    assert "criterion.log_prior" in state
    # A fresh module loads the buffer (shape fixed at construction); replacing the counts recomputes it.
    other = LongTailModule(_TinyBackbone(), num_classes=3, class_counts=[1, 1, 1], criterion=LogitAdjustedLoss())
    other.load_state_dict(state)
    assert other.criterion.log_prior.tolist() == pytest.approx(expected, rel=1e-6)
    other.set_class_counts([1, 1, 2])
    assert other.criterion.log_prior.tolist() == pytest.approx([math.log(0.25)] * 2 + [math.log(0.5)], rel=1e-6)
    loss = module.criterion(module(torch.randn(4, 3, 2, 2)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert torch.isfinite(loss)
