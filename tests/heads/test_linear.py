"""LinearHead: the construction-time initialisations and cRT's re-initialisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lt_lightning.heads.linear import LinearHead


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
