"""LDAM loss: margins and loss by hand, against the authors' code, with DRW weights and soft targets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lt_lightning.losses.cross_entropy import cross_entropy
from lt_lightning.losses.ldam import LDAMLoss, ldam_loss, ldam_margins
from lt_lightning.losses.weighting import effective_number_weights
from lt_lightning.output import ModelOutput

CIFAR10_LT_100 = torch.tensor([5000.0, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])


def out(logits: Tensor) -> ModelOutput:
    return ModelOutput(logits=logits, features=torch.zeros(logits.shape[0], 1))


def kaidic_ldam(x: Tensor, target: Tensor, cls_num_list: Tensor, max_m: float, s: float, weight=None) -> Tensor:
    """kaidic/LDAM-DRW ``losses.py`` ``LDAMLoss``, transcribed to CPU tensors."""
    m_list = 1.0 / torch.sqrt(torch.sqrt(cls_num_list.double()))
    m_list = (m_list * (max_m / m_list.max())).float()
    index = torch.zeros_like(x, dtype=torch.bool)
    index.scatter_(1, target.view(-1, 1), True)
    batch_m = torch.matmul(m_list[None, :], index.float().transpose(0, 1)).view(-1, 1)
    output = torch.where(index, x - batch_m, x)
    return F.cross_entropy(s * output, target, weight=weight)


def test_margins_hand_computed() -> None:
    # n^-1/4 = [1/2, 1], scaled so the max is 0.5 -> [0.25, 0.5]
    assert ldam_margins([16, 1], max_m=0.5).tolist() == pytest.approx([0.25, 0.5])
    m = ldam_margins(CIFAR10_LT_100, max_m=0.5)
    assert m.max().item() == pytest.approx(0.5) and m.argmax().item() == 9
    assert (m[1:] > m[:-1]).all()


def test_loss_hand_computed() -> None:
    margins = torch.tensor([0.25, 0.5])
    logits = torch.zeros(2, 2)
    # target 1: s (z - m_1 e_1) = [0, -1] -> log(1 + e); target 0: [-0.5, 0] -> log(1 + e^0.5)
    per = ldam_loss(logits, torch.tensor([1, 0]), margins, s=2.0, reduction="none")
    assert per.tolist() == pytest.approx([math.log(1 + math.e), math.log(1 + math.exp(0.5))], rel=1e-6)
    loss = LDAMLoss(max_m=0.5, s=2.0)
    loss.set_class_counts(torch.tensor([16.0, 1.0]))
    assert loss.margins.tolist() == pytest.approx([0.25, 0.5])
    assert loss(out(logits), torch.tensor([1, 0])).item() == pytest.approx(per.mean().item(), rel=1e-6)


@pytest.mark.parametrize("drw", [False, True])
def test_equals_the_authors_code(drw: bool) -> None:
    g = torch.Generator().manual_seed(0)
    cosines = torch.rand(64, 10, generator=g) * 2 - 1  # NormedLinear outputs
    target = torch.randint(0, 10, (64,), generator=g)
    loss = LDAMLoss(max_m=0.5, s=30.0)
    loss.set_class_counts(CIFAR10_LT_100)
    weight = None
    if drw:  # LDAM-DRW from epoch 160: effective-number weights with beta = 0.9999
        weight = effective_number_weights(CIFAR10_LT_100, 0.9999)
        loss.set_class_weights(weight)
    reference = kaidic_ldam(cosines, target, CIFAR10_LT_100, 0.5, 30.0, weight)
    assert loss(out(cosines), target).item() == pytest.approx(reference.item(), rel=1e-5)


def test_zero_margin_unit_scale_is_cross_entropy() -> None:
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(16, 5, generator=g), torch.randint(0, 5, (16,), generator=g)
    loss = LDAMLoss(max_m=0.0, s=1.0)
    loss.set_class_counts(torch.tensor([50.0, 20, 10, 5, 1]))
    assert loss.margins.tolist() == [0.0] * 5
    assert loss(out(logits), target).item() == pytest.approx(cross_entropy(logits, target).item(), rel=1e-6)


def test_soft_targets_are_the_expected_hard_loss() -> None:
    g = torch.Generator().manual_seed(2)
    logits, target = torch.rand(6, 4, generator=g) * 2 - 1, torch.randint(0, 4, (6,), generator=g)
    margins = ldam_margins([40, 20, 5, 1], 0.5)
    weight = torch.tensor([0.2, 0.5, 1.3, 2.0])
    hard = ldam_loss(logits, target, margins, 30.0, weight, reduction="none")
    soft = ldam_loss(logits, F.one_hot(target, 4).float(), margins, 30.0, weight, reduction="none")
    assert torch.allclose(soft, hard, rtol=1e-5, atol=1e-5)
    # any distribution: sum_k t_k w_k l(z, k), each l(z, k) from the hard-label path
    t = torch.softmax(torch.randn(6, 4, generator=g), dim=1)
    per_class = torch.stack(
        [ldam_loss(logits, torch.full((6,), k), margins, 30.0, reduction="none") for k in range(4)], dim=1
    )
    expected = (t * weight * per_class).sum(1)
    assert torch.allclose(ldam_loss(logits, t, margins, 30.0, weight, reduction="none"), expected, rtol=1e-5)


def test_soft_targets_are_stable_for_confident_logits() -> None:
    logits = torch.tensor([[30.0, -30.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[0.8, 0.1, 0.1], [0.0, 0.5, 0.5]])
    loss = ldam_loss(logits, t, torch.tensor([0.1, 0.3, 0.5]), s=30.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # the confident row's dominant term: l(z, 0) = log(1 + sum_{j != 0} e^{s z_j - s(z_0 - m_0)}) is about 0
    explicit = torch.logsumexp(torch.tensor([30.0 * (30.0 - 0.1), -900.0, 0.0]), 0) - 30.0 * (30.0 - 0.1)
    per = ldam_loss(logits.detach()[:1], torch.tensor([0]), torch.tensor([0.1, 0.3, 0.5]), 30.0, reduction="none")
    assert per.item() == pytest.approx(explicit.item(), abs=1e-6)


def test_buffers_and_weight_reset() -> None:
    loss = LDAMLoss()
    loss.set_class_counts(torch.tensor([16.0, 1.0]))
    state = loss.state_dict()
    assert set(state) == {"class_weights", "margins"}
    assert loss.class_weights.tolist() == [1.0, 1.0]
    loss.set_class_weights(torch.tensor([0.5, 1.5]))
    loss.set_class_weights(None)
    assert loss.class_weights.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="3 entries"):
        loss.set_class_weights(torch.ones(3))


def test_needs_counts() -> None:
    with pytest.raises(ValueError, match="needs the class counts"):
        LDAMLoss()(out(torch.zeros(2, 2)), torch.tensor([0, 1]))


def test_zero_count_names_the_class() -> None:
    with pytest.raises(ValueError, match=r"class\(es\) \[2\]"):
        LDAMLoss().set_class_counts(torch.tensor([4.0, 3.0, 0.0]))


def test_bad_margins_shape() -> None:
    with pytest.raises(ValueError, match="margins must have shape"):
        ldam_loss(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"max_m": -0.1}, "max_m"), ({"s": 0.0}, "s must be"), ({"s": -30.0}, "s must be"), ({"reduction": "x"}, "red")],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LDAMLoss(**kwargs)
