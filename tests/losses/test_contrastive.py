"""SupCon, KCL and SimCLR against hand-computed 4-sample cases, their degenerate cases, and the SupCon loss module.

The four unit features are z0 = (1, 0), z1 = (0.6, 0.8), z2 = (0, 1), z3 = (-0.6, 0.8), whose dot products are
z0.z1 = 0.6, z0.z2 = 0, z0.z3 = -0.6, z1.z2 = 0.8, z1.z3 = 0.28, z2.z3 = 0.8.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lt_lightning.heads.projection import ProjectionHead
from lt_lightning.losses.contrastive import (
    contrastive_loss_from_mask,
    k_positive_mask,
    simclr_loss,
    supervised_contrastive_loss,
)
from lt_lightning.losses.supcon import SupervisedContrastiveLoss
from lt_lightning.output import ModelOutput

pytestmark = pytest.mark.usefixtures("one_thread")

Z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.6, 0.8]])
e = math.exp


def lse(*values: float) -> float:
    return math.log(sum(e(v) for v in values))


def test_supcon_one_positive_per_anchor_by_hand() -> None:
    # labels [0, 0, 1, 1], t = 1: each anchor has one positive; the denominator runs over the 3 others
    expected = [
        -0.6 + lse(0.6, 0.0, -0.6),  # anchor 0, positive 1
        -0.6 + lse(0.6, 0.8, 0.28),  # anchor 1, positive 0
        -0.8 + lse(0.0, 0.8, 0.8),  # anchor 2, positive 3
        -0.8 + lse(-0.6, 0.28, 0.8),  # anchor 3, positive 2
    ]
    loss = supervised_contrastive_loss(Z, torch.tensor([0, 0, 1, 1]), temperature=1.0)
    assert loss.item() == pytest.approx(sum(expected) / 4, abs=1e-6)


def test_supcon_several_positives_and_an_anchor_without_positive_by_hand() -> None:
    # labels [0, 0, 0, 1]: anchors 0-2 average over two positives; anchor 3 (alone in its class) is left out
    t = 0.5
    expected = [
        -(0.6 + 0.0) / 2 / t + lse(0.6 / t, 0.0, -0.6 / t),
        -(0.6 + 0.8) / 2 / t + lse(0.6 / t, 0.8 / t, 0.28 / t),
        -(0.0 + 0.8) / 2 / t + lse(0.0, 0.8 / t, 0.8 / t),
    ]
    loss = supervised_contrastive_loss(Z, torch.tensor([0, 0, 0, 1]), temperature=t)
    assert loss.item() == pytest.approx(sum(expected) / 3, abs=1e-5)


def test_base_temperature_multiplies_by_t_over_base_by_hand() -> None:
    """SupContrast's ``-(t / base_temperature) * mean_log_prob_pos``: t = 0.1, base 0.07 gives 1/0.7 = 1.428571."""
    labels = torch.tensor([0, 0, 1, 1])
    t = 0.1
    plain = [  # the first test's anchors at t = 0.1 (similarities / 0.1)
        -6.0 + lse(6.0, 0.0, -6.0),
        -6.0 + lse(6.0, 8.0, 2.8),
        -8.0 + lse(0.0, 8.0, 8.0),
        -8.0 + lse(-6.0, 2.8, 8.0),
    ]
    expected = (0.1 / 0.07) * sum(plain) / 4
    loss = supervised_contrastive_loss(Z, labels, temperature=t, base_temperature=0.07)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert supervised_contrastive_loss(Z, labels, t).item() == pytest.approx(sum(plain) / 4, rel=1e-5)
    # degenerate settings: None or base = t give factor 1
    for base in (None, t):
        torch.testing.assert_close(
            supervised_contrastive_loss(Z, labels, t, base_temperature=base), supervised_contrastive_loss(Z, labels, t)
        )
    # KCL gets the same factor (k = 1 with one candidate per anchor: the draw is forced)
    kcl = supervised_contrastive_loss(Z, labels, t, k_positives=1, base_temperature=0.07)
    assert kcl.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="base_temperature"):
        supervised_contrastive_loss(Z, labels, t, base_temperature=0.0)


def test_simclr_two_views_by_hand() -> None:
    # views = 2, B = 2: image 0 is rows (0, 2), image 1 rows (1, 3); t = 0.5
    t = 0.5
    expected = [
        -0.0 / t + lse(0.6 / t, 0.0 / t, -0.6 / t),  # anchor 0, positive 2
        -0.28 / t + lse(0.6 / t, 0.8 / t, 0.28 / t),  # anchor 1, positive 3
        -0.0 / t + lse(0.0 / t, 0.8 / t, 0.8 / t),  # anchor 2, positive 0
        -0.28 / t + lse(-0.6 / t, 0.28 / t, 0.8 / t),  # anchor 3, positive 1
    ]
    assert simclr_loss(Z, views=2, temperature=t).item() == pytest.approx(sum(expected) / 4, abs=1e-5)


def test_temperature_scales_the_similarities() -> None:
    # SimCLR at temperature t on z equals the hand formula with the dot products divided by t, for several t
    for t in (0.1, 1.0, 3.0):
        expected = (
            sum(
                [
                    lse(0.6 / t, 0.0, -0.6 / t),
                    -0.28 / t + lse(0.6 / t, 0.8 / t, 0.28 / t),
                    lse(0.0, 0.8 / t, 0.8 / t),
                    -0.28 / t + lse(-0.6 / t, 0.28 / t, 0.8 / t),
                ]
            )
            / 4
        )
        assert simclr_loss(Z, 2, t).item() == pytest.approx(expected, rel=1e-5)


def test_one_class_per_image_is_simclr() -> None:
    torch.manual_seed(0)
    z = F.normalize(torch.randn(12, 5), dim=1)  # 3 views of 4 images
    labels = torch.arange(4).repeat(3)
    assert torch.allclose(supervised_contrastive_loss(z, labels, 0.2), simclr_loss(z, 3, 0.2))
    # KCL with k = 0 keeps the other views only: SimCLR whatever the labels
    labels = torch.tensor([0, 0, 1, 1]).repeat(3)
    kcl = supervised_contrastive_loss(z, labels, 0.2, k_positives=0, views=3)
    assert torch.allclose(kcl, simclr_loss(z, 3, 0.2))


def test_kcl_with_every_candidate_taken_is_supcon() -> None:
    # views = 1, labels [0, 0, 1, 1]: one same-class candidate per anchor, so k = 1 is deterministic and equals SupCon
    labels = torch.tensor([0, 0, 1, 1])
    supcon = supervised_contrastive_loss(Z, labels, 1.0)
    assert supervised_contrastive_loss(Z, labels, 1.0, k_positives=1).item() == pytest.approx(supcon.item())
    assert supervised_contrastive_loss(Z, labels, 1.0, k_positives=5).item() == pytest.approx(supcon.item())
    # two views, k >= every same-class candidate: SupCon again
    torch.manual_seed(1)
    z = F.normalize(torch.randn(8, 3), dim=1)
    labels = torch.tensor([0, 0, 1, 0]).repeat(2)
    kcl = supervised_contrastive_loss(z, labels, 0.3, k_positives=8, views=2)
    assert torch.allclose(kcl, supervised_contrastive_loss(z, labels, 0.3))


def test_kcl_by_hand_with_a_random_positive() -> None:
    # views = 1, labels [0, 0, 0, 1], k = 1: anchors 0-2 each take one of their two same-class samples at random
    t = 1.0
    mask = k_positive_mask(torch.tensor([0, 0, 0, 1]), k=1, views=1, generator=torch.Generator().manual_seed(0))
    assert mask.sum(dim=1).tolist() == [1, 1, 1, 0]
    chosen = mask.float().argmax(dim=1).tolist()
    dots = [[1.0, 0.6, 0.0, -0.6], [0.6, 1.0, 0.8, 0.28], [0.0, 0.8, 1.0, 0.8]]
    expected = []
    for i in range(3):
        assert chosen[i] != i and chosen[i] < 3
        others = [dots[i][j] / t for j in range(4) if j != i]
        expected.append(-dots[i][chosen[i]] / t + lse(*others))
    gen = torch.Generator().manual_seed(0)
    loss = supervised_contrastive_loss(Z, torch.tensor([0, 0, 0, 1]), t, k_positives=1, generator=gen)
    assert loss.item() == pytest.approx(sum(expected) / 3, abs=1e-6)


def test_k_positive_mask_draw() -> None:
    # 2 views of 6 images of classes [0, 0, 0, 0, 1, 1]; k = 2
    labels = torch.tensor([0, 0, 0, 0, 1, 1]).repeat(2)
    n = labels.shape[0]
    own = (torch.arange(n)[:, None] % 6) == (torch.arange(n)[None, :] % 6)
    candidates = (labels[:, None] == labels[None, :]) & ~own
    counts = torch.zeros(n, n)
    for seed in range(200):
        mask = k_positive_mask(labels, 2, views=2, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(mask & own, own & ~torch.eye(n, dtype=torch.bool))  # the other view, never itself
        drawn = mask & ~own
        assert not (drawn & ~candidates).any()  # only same-class samples of other images
        expected = torch.clamp(candidates.sum(dim=1), max=2)  # class 1: its 2 candidates; class 0: 2 of 6
        assert torch.equal(drawn.sum(dim=1), expected)
        counts += drawn.float()
    # class-0 anchors draw each of their 6 candidates with probability 2/6
    freq = counts[0][candidates[0]] / 200
    assert ((freq > 0.2) & (freq < 0.47)).all(), freq
    # seeded: the same generator seed draws the same positives
    a = k_positive_mask(labels, 2, 2, torch.Generator().manual_seed(7))
    assert torch.equal(a, k_positive_mask(labels, 2, 2, torch.Generator().manual_seed(7)))


def test_loss_from_mask_ignores_the_diagonal() -> None:
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.allclose(
        contrastive_loss_from_mask(Z, mask, 1.0), supervised_contrastive_loss(Z, torch.tensor([0, 0, 1, 1]), 1.0)
    )


def test_bad_input() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="temperature"):
        supervised_contrastive_loss(Z, labels, 0.0)
    with pytest.raises(ValueError, match="views"):
        simclr_loss(Z, 1, 0.5)
    with pytest.raises(ValueError, match="multiple of views"):
        simclr_loss(Z, 3, 0.5)
    with pytest.raises(ValueError, match="labels"):
        supervised_contrastive_loss(Z, labels[:3], 0.5)
    with pytest.raises(ValueError, match="integer"):
        supervised_contrastive_loss(Z, labels.float(), 0.5)
    with pytest.raises(ValueError, match="k_positives"):
        supervised_contrastive_loss(Z, labels, 0.5, k_positives=-1)
    with pytest.raises(ValueError, match=r"\[N, d\]"):
        simclr_loss(Z[0], 2, 0.5)


# ---------------------------------------------------------------------------------------------- the loss module
def _output(z: torch.Tensor, logits: torch.Tensor) -> ModelOutput:
    return ModelOutput(logits=logits, features=z, extras={"projection": z})


def test_supcon_module_adds_the_classifier_cross_entropy() -> None:
    torch.manual_seed(0)
    z = F.normalize(torch.randn(8, 4), dim=1)
    logits = torch.randn(8, 3)
    labels = torch.tensor([0, 1, 2, 0]).repeat(2)
    loss = SupervisedContrastiveLoss(temperature=0.2, classifier_weight=0.5)(_output(z, logits), labels)
    expected = supervised_contrastive_loss(z, labels, 0.2) + 0.5 * F.cross_entropy(logits, labels)
    assert torch.allclose(loss, expected)
    only = SupervisedContrastiveLoss(temperature=0.2, classifier_weight=0.0)(_output(z, logits), labels)
    assert torch.allclose(only, supervised_contrastive_loss(z, labels, 0.2))


def test_supcon_module_base_temperature() -> None:
    torch.manual_seed(0)
    z = F.normalize(torch.randn(8, 4), dim=1)
    logits = torch.randn(8, 3)
    labels = torch.tensor([0, 1, 2, 0]).repeat(2)
    scaled = SupervisedContrastiveLoss(temperature=0.1, base_temperature=0.07, classifier_weight=0.0)
    plain = SupervisedContrastiveLoss(temperature=0.1, classifier_weight=0.0)
    out = _output(z, logits)
    torch.testing.assert_close(scaled(out, labels), plain(out, labels) / 0.7)
    assert "base_temperature=0.07" in repr(scaled)
    with pytest.raises(ValueError, match="base_temperature"):
        SupervisedContrastiveLoss(base_temperature=-1.0)


def test_supcon_module_with_projection_head_trains_the_backbone_through_the_projection_only() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(6, 3, projection_dim=4, detach_classifier=True)
    features = torch.randn(8, 6, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0]).repeat(2)
    out = head(features)
    ce_only = F.cross_entropy(out.logits, labels)
    ce_only.backward()
    assert features.grad is None  # the classifier sees detached features
    assert head.classifier.fc.weight.grad is not None
    loss = SupervisedContrastiveLoss(0.1, k_positives=1, views=2)(head(features), labels)
    loss.backward()
    assert features.grad is not None and features.grad.abs().sum() > 0


def test_supcon_module_bad_input() -> None:
    z = F.normalize(torch.randn(4, 3), dim=1)
    with pytest.raises(ValueError, match="ProjectionHead"):
        SupervisedContrastiveLoss()(ModelOutput(logits=torch.randn(4, 2), features=z), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="hard class-index"):
        SupervisedContrastiveLoss()(_output(z, torch.randn(4, 2)), torch.full((4, 2), 0.5))
    for kwargs in ({"temperature": 0}, {"k_positives": -1}, {"views": 0}, {"classifier_weight": -1.0}):
        with pytest.raises(ValueError):
            SupervisedContrastiveLoss(**kwargs)
