"""``lt-lightning`` command line: a LightningCLI that links the data's class prior into the model.

``lt-lightning fit -c configs/quickstart.yaml`` then ``lt-lightning test -c configs/quickstart.yaml --ckpt_path
PATH``. Models and datamodules are given by ``class_path`` (subclass mode), so a YAML can name any
:class:`~lt_lightning.module.LongTailModule` subclass and any :class:`~lt_lightning.data.base.LongTailDataModule`.
``data.num_classes`` and ``data.class_counts`` are computed by the datamodule in ``__init__`` and linked into the
model, the single path of the class prior.
"""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lt_lightning.callbacks.test_report import TestReport
from lt_lightning.data.base import LongTailDataModule
from lt_lightning.module import LongTailModule


class LongTailCLI(LightningCLI):
    """LightningCLI with the class-prior links, a rich progress bar and the test report by default."""

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

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Trainer:
        configured = list(config.get("callbacks") or []) + list(callbacks)
        if config.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in configured
        ):
            callbacks = [*callbacks, RichProgressBar()]
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
