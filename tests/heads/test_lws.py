"""``LWSHead``: ``z_c = s_c (w_c^T x + b_c)`` (Kang et al. 2020), by hand and against the wrapped head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lt_lightning.heads.cosine import CosineHead
from lt_lightning.heads.linear import LinearHead
from lt_lightning.heads.lws import LWSHead
from lt_lightning.output import ModelOutput


def test_all_scales_one_is_exactly_the_frozen_head() -> None:
    torch.manual_seed(0)
    head = LinearHead(5, 3)
    lws = LWSHead.wrap(head, 3)
    x = torch.randn(7, 5)
    assert torch.equal(lws(x), head(x))
    assert lws.base is head and torch.equal(lws.scales, torch.ones(3))


def test_scales_multiply_the_whole_logit_bias_included() -> None:
    head = LinearHead(2, 2)
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0]]))
        head.fc.bias.copy_(torch.tensor([0.5, -0.5]))
    lws = LWSHead.wrap(head, 2)
    with torch.no_grad():
        lws.scales.copy_(torch.tensor([2.0, 0.5]))
    x = torch.tensor([[1.0, 1.0]])
    # raw logits: [1 + 2 + 0.5, 3 - 1 - 0.5] = [3.5, 1.5]; scaled: [7.0, 0.75]
    assert torch.allclose(lws(x), torch.tensor([[7.0, 0.75]]))
    lws.active = False  # before its stage: the wrapped head's logits, no gradient to the scales
    out = lws(x)
    assert torch.allclose(out, torch.tensor([[3.5, 1.5]]))
    out.sum().backward()
    assert lws.scales.grad is None


def test_built_from_yaml_arguments_and_other_bases() -> None:
    lws = LWSHead(4, 3)
    assert isinstance(lws.base, LinearHead) and lws.scales.shape == (3,)
    cosine = LWSHead(4, 3, base=CosineHead)
    assert isinstance(cosine.base, CosineHead)
    with pytest.raises(ValueError, match="must be positive"):
        LWSHead(0, 3)

    class Experts(nn.Module):
        def forward(self, x):
            return ModelOutput(logits=x, features=x)

    with pytest.raises(TypeError, match="logits tensor"):
        LWSHead.wrap(Experts(), 3)(torch.zeros(1, 3))
