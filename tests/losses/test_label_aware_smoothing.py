"""Label-aware smoothing (MiSLAS): the epsilon schedule by hand, eps = 0 is cross-entropy, soft targets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lt_lightning.losses.label_aware_smoothing import (
    LabelAwareSmoothingLoss,
    label_aware_epsilons,
    label_aware_smoothing_loss,
)
from lt_lightning.output import ModelOutput

pytestmark = pytest.mark.usefixtures("one_thread")

COUNTS = torch.tensor([100.0, 40.0, 10.0])  # r = (n - 10) / 90 = 1, 1/3, 0


def test_epsilons_by_hand_for_every_shape() -> None:
    head, tail = 0.4, 0.1
    r = 1 / 3
    expected = {
        "concave": [0.4, 0.1 + 0.3 * math.sin(r * math.pi / 2), 0.1],  # 0.1 + 0.3 * 0.5 = 0.25
        "linear": [0.4, 0.1 + 0.3 * r, 0.1],  # 0.2
        "convex": [0.4 + 0.3 * math.sin(2 * math.pi), 0.4 + 0.3 * math.sin(1.5 * math.pi + r * math.pi / 2), 0.1],
        "exp": [0.4, 0.1 + 0.3 * r**2, 0.1],
    }
    assert expected["concave"][1] == pytest.approx(0.25)
    assert expected["linear"][1] == pytest.approx(0.2)
    assert expected["convex"][1] == pytest.approx(0.4 - 0.3 * math.cos(math.pi / 6))  # ~0.1402
    for shape, values in expected.items():
        power = 2.0 if shape == "exp" else None
        eps = label_aware_epsilons(COUNTS, head, tail, shape, power)
        assert eps.dtype == torch.float32
        assert eps.tolist() == pytest.approx(values, abs=1e-6), shape


def test_balanced_counts_give_smooth_head_everywhere() -> None:
    assert label_aware_epsilons([5, 5, 5], 0.3, 0.0).tolist() == pytest.approx([0.3, 0.3, 0.3])


def test_zero_epsilon_is_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 3, 0])
    loss = label_aware_smoothing_loss(logits, target, torch.zeros(4))
    assert torch.allclose(loss, F.cross_entropy(logits, target))
    module = LabelAwareSmoothingLoss(smooth_head=0.0, smooth_tail=0.0)
    module.set_class_counts(torch.tensor([9.0, 5.0, 3.0, 1.0]))
    output = ModelOutput(logits=logits, features=torch.zeros(6, 2))
    assert torch.allclose(module(output, target), F.cross_entropy(logits, target))


def test_loss_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    target = torch.tensor([0, 2])
    eps = torch.tensor([0.3, 0.0, 0.1])
    log_p = F.log_softmax(logits, dim=1)
    first = 0.7 * -log_p[0, 0] + 0.3 * -log_p[0].mean()
    second = 0.9 * -log_p[1, 2] + 0.1 * -log_p[1].mean()
    assert torch.allclose(label_aware_smoothing_loss(logits, target, eps), (first + second) / 2)
    # a uniform eps equals PyTorch's label smoothing
    uniform = label_aware_smoothing_loss(logits, target, torch.full((3,), 0.2))
    assert torch.allclose(uniform, F.cross_entropy(logits, target, label_smoothing=0.2))


def test_soft_targets_interpolate_the_hard_losses() -> None:
    torch.manual_seed(1)
    logits = torch.randn(5, 3)
    a, b = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([2, 2, 0, 1, 1])
    eps = label_aware_epsilons(COUNTS, 0.4, 0.1)
    lam = 0.3
    soft = lam * F.one_hot(a, 3).float() + (1 - lam) * F.one_hot(b, 3).float()
    mixed = label_aware_smoothing_loss(logits, soft, eps)
    interpolated = lam * label_aware_smoothing_loss(logits, a, eps) + (1 - lam) * label_aware_smoothing_loss(
        logits, b, eps
    )  # MiSLAS's mixup_criterion
    assert torch.allclose(mixed, interpolated)
    one_hot = label_aware_smoothing_loss(logits, F.one_hot(a, 3).float(), eps)
    assert torch.allclose(one_hot, label_aware_smoothing_loss(logits, a, eps))


def test_module_takes_the_counts_and_keeps_eps_in_a_buffer() -> None:
    loss = LabelAwareSmoothingLoss(smooth_head=0.4, smooth_tail=0.1)
    with pytest.raises(ValueError, match="needs the class counts"):
        loss(ModelOutput(logits=torch.zeros(2, 3), features=torch.zeros(2, 2)), torch.tensor([0, 1]))
    loss.set_class_counts(COUNTS)
    assert loss.epsilons.tolist() == pytest.approx([0.4, 0.25, 0.1])
    assert "epsilons" in loss.state_dict()
    loss.set_class_counts(torch.tensor([1.0, 2.0, 3.0]))  # replaced in place
    assert loss.epsilons.tolist() == pytest.approx([0.1, 0.1 + 0.3 * math.sin(math.pi / 4), 0.4], abs=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"smooth_head": 1.5}, "smooth_head must be"),
        ({"smooth_tail": -0.1}, "smooth_tail must be"),
        ({"shape": "cubic"}, "shape must be one of"),
        ({"shape": "exp"}, "needs a finite power"),
        ({"shape": "exp", "power": 0.0}, "needs a finite power"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LabelAwareSmoothingLoss(**kwargs)


def test_shape_mismatch_is_named() -> None:
    with pytest.raises(ValueError, match=r"epsilons must have shape \[3\]"):
        label_aware_smoothing_loss(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(4))
