"""τ-normalisation (Kang et al., ICLR 2020) against hand-computed weights and the plain linear head."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lt_lightning.heads.linear import LinearHead
from lt_lightning.heads.tau_norm import TauNormHead, tau_normalized_weight

W = torch.tensor([[3.0, 4.0], [0.0, 2.0]])  # row norms 5 and 2


@pytest.mark.parametrize(
    ("tau", "expected"),
    [
        (0.0, [[3.0, 4.0], [0.0, 2.0]]),
        (1.0, [[0.6, 0.8], [0.0, 1.0]]),
        (0.5, [[3 / math.sqrt(5), 4 / math.sqrt(5)], [0.0, math.sqrt(2)]]),
        (2.0, [[3 / 25, 4 / 25], [0.0, 0.5]]),
    ],
)
def test_weight_normalisation_by_hand(tau, expected) -> None:
    assert torch.allclose(tau_normalized_weight(W, tau), torch.tensor(expected), atol=1e-6)


def test_zero_row_stays_zero_and_tau_one_gives_unit_rows() -> None:
    torch.manual_seed(0)
    w = torch.randn(6, 5) * torch.arange(1.0, 7.0).unsqueeze(1)
    w[2] = 0
    out = tau_normalized_weight(w, 1.0)
    assert torch.isfinite(out).all() and torch.equal(out[2], torch.zeros(5))
    norms = out.norm(dim=1)
    assert torch.allclose(norms[[0, 1, 3, 4, 5]], torch.ones(5), atol=1e-6)


def test_forward_by_hand_with_bias() -> None:
    head = TauNormHead(2, 2, tau=1.0)
    with torch.no_grad():
        head.fc.weight.copy_(W)
        head.fc.bias.copy_(torch.tensor([0.5, -1.0]))
    out = head(torch.tensor([[1.0, 1.0], [10.0, 0.0]]))
    # rows [0.6, 0.8] and [0, 1]: f=(1,1) -> 1.4 + 0.5, 1 - 1;  f=(10,0) -> 6 + 0.5, 0 - 1
    assert torch.allclose(out, torch.tensor([[1.9, 0.0], [6.5, -1.0]]), atol=1e-6)
    no_bias = TauNormHead(2, 2, tau=1.0, bias=False)
    assert no_bias.fc.bias is None


def test_the_reference_drops_the_bias_by_hand() -> None:
    """classifier-balancing ``tau_norm.py``: ``pnorm(weights, p)`` then ``dotproduct_similarity``: no bias."""
    linear = nn.Linear(2, 2)
    with torch.no_grad():
        linear.weight.copy_(W)
        linear.bias.copy_(torch.tensor([-1.0, 1.0]))
    f = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    # rows [0.6, 0.8] and [0, 1]: f=(1,1) -> 1.4, 1.0; f=(2,0) -> 1.2, 0.0 (with the bias: 0.4, 2.0 and 0.2, 1.0)
    dropped = TauNormHead.from_linear(linear, 1.0, keep_bias=False)
    assert torch.allclose(dropped(f), torch.tensor([[1.4, 1.0], [1.2, 0.0]]), atol=1e-6)
    kept = TauNormHead.from_linear(linear, 1.0)
    assert torch.allclose(kept(f), torch.tensor([[0.4, 2.0], [0.2, 1.0]]), atol=1e-6)
    assert dropped(f).argmax(1).tolist() == [0, 0] and kept(f).argmax(1).tolist() == [1, 1]


def test_tau_zero_is_bit_identical_to_the_linear_head_and_loads_its_state_dict() -> None:
    torch.manual_seed(0)
    linear = LinearHead(7, 4)
    head = TauNormHead(7, 4, tau=0.0)
    head.load_state_dict(linear.state_dict())  # same parameter names (strict)
    f = torch.randn(9, 7)
    assert torch.equal(head(f), linear(f))
    head.reset_parameters()
    assert not torch.equal(head.weight, linear.weight)


def test_from_linear_on_a_trained_head() -> None:
    torch.manual_seed(0)
    linear = LinearHead(3, 3).double()
    x = torch.randn(60, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (60,))
    y[:40] = 0  # long-tailed: class 0 dominates, its weight grows
    optimizer = torch.optim.SGD(linear.parameters(), lr=0.5)
    for _ in range(20):
        optimizer.zero_grad()
        nn.functional.cross_entropy(linear(x), y).backward()
        optimizer.step()
    tau = 0.7
    head = TauNormHead.from_linear(linear, tau)
    assert head.weight.dtype == torch.float64 and head.weight.device == linear.weight.device
    w, b = linear.fc.weight.detach(), linear.fc.bias.detach()
    expected = x @ (w / w.norm(dim=1, keepdim=True) ** tau).T + b
    assert torch.allclose(head(x), expected, atol=1e-12)
    # a copy: later changes to the trained head do not reach it
    with torch.no_grad():
        linear.fc.weight.zero_()
    assert torch.allclose(head(x), expected, atol=1e-12)
    # keep_bias=False scores with the normalised weights only; an nn.Linear works too
    plain = nn.Linear(3, 2)
    from_plain = TauNormHead.from_linear(plain, 1.0)
    assert torch.equal(from_plain.fc.bias, plain.bias)
    assert torch.allclose(tau_normalized_weight(from_plain.weight, 1.0).norm(dim=1), torch.ones(2), atol=1e-6)
    bare = TauNormHead.from_linear(nn.Linear(3, 2), 1.0, keep_bias=False)
    assert bare.fc.bias is None
    f = torch.randn(4, 3)
    assert torch.allclose(bare(f), f @ tau_normalized_weight(bare.weight, 1.0).T)


@pytest.mark.parametrize("tau", [-0.1, -1.0, float("nan"), float("inf")])
def test_bad_tau(tau) -> None:
    with pytest.raises(ValueError, match="tau"):
        tau_normalized_weight(W, tau)
    with pytest.raises(ValueError, match="tau"):
        TauNormHead(2, 2, tau=tau)
    with pytest.raises(ValueError, match="tau"):
        TauNormHead.from_linear(LinearHead(2, 2), tau)


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match="weight"):
        tau_normalized_weight(torch.ones(3), 1.0)
    with pytest.raises(ValueError, match="weight"):
        TauNormHead.from_linear(nn.ReLU(), 1.0)
    with pytest.raises(ValueError):
        TauNormHead(0, 2)
