"""Learning-rate schedules of the long-tailed recipes, as epoch-indexed ``LRScheduler`` classes.

They are injected into :class:`~lt_lightning.module.LongTailModule` as ``LRSchedulerCallable`` (from YAML:
``lr_scheduler: {class_path: lt_lightning.optim.WarmupMultiStepLR, init_args: {...}}``) and stepped once per
epoch. Each factor is a closed-form function of the epoch, so resuming from any checkpoint gives the same
learning rate as a run that never stopped.

Every epoch-valued argument is an epoch (``int``) or a fraction of the run (``float`` in ``(0, 1)``, see
:mod:`lt_lightning.schedule`): ``milestones: [0.8, 0.9]`` is LDAM-DRW's ``[160, 180]`` at 200 epochs and ``[8, 9]``
at 10, so ``--trainer.max_epochs`` rescales the whole schedule. The run's length ``T`` comes from ``total_epochs``
when given, else from the module that builds the scheduler (:func:`lt_lightning.schedule.current_run`).
Fractions resolve once, at construction, and the resolved epochs are saved with the scheduler's state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from lt_lightning._checks import check_int
from lt_lightning.schedule import EpochValue, current_run, resolve_epoch, resolve_length


def _run_length(total_epochs: int | None) -> tuple[int | None, bool]:
    """``(total_epochs, True)`` if given, else the ``(length, strict)`` of the run the module builds the scheduler
    for."""
    check_int("total_epochs", total_epochs, minimum=1, or_none=True)
    return (total_epochs, True) if total_epochs is not None else current_run()


class WarmupMultiStepLR(LRScheduler):
    """Linear warm-up followed by step decays: the LDAM-DRW CIFAR recipe (Cao et al., NeurIPS 2019).

    With 0-based epoch ``e`` and base rate ``η``::

        lr(e) = η · (e + 1) / W                     if e < W          (linear warm-up)
        lr(e) = η · Π_{m_i <= e} ... = η · f_k      if e >= m_k        (k = last milestone reached)
        lr(e) = η                                    otherwise

    The paper's recipe is ``W = 5``, milestones ``(160, 180)`` with factors ``(0.01, 0.0001)`` of 200 epochs
    (kaidic/LDAM-DRW ``adjust_learning_rate``: ``epoch + 1 <= 5`` warms up, ``epoch + 1 > 160`` and ``> 180`` decay),
    i.e. ``warmup_epochs=0.025, milestones=(0.8, 0.9)`` as fractions of the run. Factors are absolute multipliers
    of ``η``, not cumulative. Two fractional milestones that round to the same epoch of a very short run keep the
    later factor from there.

    Args:
        optimizer: wrapped optimizer.
        warmup_epochs: ``W``: epochs (0 disables warm-up) or a fraction of the run (at least one epoch).
        milestones: epochs, or fractions of the run, at which the factor changes; strictly increasing.
        factors: multiplier of the base rate from each milestone on; same length as ``milestones``.
        total_epochs: the run's length for fractions; ``None``: the length of the fit that builds the scheduler.
        last_epoch: the index of the last epoch (for resuming by hand; Lightning restores the state itself).

    Raises:
        ValueError: mismatched or non-increasing milestones, negative factors, an integer warm-up or milestone
            at or beyond the end of a known run, a fraction without a known run length.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_epochs: EpochValue = 5,
        milestones: Sequence[EpochValue] = (160, 180),
        factors: Sequence[float] = (0.01, 0.0001),
        total_epochs: int | None = None,
        last_epoch: int = -1,
    ) -> None:
        milestones, factors = list(milestones), list(factors)
        if len(milestones) != len(factors):
            raise ValueError(f"milestones ({milestones}) and factors ({factors}) must have the same length")
        if any(b <= a for a, b in zip(milestones, milestones[1:], strict=False)):
            raise ValueError(f"milestones must be strictly increasing, got {milestones}")
        if any(f < 0 or not math.isfinite(f) for f in factors):
            raise ValueError(f"factors must be finite and non-negative, got {factors}")
        run, strict = _run_length(total_epochs)
        owner = type(self).__name__
        if isinstance(warmup_epochs, int) and not isinstance(warmup_epochs, bool) and warmup_epochs == 0:
            self.warmup_epochs = 0
        else:
            self.warmup_epochs = resolve_length(warmup_epochs, run, "warmup_epochs", owner, strict)
        self.milestones = [resolve_epoch(m, run, "milestones", owner, strict) for m in milestones]
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
        max_epochs: ``T``, the epochs the cosine spans: ``None`` (default) the whole run, an ``int`` a number of
            epochs (at most the run), or a fraction of the run (``0.75``: the first 30 epochs of a 40-epoch run
            whose last 10 are a classifier stage with its own schedule).
        warmup_epochs: ``W``: epochs or a fraction of the run; ``0 <= W < T``.
        eta_min: final learning rate.
        total_epochs: the run's length for ``None`` and fractions; ``None``: the length of the fit that builds the
            scheduler.
        last_epoch: the index of the last epoch.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_epochs: EpochValue | None = None,
        warmup_epochs: EpochValue = 0,
        eta_min: float = 0.0,
        total_epochs: int | None = None,
        last_epoch: int = -1,
    ) -> None:
        run, strict = _run_length(total_epochs)
        owner = type(self).__name__
        if max_epochs is None:
            if run is None:
                raise ValueError(f"{owner}: max_epochs=None spans the run, but the run's length is unknown here")
            max_epochs = run
        else:
            max_epochs = resolve_length(max_epochs, run, "max_epochs", owner, strict)
        if isinstance(warmup_epochs, float):  # a fraction: at least one epoch, but one cosine epoch in a tiny run
            warmup_epochs = min(resolve_length(warmup_epochs, run, "warmup_epochs", owner, strict), max_epochs - 1)
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
