"""Switch epochs given as an epoch or as a fraction of the run, so that budgets scale schedules."""

from __future__ import annotations


def validate_switch_epoch(value: int | float, name: str = "switch_epoch") -> int | float:
    """``value`` if it is an integer ``>= 0`` (an epoch) or a float in ``(0, 1)`` (a fraction of ``max_epochs``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be an integer epoch >= 0 or a fraction in (0, 1), got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{name} must be an integer epoch >= 0 or a fraction in (0, 1), got {value!r}")
        return value
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be an integer epoch >= 0 or a fraction in (0, 1), got {value!r}")
    return float(value)


def resolve_switch_epoch(value: int | float, max_epochs: int | None, name: str = "switch_epoch") -> int:
    """The 0-based switch epoch: ``value`` itself, or ``round(value * max_epochs)`` for a fraction.

    LDAM-DRW switches at epoch 160 of 200, i.e. ``0.8``; with a 40-epoch budget ``0.8`` gives epoch 32.
    """
    if isinstance(value, int):
        return value
    if max_epochs is None or max_epochs < 1:
        raise ValueError(f"{name}={value} is a fraction of max_epochs, but trainer.max_epochs is {max_epochs}")
    return int(round(value * max_epochs))
