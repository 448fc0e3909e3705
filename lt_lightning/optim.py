"""Learning-rate schedules of the long-tailed recipes, as epoch-indexed ``LRScheduler`` classes.

They are injected into :class:`~lt_lightning.module.LongTailModule` as ``LRSchedulerCallable`` (from YAML:
``lr_scheduler: {class_path: lt_lightning.optim.WarmupMultiStepLR, init_args: {...}}``) and stepped once per
epoch. Each factor is a closed-form function of the epoch, so resuming from any checkpoint gives the same
learning rate as a run that never stopped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class WarmupMultiStepLR(LRScheduler):
    """Linear warm-up followed by step decays: the LDAM-DRW CIFAR recipe (Cao et al., NeurIPS 2019).

    With 0-based epoch ``e`` and base rate ``η``::

        lr(e) = η · (e + 1) / W                     if e < W          (linear warm-up)
        lr(e) = η · Π_{m_i <= e} ... = η · f_k      if e >= m_k        (k = last milestone reached)
        lr(e) = η                                    otherwise

    The paper's recipe is ``W = 5``, milestones ``(160, 180)`` with factors ``(0.01, 0.0001)`` of 200 epochs
    (kaidic/LDAM-DRW ``adjust_learning_rate``). Factors are absolute multipliers of ``η``, not cumulative.

    Args:
        optimizer: wrapped optimizer.
        warmup_epochs: ``W`` (0 disables warm-up).
        milestones: epochs at which the factor changes, strictly increasing.
        factors: multiplier of the base rate from each milestone on; same length as ``milestones``.
        last_epoch: the index of the last epoch (for resuming by hand; Lightning restores the state itself).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_epochs: int = 5,
        milestones: Sequence[int] = (160, 180),
        factors: Sequence[float] = (0.01, 0.0001),
        last_epoch: int = -1,
    ) -> None:
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        milestones, factors = list(milestones), list(factors)
        if len(milestones) != len(factors):
            raise ValueError(f"milestones ({milestones}) and factors ({factors}) must have the same length")
        if any(b <= a for a, b in zip(milestones, milestones[1:], strict=False)):
            raise ValueError(f"milestones must be strictly increasing, got {milestones}")
        if any(f < 0 or not math.isfinite(f) for f in factors):
            raise ValueError(f"factors must be finite and non-negative, got {factors}")
        self.warmup_epochs = warmup_epochs
        self.milestones = milestones
        self.factors = factors
        super().__init__(optimizer, last_epoch)

    def factor(self, epoch: int) -> float:
        """The multiplier of the base rate in (0-based) ``epoch``."""
        if epoch < self.warmup_epochs:
            return (epoch + 1) / self.warmup_epochs
        result = 1.0
        for milestone, factor in zip(self.milestones, self.factors, strict=True):
            if epoch >= milestone:
                result = factor
        return result

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]


class WarmupCosineLR(LRScheduler):
    """Optional linear warm-up, then cosine annealing to ``eta_min`` over ``max_epochs`` (Loshchilov & Hutter 2017).

    ``lr(e) = η (e + 1) / W`` for ``e < W``, else
    ``lr(e) = eta_min + (η - eta_min) · (1 + cos(π (e - W) / (T - W))) / 2`` with ``T = max_epochs``.

    Args:
        optimizer: wrapped optimizer.
        max_epochs: ``T``, the epoch count the cosine spans (usually ``trainer.max_epochs``).
        warmup_epochs: ``W``; ``0 <= W < T``.
        eta_min: final learning rate.
        last_epoch: the index of the last epoch.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_epochs: int,
        warmup_epochs: int = 0,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if max_epochs <= 0:
            raise ValueError(f"max_epochs must be positive, got {max_epochs}")
        if not 0 <= warmup_epochs < max_epochs:
            raise ValueError(f"warmup_epochs must be in [0, max_epochs={max_epochs}), got {warmup_epochs}")
        if eta_min < 0:
            raise ValueError(f"eta_min must be >= 0, got {eta_min}")
        self.max_epochs = max_epochs
        self.warmup_epochs = warmup_epochs
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        """Learning rate in (0-based) ``epoch`` for base rate ``base_lr``."""
        if epoch < self.warmup_epochs:
            return base_lr * (epoch + 1) / self.warmup_epochs
        progress = min(1.0, (epoch - self.warmup_epochs) / (self.max_epochs - self.warmup_epochs))
        return self.eta_min + (base_lr - self.eta_min) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        return [self.lr_at(base, self.last_epoch) for base in self.base_lrs]
