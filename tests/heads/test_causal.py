"""CausalHead (De-confound-TDE) against hand-computed logits, its moving average, and a real Trainer fit/test."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import pytest
import torch
from torch import Tensor, nn

from lt_lightning.backbones.base import Backbone
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.heads import CausalHead
from lt_lightning.heads.causal import causal_norm_logits
from lt_lightning.module import LongTailModule

# D = 4, K = 2, C = 2, tau = 2 (so tau / K = 1), gamma = 1.
X = torch.tensor([[3.0, 4.0, 0.0, 2.0]])  # groups [3, 4] -> [0.6, 0.8]; [0, 2] -> [0, 1]
W = torch.tensor(
    [
        [1.0, 0.0, 0.0, 1.0],  # groups of norm 1 -> [0.5, 0], [0, 0.5]
        [0.0, 2.0, 3.0, 4.0],  # norms 2 and 5 -> [0, 2/3], [3/6, 4/6]
    ]
)
# class 0: 0.6 * 0.5 + 1 * 0.5 = 0.8;  class 1: 0.8 * 2/3 + 1 * 2/3 = 1.2
TRAIN_LOGITS = torch.tensor([[0.8, 1.2]])
# c = [0, 2, 1, 1]: c_1 = [0, 1], c_2 = [1, 1] / sqrt 2.  With alpha = 0.5:
# group 1: cos = 0.8, x_1 -> [0.6, 0.8] - 0.5 * 0.8 * [0, 1] = [0.6, 0.4]
# group 2: cos = 1 / sqrt 2, x_2 -> [0, 1] - 0.5 * (1 / sqrt 2) * [1, 1] / sqrt 2 = [-0.25, 0.75]
# class 0: 0.6 * 0.5 + 0.75 * 0.5 = 0.675;  class 1: 0.4 * 2/3 + (-0.25 * 0.5 + 0.75 * 2/3) = 4/15 + 0.375
FEATURE_MEAN = torch.tensor([0.0, 2.0, 1.0, 1.0])
TDE_LOGITS = torch.tensor([[0.675, 4.0 / 15.0 + 0.375]])


def _hand_head(alpha: float = 0.5, **kwargs) -> CausalHead:
    head = CausalHead(4, 2, num_heads=2, tau=2.0, gamma=1.0, alpha=alpha, **kwargs)
    with torch.no_grad():
        head.weight.copy_(W)
    return head


def test_training_logits_by_hand() -> None:
    head = _hand_head().train()
    assert torch.allclose(head(X), TRAIN_LOGITS, atol=1e-6)


def test_tde_logits_by_hand() -> None:
    head = _hand_head().eval()
    head.feature_mean.copy_(FEATURE_MEAN)
    assert torch.allclose(head(X), TDE_LOGITS, atol=1e-6)
    assert torch.equal(head.feature_mean, FEATURE_MEAN)  # eval mode does not update the average


def test_feature_mean_scale_does_not_matter_and_use_effect_off_gives_training_logits() -> None:
    head = _hand_head().eval()
    head.feature_mean.copy_(10.0 * FEATURE_MEAN)  # only the direction of each group is used
    assert torch.allclose(head(X), TDE_LOGITS, atol=1e-6)
    head.use_effect = False
    assert torch.allclose(head(X), TRAIN_LOGITS, atol=1e-6)


def test_alpha_zero_equals_training_logits() -> None:
    torch.manual_seed(0)
    head = CausalHead(8, 3, alpha=0.0)
    x = torch.randn(5, 8)
    train_logits = head.train()(x)  # also fills feature_mean
    assert head.feature_mean.abs().sum() > 0
    assert torch.allclose(head.eval()(x), train_logits, atol=1e-6)


def test_gamma_zero_single_head_is_scaled_cosine() -> None:
    torch.manual_seed(0)
    head = CausalHead(6, 4, num_heads=1, tau=3.0, gamma=0.0).train()
    x = torch.randn(5, 6)
    expected = 3.0 * nn.functional.normalize(x, dim=1) @ nn.functional.normalize(head.weight, dim=1).T
    assert torch.allclose(head(x), expected, atol=1e-6)


def test_moving_average_by_hand_over_two_batches() -> None:
    head = _hand_head(momentum=0.9).train()
    head(torch.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.0]]))  # batch mean [2, 2, 2, 2]
    assert torch.allclose(head.feature_mean, torch.tensor([2.0, 2.0, 2.0, 2.0]))
    head(torch.tensor([[0.0, 0.0, 0.0, 10.0]]))  # 0.9 * [2, 2, 2, 2] + [0, 0, 0, 10]
    assert torch.allclose(head.feature_mean, torch.tensor([1.8, 1.8, 1.8, 11.8]))
    head.eval()(torch.ones(3, 4))
    assert torch.allclose(head.feature_mean, torch.tensor([1.8, 1.8, 1.8, 11.8]))


def test_moving_average_carries_no_gradient() -> None:
    head = _hand_head().train()
    x = torch.randn(3, 4, requires_grad=True)
    head(x).sum().backward()
    assert not head.feature_mean.requires_grad and head.feature_mean.grad_fn is None


def test_no_nan_before_training() -> None:
    head = _hand_head().eval()
    assert not head.feature_mean.any()
    out = head(X)
    assert torch.isfinite(out).all() and torch.allclose(out, TRAIN_LOGITS, atol=1e-6)
    # a zero feature group (dead ReLUs) gives no NaN either
    assert torch.isfinite(head(torch.tensor([[0.0, 0.0, 1.0, 1.0]]))).all()


def test_functional_core_matches_head() -> None:
    head = _hand_head().eval()
    head.feature_mean.copy_(FEATURE_MEAN)
    core = causal_norm_logits(X, W, num_heads=2, tau=2.0, gamma=1.0, feature_mean=FEATURE_MEAN, alpha=0.5)
    assert torch.allclose(core, head(X))


def test_init_is_uniform_in_reference_bound() -> None:
    torch.manual_seed(0)
    head = CausalHead(64, 10)
    assert head.weight.abs().max() <= 1 / math.sqrt(64)
    assert head.weight.std() > 0.5 / math.sqrt(3 * 64)  # a uniform(-b, b) has std b / sqrt 3


def test_state_dict_round_trip_keeps_feature_mean() -> None:
    head = _hand_head().train()
    head(torch.randn(4, 4))
    other = CausalHead(4, 2, num_heads=2, tau=2.0, gamma=1.0, alpha=0.5)
    assert "feature_mean" in head.state_dict()
    other.load_state_dict(head.state_dict())
    assert torch.equal(other.feature_mean, head.feature_mean)
    assert torch.equal(other.weight, head.weight)
    x = torch.randn(3, 4)
    assert torch.equal(other.eval()(x), head.eval()(x))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_features": 5},  # not divisible by num_heads = 2
        {"in_features": 0},
        {"num_classes": 0},
        {"num_heads": 0},
        {"tau": 0.0},
        {"tau": -1.0},
        {"gamma": -0.1},
        {"alpha": -1.0},
        {"momentum": 1.0},
        {"momentum": -0.1},
    ],
)
def test_bad_arguments(kwargs) -> None:
    args = {"in_features": 4, "num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        CausalHead(**args)


class TinyBackbone(Backbone):
    def __init__(self) -> None:
        super().__init__()
        self.num_features = 16
        self.fc = nn.Linear(3 * 8 * 8, 16)

    def forward_features(self, x: Tensor) -> Tensor:
        return torch.relu(self.fc(x.flatten(1)))


def test_trainer_fit_then_test(tmp_path) -> None:
    L.seed_everything(0)
    dm = SyntheticLTDataModule(num_classes=4, n_max=40, imbalance_ratio=10, batch_size=16)
    module = LongTailModule(
        TinyBackbone(),
        dm.num_classes,
        dm.class_counts,
        classifier=partial(CausalHead, tau=16.0, alpha=1.5),
        optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9),
    )
    assert isinstance(module.classifier, CausalHead)
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, dm)
    head = module.classifier
    assert head.feature_mean.abs().sum() > 0 and torch.isfinite(head.feature_mean).all()
    assert "classifier.feature_mean" in module.state_dict()

    results = trainer.test(module, dm, verbose=False)[0]
    assert 0.0 <= results["test/acc"] <= 1.0 and math.isfinite(results["test/acc_balanced"])

    # test-time logits are the TDE ones: they differ from the alpha = 0 (training-mode) logits
    module.eval()
    images = dm.augmentation(dm.test_dataset.images[:8])
    with torch.no_grad():
        features = module.backbone(images)
        tde = module(images).logits
    plain = causal_norm_logits(features, head.weight, head.num_heads, head.tau, head.gamma)
    expected = causal_norm_logits(features, head.weight, 2, 16.0, head.gamma, head.feature_mean, alpha=1.5)
    assert torch.allclose(tde, expected, atol=1e-5)
    assert not torch.allclose(tde, plain)
