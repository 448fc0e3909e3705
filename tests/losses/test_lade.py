"""LADE: PriorCE + α · the LADE regulariser, against hand-computed numbers and a plain transcription of the
authors' formula (hyperconnect/LADE ``loss/LADELoss.py``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lt_lightning.losses.lade import LADELoss, lade_loss, lade_regularizer
from lt_lightning.losses.logit_adjustment import balanced_softmax_loss, log_prior_from_counts
from lt_lightning.output import ModelOutput


def reference_regularizer(logits: np.ndarray, target: np.ndarray, prior: np.ndarray, lam: float) -> float:
    """The authors' formula written out in numpy, loop by loop (their ``+ 1e-8`` / ``+ 1e-9`` guards included)."""
    batch, num_classes = logits.shape
    total = 0.0
    for c in range(num_classes):
        members = target == c
        first = logits[members, c].sum() / (members.sum() + 1e-8)
        spread = logits[:, c] - np.log(prior[c] + 1e-9) + np.log(1.0 / num_classes + 1e-9)
        second = np.log(np.exp(spread).sum()) - np.log(batch)
        total += prior[c] * (first - second - lam * second**2)
    return -total


def test_regularizer_hand_computed() -> None:
    # z = [[1, 0], [0, 2]], y = [0, 1], pi = (3/4, 1/4), C = B = 2.
    # T_0 = 1, T_1 = 2;  S_0 = log((e + 1) / 3),  S_1 = log(1 + e^2)  (see the module docstring).
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    target = torch.tensor([0, 1])
    lp = log_prior_from_counts(torch.tensor([3.0, 1.0]))
    s0, s1 = math.log((math.e + 1) / 3), math.log(1 + math.e**2)
    for lam in (0.0, 0.1, 0.5):
        expected = -(0.75 * (1 - s0 - lam * s0**2) + 0.25 * (2 - s1 - lam * s1**2))
        assert lade_regularizer(logits, target, lp, lam).item() == pytest.approx(expected, rel=1e-6)


def test_full_loss_hand_computed() -> None:
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    target = torch.tensor([0, 1])
    lp = log_prior_from_counts(torch.tensor([3.0, 1.0]))
    # PriorCE: softmax of (1 + log .75, log .25) at class 0 and of (log .75, 2 + log .25) at class 1.
    p0 = 0.75 * math.e / (0.75 * math.e + 0.25)
    p1 = 0.25 * math.e**2 / (0.75 + 0.25 * math.e**2)
    prior_ce = -(math.log(p0) + math.log(p1)) / 2
    s0, s1 = math.log((math.e + 1) / 3), math.log(1 + math.e**2)
    reg = -(0.75 * (1 - s0 - 0.1 * s0**2) + 0.25 * (2 - s1 - 0.1 * s1**2))
    expected = prior_ce + 0.1 * reg
    assert lade_loss(logits, target, lp, alpha=0.1, remine_lambda=0.1).item() == pytest.approx(expected, rel=1e-6)
    loss = LADELoss(alpha=0.1, remine_lambda=0.1)
    loss.set_class_counts(torch.tensor([3.0, 1.0]))
    out = ModelOutput(logits=logits, features=torch.zeros(2, 1))
    assert loss(out, target).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_authors_formula_with_absent_classes(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(8, 5, generator=g)
    target = torch.randint(0, 3, (8,), generator=g)  # classes 3 and 4 absent from the batch
    counts = torch.tensor([40.0, 20.0, 10.0, 5.0, 2.0])
    prior = (counts / counts.sum()).numpy().astype(np.float64)
    expected = reference_regularizer(logits.double().numpy(), target.numpy(), prior, 0.1)
    got = lade_regularizer(logits, target, log_prior_from_counts(counts), 0.1).item()
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_alpha_zero_is_balanced_softmax_and_uniform_prior_is_cross_entropy() -> None:
    g = torch.Generator().manual_seed(4)
    logits, target = torch.randn(6, 4, generator=g), torch.randint(0, 4, (6,), generator=g)
    lp = log_prior_from_counts(torch.tensor([8.0, 4.0, 2.0, 1.0]))
    assert lade_loss(logits, target, lp, alpha=0.0).item() == pytest.approx(
        balanced_softmax_loss(logits, target, lp).item(), rel=1e-7
    )
    uniform = log_prior_from_counts(torch.full((4,), 3.0))
    assert lade_loss(logits, target, uniform, alpha=0.0).item() == pytest.approx(
        F.cross_entropy(logits, target).item(), rel=1e-6
    )


def test_soft_targets_one_hot_equal_hard_and_weighted_mean() -> None:
    g = torch.Generator().manual_seed(5)
    logits, target = torch.randn(6, 3, generator=g), torch.tensor([0, 1, 2, 0, 1, 1])
    lp = log_prior_from_counts(torch.tensor([5.0, 3.0, 1.0]))
    soft = F.one_hot(target, 3).float()
    assert lade_loss(logits, soft, lp, 0.1, 0.1).item() == pytest.approx(
        lade_loss(logits, target, lp, 0.1, 0.1).item(), rel=1e-6
    )
    # Soft T_c is the y-weighted mean: with y = [[.5, .5], [0, 1]], T_0 = z_00, T_1 = (.5 z_01 + z_11) / 1.5.
    z = torch.tensor([[1.0, 3.0], [0.0, 2.0]])
    y = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    lp2 = log_prior_from_counts(torch.tensor([1.0, 1.0]))
    t0, t1 = 1.0, (0.5 * 3.0 + 2.0) / 1.5
    s0 = math.log((math.exp(1.0) + 1.0) / 2)  # re-based logits equal z for a uniform prior; minus log B = log 2
    s1 = math.log((math.exp(3.0) + math.exp(2.0)) / 2)
    expected = -(0.5 * (t0 - s0) + 0.5 * (t1 - s1))
    assert lade_regularizer(z, y, lp2, 0.0).item() == pytest.approx(expected, rel=1e-6)


def test_gradients_are_finite_with_absent_classes() -> None:
    logits = torch.randn(4, 6, requires_grad=True)
    loss = lade_loss(logits, torch.tensor([0, 0, 1, 1]), log_prior_from_counts(torch.arange(6, 0, -1).float()))
    loss.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(("kwargs", "name"), [({"alpha": -0.1}, "alpha"), ({"remine_lambda": -1.0}, "remine_lambda")])
def test_bad_hyper_parameters(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        LADELoss(**kwargs)


def test_zero_count_missing_prior_and_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[1\]"):
        LADELoss().set_class_counts(torch.tensor([4.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="set_class_counts"):
        LADELoss()(ModelOutput(logits=torch.zeros(1, 2), features=torch.zeros(1, 1)), torch.tensor([0]))
    with pytest.raises(ValueError, match="log_prior"):
        lade_regularizer(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(2))
    state = LADELoss()
    state.set_class_counts(torch.tensor([2.0, 1.0]))
    assert "log_prior" in state.state_dict()
