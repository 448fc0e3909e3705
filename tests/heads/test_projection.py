"""``ProjectionHead``: normalised MLP projection in extras, classifier logits on (detached) features, in the module."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lt_lightning.heads.cosine import CosineHead
from lt_lightning.heads.projection import ProjectionHead
from lt_lightning.module import LongTailModule
from tests.helpers import TinyBackbone

pytestmark = pytest.mark.usefixtures("one_thread")


def test_projection_and_logits_by_hand() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(5, 3, projection_dim=4, hidden_dim=7)
    f = torch.randn(6, 5)
    out = head(f)
    fc1, fc2 = head.projection[0], head.projection[2]
    g = fc2(torch.relu(fc1(f)))
    assert torch.allclose(out.extras["projection"], g / g.norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(out.extras["projection"].norm(dim=1), torch.ones(6))
    assert torch.allclose(out.logits, head.classifier.fc(f))
    assert out.features is f
    assert out.extras["projection"].shape == (6, 4) and tuple(fc1.weight.shape) == (7, 5)


def test_detach_classifier_controls_the_gradient_into_the_features() -> None:
    f = torch.randn(4, 5, requires_grad=True)
    ProjectionHead(5, 3, detach_classifier=True)(f).logits.sum().backward()
    assert f.grad is None
    ProjectionHead(5, 3, detach_classifier=False)(f).logits.sum().backward()
    assert f.grad is not None and f.grad.abs().sum() > 0


def test_batch_norm_option_and_custom_classifier() -> None:
    head = ProjectionHead(5, 3, projection_dim=2, batch_norm=True, classifier=functools.partial(CosineHead, scale=16))
    assert isinstance(head.projection[1], nn.BatchNorm1d)
    assert isinstance(head.classifier, CosineHead)
    out = head(torch.randn(4, 5))
    assert out.logits.shape == (4, 3) and out.extras["projection"].shape == (4, 2)


def test_reset_parameters_resets_the_classifier_only() -> None:
    head = ProjectionHead(5, 3)
    proj = [p.clone() for p in head.projection.parameters()]
    with torch.no_grad():
        head.classifier.fc.weight.fill_(3.0)
    head.reset_parameters()
    assert not torch.equal(head.classifier.fc.weight, torch.full((3, 5), 3.0))
    assert all(torch.equal(a, b) for a, b in zip(proj, head.projection.parameters(), strict=True))
    assert head.weight is head.classifier.fc.weight


def test_in_the_module_predicts_with_the_classifier() -> None:
    head = functools.partial(ProjectionHead, projection_dim=4)
    model = LongTailModule(TinyBackbone(12, 6), num_classes=3, class_counts=[5, 3, 1], classifier=head)
    x = torch.randn(2, 12)
    out = model(x)
    assert out.extras["projection"].shape == (2, 4)
    assert torch.allclose(model.test_logits(x), model.classifier.classifier.fc(model.backbone(x)))
    assert torch.allclose(F.normalize(model.classifier.projection(out.features), dim=1), out.extras["projection"])


def test_bad_arguments() -> None:
    for kwargs in ({"projection_dim": 0}, {"hidden_dim": 0}):
        with pytest.raises(ValueError):
            ProjectionHead(5, 3, **kwargs)
    with pytest.raises(ValueError):
        ProjectionHead(0, 3)
