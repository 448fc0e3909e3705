"""Seeded, epoch-driven, DDP-aware samplers (``lt_lightning.data.samplers``)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from lt_lightning.data.samplers import EpochSampler, InstanceBalancedSampler, UnpaddedDistributedSampler


def _labels(n: int, num_classes: int = 3) -> torch.Tensor:
    return torch.arange(n) % num_classes


# ---------------------------------------------------------------------------------------------- instance-balanced
def test_instance_balanced_is_a_permutation_seeded_by_seed_plus_epoch() -> None:
    n = 23
    sampler = InstanceBalancedSampler(_labels(n), seed=5)
    assert isinstance(sampler, DistributedSampler)  # Lightning never re-wraps a DistributedSampler
    assert len(sampler) == n and sampler.epoch == 0
    order0 = list(sampler)
    assert sorted(order0) == list(range(n))
    assert order0 == torch.randperm(n, generator=torch.Generator().manual_seed(5 + 0)).tolist()
    sampler.set_epoch(3)
    assert sampler.epoch == 3
    order3 = list(sampler)
    assert sorted(order3) == list(range(n))
    assert order3 == torch.randperm(n, generator=torch.Generator().manual_seed(5 + 3)).tolist()
    assert order3 != order0


def test_instance_balanced_deterministic_in_seed_and_epoch_and_stateless() -> None:
    a = InstanceBalancedSampler(_labels(50), seed=1)
    b = InstanceBalancedSampler(_labels(50), seed=1)
    orders = []
    for epoch in range(4):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        first = list(a)
        assert first == list(a)  # iterating again in the same epoch repeats the order (no hidden state)
        assert first == list(b)
        assert first == a.global_indices(epoch).tolist()
        orders.append(first)
    assert len({tuple(o) for o in orders}) == 4  # every epoch differs
    other_seed = InstanceBalancedSampler(_labels(50), seed=2)
    assert list(other_seed) != orders[0]


def test_global_indices_of_another_epoch_leaves_epoch_unchanged() -> None:
    sampler = InstanceBalancedSampler(_labels(10), seed=0)
    sampler.set_epoch(2)
    ahead = sampler.global_indices(7)
    assert sampler.epoch == 2
    sampler.set_epoch(7)
    assert torch.equal(sampler.global_indices(), ahead)


@pytest.mark.parametrize("n", [20, 21])
def test_two_ranks_disjoint_complete_equal_length(n: int) -> None:
    labels = _labels(n)
    ranks = [InstanceBalancedSampler(labels, num_replicas=2, rank=r, seed=9) for r in range(2)]
    for epoch in (0, 1):
        for s in ranks:
            s.set_epoch(epoch)
        shards = [list(s) for s in ranks]
        glob = ranks[0].global_indices().tolist()
        assert glob == ranks[1].global_indices().tolist()  # one global list, identical on every rank
        total = 2 * ((n + 1) // 2)
        assert ranks[0].total_size == total and len(glob) == total
        assert len(shards[0]) == len(shards[1]) == len(ranks[0]) == len(ranks[1]) == total // 2
        assert shards[0] == glob[0::2] and shards[1] == glob[1::2]
        assert set(shards[0]) | set(shards[1]) == set(range(n))  # complete
        if n % 2 == 0:
            assert set(shards[0]).isdisjoint(shards[1])
            assert sorted(shards[0] + shards[1]) == list(range(n))
        else:
            # odd N: total_size = N + 1; the draw is the epoch's permutation of N followed by the first entry of
            # the next permutation from the same generator (the docstring's "further permutations are appended"),
            # so exactly one index is seen twice and the shards share at most that one index
            g = torch.Generator().manual_seed(9 + epoch)
            perm = torch.randperm(n, generator=g).tolist()
            assert glob == perm + torch.randperm(n, generator=g).tolist()[:1]
            assert len(glob) - len(set(glob)) == 1
            assert len(set(shards[0]) & set(shards[1])) <= 1


def test_num_samples_beyond_n_appends_fresh_permutations() -> None:
    sampler = InstanceBalancedSampler(_labels(4), seed=0, num_samples=10)
    assert len(sampler) == 10
    order = list(sampler)
    g = torch.Generator().manual_seed(0)
    expected = torch.cat([torch.randperm(4, generator=g) for _ in range(3)])[:10].tolist()
    assert order == expected
    assert sorted(order[:4]) == sorted(order[4:8]) == [0, 1, 2, 3]


def test_sampler_in_a_dataloader_follows_set_epoch() -> None:
    sampler = InstanceBalancedSampler(_labels(12), seed=4)
    loader = DataLoader(list(range(12)), batch_size=5, sampler=sampler)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        seen = torch.cat(list(loader)).tolist()
        assert seen == sampler.global_indices(epoch).tolist()


class _ShortDraw(EpochSampler):
    """Draws only the first three indices: the base class wraps them around to ``total_size``."""

    def draw(self, generator: torch.Generator) -> torch.Tensor:
        return torch.tensor([2, 0, 1])


class _EmptyDraw(EpochSampler):
    def draw(self, generator: torch.Generator) -> torch.Tensor:
        return torch.zeros(0, dtype=torch.long)


def test_epoch_sampler_subclass_padding_and_empty_draw() -> None:
    assert list(_ShortDraw(_labels(7))) == [2, 0, 1, 2, 0, 1, 2]
    shards = [list(_ShortDraw(_labels(7), num_replicas=2, rank=r)) for r in range(2)]
    assert shards == [[2, 1, 0, 2], [0, 2, 1, 0]]  # global [2, 0, 1, 2, 0, 1, 2, 0] strided
    with pytest.raises(ValueError, match="no indices"):
        list(_EmptyDraw(_labels(3)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_replicas": 0}, "num_replicas must be >= 1, got 0"),
        ({"num_replicas": -2}, "num_replicas"),
        ({"num_replicas": 2, "rank": 2}, r"rank must be in \[0, num_replicas=2\), got 2"),
        ({"rank": -1}, "rank"),
        ({"num_samples": 0}, "num_samples must be >= 1, got 0"),
    ],
)
def test_instance_balanced_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        InstanceBalancedSampler(_labels(5), **kwargs)


def test_instance_balanced_empty_labels() -> None:
    with pytest.raises(ValueError, match="labels is empty"):
        InstanceBalancedSampler(torch.zeros(0, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- unpadded (eval)
@pytest.mark.parametrize(("n", "world"), [(10, 3), (7, 2), (1, 2), (0, 2), (6, 1)])
def test_unpadded_covers_every_index_exactly_once(n: int, world: int) -> None:
    shards = [list(UnpaddedDistributedSampler(n, num_replicas=world, rank=r)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))  # exactly once, no padding
    for r, shard in enumerate(shards):
        assert shard == list(range(r, n, world))
        assert len(UnpaddedDistributedSampler(n, num_replicas=world, rank=r)) == len(shard)


def test_unpadded_hand_example_and_dataset_argument() -> None:
    lens = [len(UnpaddedDistributedSampler(10, num_replicas=4, rank=r)) for r in range(4)]
    assert lens == [3, 3, 2, 2]
    assert list(UnpaddedDistributedSampler(list("abcde"), num_replicas=2, rank=1)) == [1, 3]
    assert list(UnpaddedDistributedSampler(3)) == [0, 1, 2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_replicas": 0}, "num_replicas"),
        ({"num_replicas": 2, "rank": 5}, "rank"),
        ({"num_replicas": 2, "rank": -1}, "rank"),
    ],
)
def test_unpadded_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        UnpaddedDistributedSampler(10, **kwargs)


def test_unpadded_negative_size() -> None:
    with pytest.raises(ValueError, match="dataset_size must be >= 0"):
        UnpaddedDistributedSampler(-1)
