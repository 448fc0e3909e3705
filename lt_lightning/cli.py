"""``lt-lightning`` command line: a LightningCLI that links the data's class prior into the model.

``lt-lightning fit -c configs/quickstart.yaml`` then ``lt-lightning test -c configs/quickstart.yaml --ckpt_path
PATH``. Models and datamodules are given by ``class_path`` (subclass mode), so a YAML can name any
:class:`~lt_lightning.module.LongTailModule` subclass and any :class:`~lt_lightning.data.base.LongTailDataModule`.
``data.num_classes`` and ``data.class_counts`` are computed by the datamodule in ``__init__`` and linked into the
model, the single path of the class prior.

Safe checkpoints by default: every checkpoint records the data it was trained on
(:class:`~lt_lightning.callbacks.data_fingerprint.DataFingerprint`; resuming on other data refuses unless
``--data_fingerprint.allow_data_mismatch true``) and is written atomically
(:class:`~lt_lightning.checkpointing.AtomicCheckpointIO`, unless ``trainer.plugins`` are given).
"""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.accelerators import XLAAccelerator
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.strategies import Strategy

from lt_lightning.callbacks.data_fingerprint import DataFingerprint
from lt_lightning.callbacks.test_report import TestReport
from lt_lightning.checkpointing import AtomicCheckpointIO
from lt_lightning.data.base import LongTailDataModule
from lt_lightning.module import LongTailModule


def _default_checkpoint_io_fits(config: dict[str, Any]) -> bool:
    """Whether the CLI may install :class:`AtomicCheckpointIO`: no user plugins, no XLA, no strategy instance."""
    if config.get("plugins"):
        return False
    strategy, accelerator = config.get("strategy", "auto"), config.get("accelerator", "auto")
    if isinstance(strategy, Strategy) or (isinstance(strategy, str) and "xla" in strategy.lower()):
        return False  # a strategy object may hold its own checkpoint IO; XLA strategies need XLACheckpointIO
    if isinstance(accelerator, str) and (
        accelerator.lower() == "tpu" or (accelerator.lower() == "auto" and XLAAccelerator.is_available())
    ):
        return False
    return isinstance(accelerator, str) and isinstance(strategy, str)


class LongTailCLI(LightningCLI):
    """LightningCLI with the class-prior links, a rich progress bar, the test report, the data fingerprint and
    atomic checkpoint writes by default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("model_class", LongTailModule)
        kwargs.setdefault("datamodule_class", LongTailDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_counts", "model.init_args.class_counts", apply_on="instantiate")
        parser.add_lightning_class_args(TestReport, "test_report")
        parser.add_lightning_class_args(DataFingerprint, "data_fingerprint")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Trainer:
        configured = list(config.get("callbacks") or []) + list(callbacks)
        if config.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in configured
        ):
            callbacks = [*callbacks, RichProgressBar()]
        if _default_checkpoint_io_fits(config):
            config = {**config, "plugins": [AtomicCheckpointIO()]}
        return super()._instantiate_trainer(config, callbacks)


def run(args: list[str] | None = None) -> LongTailCLI:
    """Run the CLI and return it (for Python callers and tests: ``run(["fit", "-c", "configs/quickstart.yaml"])``)."""
    return LongTailCLI(args=args)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lt-lightning`` console script and ``python -m lt_lightning``.

    Returns ``None`` so that the console script exits with status 0 (``sys.exit(main())``); use :func:`run` to get
    the CLI object. ``lt-lightning study ...`` (first argument ``study``) runs the survey's empirical study instead
    (:mod:`lt_lightning.study.cli`) and exits with its status.
    """
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["study"]:
        from lt_lightning.study.cli import main as study_main

        status = study_main(argv[1:])
        if status:
            sys.exit(status)
        return
    run(args)
