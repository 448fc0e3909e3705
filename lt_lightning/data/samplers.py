"""Seeded, epoch-driven, DDP-aware samplers.

Every training sampler is an :class:`EpochSampler`, a subclass of :class:`torch.utils.data.DistributedSampler`
(so Lightning never wraps it in its own ``DistributedSamplerWrapper``). Each epoch it seeds a private
``torch.Generator`` with ``seed + epoch``, draws ONE global list of indices with :meth:`EpochSampler.draw` -- the
same list on every process -- and yields the strided shard ``global[rank::num_replicas]``. Shards are therefore
disjoint, every process has the same length, and the order depends only on ``(seed, epoch)``; nothing is kept in
the sampler between epochs, so resuming from a checkpoint reproduces the run. A resume from the middle of an epoch
re-draws that epoch and skips what was trained (:meth:`EpochSampler.resume_within_epoch`, set by
:class:`~lt_lightning.data.resumable.ResumableDataLoader`).

Extending: a re-sampling method (class-balanced ``p_c ∝ n_c^q``, square-root, progressively-balanced,
class-aware) subclasses :class:`EpochSampler` and overrides :meth:`EpochSampler.draw` only -- it gets the labels
(``self.labels``), the epoch (``self.epoch``) and the generator, and returns ``total_size`` global indices.
:class:`UnpaddedDistributedSampler` is for evaluation: every sample is seen exactly once across processes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

from lt_lightning._checks import check_int


def _check_replicas(num_replicas: int, rank: int) -> None:
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")


class EpochSampler(DistributedSampler):
    """Base of the training samplers: one seeded global draw per epoch, sharded by rank.

    Args:
        labels: ``[N]`` training labels (kept as ``self.labels`` for subclasses that sample by class).
        num_replicas: world size (number of processes).
        rank: this process's global rank.
        seed: base seed; epoch ``e`` uses ``torch.Generator().manual_seed(seed + e)``.
        num_samples: global draws per epoch (default ``N``); rounded up to a multiple of ``num_replicas``.

    Attributes:
        total_size: global draws per epoch, a multiple of ``num_replicas``.
        num_samples: draws per process, ``total_size // num_replicas`` (``len(self)``).
    """

    def __init__(
        self,
        labels: Tensor,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        num_samples: int | None = None,
    ) -> None:
        _check_replicas(num_replicas, rank)
        labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        if labels.numel() == 0:
            raise ValueError("labels is empty: a sampler needs at least one sample")
        draws = labels.numel() if num_samples is None else num_samples
        if draws < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        # Explicit num_replicas/rank: DistributedSampler then needs no process group.
        super().__init__(
            dataset=range(labels.numel()),  # only len() is used
            num_replicas=num_replicas,
            rank=rank,
            shuffle=False,
            seed=seed,
            drop_last=False,
        )
        self.labels = labels
        self.num_draws = draws
        self.num_samples = math.ceil(draws / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self._resume: tuple[int, int] | None = None

    def resume_within_epoch(self, epoch: int, skip: int) -> None:
        """Make the next iteration, if it draws ``epoch``, start after this process's first ``skip`` indices.

        One-shot: the next ``__iter__`` clears it whatever epoch it draws (an end-of-epoch checkpoint's next epoch
        starts from its beginning).
        """
        check_int("skip", skip, minimum=0)
        self._resume = (int(epoch), skip)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order is drawn next (called by Lightning and by ``train_dataloader``)."""
        self.epoch = int(epoch)

    def draw(self, generator: torch.Generator) -> Tensor:  # pragma: no cover - interface
        """Return ``total_size`` global indices (1-D long tensor) for ``self.epoch``; override in subclasses."""
        raise NotImplementedError

    def global_indices(self, epoch: int | None = None) -> Tensor:
        """The global draw of ``epoch`` (default ``self.epoch``), identical on every process."""
        e = self.epoch if epoch is None else int(epoch)
        generator = torch.Generator().manual_seed(self.seed + e)
        saved, self.epoch = self.epoch, e
        try:
            indices = self.draw(generator)
        finally:
            self.epoch = saved
        indices = torch.as_tensor(indices, dtype=torch.long).flatten()
        return _pad_to(indices, self.total_size)

    def __iter__(self) -> Iterator[int]:
        shard = self.global_indices()[self.rank :: self.num_replicas]
        resume, self._resume = getattr(self, "_resume", None), None
        if resume is not None and resume[0] == self.epoch:
            shard = shard[resume[1] :]
        return iter(shard.tolist())

    def __len__(self) -> int:
        return self.num_samples


def _pad_to(indices: Tensor, total_size: int) -> Tensor:
    """Wrap ``indices`` around (or cut) to exactly ``total_size`` entries."""
    n = indices.numel()
    if n == total_size:
        return indices
    if n == 0:
        raise ValueError(f"draw() returned no indices, expected {total_size}")
    if n > total_size:
        return indices[:total_size]
    reps = math.ceil(total_size / n)
    return indices.repeat(reps)[:total_size]


def permutation_draw(n: int, size: int, generator: torch.Generator) -> Tensor:
    """``size`` indices from back-to-back random permutations of ``range(n)`` (each index once per permutation)."""
    return torch.cat([torch.randperm(n, generator=generator) for _ in range(math.ceil(size / n))])[:size]


class InstanceBalancedSampler(EpochSampler):
    """Instance-balanced sampling: a fresh random permutation every epoch (each image once per epoch).

    Every image has the same probability ``1/N``, i.e. class ``c`` is drawn with ``p_c = n_c / N`` (the ``q = 1``
    member of the ``p_c ∝ n_c^q`` family, Kang et al., "Decoupling Representation and Classifier for Long-Tailed
    Recognition", ICLR 2020). With ``num_samples > N`` further permutations are appended.
    """

    def draw(self, generator: torch.Generator) -> Tensor:
        return permutation_draw(self.labels.numel(), self.total_size, generator)


class UnpaddedDistributedSampler(DistributedSampler):
    """Evaluation sampler: process ``r`` gets ``range(r, N, world)`` in order -- no padding, no shuffling.

    The default ``DistributedSampler`` pads by repeating samples, which double-counts them in per-class accuracy.
    Here every sample is evaluated exactly once; per-process lengths may differ by one, which is fine for
    evaluation (metric states are summed, not averaged per step).

    Args:
        dataset_size: ``N``, the number of samples (an ``int`` or anything with ``len``).
        num_replicas: world size.
        rank: this process's global rank.
    """

    def __init__(self, dataset_size: int | object, num_replicas: int = 1, rank: int = 0) -> None:
        _check_replicas(num_replicas, rank)
        n = dataset_size if isinstance(dataset_size, int) else len(dataset_size)  # type: ignore[arg-type]
        if n < 0:
            raise ValueError(f"dataset_size must be >= 0, got {n}")
        super().__init__(dataset=range(n), num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.dataset_size = n
        self.num_samples = len(range(rank, n, num_replicas))
        self.total_size = n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.dataset_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples
