"""Relative accuracy (Zhang et al., "Deep Long-Tailed Learning: A Survey", TPAMI 2023, Sec. 4) and seed statistics.

For a method trained on a long-tailed set and tested on a balanced test set:

* ``A_t``: its test accuracy trained on the long-tailed set;
* ``A_v``: plain softmax cross-entropy trained on the balanced reference set (same total size, same source);
* ``A_b``: the method itself trained on the balanced reference set;
* upper reference accuracy ``UA = max(A_v, A_b)``;
* relative accuracy ``RA = A_t / UA``.

RA near 1 means the method gets about as far on the long tail as the same budget gets on balanced data; it separates
"better at long-tailed learning" from "better in general" (a method that also lifts ``A_b`` raises ``UA``). Per
seed ``s`` the study pairs ``A_t(s)``, ``A_v(s)`` and ``A_b(s)`` and reports the mean and standard deviation of
the per-seed values (:func:`mean_std`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _check_accuracy(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be an accuracy in [0, 1], got {value!r}")
    return value


def upper_reference_accuracy(vanilla_balanced: float, method_balanced: float) -> float:
    """``UA = max(A_v, A_b)``: the better of plain CE and the method, both trained on the balanced reference set.

    Raises:
        ValueError: an accuracy outside ``[0, 1]`` or not finite.
    """
    return max(_check_accuracy(vanilla_balanced, "A_v"), _check_accuracy(method_balanced, "A_b"))


def relative_accuracy(long_tailed: float, vanilla_balanced: float, method_balanced: float) -> float:
    """``RA = A_t / max(A_v, A_b)`` (may exceed 1 when the long-tailed run beats both balanced runs).

    Raises:
        ValueError: an accuracy outside ``[0, 1]``, or ``UA = 0`` (RA undefined).
    """
    upper = upper_reference_accuracy(vanilla_balanced, method_balanced)
    if upper == 0.0:
        raise ValueError("UA = max(A_v, A_b) is 0: relative accuracy is undefined")
    return _check_accuracy(long_tailed, "A_t") / upper


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and sample standard deviation (``ddof = 1``) of the values that are not ``None``, and their number.

    ``(None, None, 0)`` without values; the standard deviation is ``None`` for a single value.
    """
    present = [float(v) for v in values if v is not None]
    n = len(present)
    if n == 0:
        return None, None, 0
    mean = sum(present) / n
    if n == 1:
        return mean, None, 1
    return mean, math.sqrt(sum((v - mean) ** 2 for v in present) / (n - 1)), n


def format_mean_std(values: Sequence[float | None], scale: float = 100.0, digits: int = 2) -> str:
    """``"93.25 ± 0.41"`` (values times ``scale``), ``"93.25"`` for one value, ``"–"`` for none."""
    mean, std, _ = mean_std(values)
    if mean is None:
        return "–"
    text = f"{scale * mean:.{digits}f}"
    return text if std is None else f"{text} ± {scale * std:.{digits}f}"


__all__ = ["format_mean_std", "mean_std", "relative_accuracy", "upper_reference_accuracy"]
