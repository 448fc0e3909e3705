"""Epoch-valued recipe settings as epochs or as fractions of the run, so that a budget change rescales a recipe.

A recipe written for ``T_ref`` epochs -- LDAM-DRW (Cao et al., NeurIPS 2019): warm-up 5, LR x0.01 at 160 and
x0.0001 at 180, deferred re-weighting from 160, of 200 -- keeps its shape at any budget when its epochs are
fractions of the run: ``0.8`` is epoch 160 of 200, 32 of 40, 8 of 10. One convention holds everywhere in
lt_lightning (LR schedules, DRW / DRS switches, the progressive schedule, classifier stages, the mixing stop,
pre-stages):

* an ``int`` is an absolute 0-based epoch (a *point*) or a number of epochs (a *length*); a point at or beyond the
  end of the run, or a length longer than the run, is an error -- it would silently never happen;
* a ``float`` in ``(0, 1)`` is a fraction of the run ``T = trainer.max_epochs``: a point resolves to
  ``round(f · T)``, a length to ``max(1, round(f · T))``. A fractional point that rounds to the end of a very short
  run (``0.8`` of a 1-epoch run) warns instead, since tiny budgets are legitimate smoke tests.

LR schedulers built by :class:`~lt_lightning.module.LongTailModule` learn ``T`` from :func:`current_run`,
which the module sets around the scheduler factory (:func:`run_epochs`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from lightning.pytorch.utilities import rank_zero_warn

from lt_lightning._checks import is_number

#: an absolute epoch (``int``) or a fraction of the run (``float`` in ``(0, 1)``)
EpochValue = int | float

_RUN: ContextVar[tuple[int | None, bool]] = ContextVar("lt_lightning_run_epochs", default=(None, True))


def validate_epoch_value(value: EpochValue, name: str) -> EpochValue:
    """``value`` if it is an integer ``>= 0`` (an epoch) or a float in ``(0, 1)`` (a fraction of the run).

    Raises:
        ValueError: anything else (``1.0``, a negative number, a bool, a string), naming ``name``.
    """
    message = f"{name} must be an integer epoch >= 0 or a fraction of the run in (0, 1), got {value!r}"
    if not is_number(value):
        raise ValueError(message)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(message)
        return value
    if not 0.0 < value < 1.0:
        raise ValueError(message)
    return float(value)


def _check_run(value: EpochValue, run_epochs: int | None, name: str) -> int:
    if run_epochs is None or isinstance(run_epochs, bool) or run_epochs < 1:
        raise ValueError(f"{name}={value} is a fraction of the run, but the run's length is {run_epochs!r}")
    return int(run_epochs)


def resolve_epoch(value: EpochValue, run_epochs: int | None, name: str, owner: str = "", strict: bool = True) -> int:
    """The 0-based epoch of a schedule *point* (a switch, a milestone): ``value`` or ``round(value · T)``.

    Args:
        value: an epoch (``int >= 0``) or a fraction of the run (``float`` in ``(0, 1)``).
        run_epochs: ``T``, the run's ``trainer.max_epochs`` (``None``: unknown; then only integers resolve and
            nothing is checked against the run).
        name: the setting's name, for messages.
        owner: the class that owns the setting, for messages.
        strict: check integers against the run (``False`` under ``fast_dev_run``, a one-step wiring check).

    Raises:
        ValueError: an integer point at or beyond the end of the run (it would never take effect), or a fraction
            without a known run length.
    """
    value = validate_epoch_value(value, name)
    prefix = f"{owner}: " if owner else ""
    if isinstance(value, int):
        if strict and run_epochs is not None and value >= run_epochs:
            raise ValueError(
                f"{prefix}{name}={value} is at or beyond the end of a run of trainer.max_epochs={run_epochs}: it would "
                f"never take effect; give it as a fraction of the run (a float in (0, 1), which scales "
                "with the budget) or lengthen the run"
            )
        return value
    total = _check_run(value, run_epochs, name)
    epoch = int(round(value * total))
    if epoch >= total and strict:
        rank_zero_warn(f"{prefix}{name}={value} of a {total}-epoch run is epoch {epoch}: it never takes effect")
    return epoch


def resolve_length(value: EpochValue, run_epochs: int | None, name: str, owner: str = "", strict: bool = True) -> int:
    """A number of epochs (a warm-up, a stage): ``value`` or ``max(1, round(value · T))`` (``strict``: as in
    :func:`resolve_epoch`).

    Raises:
        ValueError: an integer length ``< 1`` or longer than the run, or a fraction without a known run length.
    """
    prefix = f"{owner}: " if owner else ""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"{prefix}{name} must be an integer >= 1 or a fraction in (0, 1), got {value!r}")
        if strict and run_epochs is not None and value > run_epochs:
            raise ValueError(
                f"{prefix}{name}={value} epochs is longer than the run (trainer.max_epochs={run_epochs}): give it as a "
                "fraction of the run (it then scales with the budget) or lengthen the run"
            )
        return value
    value = validate_epoch_value(value, name)
    return max(1, int(round(value * _check_run(value, run_epochs, name))))


@contextlib.contextmanager
def run_epochs(epochs: int | None, strict: bool = True) -> Iterator[None]:
    """Within the block, :func:`current_run` is ``(epochs, strict)`` (the module builds its LR scheduler inside)."""
    token = _RUN.set((epochs, strict))
    try:
        yield
    finally:
        _RUN.reset(token)


def current_run() -> tuple[int | None, bool]:
    """``(length, strict)`` of the run whose LR scheduler is being built (``(None, True)`` outside
    :func:`run_epochs`)."""
    return _RUN.get()
