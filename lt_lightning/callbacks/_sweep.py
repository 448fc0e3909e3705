"""What the test-time callbacks that sweep a parameter on the validation set share: the grid's checks and the curve
file written into the run's log directory."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl

from lt_lightning.posthoc import DEFAULT_TAUS, _check_tau


def check_sweep_arguments(
    taus: Sequence[float] | None, tau: float | None, filename: str
) -> tuple[tuple[float, ...], float | None, str]:
    """``(grid, fixed tau, filename)`` validated: every ``τ >= 0`` and finite, a non-empty grid, a plain file name."""
    grid = tuple(_check_tau(float(t)) for t in (DEFAULT_TAUS if taus is None else taus))
    if not grid:
        raise ValueError("taus must not be empty")
    fixed = None if tau is None else _check_tau(tau)
    if not filename or os.sep in filename:
        raise ValueError(f"filename must be a plain file name, got {filename!r}")
    return grid, fixed, filename


def write_sweep_curve(trainer: pl.Trainer, filename: str, record: dict[str, Any]) -> None:
    """Write ``record`` (NaN as ``null``) to ``<log_dir>/<filename>.json`` on the global-zero process."""
    directory = trainer.log_dir or trainer.default_root_dir
    if not (trainer.is_global_zero and directory):
        return
    os.makedirs(directory, exist_ok=True)

    def clean(value: Any) -> Any:
        if isinstance(value, float) and value != value:
            return None
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    with open(os.path.join(directory, f"{filename}.json"), "w") as f:
        json.dump({k: clean(v) for k, v in record.items()}, f, indent=1)
