"""``StagedSampler``: one sampler for a run whose second stage samples differently (decoupled training).

Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020: the representation
is learned with instance-balanced sampling, the classifier is then re-trained with class-balanced sampling. A
Lightning train dataloader is built once per fit, so the change of sampling is a change *inside* the sampler: epoch
``e < switch_epoch`` draws the ``first`` sampler's order, epoch ``e >= switch_epoch`` the ``second``'s. Each draw is
the inner sampler's own global draw for ``(seed, e)``, so stage 1 is exactly the run without a second stage, and
the order stays a pure function of ``(seed, epoch)`` (resume-exact, the same global list on every DDP rank).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lt_lightning._checks import check_int
from lt_lightning.data.resampling import ClassBalancedSampler
from lt_lightning.data.samplers import EpochSampler, InstanceBalancedSampler

Factory = Callable[[Tensor, int, int, int], EpochSampler]


class StagedSampler(EpochSampler):
    """``first`` before ``switch_epoch``, ``second`` from it; both must draw the same number of indices per epoch.

    Args:
        labels: ``[N]`` training labels.
        num_replicas: world size.
        rank: this process's global rank.
        seed: base seed (given to both inner samplers).
        switch_epoch: first epoch (0-based) drawn by ``second``; ``0``: ``second`` only.
        first: factory ``(labels, num_replicas, rank, seed) -> EpochSampler`` of stage 1 (default instance-balanced).
        second: factory of stage 2 (default class-balanced, ``p_c = 1/C``).
    """

    def __init__(
        self,
        labels: Tensor,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        *,
        switch_epoch: int,
        first: Factory | None = None,
        second: Factory | None = None,
    ) -> None:
        check_int("switch_epoch", switch_epoch, minimum=0)
        super().__init__(labels, num_replicas=num_replicas, rank=rank, seed=seed)
        self.switch_epoch = switch_epoch
        self.first = (first or InstanceBalancedSampler)(self.labels, num_replicas, rank, seed)
        self.second = (second or ClassBalancedSampler)(self.labels, num_replicas, rank, seed)
        for name, inner in (("first", self.first), ("second", self.second)):
            if not isinstance(inner, EpochSampler):
                raise TypeError(f"StagedSampler: {name} returned {type(inner).__name__}, expected an EpochSampler")
        if self.first.total_size != self.second.total_size:
            raise ValueError(
                "StagedSampler: both stages must draw as many indices per epoch (the train dataloader's length is "
                f"fixed for the fit): first draws {self.first.total_size}, second {self.second.total_size}"
            )
        self.num_samples = self.first.num_samples
        self.total_size = self.first.total_size

    def stage_sampler(self, epoch: int | None = None) -> EpochSampler:
        """The inner sampler that draws ``epoch`` (default ``self.epoch``)."""
        e = self.epoch if epoch is None else int(epoch)
        return self.second if e >= self.switch_epoch else self.first

    def draw(self, generator: torch.Generator) -> Tensor:
        return self.stage_sampler().global_indices(self.epoch)
