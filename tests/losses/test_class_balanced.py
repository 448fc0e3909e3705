"""Class-balanced loss (effective number) with CE, sigmoid and focal bases, by hand and against the authors' code."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lt_lightning.losses.class_balanced import ClassBalancedLoss, class_balanced_loss, sigmoid_focal_loss
from lt_lightning.losses.cross_entropy import cross_entropy
from lt_lightning.losses.focal import focal_loss
from lt_lightning.output import ModelOutput

# rows: sigmoids σ = [1/2, 3/4], [2/3, 1/2], [1/2, 1/2]; softmax p(y) = 3/4, 2/3, 1/2 for targets [1, 0, 1]
LOGITS = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), 0.0], [0.0, 0.0]])
TARGET = torch.tensor([1, 0, 1])
# counts [1, 2], beta = 1/2: (1 - b)/(1 - b^n) = [1, 2/3] -> normalised to sum 2: [1.2, 0.8]; w_y = [0.8, 1.2, 0.8]
COUNTS = torch.tensor([1.0, 2.0])
W_Y = [0.8, 1.2, 0.8]
LN2, LN3 = math.log(2), math.log(3)


def out(logits: Tensor) -> ModelOutput:
    return ModelOutput(logits=logits, features=torch.zeros(logits.shape[0], 1))


def make(base: str, gamma: float = 1.0, beta: float = 0.5) -> ClassBalancedLoss:
    loss = ClassBalancedLoss(beta=beta, base=base, gamma=gamma)
    loss.set_class_counts(COUNTS)
    return loss


def test_weights_are_effective_number() -> None:
    assert make("ce").class_weights.tolist() == pytest.approx([1.2, 0.8], rel=1e-6)


def test_cb_softmax_hand_computed() -> None:
    per = [math.log(4 / 3), math.log(3 / 2), LN2]
    expected = sum(w * v for w, v in zip(W_Y, per, strict=True)) / 3  # the authors divide by B
    assert make("ce")(out(LOGITS), TARGET).item() == pytest.approx(expected, rel=1e-6)
    assert class_balanced_loss(LOGITS, TARGET, COUNTS, 0.5, "ce").item() == pytest.approx(expected, rel=1e-6)


def test_cb_sigmoid_hand_computed() -> None:
    # one-vs-all BCE: row 1 -log(1 - 1/2) - log(3/4); row 2 -log(2/3) - log(1/2); row 3 2 log 2
    per = [LN2 + math.log(4 / 3), math.log(3 / 2) + LN2, 2 * LN2]
    expected = sum(w * v for w, v in zip(W_Y, per, strict=True)) / 3
    assert make("sigmoid")(out(LOGITS), TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_cb_sigmoid_focal_hand_computed() -> None:
    # gamma = 2: negatives weighted by σ^2, positives by (1 - σ)^2
    per = [
        (1 / 4) * LN2 + (1 / 16) * math.log(4 / 3),
        (1 / 9) * math.log(3 / 2) + (1 / 4) * LN2,
        (1 / 4) * LN2 + (1 / 4) * LN2,
    ]
    expected = sum(w * v for w, v in zip(W_Y, per, strict=True)) / 3
    assert make("focal", gamma=2.0)(out(LOGITS), TARGET).item() == pytest.approx(expected, rel=1e-6)


def cui_reference(logits: Tensor, labels: Tensor, class_weights: Tensor, gamma: float) -> Tensor:
    """richardaecn/class-balanced-loss ``cifar_main.py`` (sigmoid / focal branches), transcribed to torch."""
    one_hot = F.one_hot(labels, logits.shape[1]).float()
    weights = (class_weights[None, :] * one_hot).sum(1, keepdim=True).expand_as(one_hot)
    # tf.nn.sigmoid_cross_entropy_with_logits
    bce = logits.clamp_min(0) - logits * one_hot + torch.log1p(torch.exp(-logits.abs()))
    modulator = 1.0 if gamma == 0 else torch.exp(-gamma * one_hot * logits - gamma * torch.log1p(torch.exp(-logits)))
    return (weights * modulator * bce).sum() / one_hot.sum()


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_equals_the_authors_sigmoid_and_focal(gamma: float) -> None:
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(32, 10, generator=g) * 3, torch.randint(0, 10, (32,), generator=g)
    counts = torch.tensor([5000.0, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
    loss = ClassBalancedLoss(beta=0.9999, base="focal", gamma=gamma)
    loss.set_class_counts(counts)
    reference = cui_reference(logits, target, loss.class_weights, gamma)
    assert loss(out(logits), target).item() == pytest.approx(reference.item(), rel=1e-5)


def test_beta_zero_is_the_plain_base_loss() -> None:
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(16, 4, generator=g), torch.randint(0, 4, (16,), generator=g)
    counts = torch.tensor([100.0, 20.0, 5.0, 1.0])
    ce = ClassBalancedLoss(beta=0.0, base="ce")
    ce.set_class_counts(counts)
    assert ce(out(logits), target).item() == pytest.approx(cross_entropy(logits, target).item(), rel=1e-6)
    sig = ClassBalancedLoss(beta=0.0, base="sigmoid")
    sig.set_class_counts(counts)
    bce = F.binary_cross_entropy_with_logits(logits, F.one_hot(target, 4).float(), reduction="sum") / 16
    assert sig(out(logits), target).item() == pytest.approx(bce.item(), rel=1e-6)


def test_focal_gamma_zero_is_sigmoid_and_softmax_focal_is_weighted_focal() -> None:
    assert make("focal", gamma=0.0)(out(LOGITS), TARGET).item() == pytest.approx(
        make("sigmoid")(out(LOGITS), TARGET).item(), rel=1e-6
    )
    expected = focal_loss(LOGITS, TARGET, 2.0, torch.tensor([1.2, 0.8]))
    assert make("softmax_focal", gamma=2.0)(out(LOGITS), TARGET).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("base", ["ce", "sigmoid", "focal", "softmax_focal"])
def test_soft_targets_are_the_expected_hard_loss(base: str) -> None:
    loss = make(base, gamma=2.0)
    one_hot = F.one_hot(TARGET, 2).float()
    assert loss(out(LOGITS), one_hot).item() == pytest.approx(loss(out(LOGITS), TARGET).item(), rel=1e-6)
    # mixup of classes 0 and 1 with lambda 0.3 = 0.3 l(z, 0) + 0.7 l(z, 1)
    z = LOGITS[:1]
    mixed = loss(out(z), torch.tensor([[0.3, 0.7]])).item()
    expected = 0.3 * loss(out(z), torch.tensor([0])).item() + 0.7 * loss(out(z), torch.tensor([1])).item()
    assert mixed == pytest.approx(expected, rel=1e-6)


def test_sigmoid_focal_is_finite_for_extreme_logits() -> None:
    logits = torch.tensor([[100.0, -100.0, 0.0], [-100.0, 100.0, 30.0]], requires_grad=True)
    loss = sigmoid_focal_loss(logits, torch.tensor([1, 0]), gamma=2.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_set_class_weights_and_reset() -> None:
    loss = make("ce")
    loss.set_class_weights(torch.ones(2))
    assert loss(out(LOGITS), TARGET).item() == pytest.approx(cross_entropy(LOGITS, TARGET).item(), rel=1e-6)
    loss.set_class_weights(None)
    assert loss.class_weights.tolist() == pytest.approx([1.2, 0.8], rel=1e-6)
    with pytest.raises(ValueError, match="3 entries"):
        loss.set_class_weights(torch.ones(3))


def test_needs_counts() -> None:
    with pytest.raises(ValueError, match="needs the class counts"):
        ClassBalancedLoss()(out(LOGITS), TARGET)


def test_zero_count_names_the_class() -> None:
    with pytest.raises(ValueError, match=r"class\(es\) \[1\]"):
        ClassBalancedLoss(beta=0.99).set_class_counts(torch.tensor([4.0, 0.0, 2.0]))


def test_counts_length_mismatch_in_functional_core() -> None:
    with pytest.raises(ValueError, match="3 entries but logits have 2"):
        class_balanced_loss(LOGITS, TARGET, [1, 2, 3], 0.9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta": 1.0}, "beta"),
        ({"beta": -0.1}, "beta"),
        ({"base": "softmax"}, "base"),
        ({"gamma": -1.0}, "gamma"),
        ({"reduction": "avg"}, "reduction"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClassBalancedLoss(**kwargs)
