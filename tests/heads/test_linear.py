"""LinearHead: the construction-time initialisations, cRT's re-initialisation, the bias kept out of weight decay."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from lt_lightning.heads.linear import LinearHead
from lt_lightning.module import LongTailModule, weight_decay_groups


def test_default_init_is_nn_linear() -> None:
    torch.manual_seed(3)
    head = LinearHead(8, 5)
    torch.manual_seed(3)
    ref = nn.Linear(8, 5)
    torch.testing.assert_close(head.fc.weight, ref.weight, rtol=0, atol=0)
    torch.testing.assert_close(head.fc.bias, ref.bias, rtol=0, atol=0)


def test_kaiming_normal_redraws_the_weight_only() -> None:
    """W ~ N(0, 2/D) drawn after nn.Linear's default draw (as LDAM-DRW's ``apply(_weights_init)``); b stays."""
    d, c = 16, 4
    torch.manual_seed(7)
    head = LinearHead(d, c, init="kaiming_normal")
    torch.manual_seed(7)
    ref = nn.Linear(d, c)
    expected_weight = torch.empty(c, d).normal_(0.0, math.sqrt(2.0 / d))  # std = sqrt(2/16) = 0.35355
    torch.testing.assert_close(head.fc.weight, expected_weight, rtol=0, atol=0)
    torch.testing.assert_close(head.fc.bias, ref.bias, rtol=0, atol=0)
    bound = 1.0 / math.sqrt(d)  # nn.Linear's bias bound: 0.25
    assert head.fc.bias.abs().max() <= bound


def test_kaiming_normal_std_is_sqrt_two_over_fan_in() -> None:
    torch.manual_seed(0)
    head = LinearHead(64, 2000, init="kaiming_normal")
    assert head.fc.weight.std().item() == pytest.approx(math.sqrt(2.0 / 64), rel=0.01)  # 0.17678
    default = LinearHead(64, 2000)
    assert default.fc.weight.std().item() == pytest.approx(1.0 / math.sqrt(3 * 64), rel=0.01)  # U(-1/8, 1/8): 0.07217


def test_reset_parameters_restores_nn_linear_defaults() -> None:
    """cRT's re-initialised classifier is a fresh nn.Linear in the reference, whatever the stage-1 init."""
    head = LinearHead(16, 4, init="kaiming_normal")
    torch.manual_seed(11)
    head.reset_parameters()
    ref = nn.Linear(16, 4)
    torch.manual_seed(11)
    ref.reset_parameters()
    torch.testing.assert_close(head.fc.weight, ref.weight, rtol=0, atol=0)
    torch.testing.assert_close(head.fc.bias, ref.bias, rtol=0, atol=0)


def test_bad_init_raises() -> None:
    with pytest.raises(ValueError, match="init"):
        LinearHead(4, 2, init="xavier")  # type: ignore[arg-type]


# ------------------------------------------------------------------- class-balanced focal: bias prior and no decay
def test_uniform_prior_bias_is_minus_log_c_minus_one() -> None:
    """Cui et al.'s sigmoid / focal classifier bias: b_c = -log(C - 1), so sigma(b_c) = 1/C."""
    head10 = LinearHead(8, 10, bias_init="uniform_prior")
    assert torch.all(head10.fc.bias == torch.tensor(-2.1972245773362196))  # -log 9
    head100 = LinearHead(8, 100, bias_init="uniform_prior")
    torch.testing.assert_close(head100.fc.bias, torch.full((100,), -4.59511985013459))  # -log 99
    zero_features = torch.zeros(3, 8)
    torch.testing.assert_close(torch.sigmoid(head10(zero_features)), torch.full((3, 10), 0.1))
    assert LinearHead(8, 2, bias_init="uniform_prior").fc.bias.abs().max() == 0.0  # -log 1


def test_constant_bias_init_and_the_weight_is_untouched() -> None:
    torch.manual_seed(5)
    head = LinearHead(6, 3, init="kaiming_normal", bias_init=-1.5)
    torch.manual_seed(5)
    ref = LinearHead(6, 3, init="kaiming_normal")
    torch.testing.assert_close(head.fc.weight, ref.fc.weight, rtol=0, atol=0)  # no extra draw
    assert head.fc.bias.tolist() == [-1.5, -1.5, -1.5]
    head.reset_parameters()  # cRT's re-initialisation: nn.Linear's, bias within U(-1/sqrt(6), 1/sqrt(6))
    assert head.fc.bias.abs().max() <= 1 / math.sqrt(6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bias_init": "uniform_prior", "bias": False}, "bias=True"),
        ({"bias_init": float("nan")}, "bias_init"),
        ({"bias_init": "zeros"}, "bias_init"),
        ({"bias_init": True}, "bias_init"),
    ],
)
def test_bad_bias_init_raises(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LinearHead(4, 3, **kwargs)
    with pytest.raises(ValueError, match="num_classes >= 2"):
        LinearHead(4, 1, bias_init="uniform_prior")


def test_no_weight_decay_names() -> None:
    assert LinearHead(4, 3).no_weight_decay_names() == set()
    assert LinearHead(4, 3, bias_weight_decay=False).no_weight_decay_names() == {"fc.bias"}
    assert LinearHead(4, 3, bias=False, bias_weight_decay=False).no_weight_decay_names() == set()


def test_weight_decay_groups_and_one_sgd_step_by_hand() -> None:
    """SGD, lr 0.1, weight decay 0.5, zero loss gradient: W <- W (1 - 0.05); the bias, out of decay, stays."""
    head = LinearHead(2, 2, bias_init=1.0, bias_weight_decay=False)
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 4.0]]))
    model = nn.Sequential(nn.Identity(), head)
    params = list(model.parameters())
    groups = weight_decay_groups(model, params)
    assert [len(g["params"]) for g in groups] == [1, 1]
    assert groups[0]["params"][0] is head.fc.weight and groups[1]["params"][0] is head.fc.bias
    assert "weight_decay" not in groups[0] and groups[1]["weight_decay"] == 0.0
    optimizer = torch.optim.SGD(groups, lr=0.1, weight_decay=0.5)
    (0.0 * model(torch.ones(1, 2)).sum()).backward()
    optimizer.step()
    torch.testing.assert_close(head.fc.weight.detach(), torch.tensor([[0.95, -1.9], [0.475, 3.8]]))
    torch.testing.assert_close(head.fc.bias.detach(), torch.tensor([1.0, 1.0]))
    # nothing named: the parameter list is passed through unchanged (one group, as before)
    plain = nn.Sequential(LinearHead(2, 2))
    plain_params = list(plain.parameters())
    assert weight_decay_groups(plain, plain_params) is plain_params


def test_module_optimizer_keeps_the_head_bias_out_of_weight_decay() -> None:
    from tests.helpers import TinyBackbone

    module = LongTailModule(
        TinyBackbone(),
        num_classes=5,
        classifier=partial(LinearHead, bias_init="uniform_prior", bias_weight_decay=False),
        class_counts=[64, 35, 20, 11, 6],
    )
    optimizer = module.configure_optimizers()
    decayed, kept = optimizer.param_groups
    assert decayed["weight_decay"] == 2e-4 and kept["weight_decay"] == 0.0
    assert [p is module.classifier.fc.bias for p in kept["params"]] == [True]
    assert len(decayed["params"]) == len(list(module.parameters())) - 1
    torch.testing.assert_close(module.classifier.fc.bias.detach(), torch.full((5,), -math.log(4)))
