"""Batch-mixing formulas (mixup, CutMix, Remix's label rule) against hand-computed batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lt_lightning.data.mixing import (
    check_alpha,
    cutmix,
    cutmix_box,
    mix_targets,
    mixup,
    remix_label_weights,
    sample_lambda,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(4 * 1 * 4 * 4, dtype=torch.float32).reshape(4, 1, 4, 4)
    return x, torch.tensor([0, 1, 2, 1])


# ---------------------------------------------------------------------------------------------- mixup
def test_mixup_with_lambda_one_is_the_plain_batch() -> None:
    x, y = _batch()
    mixed, soft = mixup(x, y, 1.0, torch.tensor([3, 2, 1, 0]), num_classes=3)
    assert torch.equal(mixed, x)
    assert torch.equal(soft, torch.nn.functional.one_hot(y, 3).float())


def test_mixup_by_hand() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    y = torch.tensor([0, 1, 2])
    perm = torch.tensor([1, 2, 0])
    mixed, soft = mixup(x, y, 0.75, perm, num_classes=3)
    assert torch.allclose(mixed, torch.tensor([[0.75, 0.5], [1.0, 2.5], [3.25, 3.0]]))
    expected = torch.tensor([[0.75, 0.25, 0.0], [0.0, 0.75, 0.25], [0.25, 0.0, 0.75]])
    assert torch.allclose(soft, expected)
    assert torch.allclose(soft.sum(dim=1), torch.ones(3))


def test_mixup_of_soft_targets_mixes_the_rows() -> None:
    x, _ = _batch()
    soft_in = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.2, 0.6], [1.0, 0.0, 0.0]])
    _, soft = mixup(x, soft_in, 0.4, torch.tensor([1, 0, 3, 2]), num_classes=3)
    assert torch.allclose(soft[0], 0.4 * soft_in[0] + 0.6 * soft_in[1])
    assert torch.allclose(soft.sum(dim=1), torch.ones(4))


# ---------------------------------------------------------------------------------------------- CutMix
def test_cutmix_box_area_is_the_label_weight() -> None:
    x, y = _batch()
    perm = torch.tensor([1, 0, 3, 2])
    mixed, soft = cutmix(x, y, (1, 3, 0, 2), perm, num_classes=3)  # a 2x2 box of a 4x4 image: 4/16 pasted
    expected = x.clone()
    expected[:, :, 1:3, 0:2] = x[perm][:, :, 1:3, 0:2]
    assert torch.equal(mixed, expected)
    assert not torch.equal(mixed, x)  # the input is not modified in place
    assert torch.allclose(soft[0], torch.tensor([0.75, 0.25, 0.0]))  # class 0 keeps 12/16, class 1 gets 4/16
    assert torch.allclose(soft[2], torch.tensor([0.0, 0.25, 0.75]))
    # the pasted pixels are exactly the other image's
    assert torch.equal(mixed[0, 0, 1:3, 0:2], x[1, 0, 1:3, 0:2])
    assert torch.allclose(soft.sum(dim=1), torch.ones(4))
    # an empty box is the plain batch
    plain, hard = cutmix(x, y, (2, 2, 1, 1), perm, num_classes=3)
    assert torch.equal(plain, x) and torch.equal(hard, torch.nn.functional.one_hot(y, 3).float())


def test_cutmix_box_follows_the_reference_rand_bbox() -> None:
    rng = np.random.default_rng(5)
    twin = np.random.default_rng(5)
    lam = 0.64  # sqrt(1 - lam) = 0.6: a 6x6 box in a 10x10 image before clipping
    top, bottom, left, right = cutmix_box(10, 10, lam, rng)
    cy, cx = int(twin.integers(10)), int(twin.integers(10))
    assert (top, bottom, left, right) == (max(cy - 3, 0), min(cy + 3, 10), max(cx - 3, 0), min(cx + 3, 10))
    # lam = 1: an empty box (nothing pasted)
    t, b, lft, r = cutmix_box(10, 10, 1.0, np.random.default_rng(0))
    assert (b - t) * (r - lft) == 0


def test_cutmix_rejects_a_box_outside_the_image() -> None:
    x, y = _batch()
    with pytest.raises(ValueError, match="does not lie in an image of 4x4"):
        cutmix(x, y, (0, 5, 0, 2), torch.arange(4), num_classes=3)


# ---------------------------------------------------------------------------------------------- Remix
COUNTS = torch.tensor([90.0, 30.0, 10.0])  # ratios: 0/1 = 3, 0/2 = 9, 1/2 = 3


@pytest.mark.parametrize(
    ("lam", "pairs", "expected"),
    [
        # image i of class a mixed with partner of class b; n_a / n_b >= 3 and lam < 0.5: the label is b's
        (0.3, [(0, 1), (0, 2), (1, 2)], [0.0, 0.0, 0.0]),
        # same pairs with lam >= tau: mixup's lam
        (0.6, [(0, 1), (0, 2), (1, 2)], [0.6, 0.6, 0.6]),
        # minority image first: n_a / n_b <= 1/3 and 1 - lam < 0.5: the label is a's
        (0.6, [(1, 0), (2, 0), (2, 1)], [1.0, 1.0, 1.0]),
        # minority first but 1 - lam >= tau: lam
        (0.3, [(1, 0), (2, 0), (2, 1)], [0.3, 0.3, 0.3]),
        # same class or a ratio below kappa: lam
        (0.3, [(1, 1), (0, 0), (2, 2)], [0.3, 0.3, 0.3]),
    ],
)
def test_remix_label_weights_by_hand(lam: float, pairs: list, expected: list) -> None:
    first = torch.tensor([a for a, _ in pairs])
    second = torch.tensor([b for _, b in pairs])
    target = torch.cat([first, second])
    n = len(pairs)
    perm = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])  # image k is mixed with image n + k
    weights = remix_label_weights(lam, target, perm, COUNTS, kappa=3.0, tau=0.5)
    assert torch.allclose(weights[:n], torch.tensor(expected))


def test_remix_ratio_below_kappa_keeps_lambda() -> None:
    counts = torch.tensor([50.0, 20.0])  # ratio 2.5 < kappa 3
    weights = remix_label_weights(0.2, torch.tensor([0, 1]), torch.tensor([1, 0]), counts, kappa=3.0, tau=0.5)
    assert torch.allclose(weights, torch.tensor([0.2, 0.2]))
    # with kappa 2 the same pair is rebalanced: image 0 (majority, lam 0.2 < tau) takes the minority label,
    # image 1 (minority, 1 - lam = 0.8 >= tau) keeps lam
    weights = remix_label_weights(0.2, torch.tensor([0, 1]), torch.tensor([1, 0]), counts, kappa=2.0, tau=0.5)
    assert torch.allclose(weights, torch.tensor([0.0, 0.2]))


def test_remix_soft_targets_by_hand() -> None:
    target = torch.tensor([0, 2, 1])
    perm = torch.tensor([1, 0, 2])
    weights = remix_label_weights(0.4, target, perm, COUNTS)  # pair (0, 2): 9 >= 3, lam 0.4 < 0.5 -> 0
    soft = mix_targets(target, perm, weights, 3)
    # image 0 (class 0 with class 2): all class 2; image 1 (class 2 with class 0): 1 - lam = 0.6 >= 0.5 -> lam 0.4
    expected = torch.tensor([[0.0, 0.0, 1.0], [0.6, 0.0, 0.4], [0.0, 1.0, 0.0]])
    assert torch.allclose(soft, expected)
    assert torch.allclose(soft.sum(dim=1), torch.ones(3))


def test_remix_needs_hard_labels_and_valid_thresholds() -> None:
    with pytest.raises(ValueError, match="hard targets"):
        remix_label_weights(0.5, torch.rand(3, 3), torch.arange(3), COUNTS)
    with pytest.raises(ValueError, match="kappa must be"):
        remix_label_weights(0.5, torch.tensor([0, 1]), torch.arange(2), COUNTS, kappa=1.0)
    with pytest.raises(ValueError, match="tau must be"):
        remix_label_weights(0.5, torch.tensor([0, 1]), torch.arange(2), COUNTS, tau=0.0)


# ---------------------------------------------------------------------------------------------- checks
@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf"), True, "1"])
def test_alpha_must_be_positive(alpha) -> None:
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        check_alpha(alpha)
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        sample_lambda(alpha, np.random.default_rng(0))


def test_sample_lambda_is_beta_and_seeded() -> None:
    assert sample_lambda(1.0, np.random.default_rng(3)) == sample_lambda(1.0, np.random.default_rng(3))
    draws = [sample_lambda(0.2, np.random.default_rng(i)) for i in range(200)]
    assert all(0.0 <= d <= 1.0 for d in draws)
    assert sum(d < 0.1 or d > 0.9 for d in draws) > 100  # Beta(0.2, 0.2) is U-shaped


def test_bad_inputs_are_named() -> None:
    x, y = _batch()
    with pytest.raises(ValueError, match="floating point"):
        mixup(x.to(torch.uint8), y, 0.5, torch.arange(4), 3)
    with pytest.raises(ValueError, match="perm must be"):
        mixup(x, y, 0.5, torch.arange(3), 3)
    with pytest.raises(ValueError, match="lam must be in"):
        mixup(x, y, 1.5, torch.arange(4), 3)
