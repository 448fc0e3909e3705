"""SADE's diverse expert loss against hand-computed numbers, its bad-input errors, a training step via the module."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lt_lightning.backbones.multi_expert import MultiExpertResNetCifar
from lt_lightning.heads.multi_expert import MultiExpertHead
from lt_lightning.losses.logit_adjustment import balanced_softmax_loss, log_prior_from_counts
from lt_lightning.losses.sade import DiverseExpertLoss, diverse_expert_loss, inverse_prior, sade_expert_losses
from lt_lightning.module import LongTailModule
from lt_lightning.output import ModelOutput

COUNTS = torch.tensor([6.0, 3.0, 1.0])  # pi = (0.6, 0.3, 0.1), inverse prior = (0.1, 0.3, 0.6)


def out(expert_logits: Tensor | None, batch: int = 1, classes: int = 3) -> ModelOutput:
    logits = torch.zeros(batch, classes) if expert_logits is None else expert_logits.mean(0)
    return ModelOutput(logits=logits, features=torch.zeros(batch, 2), expert_logits=expert_logits)


def loss_with_prior(lam: float = 2.0) -> DiverseExpertLoss:
    loss = DiverseExpertLoss(lam)
    loss.set_class_counts(COUNTS)
    return loss


def test_inverse_prior_reverses_the_ranks() -> None:
    assert inverse_prior(torch.tensor([0.6, 0.3, 0.1])).tolist() == pytest.approx([0.1, 0.3, 0.6])
    # unsorted prior: the largest value goes to the class with the smallest one and so on
    assert inverse_prior(torch.tensor([0.2, 0.5, 0.3])).tolist() == pytest.approx([0.5, 0.2, 0.3])
    # ties keep their index order (stable): the tied smallest values (0.1, 0.1) get the two largest values in order
    assert inverse_prior(torch.tensor([0.1, 0.5, 0.1, 0.3])).tolist() == pytest.approx([0.5, 0.1, 0.3, 0.1])
    # it only permutes values, so it commutes with log
    prior = torch.tensor([0.2, 0.5, 0.3])
    assert inverse_prior(prior.log()).tolist() == pytest.approx(inverse_prior(prior).log().tolist())


def test_expert_losses_hand_computed() -> None:
    # One image of class 0; pi = (0.6, 0.3, 0.1), inverse prior (0.1, 0.3, 0.6), lambda = 2.
    # forward expert, v1 = (1, 0, 0):   -log(e / (e + 2)) = log(e + 2) - 1
    # uniform expert, v2 = 0:           -log softmax(log pi)_0 = -log 0.6
    # backward expert, v3 = 0: exp(log pi - 2 log inv) = (0.6/0.01, 0.3/0.09, 0.1/0.36) = (60, 10/3, 5/18)
    #                                   -> -log(60 / (60 + 10/3 + 5/18))
    expert_logits = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]])
    target = torch.tensor([0])
    forward = math.log(math.e + 2) - 1
    uniform = -math.log(0.6)
    backward = math.log((60 + 10 / 3 + 5 / 18) / 60)
    lp = log_prior_from_counts(COUNTS)
    parts = sade_expert_losses(expert_logits, target, lp, lam=2.0)
    assert parts.tolist() == pytest.approx([forward, uniform, backward], rel=1e-5)
    assert diverse_expert_loss(expert_logits, target, lp, 2.0).item() == pytest.approx(
        forward + uniform + backward, 1e-5
    )
    assert loss_with_prior(2.0)(out(expert_logits), target).item() == pytest.approx(forward + uniform + backward, 1e-5)


def test_backward_expert_with_lambda_one_hand_computed() -> None:
    # lambda = 1, class 2 target, v3 = 0: exp(log pi - log inv) = (6, 1, 1/6) -> -log((1/6) / (6 + 1 + 1/6))
    expert_logits = torch.zeros(3, 1, 3)
    parts = sade_expert_losses(expert_logits, torch.tensor([2]), log_prior_from_counts(COUNTS), lam=1.0)
    assert parts[2].item() == pytest.approx(math.log((6 + 1 + 1 / 6) * 6), rel=1e-5)


def test_backward_expert_with_lambda_zero_is_balanced_softmax() -> None:
    generator = torch.Generator().manual_seed(0)
    expert_logits = torch.randn(3, 8, 3, generator=generator)
    target = torch.randint(0, 3, (8,), generator=generator)
    lp = log_prior_from_counts(COUNTS)
    parts = sade_expert_losses(expert_logits, target, lp, lam=0.0)
    assert parts[2].item() == pytest.approx(balanced_softmax_loss(expert_logits[2], target, lp).item(), rel=1e-6)
    # and the uniform expert is balanced softmax for any lambda, the forward expert plain cross-entropy
    assert parts[1].item() == pytest.approx(balanced_softmax_loss(expert_logits[1], target, lp).item(), rel=1e-6)
    assert parts[0].item() == pytest.approx(F.cross_entropy(expert_logits[0], target).item(), rel=1e-6)


def test_soft_targets_equal_one_hot_targets() -> None:
    generator = torch.Generator().manual_seed(1)
    expert_logits = torch.randn(3, 5, 3, generator=generator)
    target = torch.tensor([0, 1, 2, 2, 1])
    loss = loss_with_prior()
    hard = loss(out(expert_logits, 5), target)
    soft = loss(out(expert_logits, 5), F.one_hot(target, 3).float())
    assert soft.item() == pytest.approx(hard.item(), rel=1e-6)


def test_gradients_reach_every_expert() -> None:
    expert_logits = torch.zeros(3, 4, 3, requires_grad=True)
    loss_with_prior()(out(expert_logits, 4), torch.tensor([0, 1, 2, 0])).backward()
    assert expert_logits.grad is not None
    assert all(float(g.abs().sum()) > 0 for g in expert_logits.grad)


def test_bad_input_errors() -> None:
    with pytest.raises(ValueError, match="lam"):
        DiverseExpertLoss(lam=-0.5)
    with pytest.raises(ValueError, match="lam"):
        DiverseExpertLoss(lam=float("nan"))
    loss = loss_with_prior()
    target = torch.tensor([0])
    with pytest.raises(ValueError, match="expert_logits"):
        loss(out(None), target)
    with pytest.raises(ValueError, match="exactly 3 experts.*got expert_logits with 0"):
        loss(ModelOutput(torch.zeros(1, 3), torch.zeros(1, 2), expert_logits=torch.zeros(0, 1, 3)), target)
    with pytest.raises(ValueError, match="exactly 3 experts.*with 2"):
        loss(out(torch.zeros(2, 1, 3)), target)
    with pytest.raises(ValueError, match=r"\[E, B, C\]"):
        loss(ModelOutput(torch.zeros(1, 3), torch.zeros(1, 2), expert_logits=torch.zeros(3, 3)), target)
    with pytest.raises(ValueError, match="log_prior"):
        loss(out(torch.zeros(3, 1, 4), classes=4), target)
    with pytest.raises(ValueError, match="no class prior"):
        DiverseExpertLoss()(out(torch.zeros(3, 1, 3)), target)
    with pytest.raises(ValueError, match="zero count"):
        DiverseExpertLoss().set_class_counts(torch.tensor([3.0, 0.0, 1.0]))


def test_module_trains_three_experts_and_receives_the_prior() -> None:
    backbone = MultiExpertResNetCifar(depth=8, num_experts=3, widths=(4, 8, 8), in_channels=1)
    module = LongTailModule(
        backbone,
        num_classes=3,
        class_counts=[6, 3, 1],
        classifier=lambda d, c: MultiExpertHead(d, c, num_experts=3),
        criterion=DiverseExpertLoss(lam=2.0),
    )
    assert module.criterion.log_prior.tolist() == pytest.approx(torch.log(COUNTS / COUNTS.sum()).tolist(), rel=1e-6)
    x = torch.randn(4, 1, 8, 8)
    loss = module.training_criterion(module(x), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in module.classifier.parameters())
