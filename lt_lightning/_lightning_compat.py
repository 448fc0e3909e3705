"""The one place where lt_lightning reads private state of Lightning (and torchmetrics), for want of a public route.

Checked against lightning 2.6.6 and torchmetrics 1.9 (file:line of the installed wheels). Each function says what it
reads, why no public API does the job, and what it falls back to when a later release moves the attribute -- so an
upgrade is checked here, not in every callback.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ddp_finds_unused_parameters", "loaded_checkpoint", "reset_metric_cache", "unwrap_batch_sampler"]

#: the Lightning release these reaches were checked against
CHECKED_AGAINST = "lightning 2.6.6, torchmetrics 1.9"


def ddp_finds_unused_parameters(strategy: Any) -> bool:
    """Whether a :class:`~lightning.pytorch.strategies.DDPStrategy` wraps the model with
    ``find_unused_parameters=True`` (``strategy: ddp_find_unused_parameters_true``).

    The DDP keyword arguments are kept in ``DDPStrategy._ddp_kwargs`` (``strategies/ddp.py:97``), with no public
    accessor in 2.6.6. Missing attribute: ``False`` (the caller then asks for the strategy that allows freezing).
    """
    return bool(getattr(strategy, "_ddp_kwargs", {}).get("find_unused_parameters", False))


def loaded_checkpoint(trainer: Any) -> Any:
    """The checkpoint dict the trainer is restoring (``{}`` / ``None`` when none).

    ``trainer._checkpoint_connector._loaded_checkpoint`` (``trainer/connectors/checkpoint_connector.py:52,84``) is
    the only handle on it in an ``on_exception`` hook, where a restore failed before any hook received the dict.
    """
    return getattr(getattr(trainer, "_checkpoint_connector", None), "_loaded_checkpoint", None)


def unwrap_batch_sampler(batch_sampler: Any) -> Any:
    """The batch sampler inside Lightning's predict-loop index recorder, else ``batch_sampler`` itself.

    ``lightning.pytorch.overrides.distributed._IndexBatchSamplerWrapper`` (``overrides/distributed.py:247``) keeps
    the wrapped sampler in ``_batch_sampler`` and shares one iterator; a second iteration must use the inner one.
    """
    return getattr(batch_sampler, "_batch_sampler", batch_sampler)


def reset_metric_cache(metric: Any) -> None:
    """Drop the cached result of a torchmetrics ``Metric.compute()`` (``Metric._computed``) without resetting its
    states: ``reset()`` would also clear the counts, and no public method clears only the cache."""
    metric._computed = None
