"""BCL: a hand-computed case, the authors' BalSCL re-implemented, the degenerate setting, the prototype head and bad
input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lt_lightning.heads.cosine import CosineHead
from lt_lightning.heads.projection import PROTOTYPES_KEY, ProjectionHead
from lt_lightning.losses.bcl import BalancedContrastiveLoss, balanced_contrastive_loss
from lt_lightning.losses.logit_adjustment import balanced_softmax_loss, log_prior_from_counts, logit_adjusted_loss
from lt_lightning.output import ModelOutput

pytestmark = pytest.mark.usefixtures("one_thread")

e, log = math.exp, math.log


def reference_balscl(centers, features, targets, num_classes, temperature):
    """FlamieZhu/Balanced-Contrastive-Learning ``loss/contrastive.py`` ``BalSCL.forward`` on CPU:
    ``features [B, 2, d]`` (two views), ``centers [C, d]``."""
    batch_size = features.shape[0]
    targets = targets.contiguous().view(-1, 1)
    targets_centers = torch.arange(num_classes).view(-1, 1)
    targets = torch.cat([targets.repeat(2, 1), targets_centers], dim=0)
    batch_cls_count = torch.eye(num_classes)[targets].sum(dim=0).squeeze()
    mask = torch.eq(targets[: 2 * batch_size], targets.T).float()
    logits_mask = torch.scatter(torch.ones_like(mask), 1, torch.arange(batch_size * 2).view(-1, 1), 0)
    mask = mask * logits_mask
    features = torch.cat(torch.unbind(features, dim=1), dim=0)
    features = torch.cat([features, centers], dim=0)
    logits = features[: 2 * batch_size].mm(features.T) / temperature
    logits = logits - logits.max(dim=1, keepdim=True)[0].detach()
    exp_logits = torch.exp(logits) * logits_mask
    per_ins_weight = (
        torch.tensor([batch_cls_count[i] for i in targets])
        .view(1, -1)
        .expand(2 * batch_size, 2 * batch_size + num_classes)
        - mask
    )
    exp_logits_sum = exp_logits.div(per_ins_weight).sum(dim=1, keepdim=True)
    log_prob = logits - torch.log(exp_logits_sum)
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    return (-mean_log_prob_pos).view(2, batch_size).mean()


def test_hand_case() -> None:
    # one image of class 0, two views z1 = (1, 0), z2 = (0.6, 0.8); prototypes P0 = (1, 0), P1 = (0, 1); t = 1.
    # Contrast set [z1, z2, P0, P1], labels [0, 0, 0, 1]: class 0 has 3 members, class 1 has 1.
    # z1: z2 (0.6, weight 3 - 1), P0 (1, weight 2), P1 (0, weight 1); positives z2, P0.
    # z2: z1 (0.6, weight 2), P0 (0.6, weight 2), P1 (0.8, weight 1); positives z1, P0.
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d1 = e(0.6) / 2 + e(1.0) / 2 + e(0.0)
    d2 = e(0.6) / 2 + e(0.6) / 2 + e(0.8)
    l1 = -((0.6 - log(d1)) + (1.0 - log(d1))) / 2
    l2 = -((0.6 - log(d2)) + (0.6 - log(d2))) / 2
    loss = balanced_contrastive_loss(z, torch.tensor([0, 0]), prototypes, temperature=1.0)
    assert loss.item() == pytest.approx((l1 + l2) / 2, abs=1e-6)
    # t = 0.5 doubles every similarity
    d1 = e(1.2) / 2 + e(2.0) / 2 + e(0.0)
    d2 = e(1.2) / 2 + e(1.2) / 2 + e(1.6)
    expected = (-((1.2 - log(d1)) + (2.0 - log(d1))) / 2 - ((1.2 - log(d2)) + (1.2 - log(d2))) / 2) / 2
    assert balanced_contrastive_loss(z, torch.tensor([0, 0]), prototypes, 0.5).item() == pytest.approx(
        expected, abs=1e-6
    )


@pytest.mark.parametrize("temperature", [0.07, 0.1, 1.0])
def test_equals_the_authors_balscl(temperature: float) -> None:
    torch.manual_seed(0)
    b, d, c = 7, 6, 4
    y = torch.tensor([0, 0, 0, 1, 2, 0, 1])  # class 3 absent: only its prototype
    views = F.normalize(torch.randn(b, 2, d), dim=2)
    centers = F.normalize(torch.randn(c, d), dim=1)
    expected = reference_balscl(centers, views, y, c, temperature)
    z = torch.cat([views[:, 0], views[:, 1]])  # view-major, as the datamodule's views
    loss = balanced_contrastive_loss(z, torch.cat([y, y]), centers, temperature)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_without_class_complement_is_class_averaging_over_the_batch() -> None:
    # no prototypes: two views of two class-0 images and one class-1 image, t = 1; anchor z0 sees z1, z2 (class 0,
    # weight 4 - 1 = 3 members besides itself) and z3 (class 1, 2 members) -- the class-1 anchors too
    torch.manual_seed(0)
    z = F.normalize(torch.randn(6, 3), dim=1)
    y = torch.tensor([0, 0, 1, 0, 0, 1])
    sims = z @ z.T
    total = 0.0
    for i in range(6):
        terms = [(j, sims[i, j].item()) for j in range(6) if j != i]
        size = {c: int((y == c).sum()) for c in (0, 1)}
        denom = sum(e(s) / (size[int(y[j])] - (1 if y[j] == y[i] else 0)) for j, s in terms)
        positives = [s for j, s in terms if y[j] == y[i]]
        total += -sum(s - log(denom) for s in positives) / len(positives)
    assert balanced_contrastive_loss(z, y, None, 1.0).item() == pytest.approx(total / 6, abs=1e-6)


def test_beta_zero_is_the_logit_adjusted_loss() -> None:
    torch.manual_seed(0)
    counts = torch.tensor([30.0, 6.0, 2.0])
    logits, y = torch.randn(8, 3), torch.tensor([0, 1, 2, 0, 0, 1, 2, 0])
    lp = log_prior_from_counts(counts)
    out = ModelOutput(logits=logits, features=torch.zeros(8, 2))  # no projection needed
    for tau in (1.0, 0.5):
        loss_fn = BalancedContrastiveLoss(beta=0.0, tau=tau)
        loss_fn.set_class_counts(counts)
        assert torch.allclose(loss_fn(out, y), logit_adjusted_loss(logits, y, lp, tau))
    loss_fn = BalancedContrastiveLoss(alpha=2.0, beta=0.0)
    loss_fn.set_class_counts(counts)
    assert torch.allclose(loss_fn(out, y), 2 * balanced_softmax_loss(logits, y, lp))


def test_module_reads_projection_prototypes_and_prior() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(8, 3, projection_dim=4, batch_norm=True, detach_classifier=False,
                          prototype_projection=True, classifier=lambda d, c: CosineHead(d, c, scale=30.0))  # fmt: skip
    features = torch.randn(6, 8, requires_grad=True)
    out = head(features)
    prototypes = out.extras[PROTOTYPES_KEY]
    assert prototypes.shape == (3, 4) and torch.allclose(prototypes.norm(dim=1), torch.ones(3))
    counts = torch.tensor([5.0, 2.0, 1.0])
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    loss_fn = BalancedContrastiveLoss(alpha=1.0, beta=0.35, temperature=0.07)
    loss_fn.set_class_counts(counts)
    loss = loss_fn(out, y)
    expected = logit_adjusted_loss(out.logits, y, log_prior_from_counts(counts)) + 0.35 * balanced_contrastive_loss(
        out.extras["projection"], y, prototypes, 0.07
    )
    assert torch.allclose(loss, expected)
    loss.backward()  # the prototypes train the classifier's weights and their own MLP
    assert head.classifier.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in head.prototype_projection.parameters())


def test_prototype_projection_is_off_by_default() -> None:
    head = ProjectionHead(8, 3)
    assert head.prototype_projection is None and PROTOTYPES_KEY not in head(torch.randn(4, 8)).extras
    assert not any(k.startswith("prototype_projection") for k in head.state_dict())


def test_bad_input() -> None:
    for name, value in (("alpha", -1.0), ("beta", -0.1), ("temperature", 0.0), ("tau", -1.0)):
        with pytest.raises(ValueError, match=name):
            BalancedContrastiveLoss(**{name: value})
    with pytest.raises(ValueError, match="class_complement"):
        BalancedContrastiveLoss(class_complement=1)  # type: ignore[arg-type]
    z = F.normalize(torch.randn(4, 3), dim=1)
    y = torch.tensor([0, 1, 0, 1])
    out = ModelOutput(logits=torch.randn(4, 2), features=z, extras={"projection": z})
    with pytest.raises(ValueError, match="no class prior"):
        BalancedContrastiveLoss()(out, y)
    loss_fn = BalancedContrastiveLoss()
    loss_fn.set_class_counts(torch.tensor([3.0, 1.0]))
    with pytest.raises(ValueError, match="prototype_projection"):
        loss_fn(out, y)
    with pytest.raises(ValueError, match="ProjectionHead"):
        loss_fn(ModelOutput(logits=torch.randn(4, 2), features=z), y)
    with pytest.raises(ValueError, match="hard class-index"):
        loss_fn(out, torch.full((4, 2), 0.5))
    with pytest.raises(ValueError, match="prototypes"):
        balanced_contrastive_loss(z, y, torch.randn(2, 5))
    with pytest.raises(ValueError, match="temperature"):
        balanced_contrastive_loss(z, y, None, 0.0)
    with pytest.raises(ValueError, match="prototype_projection needs a classifier"):
        ProjectionHead(8, 3, prototype_projection=True, classifier=lambda d, c: torch.nn.Identity())
    # class_complement off: no prototypes needed
    BalancedContrastiveLoss(class_complement=False).set_class_counts(torch.tensor([3.0, 1.0]))
