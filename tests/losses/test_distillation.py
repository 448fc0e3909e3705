"""Knowledge distillation loss (Hinton et al. 2015) with DiVE's power-normalised teacher (He et al., ICCV 2021)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lt_lightning.losses.distillation import (
    DistillationLoss,
    distillation_loss,
    kd_divergence,
    teacher_distribution,
)
from lt_lightning.losses.logit_adjustment import BalancedSoftmaxLoss
from lt_lightning.module import LongTailModule
from lt_lightning.output import ModelOutput
from tests.helpers import TinyBackbone

pytestmark = pytest.mark.usefixtures("one_thread")


def _output(student: torch.Tensor, teacher: torch.Tensor | None) -> ModelOutput:
    extras = {} if teacher is None else {"teacher_logits": teacher}
    return ModelOutput(logits=student, features=student, extras=extras)


def test_one_hot_teacher_at_temperature_one_with_alpha_one_is_cross_entropy() -> None:
    torch.manual_seed(0)
    z = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 2, 3, 0])
    one_hot = F.one_hot(y, 4).double()
    # KL(one-hot || q) = H(one-hot, q) - H(one-hot) = cross-entropy
    assert kd_divergence(z, one_hot, temperature=1.0).item() == pytest.approx(F.cross_entropy(z, y).item(), abs=1e-6)
    # the loss module with a teacher whose softmax is one-hot (logits 1e4 apart): exactly cross-entropy
    teacher = 1e4 * one_hot
    loss = DistillationLoss(temperature=1.0, alpha=1.0)(_output(z, teacher), y)
    assert loss.item() == pytest.approx(F.cross_entropy(z, y).item(), abs=1e-6)


def test_hand_numbers_at_temperature_two() -> None:
    # one row, two classes: z_s = (0, 0) -> q = (1/2, 1/2); z_t = (2 ln 3, 0) -> softmax(z_t / 2) = (3/4, 1/4)
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[2 * math.log(3.0), 0.0]])
    p = teacher_distribution(teacher, temperature=2.0)
    assert p[0].tolist() == pytest.approx([0.75, 0.25], abs=1e-6)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_divergence(student, p, temperature=2.0).item() == pytest.approx(4 * kl, abs=1e-6)  # T^2 = 4
    # with power p = 1/2 the teacher becomes (sqrt 3, 1) / (sqrt 3 + 1), i.e. softmax(z_t / 4)
    flat = teacher_distribution(teacher, temperature=2.0, power=0.5)
    s3 = math.sqrt(3.0)
    assert flat[0].tolist() == pytest.approx([s3 / (s3 + 1), 1 / (s3 + 1)], abs=1e-6)
    kl_flat = sum(a * math.log(a / 0.5) for a in (s3 / (s3 + 1), 1 / (s3 + 1)))
    # L = (1 - a) CE + a T^2 KL with a = 0.25 and y = 1: CE(z_s = 0, y) = ln 2
    loss = DistillationLoss(temperature=2.0, alpha=0.25, teacher_power=0.5)(
        _output(student, teacher), torch.tensor([1])
    )
    assert loss.item() == pytest.approx(0.75 * math.log(2.0) + 0.25 * 4 * kl_flat, abs=1e-6)


def test_power_normalisation_equals_the_explicit_formula() -> None:
    torch.manual_seed(1)
    z = torch.randn(5, 7, dtype=torch.float64)
    for temperature, power in ((1.0, 0.5), (3.0, 0.5), (2.0, 0.3), (4.0, 2.0)):
        soft = F.softmax(z / temperature, dim=1) ** power
        explicit = soft / soft.sum(dim=1, keepdim=True)
        assert torch.allclose(teacher_distribution(z, temperature, power).double(), explicit, atol=1e-6)


def test_teacher_power_one_is_plain_kd() -> None:
    torch.manual_seed(2)
    student, teacher = torch.randn(8, 5), torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))
    hinton = 0.3 * F.cross_entropy(student, y) + 0.7 * 9.0 * F.kl_div(
        F.log_softmax(student / 3.0, 1), F.softmax(teacher / 3.0, 1), reduction="batchmean"
    )
    loss = DistillationLoss(temperature=3.0, alpha=0.7, teacher_power=1.0)(_output(student, teacher), y)
    assert loss.item() == pytest.approx(hinton.item(), rel=1e-5)


def test_alpha_zero_is_the_base_loss_and_soft_targets_pass_through() -> None:
    torch.manual_seed(3)
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    counts = torch.tensor([30.0, 10.0, 2.0])
    base = BalancedSoftmaxLoss()
    base.set_class_counts(counts)
    soft = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    loss = DistillationLoss(base=base, alpha=0.0)(_output(student, teacher), soft)
    assert loss.item() == pytest.approx(base(_output(student, None), soft).item(), rel=1e-6)
    # with alpha 0.5, soft targets reach the base and the KD term is added
    half = DistillationLoss(base=base, temperature=2.0, alpha=0.5)(_output(student, teacher), soft)
    kd = kd_divergence(student, teacher_distribution(teacher, 2.0), 2.0)
    assert half.item() == pytest.approx(0.5 * base(_output(student, None), soft).item() + 0.5 * kd.item(), rel=1e-5)


def test_gradient_reaches_the_student_only() -> None:
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, requires_grad=True)
    DistillationLoss(alpha=0.5)(_output(student, teacher), torch.tensor([0, 1, 2])).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_a_prior_aware_base_is_told_the_class_counts_by_the_module() -> None:
    loss = DistillationLoss(base=BalancedSoftmaxLoss())
    module = LongTailModule(TinyBackbone(), num_classes=3, class_counts=[30, 10, 2], criterion=loss)
    expected = torch.log(torch.tensor([30.0, 10.0, 2.0]) / 42.0)
    assert torch.allclose(module.criterion.base.log_prior, expected)


def test_missing_teacher_logits_name_the_callback() -> None:
    with pytest.raises(ValueError, match="add the KnowledgeDistillation callback"):
        DistillationLoss()(_output(torch.randn(2, 3), None), torch.tensor([0, 1]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": 0.0}, "temperature must be"),
        ({"temperature": -1.0}, "temperature must be"),
        ({"temperature": float("inf")}, "temperature must be"),
        ({"alpha": 1.5}, "alpha must be"),
        ({"alpha": -0.1}, "alpha must be"),
        ({"teacher_power": 0.0}, "teacher_power must be"),
        ({"teacher_power": float("nan")}, "teacher_power must be"),
        ({"base": "ce"}, "base must be a criterion"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DistillationLoss(**kwargs)


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match=r"teacher logits shape \(2, 5\) does not match"):
        DistillationLoss()(_output(torch.randn(2, 3), torch.randn(2, 5)), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="teacher distribution shape"):
        kd_divergence(torch.randn(2, 3), torch.rand(3, 3))
    with pytest.raises(ValueError, match="must be"):
        teacher_distribution(torch.randn(3), 1.0)
    with pytest.raises(ValueError, match="base_loss is needed"):
        distillation_loss(torch.randn(2, 3), torch.randn(2, 3), None, alpha=0.5)
