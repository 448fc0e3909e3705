"""Weighted softmax cross-entropy and the class-weights contract (buffer, reset, checkpoint), by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lt_lightning.backbones.base import Backbone
from lt_lightning.losses.cross_entropy import cross_entropy
from lt_lightning.losses.weighted import WeightedCrossEntropyLoss, weighted_cross_entropy
from lt_lightning.module import LongTailModule
from lt_lightning.output import ModelOutput

# rows: p(y) = 3/4, 2/3, 1/2 for targets [1, 0, 1]
LOGITS = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), 0.0], [0.0, 0.0]])
TARGET = torch.tensor([1, 0, 1])
# counts [4, 1], q = 1: w ∝ [1/4, 1], normalised to sum 2 -> [0.4, 1.6]
WEIGHTS = torch.tensor([0.4, 1.6])
PER_SAMPLE = [1.6 * math.log(4 / 3), 0.4 * math.log(3 / 2), 1.6 * math.log(2)]


def out(logits: Tensor) -> ModelOutput:
    return ModelOutput(logits=logits, features=torch.zeros(logits.shape[0], 1))


class TinyBackbone(Backbone):
    def __init__(self) -> None:
        super().__init__()
        self.num_features = 4
        self.fc = nn.Linear(3 * 4 * 4, 4)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1))


def test_weighted_ce_hand_computed_reductions() -> None:
    none = weighted_cross_entropy(LOGITS, TARGET, WEIGHTS, reduction="none")
    assert none.tolist() == pytest.approx(PER_SAMPLE, rel=1e-6)
    wmean = weighted_cross_entropy(LOGITS, TARGET, WEIGHTS)
    assert wmean.item() == pytest.approx(sum(PER_SAMPLE) / 3.6, rel=1e-6)
    assert weighted_cross_entropy(LOGITS, TARGET, WEIGHTS, "mean").item() == pytest.approx(sum(PER_SAMPLE) / 3)
    assert weighted_cross_entropy(LOGITS, TARGET, WEIGHTS, "sum").item() == pytest.approx(sum(PER_SAMPLE))


def test_module_derives_weights_from_counts() -> None:
    loss = WeightedCrossEntropyLoss(q=1.0)
    loss.set_class_counts(torch.tensor([4.0, 1.0]))
    assert loss.class_weights.tolist() == pytest.approx([0.4, 1.6])
    assert loss(out(LOGITS), TARGET).item() == pytest.approx(sum(PER_SAMPLE) / 3.6, rel=1e-6)


def test_equals_pytorch_weighted_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(16, 5, generator=g), torch.randint(0, 5, (16,), generator=g)
    w = torch.rand(5, generator=g) + 0.1
    assert weighted_cross_entropy(logits, target, w).item() == pytest.approx(
        F.cross_entropy(logits, target, weight=w).item(), rel=1e-6
    )


def test_q_zero_and_unit_weights_are_plain_cross_entropy() -> None:
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(8, 4, generator=g), torch.randint(0, 4, (8,), generator=g)
    loss = WeightedCrossEntropyLoss(q=0.0)
    loss.set_class_counts(torch.tensor([100.0, 30.0, 5.0, 1.0]))
    assert loss.class_weights.tolist() == [1.0] * 4
    assert loss(out(logits), target).item() == pytest.approx(cross_entropy(logits, target).item(), rel=1e-6)
    assert weighted_cross_entropy(logits, target, torch.ones(4)).item() == pytest.approx(
        cross_entropy(logits, target).item(), rel=1e-6
    )


def test_soft_targets_are_the_expected_hard_loss() -> None:
    one_hot = F.one_hot(TARGET, 2).float()
    for reduction in ("weighted_mean", "mean", "none"):
        hard = weighted_cross_entropy(LOGITS, TARGET, WEIGHTS, reduction)
        assert torch.allclose(weighted_cross_entropy(LOGITS, one_hot, WEIGHTS, reduction), hard)
    # mixup of targets 0 and 1 with lambda 0.3 on the first row: 0.3 w0 (-log 1/4) + 0.7 w1 (-log 3/4)
    soft = torch.tensor([[0.3, 0.7]])
    expected = 0.3 * 0.4 * math.log(4) + 0.7 * 1.6 * math.log(4 / 3)
    got = weighted_cross_entropy(LOGITS[:1], soft, WEIGHTS, "none")
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # weighted mean divides by sum_k t_k w_k = 0.3 * 0.4 + 0.7 * 1.6
    got = weighted_cross_entropy(LOGITS[:1], soft, WEIGHTS)
    assert got.item() == pytest.approx(expected / (0.12 + 1.12), rel=1e-6)


def test_set_class_weights_switches_and_resets() -> None:
    loss = WeightedCrossEntropyLoss(q=1.0)
    loss.set_class_counts(torch.tensor([4.0, 1.0]))
    loss.set_class_weights(torch.tensor([1.0, 1.0]))
    assert loss(out(LOGITS), TARGET).item() == pytest.approx(cross_entropy(LOGITS, TARGET).item(), rel=1e-6)
    loss.set_class_weights(None)
    assert loss.class_weights.tolist() == pytest.approx([0.4, 1.6])
    with pytest.raises(ValueError, match="3 entries but the loss has 2 classes"):
        loss.set_class_weights(torch.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        loss.set_class_weights(torch.tensor([1.0, -1.0]))


def test_class_weights_buffer_is_in_the_state_dict_and_follows_dtype() -> None:
    loss = WeightedCrossEntropyLoss(q=1.0)
    loss.set_class_counts(torch.tensor([4.0, 1.0]))
    assert "class_weights" in loss.state_dict()
    assert loss.double().class_weights.dtype == torch.float64


def test_in_long_tail_module_prior_path_and_checkpoint_round_trip() -> None:
    module = LongTailModule(TinyBackbone(), num_classes=2, class_counts=[4, 1], criterion=WeightedCrossEntropyLoss())
    assert module.criterion.class_weights.tolist() == pytest.approx([0.4, 1.6])
    module.criterion.set_class_weights(torch.tensor([0.25, 1.75]))  # e.g. switched by DRW
    state = module.state_dict()
    assert state["criterion.class_weights"].tolist() == [0.25, 1.75]
    fresh = LongTailModule(TinyBackbone(), num_classes=2, class_counts=[4, 1], criterion=WeightedCrossEntropyLoss())
    fresh.on_load_checkpoint({"state_dict": state})  # Lightning's order: the hook, then the state dict
    fresh.load_state_dict(state)
    assert fresh.criterion.class_weights.tolist() == [0.25, 1.75]
    x, y = torch.randn(3, 3, 4, 4), torch.tensor([0, 1, 1])
    assert torch.isfinite(module.criterion(module(x), y))


def test_standalone_without_counts() -> None:
    with pytest.raises(ValueError, match="needs the class counts"):
        WeightedCrossEntropyLoss(q=1.0)(out(LOGITS), TARGET)
    loss = WeightedCrossEntropyLoss(q=1.0)
    loss.set_class_weights(WEIGHTS)
    assert loss(out(LOGITS), TARGET).item() == pytest.approx(sum(PER_SAMPLE) / 3.6, rel=1e-6)
    unweighted = WeightedCrossEntropyLoss(q=0.0)
    assert unweighted(out(LOGITS), TARGET).item() == pytest.approx(cross_entropy(LOGITS, TARGET).item())


@pytest.mark.parametrize(("kwargs", "match"), [({"q": -1.0}, "q must be"), ({"reduction": "avg"}, "reduction")])
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WeightedCrossEntropyLoss(**kwargs)


def test_bad_weight_shape_in_functional_core() -> None:
    with pytest.raises(ValueError, match="weight must have shape"):
        weighted_cross_entropy(LOGITS, TARGET, torch.ones(3))


def test_zero_count_raises_naming_the_class() -> None:
    with pytest.raises(ValueError, match=r"class\(es\) \[1\]"):
        WeightedCrossEntropyLoss(q=1.0).set_class_counts(torch.tensor([3.0, 0.0]))


def test_half_precision_logits_are_computed_in_float32() -> None:
    got = weighted_cross_entropy(LOGITS.to(torch.bfloat16), TARGET, WEIGHTS)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(sum(PER_SAMPLE) / 3.6, rel=1e-2)
