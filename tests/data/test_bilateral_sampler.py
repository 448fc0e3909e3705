"""``BilateralSampler``: BBN's instance-balanced and reversed draws, block layout, seeding, DDP shards."""

from __future__ import annotations

import functools

import pytest
import torch

from lt_lightning.data.bilateral_sampler import BilateralSampler, reversed_class_probabilities
from lt_lightning.data.synthetic import SyntheticLTDataModule

# 3 classes, n = [12, 6, 2]: N = 20
LABELS = torch.tensor([0] * 12 + [1] * 6 + [2] * 2)


def _halves(order: list[int], b: int) -> tuple[list[int], list[int]]:
    """Split a per-process order into its conventional and reversed halves (blocks of ``b``)."""
    assert len(order) % (2 * b) == 0
    conventional, reversed_ = [], []
    for start in range(0, len(order), 2 * b):
        conventional += order[start : start + b]
        reversed_ += order[start + b : start + 2 * b]
    return conventional, reversed_


# ---------------------------------------------------------------------------------------------- probabilities
def test_reversed_class_probabilities_by_hand() -> None:
    # BBN's get_weight: w_c = n_max / n_c = [1, 10, 100]; p = w / 111
    p = reversed_class_probabilities(torch.tensor([100, 10, 1]))
    assert p.dtype == torch.float64
    assert torch.allclose(p, torch.tensor([1 / 111, 10 / 111, 100 / 111], dtype=torch.float64))
    # p_c ∝ 1 / n_c, and an empty class is never drawn
    p = reversed_class_probabilities(torch.tensor([4, 0, 2, 1]))
    assert torch.allclose(p, torch.tensor([0.25, 0.0, 0.5, 1.0], dtype=torch.float64) / 1.75)
    for bad, match in [([], "empty"), ([1, -1], "non-negative"), ([0, 0], "no class"), ([1, float("nan")], "finite")]:
        with pytest.raises(ValueError, match=match):
            reversed_class_probabilities(torch.tensor(bad, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------- layout
def test_blocks_of_conventional_then_reversed_halves() -> None:
    sampler = BilateralSampler(LABELS, branch_batch_size=4)
    assert sampler.num_blocks == 5 and len(sampler) == 40 and sampler.branch_draws == 20
    order = list(sampler)
    conventional, reversed_ = _halves(order, 4)
    assert len(conventional) == len(reversed_) == 20
    assert sorted(conventional) == list(range(20))  # instance-balanced: every image once per epoch
    expected_conv, expected_rev = sampler.branch_indices(0)
    assert conventional == expected_conv.tolist() and reversed_ == expected_rev.tolist()


@pytest.mark.parametrize(
    ("drop_last", "b", "replicas", "blocks"),
    [(True, 8, 1, 2), (False, 8, 1, 3), (True, 8, 2, 1), (False, 8, 2, 2), (True, 32, 1, 1), (True, 16, 2, 1)],
)
def test_number_of_blocks_drop_or_pad(drop_last: bool, b: int, replicas: int, blocks: int) -> None:
    samplers = [
        BilateralSampler(LABELS, replicas, r, branch_batch_size=b, drop_last=drop_last) for r in range(replicas)
    ]
    for s in samplers:
        assert s.num_blocks == blocks and len(s) == len(list(s)) == 2 * blocks * b
    conventional = [i for s in samplers for i in _halves(list(s), b)[0]]
    if replicas * blocks * b <= LABELS.numel():  # dropped tail: no image twice
        assert len(set(conventional)) == len(conventional)
    else:  # padded with a further permutation: every image at least once
        assert set(conventional) == set(range(LABELS.numel()))


def test_same_seed_and_epoch_give_the_same_order_others_differ() -> None:
    a = BilateralSampler(LABELS, seed=3, branch_batch_size=4)
    b = BilateralSampler(LABELS, seed=3, branch_batch_size=4)
    a.set_epoch(5)
    b.set_epoch(5)
    assert list(a) == list(b) == a.global_indices(5).tolist()
    b.set_epoch(6)
    assert list(a) != list(b)
    assert list(BilateralSampler(LABELS, seed=4, branch_batch_size=4)) != list(
        BilateralSampler(LABELS, seed=3, branch_batch_size=4)
    )


def test_class_frequencies_over_many_epochs() -> None:
    """Reversed halves draw class c with p_c ∝ 1/n_c; conventional halves with n_c / N."""
    sampler = BilateralSampler(LABELS, branch_batch_size=5)
    counts_conv = torch.zeros(3)
    counts_rev = torch.zeros(3)
    epochs = 400
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        conventional, reversed_ = _halves(list(sampler), 5)
        counts_conv += torch.bincount(LABELS[conventional], minlength=3)
        counts_rev += torch.bincount(LABELS[reversed_], minlength=3)
    assert counts_conv.tolist() == [12.0 * epochs, 6.0 * epochs, 2.0 * epochs]
    expected = torch.tensor([1 / 12, 1 / 6, 1 / 2]) / (1 / 12 + 1 / 6 + 1 / 2)  # [0.1, 0.2, 0.6]
    freq = counts_rev / counts_rev.sum()  # 8000 draws: std of a frequency <= 0.0055
    assert torch.allclose(freq, expected.float(), atol=0.02), freq
    # within a class the reversed draw is uniform over its images (class 2: images 18 and 19)
    per_image = torch.zeros(20)
    for epoch in range(epochs):
        per_image += torch.bincount(sampler.branch_indices(epoch)[1], minlength=20)
    assert abs(per_image[18].item() / (per_image[18] + per_image[19]).item() - 0.5) < 0.03


# ---------------------------------------------------------------------------------------------- DDP shards
@pytest.mark.parametrize("drop_last", [True, False])
def test_two_replicas_disjoint_and_complete(drop_last: bool) -> None:
    b = 3
    shards = [BilateralSampler(LABELS, 2, r, seed=7, branch_batch_size=b, drop_last=drop_last) for r in range(2)]
    for s in shards:
        s.set_epoch(2)
    orders = [list(s) for s in shards]
    assert len(orders[0]) == len(orders[1])  # same number of batches on every process
    # the global draws are identical on every process
    assert torch.equal(shards[0].global_indices(2), shards[1].global_indices(2))
    for i in range(2):
        assert torch.equal(shards[0].branch_indices(2)[i], shards[1].branch_indices(2)[i])
    # complete in the sense of EpochSampler: the shards are global[r::2] and together make the global list
    global_list = shards[0].global_indices(2)
    for r in range(2):
        assert orders[r] == global_list[r::2].tolist()
    assert sorted(orders[0] + orders[1]) == sorted(global_list.tolist())
    # per branch: the processes' halves are the strided shards of that branch's global draw
    conventional, reversed_ = shards[0].branch_indices(2)
    for r in range(2):
        conv_r, rev_r = _halves(orders[r], b)
        assert conv_r == conventional[r::2].tolist() and rev_r == reversed_[r::2].tolist()
    conv_all = _halves(orders[0], b)[0] + _halves(orders[1], b)[0]
    assert sorted(conv_all) == sorted(conventional.tolist())
    if drop_last:  # one permutation, cut: the two processes' conventional images are disjoint
        assert not set(_halves(orders[0], b)[0]) & set(_halves(orders[1], b)[0])


# ---------------------------------------------------------------------------------------------- loader
def test_datamodule_batches_are_conventional_then_reversed_halves() -> None:
    dm = SyntheticLTDataModule(
        num_classes=3,
        n_max=16,
        imbalance_ratio=4,
        image_size=2,
        batch_size=8,
        augment=False,
        seed=1,
        sampler=functools.partial(BilateralSampler, branch_batch_size=4),
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    sampler = loader.sampler
    assert isinstance(sampler, BilateralSampler)
    conventional, reversed_ = sampler.branch_indices(0)
    batches = list(loader)
    assert len(batches) == sampler.num_blocks == 28 // 4
    for k, (images, labels) in enumerate(batches):
        assert images.shape[0] == labels.shape[0] == 8
        idx_c, idx_r = conventional[4 * k : 4 * k + 4], reversed_[4 * k : 4 * k + 4]
        assert torch.equal(labels[:4], dm.train_labels[idx_c]) and torch.equal(labels[4:], dm.train_labels[idx_r])
        assert torch.equal(images[:4], dm.train_dataset.images[idx_c])


def test_bad_arguments() -> None:
    for bad in (0, -2, True, 2.5, None):
        with pytest.raises(ValueError, match="branch_batch_size must be"):
            BilateralSampler(LABELS, branch_batch_size=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="labels is empty"):
        BilateralSampler(torch.tensor([], dtype=torch.long), branch_batch_size=2)
    with pytest.raises(ValueError, match="labels must be >= 0"):
        BilateralSampler(torch.tensor([0, -1, 1]), branch_batch_size=2)
    with pytest.raises(ValueError, match="rank must be in"):
        BilateralSampler(LABELS, 2, 2, branch_batch_size=2)
    with pytest.raises(ValueError, match="num_replicas must be"):
        BilateralSampler(LABELS, 0, 0, branch_batch_size=2)
