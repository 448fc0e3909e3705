"""RIDE's expert router: targets, decisions, routed prediction (hand numbers), routed head, dynamic evaluation."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from lt_lightning.backbones.multi_expert import MultiExpertResNetCifar
from lt_lightning.backbones.resnet_cifar import ResNetCifar
from lt_lightning.heads.cosine import CosineHead
from lt_lightning.heads.expert_router import (
    ExpertRouter,
    cumulative_mean_logits,
    routed_expert_counts,
    routed_logits,
    router_targets,
)
from lt_lightning.heads.multi_expert import MultiExpertHead
from lt_lightning.heads.routed_multi_expert import RoutedMultiExpertHead, routed_predict

pytestmark = pytest.mark.usefixtures("one_thread")


# E = 3 experts, B = 4 images, C = 2 classes, every label 0
EXPERTS = torch.tensor(
    [
        [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]],  # expert 0
        [[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 1.0]],  # expert 1
        [[1.0, 0.0], [0.0, 0.0], [5.0, 0.0], [0.0, 1.0]],  # expert 2
    ]
)
LABELS = torch.zeros(4, dtype=torch.long)


def test_router_targets_hand_numbers() -> None:
    # image 0: right from the start -> [0, 0]; image 1: wrong, right with 2 experts -> [1, 0];
    # image 2: wrong with 1 and 2 experts, right with 3 -> [1, 1]; image 3: never right -> [0, 0]
    expected = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    torch.testing.assert_close(router_targets(EXPERTS, LABELS), expected)


def test_routed_counts_and_logits_hand_numbers() -> None:
    # continue while sigmoid(r) > 0.5, i.e. r > 0; stop at the first "no"
    router_logits = torch.tensor([[-1.0, 2.0, 2.0, 3.0], [5.0, -2.0, 1.0, 5.0]])
    counts = routed_expert_counts(router_logits)
    assert counts.tolist() == [1, 2, 3, 3]
    expected = torch.stack([EXPERTS[0, 0], EXPERTS[:2, 1].mean(0), EXPERTS[:, 2].mean(0), EXPERTS[:, 3].mean(0)])
    torch.testing.assert_close(routed_logits(EXPERTS, counts), expected)
    torch.testing.assert_close(cumulative_mean_logits(EXPERTS)[1], EXPERTS[:2].mean(0))
    assert routed_expert_counts(router_logits, threshold=0.99).tolist() == [1, 1, 1, 1]


def test_router_decision_hand_numbers() -> None:
    # D = 2, C = 3, k = 2, hidden 2: hidden = identity, output weights [1, 2, 3, 4], zero biases.
    # f = [3, 4] -> f/|f| = [0.6, 0.8]; top2([1, 5, 2]) = [5, 2]; r = 5*1 + 2*2 + 0.6*3 + 0.8*4 = 14
    router = ExpertRouter(in_features=2, num_classes=3, num_experts=2, top_k=2, hidden_features=2)
    with torch.no_grad():
        router.hidden[0].weight.copy_(torch.eye(2))
        router.hidden[0].bias.zero_()
        router.output[0].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
        router.output[0].bias.zero_()
    r = router.decision_logit(0, torch.tensor([[1.0, 5.0, 2.0]]), torch.tensor([[3.0, 4.0]]))
    torch.testing.assert_close(r, torch.tensor([14.0]))


def _model(num_classes: int = 5, seed: int = 0) -> tuple[MultiExpertResNetCifar, RoutedMultiExpertHead]:
    torch.manual_seed(seed)
    backbone = MultiExpertResNetCifar(depth=8, num_experts=3, widths=(4, 8, 8), expert_widths=(6, 12), in_channels=1)
    head = RoutedMultiExpertHead(
        backbone.num_features, num_classes, 3, functools.partial(CosineHead, scale=30.0), top_k=3
    )
    with torch.no_grad():  # r = 2 - (top1 - top2): uncertain images go on, about half at each decision
        head.router.output[0].weight.zero_()
        head.router.output[0].weight[0, :2] = torch.tensor([-1.0, 1.0])
        head.router.output[0].bias.fill_(2.0)
    return backbone.eval(), head.eval()


def test_routed_head_is_the_plain_head_until_routing_is_on() -> None:
    backbone, head = _model()
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        features = backbone(x)
        plain = head(features)
    torch.testing.assert_close(plain.logits, plain.expert_logits.mean(0))
    assert "num_experts" not in plain.extras
    head.train()
    assert "router_logits" not in head(features).extras  # stage 1: the router is not evaluated in training
    head.eval()
    head.set_routing(True)
    with torch.no_grad():
        routed = head(features)
    counts = routed.extras["num_experts"]
    torch.testing.assert_close(routed.logits, routed_logits(routed.expert_logits, counts))
    assert torch.equal(head.last_num_experts, counts)


def test_dynamic_evaluation_equals_the_routed_head() -> None:
    backbone, head = _model()
    head.set_routing(True)
    x = torch.randn(64, 1, 8, 8)
    with torch.no_grad():
        expected = head(backbone(x))
    logits, counts = routed_predict(backbone, head, x)
    assert len(torch.unique(counts)) >= 2, "the test router should send images to different numbers of experts"
    assert torch.equal(counts, expected.extras["num_experts"])
    torch.testing.assert_close(logits, expected.logits, rtol=1e-5, atol=1e-5)


def test_routing_flag_is_saved_in_the_state_dict() -> None:
    _, head = _model()
    head.set_routing(True)
    state = head.state_dict()
    assert bool(state["routing_enabled"])
    _, fresh = _model(seed=1)
    fresh.load_state_dict(state)
    assert fresh.routing
    torch.testing.assert_close(fresh.router.output[0].weight, head.router.output[0].weight)


def test_bad_input_raises_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"num_experts must be an integer >= 2 \(routing needs"):
        RoutedMultiExpertHead(8, 5, num_experts=1)
    with pytest.raises(ValueError, match="top_k"):
        RoutedMultiExpertHead(8, 5, num_experts=2, top_k=6)
    with pytest.raises(ValueError, match="threshold"):
        RoutedMultiExpertHead(8, 5, num_experts=2, threshold=1.0)
    with pytest.raises(ValueError, match="at least 2 experts"):
        router_targets(EXPERTS[:1], LABELS)
    with pytest.raises(ValueError, match="soft targets"):
        router_targets(EXPERTS, torch.rand(4, 2))
    backbone, head = _model()
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(ValueError, match="RoutedMultiExpertHead"):
        routed_predict(backbone, MultiExpertHead(12, 5, 3), x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multi-expert backbone"):
        routed_predict(ResNetCifar(depth=8, in_channels=1), head, x)
    with pytest.raises(ValueError, match="decision"):
        head.router.decision_logit(2, torch.zeros(1, 5), torch.zeros(1, 12))
    with pytest.raises(ValueError, match="counts"):
        routed_logits(EXPERTS, torch.ones(3, dtype=torch.long))
    assert isinstance(head.router, nn.Module)
