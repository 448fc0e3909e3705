"""``BilateralSampler``: BBN's two data samplers in one training batch.

Zhou, Cui, Wei, Chen, "BBN: Bilateral-Branch Network with Cumulative Learning for Long-Tailed Visual Recognition",
CVPR 2020, Sec. 3.2: the conventional branch is fed by the uniform (instance-balanced) sampler, every image once per
epoch; the re-balancing branch by the *reversed* sampler, which draws class ``c`` with probability

    p_c = w_c / sum_k w_k,   w_c = n_max / n_c          (so p_c ∝ 1 / n_c),

and, within the class, an image uniformly at random, with replacement (megvii-research/BBN,
``lib/dataset/imbalance_cifar.py``: ``get_weight``, ``sample_class_index_by_weight``, ``random.choice``). The
reference pairs every instance-balanced image with one reversed draw, so an epoch has as many reversed draws as
instance-balanced ones; its loader drops the last partial batch (``drop_last=True``).

Here one training batch carries both: per process the sampler yields blocks of ``branch_batch_size`` indices from the
instance-balanced draw followed by ``branch_batch_size`` from the reversed draw, so a ``DataLoader`` with
``batch_size = 2 * branch_batch_size`` sees ``[conventional half | reversed half]`` (what
:class:`~lt_lightning.backbones.bbn.BBNResNetCifar` and :class:`~lt_lightning.losses.bbn.BilateralLoss` expect).

Both draws of epoch ``e`` come from one ``torch.Generator`` seeded with ``seed + e`` (instance-balanced permutation
first, then the reversed multinomial), identically on every process: process ``r`` takes ``conventional[r::W]`` and
``reversed[r::W]`` (``W`` processes), and the one global list returned by :meth:`BilateralSampler.draw` interleaves
the per-process sequences so that :class:`~lt_lightning.data.samplers.EpochSampler`'s strided shard
``global[r::W]`` is exactly process ``r``'s sequence. Every process has the same length, a multiple of
``2 * branch_batch_size``, so every batch is full and both halves are always equal.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lt_lightning._checks import check_int
from lt_lightning.data.resampling import class_power_probabilities, sample_probabilities
from lt_lightning.data.samplers import EpochSampler, permutation_draw

__all__ = ["BilateralSampler", "PowerBilateralSampler", "reversed_class_probabilities"]


def reversed_class_probabilities(class_counts: Tensor) -> Tensor:
    """BBN's reversed sampler: ``p_c = w_c / sum_k w_k`` with ``w_c = n_max / n_c``, i.e. ``p_c ∝ 1 / n_c`` (float64).

    A class with ``n_c = 0`` gets ``p_c = 0`` (it cannot be drawn).

    Args:
        class_counts: ``[C]`` training images per class.
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    if counts.numel() == 0:
        raise ValueError("class_counts is empty")
    if not torch.isfinite(counts).all() or (counts < 0).any():
        raise ValueError(f"class_counts must be finite and non-negative, got {counts.tolist()}")
    if not (counts > 0).any():
        raise ValueError(f"class_counts has no class with a training image: {counts.tolist()}")
    weights = torch.where(counts > 0, counts.max() / counts.clamp_min(1.0), torch.zeros_like(counts))
    return weights / weights.sum()


class BilateralSampler(EpochSampler):
    """Per process: blocks of ``branch_batch_size`` instance-balanced indices, then as many reversed-sampler ones.

    YAML (``data.init_args``; the training batch must be ``2 * branch_batch_size``)::

        batch_size: 256
        sampler:
          class_path: lt_lightning.data.bilateral_sampler.BilateralSampler
          init_args: {branch_batch_size: 128}

    Args:
        labels: ``[N]`` training labels.
        num_replicas: world size ``W``.
        rank: this process's global rank.
        seed: base seed (epoch ``e`` draws with ``seed + e``).
        branch_batch_size: ``B``, images per branch in one batch (BBN's CIFAR recipe: 128).
        drop_last: drop the instance-balanced draws that do not fill a whole block on every process (the reference's
            ``drop_last=True``): ``K = floor(N / (W B))`` blocks per process. ``False`` pads with a further random
            permutation to ``K = ceil(N / (W B))``. Either way ``K >= 1``: when ``N < W B`` the block is padded.

    Attributes:
        branch_batch_size: ``B``.
        num_blocks: ``K``, batches per process and epoch.
        branch_draws: ``W K B``, global draws per branch and epoch.
        class_counts: ``[C]`` training images per class.
        reversed_probabilities: ``[C]`` float64 class probabilities of the reversed sampler.
    """

    def __init__(
        self,
        labels: Tensor,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        *,
        branch_batch_size: int,
        drop_last: bool = True,
    ) -> None:
        check_int("branch_batch_size", branch_batch_size, minimum=1)
        labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        if labels.numel() == 0:
            raise ValueError("labels is empty: a sampler needs at least one sample")
        if labels.min() < 0:
            raise ValueError(f"labels must be >= 0, got {int(labels.min())}")
        if isinstance(num_replicas, int) and num_replicas >= 1:
            per_block = num_replicas * branch_batch_size
            blocks = labels.numel() // per_block if drop_last else math.ceil(labels.numel() / per_block)
            blocks = max(blocks, 1)
        else:
            blocks = 1  # the base class reports the bad num_replicas
        super().__init__(
            labels,
            num_replicas=num_replicas,
            rank=rank,
            seed=seed,
            num_samples=2 * blocks * branch_batch_size * num_replicas,
        )
        self.branch_batch_size = branch_batch_size
        self.drop_last = bool(drop_last)
        self.num_blocks = blocks
        self.branch_draws = blocks * branch_batch_size * num_replicas
        self.class_counts = torch.bincount(self.labels)
        self.reversed_probabilities = reversed_class_probabilities(self.class_counts)
        self._image_probabilities = sample_probabilities(self.labels, self.reversed_probabilities)

    def branch_draws_of(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The two global draws (``branch_draws`` each) from ``generator``: instance-balanced, then reversed."""
        conventional = permutation_draw(self.labels.numel(), self.branch_draws, generator)
        reversed_ = torch.multinomial(
            self._image_probabilities, self.branch_draws, replacement=True, generator=generator
        )
        return conventional, reversed_

    def draw(self, generator: torch.Generator) -> Tensor:
        """One global list whose strided shard ``[r::W]`` is process ``r``'s ``[conv block | reversed block] * K``."""
        conventional, reversed_ = self.branch_draws_of(generator)
        w, k, b = self.num_replicas, self.num_blocks, self.branch_batch_size
        # process r's share of a branch draw is draw[r::W]: row r of draw.view(K B, W).T
        conv = conventional.view(k * b, w).T.reshape(w, k, 1, b)
        rev = reversed_.view(k * b, w).T.reshape(w, k, 1, b)
        per_process = torch.cat([conv, rev], dim=2).reshape(w, 2 * k * b)  # [W, 2 K B]
        return per_process.T.flatten()  # global[j W + r] = per_process[r, j]

    def branch_indices(self, epoch: int | None = None) -> tuple[Tensor, Tensor]:
        """The global instance-balanced and reversed draws of ``epoch`` (default ``self.epoch``), each ``[W K B]``."""
        e = self.epoch if epoch is None else int(epoch)
        return self.branch_draws_of(torch.Generator().manual_seed(self.seed + e))


class PowerBilateralSampler(BilateralSampler):
    """:class:`BilateralSampler` whose second half draws class ``c`` with ``p_c = n_c^q / sum_k n_k^q`` instead of BBN's
    reversed ``p_c ∝ 1 / n_c`` (with replacement, an image uniformly within its class).

    GLMC's re-balanced loader (Du et al., CVPR 2023; ynu-yangpeng/GLMC ``GLMC-2023/main.py``): a
    ``WeightedRandomSampler`` with replacement and image weights ``n_{y_i}^{-r}`` (``r = --resample_weighting``),
    i.e. class probabilities ``∝ n_c^{1 - r}``: ``q = 1 - r`` here (Kang et al.'s family, ICLR 2020, Eq. 1). Its
    CIFAR rho = 100 runs use ``r = 0`` (``q = 1``: instance-balanced draws with replacement), its rho = 50 and 10
    CIFAR-100 runs ``r = 0.2`` (``q = 0.8``). The first half is the instance-balanced permutation, as BBN's.

    Args:
        labels, num_replicas, rank, seed, branch_batch_size, drop_last: as :class:`BilateralSampler`.
        q: exponent in ``[0, 1]`` of the second half's class probabilities (1 instance-balanced, 0 class-balanced).

    Attributes:
        reversed_probabilities: ``[C]`` float64 class probabilities of the second half, ``∝ n_c^q``.
    """

    def __init__(
        self,
        labels: Tensor,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        *,
        branch_batch_size: int,
        drop_last: bool = True,
        q: float = 1.0,
    ) -> None:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= float(q) <= 1.0:
            raise ValueError(f"q must be a number in [0, 1] (second half: p_c ∝ n_c^q), got {q!r}")
        super().__init__(labels, num_replicas, rank, seed, branch_batch_size=branch_batch_size, drop_last=drop_last)
        self.q = float(q)
        self.reversed_probabilities = class_power_probabilities(self.class_counts, self.q)
        self._image_probabilities = sample_probabilities(self.labels, self.reversed_probabilities)
