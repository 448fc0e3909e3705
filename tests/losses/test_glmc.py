"""GLMC (Du et al., CVPR 2023): the loss against hand-computed numbers, its degenerate setting, the head, the
global/local mixing, the power sampler and the cumulative schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lt_lightning.callbacks.glmc import GlobalLocalMixing, global_local_mix
from lt_lightning.data.bilateral_sampler import PowerBilateralSampler
from lt_lightning.data.mixing import cutmix, cutmix_box, mixup
from lt_lightning.heads.glmc import GLMCHead
from lt_lightning.losses.glmc import (
    CONVENTIONAL_KEY,
    PREDICTION_KEY,
    PROJECTION_KEY,
    GLMCLoss,
    glmc_loss,
    simsiam_loss,
)
from lt_lightning.output import ModelOutput

LN3 = math.log(3.0)


def _output(h: torch.Tensor, g: torch.Tensor, z: torch.Tensor, u: torch.Tensor) -> ModelOutput:
    output = ModelOutput(logits=g, features=torch.zeros(g.shape[0], 1))
    output.extras.update({CONVENTIONAL_KEY: h, PROJECTION_KEY: z, PREDICTION_KEY: u})
    return output


def _by_hand_inputs() -> tuple[torch.Tensor, ...]:
    h = torch.tensor([[0.0, 0.0], [LN3, 0.0]])  # conventional logits: [global row; local row]
    g = torch.tensor([[LN3, 0.0], [0.0, 0.0]])  # re-balanced logits
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    u = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    y = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    return h, g, z, u, y


def test_glmc_loss_by_hand() -> None:
    h, g, z, u, y = _by_hand_inputs()
    # counts [4, 1], r = 1: w ∝ [1/4, 1], sum 2 -> [0.4, 1.6]
    # balance: CE([0, 0], [.5, .5]) = ln 2; CE([ln 3, 0], e0) = -ln(3/4)
    balance = math.log(2.0) + math.log(4.0 / 3.0)
    # rebalance: -(0.5 * 0.4 ln(3/4) + 0.5 * 1.6 ln(1/4)) + (-(0.4 ln(1/2)))
    rebalance = -(0.2 * math.log(0.75) + 0.8 * math.log(0.25)) - 0.4 * math.log(0.5)
    # consistency: -cos([1, 1], [0, 1]) - cos([1, 0], [1, 0])
    consistency = -(1.0 / math.sqrt(2.0)) - 1.0
    alpha, lam = 0.75, 2.0
    expected = alpha * balance + (1 - alpha) * rebalance + lam * consistency

    loss = GLMCLoss(label_weighting=1.0, consistency_weight=lam, alpha=alpha)
    loss.set_class_counts(torch.tensor([4.0, 1.0]))
    torch.testing.assert_close(loss.class_weights, torch.tensor([0.4, 1.6]))
    assert float(loss(_output(h, g, z, u), y)) == pytest.approx(expected, abs=1e-6)
    functional = glmc_loss(h, g, z, u, y, torch.tensor([0.4, 1.6]), alpha, lam)
    assert float(functional) == pytest.approx(expected, abs=1e-6)


def test_glmc_default_class_weights_by_hand() -> None:
    loss = GLMCLoss()  # label_weighting 1.2, the CIFAR rho = 100 recipe
    loss.set_class_counts(torch.tensor([4.0, 1.0]))
    raw = [4.0**-1.2, 1.0]
    expected = [2 * v / sum(raw) for v in raw]
    torch.testing.assert_close(loss.class_weights, torch.tensor(expected))


def test_consistency_stops_the_gradient_at_the_projection() -> None:
    z = torch.randn(4, 3, requires_grad=True)
    u = torch.randn(4, 3, requires_grad=True)
    simsiam_loss(u, z).backward()
    assert z.grad is None and u.grad is not None
    assert float(simsiam_loss(z.detach(), z.detach())) == pytest.approx(-1.0, abs=1e-6)


def test_degenerate_glmc_is_mixup_plus_cutmix_cross_entropy() -> None:
    """Consistency weight 0, alpha fixed at 1: CE of the mixup half + CE of the CutMix half (any class weights)."""
    torch.manual_seed(0)
    b, c = 3, 4
    x = torch.rand(4 * b, 1, 8, 8)
    labels = torch.tensor([0, 1, 2, 3, 3, 1])
    target = labels.repeat(2)  # view-major: [a1; b1; a2; b2] labels
    lam, box = 0.7, (2, 6, 1, 5)
    mixed, soft = global_local_mix(x, target, lam, box, c)
    # the global half is mixup of each a1 image with its b1 partner, the local half CutMix of a2 with b2
    perm = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    ref_mix, ref_y = mixup(x[: 2 * b], labels, lam, perm, c)
    ref_cut, _ = cutmix(x[2 * b :], labels, box, perm, c)
    torch.testing.assert_close(mixed[:b], ref_mix[:b])
    torch.testing.assert_close(mixed[b:], ref_cut[:b])
    torch.testing.assert_close(soft[:b], ref_y[:b])  # the reference labels the CutMix half with lam too
    torch.testing.assert_close(soft[b:], ref_y[:b])

    h, g = torch.randn(2 * b, c), torch.randn(2 * b, c)
    z, u = torch.randn(2 * b, 5), torch.randn(2 * b, 5)
    loss = GLMCLoss(label_weighting=1.2, consistency_weight=0.0, alpha=1.0)
    loss.set_class_counts(torch.tensor([50.0, 20.0, 5.0, 1.0]))
    expected = F.cross_entropy(h[:b], soft[:b]) + F.cross_entropy(h[b:], soft[b:])
    torch.testing.assert_close(loss(_output(h, g, z, u), soft), expected)


def test_alpha_zero_uses_only_the_reweighted_classifier() -> None:
    h, g, z, u, y = _by_hand_inputs()
    w = torch.tensor([0.4, 1.6])
    expected = -((y[:1] * w) * F.log_softmax(g[:1], 1)).sum() - ((y[1:] * w) * F.log_softmax(g[1:], 1)).sum()
    torch.testing.assert_close(glmc_loss(h, g, z, u, y, w, 0.0, 0.0), expected)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"label_weighting": -1.0}, "label_weighting"),
        ({"label_weighting": math.nan}, "label_weighting"),
        ({"consistency_weight": -0.5}, "consistency_weight"),
        ({"consistency_weight": math.inf}, "consistency_weight"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
    ],
)
def test_glmc_loss_rejects_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        GLMCLoss(**kwargs)


def test_glmc_loss_needs_alpha_head_and_even_rows() -> None:
    h, g, z, u, y = _by_hand_inputs()
    with pytest.raises(RuntimeError, match="alpha"):
        GLMCLoss()(_output(h, g, z, u), y)
    with pytest.raises(ValueError, match="GLMCHead"):
        GLMCLoss(alpha=0.5)(ModelOutput(logits=g, features=g), y)
    with pytest.raises(ValueError, match="even number of rows"):
        glmc_loss(h[:1], g[:1], z[:1], u[:1], y[:1], None, 0.5, 1.0)


def test_glmc_head_outputs() -> None:
    torch.manual_seed(0)
    head = GLMCHead(6, 3, projection_dim=4)
    f = torch.randn(5, 6)
    out = head(f)
    torch.testing.assert_close(out.logits, head.fc_cb(f))
    torch.testing.assert_close(out.extras[CONVENTIONAL_KEY], head.fc(f))
    torch.testing.assert_close(out.extras[PREDICTION_KEY], head.prediction(head.projection(f)))
    assert out.extras[PROJECTION_KEY].shape == (5, 4)
    head.eval()
    out = head(f)
    assert out.expert_logits is not None and out.expert_logits.shape == (2, 5, 3)
    torch.testing.assert_close(out.expert_logits[1], out.logits)
    assert not out.extras
    with pytest.raises(ValueError, match="projection_dim"):
        GLMCHead(6, 3, projection_dim=0)


def test_global_local_mix_by_hand_and_bad_input() -> None:
    # B = 1, 1x2x2 images: a1 = 0, b1 = 1, a2 = 2, b2 = 3; box = the top-left pixel
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    target = torch.tensor([0, 1, 0, 1])
    mixed, soft = global_local_mix(x, target, 0.25, (0, 1, 0, 1), 2)
    torch.testing.assert_close(mixed[0], torch.full((1, 2, 2), 0.75))
    torch.testing.assert_close(mixed[1], torch.tensor([[[3.0, 2.0], [2.0, 2.0]]]))
    torch.testing.assert_close(soft, torch.tensor([[0.25, 0.75], [0.25, 0.75]]))
    with pytest.raises(ValueError, match="4B rows"):
        global_local_mix(x[:3], target[:3], 0.5, (0, 1, 0, 1), 2)
    with pytest.raises(ValueError, match="lam"):
        global_local_mix(x, target, 1.5, (0, 1, 0, 1), 2)


def test_mixing_draws_are_a_function_of_the_step() -> None:
    callback = GlobalLocalMixing(beta=1.0, seed=3)
    x, target = torch.rand(8, 1, 8, 8), torch.tensor([0, 1, 1, 0, 0, 1, 1, 0])
    first = callback.mix(x, target, callback.generator(5), 2)
    again = callback.mix(x, target, callback.generator(5), 2)
    torch.testing.assert_close(first[0], again[0])
    rng = np.random.default_rng([3, 5, 0, 0])
    lam = float(rng.beta(1.0, 1.0))
    box = cutmix_box(8, 8, lam, rng)
    torch.testing.assert_close(first[0], global_local_mix(x, target, lam, box, 2)[0])


def test_cumulative_alpha_and_bad_arguments() -> None:
    callback = GlobalLocalMixing(total_epochs=200)
    assert callback.alpha_at(0) == 1.0
    assert callback.alpha_at(100) == pytest.approx(0.75)
    assert callback.alpha_at(199) == pytest.approx(1 - (199 / 200) ** 2)
    with pytest.raises(ValueError, match="beta"):
        GlobalLocalMixing(beta=0.0)
    with pytest.raises(ValueError, match="total_epochs"):
        GlobalLocalMixing(total_epochs=0)
    with pytest.raises(ValueError, match="seed"):
        GlobalLocalMixing(seed=-1)


def test_power_bilateral_sampler() -> None:
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    sampler = PowerBilateralSampler(labels, branch_batch_size=2, q=1.0)
    torch.testing.assert_close(sampler.reversed_probabilities, torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64))
    half = PowerBilateralSampler(labels, branch_batch_size=2, q=0.5)
    roots = [math.sqrt(6), math.sqrt(3), 1.0]
    expected = torch.tensor([r / sum(roots) for r in roots], dtype=torch.float64)
    torch.testing.assert_close(half.reversed_probabilities, expected)
    order = list(sampler)
    assert len(order) == 2 * sampler.num_blocks * 2
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="q must"):
            PowerBilateralSampler(labels, branch_batch_size=2, q=bad)
