"""PaCo: a hand-computed case, the reference implementation's formula, degenerate settings and the loss module."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lt_lightning.losses.logit_adjustment import balanced_softmax_loss, log_prior_from_counts
from lt_lightning.losses.paco import PaCoLoss, paco_loss
from lt_lightning.output import ModelOutput

pytestmark = pytest.mark.usefixtures("one_thread")

e, log = math.exp, math.log


def reference_paco(features, labels, sup_logits, cls_num_list, alpha, beta, gamma, temperature, K, num_classes):
    """The reference's ``PaCoLoss.forward`` (dvlab-research/Parametric-Contrastive-Learning ``LT/losses.py``), on CPU:
    ``features = [q; k; queue]``, ``labels = [y; y; queue_labels]``, queries = the first ``B`` rows, supt = 1."""
    weight = torch.tensor(cls_num_list, dtype=torch.float32).view(1, num_classes)
    weight = weight / weight.sum()
    batch_size = (features.shape[0] - K) // 2
    labels = labels.contiguous().view(-1, 1)
    mask = torch.eq(labels[:batch_size], labels.T).float()
    anchor_dot_contrast = torch.div(torch.matmul(features[:batch_size], features.T), temperature)
    anchor_dot_contrast = torch.cat((sup_logits + torch.log(weight + 1e-9), anchor_dot_contrast), dim=1)
    logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    logits_mask = torch.scatter(torch.ones_like(mask), 1, torch.arange(batch_size).view(-1, 1), 0)
    mask = mask * logits_mask
    one_hot_label = F.one_hot(labels[:batch_size].view(-1), num_classes=num_classes).to(torch.float32)
    mask = torch.cat((one_hot_label * beta, mask * alpha), dim=1)
    logits_mask = torch.cat((torch.ones(batch_size, num_classes), gamma * logits_mask), dim=1)
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True) + 1e-12)
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    return (-mean_log_prob_pos).mean()


def test_hand_case_with_keys() -> None:
    # two queries of class 0, q0 = (1, 0), q1 = (0, 1); their momentum keys k0 = (0.6, 0.8), k1 = (0.8, 0.6);
    # logits [[1, 0], [0, 1]], counts [3, 1] -> log prior (log 3/4, log 1/4); alpha = beta = gamma = t = 1.
    # Query 0 meets the centres, q1 (dot 0) and k1 (dot 0.8) -- not its own key k0; query 1 meets q0 (0) and k0 (0.8).
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    log_prior = torch.tensor([log(0.75), log(0.25)])
    s0 = [1 + log(0.75), log(0.25), 0.0, 0.8]
    s1 = [log(0.75), 1 + log(0.25), 0.0, 0.8]
    losses = []
    for s in (s0, s1):
        log_d = log(sum(e(v) for v in s))
        # positives: the class-0 centre (weight beta = 1), q_other and k_other (weight alpha = 1)
        losses.append(-((s[0] - log_d) + (s[2] - log_d) + (s[3] - log_d)) / 3)
    labels = torch.tensor([0, 0])
    loss = paco_loss(q, labels, logits, log_prior, keys=k, alpha=1.0, beta=1.0, gamma=1.0, temperature=1.0)
    assert loss.item() == pytest.approx(sum(losses) / 2, abs=1e-6)


def test_hand_case_weights_and_temperatures() -> None:
    # one query of class 1 with q0 = (1, 0) and a queue of [(1, 0) class 1, (0, 1) class 0, empty slot];
    # alpha = 0.5, beta = 2, gamma = 0.25, t = 0.5, supt = 2; logits [0.4, -0.2], log prior (log 0.5, log 0.5)
    q = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    queue_labels = torch.tensor([1, 0, -1])
    centres = [(0.4 + log(0.5)) / 2, (-0.2 + log(0.5)) / 2]
    samples = [1.0 / 0.5, 0.0 / 0.5]
    log_d = log(e(centres[0]) + e(centres[1]) + 0.25 * (e(samples[0]) + e(samples[1])))
    expected = -(2 * (centres[1] - log_d) + 0.5 * (samples[0] - log_d)) / 2.5
    loss = paco_loss(
        q, torch.tensor([1]), torch.tensor([[0.4, -0.2]]), torch.tensor([log(0.5), log(0.5)]),
        queue=queue, queue_labels=queue_labels, alpha=0.5, beta=2.0, gamma=0.25, temperature=0.5, supt=2.0,
    )  # fmt: skip
    assert loss.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("alpha", "beta", "gamma"), [(0.02, 1.0, 1.0), (1.0, 1.0, 1.0), (0.5, 2.0, 0.3)])
def test_equals_the_reference_formula(alpha: float, beta: float, gamma: float) -> None:
    # the reference: one query view q, the other view's keys k and a queue. Here: keys=None and the reference's
    # [k; queue] given as the queue (the reference contrasts a query with its own key k_i, the other view).
    torch.manual_seed(0)
    b, d, c, size = 6, 5, 4, 8
    counts = [20, 9, 4, 2]
    q = F.normalize(torch.randn(b, d), dim=1)
    k = F.normalize(torch.randn(b, d), dim=1)
    queue = F.normalize(torch.randn(size, d), dim=1)
    y = torch.tensor([0, 1, 0, 2, 3, 1])
    queue_y = torch.randint(0, c, (size,))
    logits = torch.randn(b, c)
    t = 0.07
    expected = reference_paco(
        torch.cat([q, k, queue]), torch.cat([y, y, queue_y]), logits, counts, alpha, beta, gamma, t, size, c
    )
    loss = paco_loss(
        q, y, logits, log_prior_from_counts(torch.tensor(counts)), queue=torch.cat([k, queue]),
        queue_labels=torch.cat([y, queue_y]), alpha=alpha, beta=beta, gamma=gamma, temperature=t,
    )  # fmt: skip
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_alpha_and_gamma_zero_is_balanced_softmax() -> None:
    # only the centres are left: -log softmax(z + log pi)_y, whatever the queries, keys and queue hold
    torch.manual_seed(0)
    n, c = 8, 3
    counts = torch.tensor([30.0, 6.0, 2.0])
    logits, y = torch.randn(n, c), torch.tensor([0, 1, 2, 0, 0, 1, 2, 0])
    q, keys, queue = (F.normalize(torch.randn(m, 4), dim=1) for m in (n, n, 5))
    lp = log_prior_from_counts(counts)
    loss = paco_loss(q, y, logits, lp, keys, queue, torch.randint(0, c, (5,)), alpha=0.0, beta=1.0, gamma=0.0)
    assert torch.allclose(loss, balanced_softmax_loss(logits, y, lp), atol=1e-6)
    # beta only scales the centre term, which is then the only positive: the same value
    loss = paco_loss(q, y, logits, lp, keys, queue, torch.randint(0, c, (5,)), alpha=0.0, beta=3.0, gamma=0.0)
    assert torch.allclose(loss, balanced_softmax_loss(logits, y, lp), atol=1e-6)


def test_empty_queue_slots_are_left_out() -> None:
    torch.manual_seed(0)
    q, keys = F.normalize(torch.randn(4, 3), dim=1), F.normalize(torch.randn(4, 3), dim=1)
    y, logits, lp = torch.tensor([0, 1, 0, 1]), torch.randn(4, 2), torch.log(torch.tensor([0.7, 0.3]))
    empty = torch.randn(5, 3)
    with_empty = paco_loss(q, y, logits, lp, keys, empty, torch.full((5,), -1), alpha=0.5)
    assert torch.allclose(with_empty, paco_loss(q, y, logits, lp, keys, alpha=0.5))


def test_module_reads_the_extras_and_the_prior() -> None:
    torch.manual_seed(0)
    loss_fn = PaCoLoss(alpha=0.3, temperature=0.2)
    counts = torch.tensor([5.0, 2.0, 1.0])
    loss_fn.set_class_counts(counts)
    q, k = F.normalize(torch.randn(6, 4), dim=1), F.normalize(torch.randn(6, 4), dim=1)
    queue, queue_y = F.normalize(torch.randn(3, 4), dim=1), torch.tensor([2, -1, 0])
    logits, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    extras = {"projection": q, "momentum_keys": k, "momentum_queue": queue, "momentum_queue_labels": queue_y}
    out = ModelOutput(logits=logits, features=q, extras=extras)
    expected = paco_loss(q, y, logits, log_prior_from_counts(counts), k, queue, queue_y, 0.3, 1.0, 1.0, 0.2, 1.0)
    assert torch.allclose(loss_fn(out, y), expected)


def test_bad_input() -> None:
    loss_fn = PaCoLoss()
    q = F.normalize(torch.randn(2, 3), dim=1)
    out = ModelOutput(logits=torch.randn(2, 2), features=q, extras={"projection": q})
    with pytest.raises(ValueError, match="no class prior"):
        loss_fn(ModelOutput(logits=torch.randn(2, 2), features=q, extras={"projection": q, "momentum_keys": q,
                "momentum_queue": q, "momentum_queue_labels": torch.tensor([0, 1])}), torch.tensor([0, 1]))  # fmt: skip
    loss_fn.set_class_counts(torch.tensor([3.0, 1.0]))
    with pytest.raises(ValueError, match="MomentumEncoder"):
        loss_fn(out, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="hard class-index"):
        loss_fn(out, torch.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="ProjectionHead"):
        loss_fn(ModelOutput(logits=torch.randn(2, 2), features=q), torch.tensor([0, 1]))
    for kwargs in ({"alpha": -1.0}, {"beta": -0.1}, {"gamma": -1}, {"temperature": 0.0}, {"supt": 0.0}):
        with pytest.raises(ValueError):
            PaCoLoss(**kwargs)
    with pytest.raises(ValueError, match="log_prior"):
        paco_loss(q, torch.tensor([0, 1]), torch.randn(2, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="keys"):
        paco_loss(q, torch.tensor([0, 1]), torch.randn(2, 2), torch.zeros(2), keys=torch.randn(3, 3))
