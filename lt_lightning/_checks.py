"""Argument checks shared across the package: one ``ValueError`` wording for integers, numbers, flags and choices.

Every helper returns the value it accepts (so ``self.x = check_int("x", x, minimum=0)`` reads as one line) and
raises ``ValueError`` naming the argument and the bad value otherwise, in the house wording::

    views must be an integer >= 1, got 0
    n_max must be a positive integer or None, got -1
    on_error must be one of ('raise', 'skip'), got 'ignore'

``bool`` is never an integer or a number here (``True`` is an ``int`` to Python, never a count to a user).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

__all__ = ["check_bool", "check_choice", "check_float", "check_int", "check_probability", "is_integer", "is_number"]


def is_integer(value: Any, numpy: bool = False) -> bool:
    """Whether ``value`` is a Python ``int`` (or, with ``numpy=True``, a NumPy integer) and not a ``bool``."""
    types: tuple[type, ...] = (int, np.integer) if numpy else (int,)
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, types)


def is_number(value: Any, numpy: bool = False) -> bool:
    """Whether ``value`` is a Python ``int`` / ``float`` (or, with ``numpy=True``, a NumPy number) and not a bool."""
    types: tuple[type, ...] = (int, float, np.integer, np.floating) if numpy else (int, float)
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, types)


def check_int(
    name: str,
    value: Any,
    minimum: int | None = None,
    *,
    or_none: bool = False,
    numpy: bool = False,
    what: str | None = None,
) -> Any:
    """Return ``value`` if it is an integer ``>= minimum`` (or ``None`` with ``or_none``), else ``ValueError``.

    The message is ``"{name} must be {what}, got {value!r}"`` with ``what`` defaulting to
    ``"an integer >= {minimum}"`` (``"an integer"`` without a minimum) followed by ``" or None"`` when ``or_none``.

    Args:
        name: the argument's name, as the user writes it.
        value: the value given.
        minimum: the smallest accepted value (inclusive); ``None``: no bound.
        or_none: also accept ``None``.
        numpy: also accept NumPy integers (``np.int64``), returned as they are.
        what: the phrase after "must be" (replaces the default wording, ``" or None"`` included).

    Raises:
        ValueError: ``value`` is a bool, not an integer, or below ``minimum``.
    """
    if value is None and or_none:
        return None
    if not is_integer(value, numpy) or (minimum is not None and value < minimum):
        if what is None:
            what = "an integer" + (f" >= {minimum}" if minimum is not None else "") + (" or None" if or_none else "")
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def check_float(
    name: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    exclusive_minimum: bool = False,
    or_none: bool = False,
    numpy: bool = False,
    what: str | None = None,
) -> Any:
    """Return ``value`` if it is a finite number in the bounds (or ``None`` with ``or_none``), else ``ValueError``.

    NaN and infinities are refused. The message is ``"{name} must be {what}, got {value!r}"`` with ``what``
    defaulting to ``"a finite number"`` plus the bounds (``" >= 1"``, ``" > 0"``, ``" in [0, 1]"``) and
    ``" or None"``.

    Args:
        name: the argument's name.
        value: the value given (an ``int`` or a ``float``; returned unchanged, not converted).
        minimum: lower bound (inclusive unless ``exclusive_minimum``); ``None``: no bound.
        maximum: upper bound (inclusive); ``None``: no bound.
        exclusive_minimum: refuse ``value == minimum``.
        or_none: also accept ``None``.
        numpy: also accept NumPy numbers.
        what: the phrase after "must be" (replaces the default wording).

    Raises:
        ValueError: ``value`` is a bool, not a number, not finite, or out of bounds.
    """
    if value is None and or_none:
        return None
    ok = is_number(value, numpy) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if exclusive_minimum else value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        if what is None:
            if minimum is not None and maximum is not None and not exclusive_minimum:
                bounds = f" in [{minimum}, {maximum}]"
            else:
                bounds = (f" {'>' if exclusive_minimum else '>='} {minimum}" if minimum is not None else "") + (
                    f" <= {maximum}" if maximum is not None else ""
                )
            what = "a finite number" + bounds + (" or None" if or_none else "")
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def check_probability(name: str, value: Any) -> float:
    """``float(value)`` if it is a number in ``[0, 1]``, else ``ValueError`` ("must be a probability in [0, 1]")."""
    if not is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a ``bool``, else ``ValueError`` ("must be a bool")."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return value


def check_choice(name: str, value: T, choices: Sequence[Any], what: str | None = None) -> T:
    """Return ``value`` if it is one of ``choices``, else ``ValueError`` naming them.

    The message is ``"{name} must be one of {tuple(choices)}, got {value!r}"`` (``what`` replaces
    ``"one of {tuple(choices)}"``). Membership is ``value in choices``; a value that cannot be compared is refused.
    """
    try:
        ok = value in choices
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be {what or f'one of {tuple(choices)}'}, got {value!r}")
    return value
