"""``lt-lightning`` command line: a LightningCLI that links the data's class prior into the model.

``lt-lightning fit -c configs/quickstart.yaml`` then ``lt-lightning test -c configs/quickstart.yaml --ckpt_path
PATH``. Models and datamodules are given by ``class_path`` (subclass mode), so a YAML can name any
:class:`~lt_lightning.module.LongTailModule` subclass and any :class:`~lt_lightning.data.base.LongTailDataModule`.
``data.num_classes`` and ``data.class_counts`` are computed by the datamodule in ``__init__`` and linked into the
model, the single path of the class prior.

Defaults every config gets unless it says otherwise (:data:`DEFAULTS`): CSV and TensorBoard loggers under ``logs/``,
a ``LearningRateMonitor`` and a ``ModelCheckpoint`` of the last epoch (``save_last``, no monitor: resumable, nothing
selected; ``--trainer.enable_checkpointing false`` drops it); a config appends its callbacks with
``trainer.callbacks+:`` (a plain ``trainer.callbacks:`` list replaces the defaults, the checkpoint included). The
shipped experiments are ``-c configs/data/D.yaml -c configs/method/M.yaml`` (:mod:`lt_lightning.experiments`).

Safe checkpoints by default: every checkpoint records the data it was trained on
(:class:`~lt_lightning.callbacks.data_fingerprint.DataFingerprint`; resuming on other data refuses unless
``--data_fingerprint.allow_data_mismatch true``) and is written atomically
(:class:`~lt_lightning.checkpointing.AtomicCheckpointIO`, unless ``trainer.plugins`` are given).

Which weights run: ``--ckpt_path last`` is the newest ``last*.ckpt`` of the run directory, across the logger's
versions (``<save_dir>/<name>/*/checkpoints``, where a ``ModelCheckpoint`` without ``dirpath`` writes; the method
configs' re-runs get a new ``version_N``, where Lightning's own lookup finds nothing and starts from scratch) and any
``ModelCheckpoint`` ``dirpath``; a checkpoint whose run saved another ``model`` config is never picked. None there
stops with an error naming the folders searched, for ``fit`` too (the user asked to resume). ``test`` /
``validate`` / ``predict`` need a checkpoint: without one they stop, unless ``--ckpt_path untrained`` asks for the
model's initial weights on purpose.

``predict`` writes the top-k classes of each image to CSV and JSON
(:class:`~lt_lightning.callbacks.prediction_writer.PredictionWriter`, options ``--prediction.*``: ``source`` a split or
a folder of images, ``output``, ``top_k``, ``formats``), with the test-time rules of the config.

Without a logger (``--trainer.logger false``) every config runs and nothing lands in the current directory:
``LearningRateMonitor`` callbacks (they need a logger) are dropped with an info line, and unless
``trainer.default_root_dir`` is given each run gets its own folder ``logs/no_logger/version_N`` (the trainer's
``default_root_dir``, hence ``log_dir``), which holds the saved ``config.yaml``, the test report and the checkpoints
of a ``ModelCheckpoint`` without ``dirpath``; ``--ckpt_path last`` searches every ``version_N`` there.

Errors (:mod:`lt_lightning.cli_errors`): before anything runs, the backbone's ``in_channels`` is checked against the
data's channels, a ``--ckpt_path`` file against the checkpoint formats and ``--trainer.accelerator gpu`` against the
machine; :func:`main` prints an error of the user's input as ``error: <message>`` and the option that caused it
(exit status 1), the traceback with ``--debug`` or ``LT_LIGHTNING_DEBUG=1``. ``lt-lightning --help`` lists
``study``; ``lt-lightning --version`` prints the versions of lt_lightning, torch, lightning and Python.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from typing import Any

import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.accelerators import XLAAccelerator
from lightning.pytorch.callbacks import (
    LearningRateMonitor,
    ModelCheckpoint,
    OnExceptionCheckpoint,
    ProgressBar,
    RichProgressBar,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from lt_lightning.callbacks.data_fingerprint import DataFingerprint
from lt_lightning.callbacks.prediction_writer import PredictionWriter
from lt_lightning.callbacks.test_report import TestReport
from lt_lightning.checkpointing import AtomicCheckpointIO
from lt_lightning.cli_errors import (
    DEBUG_ENV,
    DEBUG_FLAG,
    OPTION_ATTRIBUTE,
    check_accelerator,
    check_channels,
    check_checkpoint_file,
    debug_requested,
    failed_option,
    is_user_error,
    short_error,
)
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


#: ``--ckpt_path untrained``: ``test`` / ``validate`` / ``predict`` (or ``fit``) on the model's initial weights
UNTRAINED = "untrained"
#: the subcommands that evaluate a model and so need a checkpoint (or ``--ckpt_path untrained``)
EVALUATING = ("test", "validate", "predict")


#: where runs without a logger (and without ``trainer.default_root_dir``) get their ``version_N`` folders
NO_LOGGER_ROOT = os.path.join("logs", "no_logger")


def _has_no_logger(config: dict[str, Any]) -> bool:
    """Whether the trainer config disables logging (``logger: false`` or an empty list; ``None`` is the default)."""
    logger = config.get("logger")
    return logger is False or (isinstance(logger, (list, tuple)) and not logger)


def _next_version_dir(root: str) -> str:
    """``root/version_N`` with ``N`` one past the largest existing ``version_*`` folder (0 if none)."""
    versions = [
        int(m.group(1))
        for name in (os.listdir(root) if os.path.isdir(root) else [])
        if (m := re.fullmatch(r"version_(\d+)", name)) and os.path.isdir(os.path.join(root, name))
    ]
    return os.path.join(root, f"version_{max(versions, default=-1) + 1}")


def _is_remote(path: str) -> bool:
    return "://" in path


#: the ``study`` command in ``lt-lightning --help`` (:func:`main` runs it; :mod:`lt_lightning.study.cli`)
STUDY_HELP = (
    "Run the survey's empirical study over a grid of methods and write its report (lt-lightning study -c "
    "STUDY.yaml; lt-lightning study --help)."
)
DESCRIPTION = (
    "lt-lightning: deep long-tailed image classification on PyTorch Lightning. An error prints its message and the "
    f"option that caused it; add {DEBUG_FLAG} (or set {DEBUG_ENV}=1) for the full traceback."
)


def version_text() -> str:
    """``0.1.0 (torch ..., lightning ..., Python ...)``: what ``lt-lightning --version`` prints after the name."""
    import platform

    import lightning
    import torch

    from lt_lightning import __version__

    python = platform.python_version()
    return f"{__version__} (torch {torch.__version__}, lightning {lightning.__version__}, Python {python})"


#: what every run gets unless its config says otherwise (a config's ``trainer.callbacks+:`` appends to these; a plain
#: ``trainer.callbacks:`` list replaces them, the checkpoint included): CSV and TensorBoard logs under ``logs/``, the
#: last epoch checkpointed (resumable, nothing selected: no monitor) and the learning rate logged once per epoch
DEFAULTS: dict[str, Any] = {
    "trainer.logger": [
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "logs"}},
        {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"save_dir": "logs/lightning_logs", "name": "tensorboard"},
        },
    ],
    # the checkpoint last, so that ``--trainer.callbacks.dirpath X`` (the last callback's option) reaches it
    "trainer.callbacks": [
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor", "init_args": {"logging_interval": "epoch"}},
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"save_last": True, "save_top_k": 1},
        },
    ],
}


def _without_checkpoints(config: dict[str, Any]) -> dict[str, Any]:
    """``trainer.enable_checkpointing: false`` turns the default (or any configured) ``ModelCheckpoint`` off instead
    of Lightning's error that both were given; one info line says so."""
    configured = config.get("callbacks")
    if not isinstance(configured, list):
        return config
    dropped = [c for c in configured if isinstance(c, ModelCheckpoint)]
    if dropped:
        rank_zero_info(f"enable_checkpointing is false: {len(dropped)} ModelCheckpoint callback(s) dropped")
    return {**config, "callbacks": [c for c in configured if not isinstance(c, ModelCheckpoint)]}


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
        # the main parser's name (also under `python -m lt_lightning`), --version and description
        kwargs["parser_kwargs"] = {
            "prog": "lt-lightning",
            "version": version_text(),
            "description": DESCRIPTION,
            **(kwargs.get("parser_kwargs") or {}),
        }
        super().__init__(*args, **kwargs)

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        """Lightning's subcommands, and ``study`` for ``lt-lightning --help`` (:func:`main` runs it, not this class)."""
        super()._add_subcommands(parser, **kwargs)
        action = parser._subcommands_action
        if action is not None and "study" not in action.choices:
            action.add_subcommand("study", self.init_parser(description=STUDY_HELP), help=STUDY_HELP)

    def _parse_ckpt_path(self) -> None:
        """Check that a local ``--ckpt_path`` file is a checkpoint before Lightning reads its hyper-parameters
        (a text file gave ``KeyError: 101``); an unreadable one is one ``ValueError`` naming the path."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if isinstance(path, str) and not _is_remote(path) and os.path.isfile(path):
            check_checkpoint_file(path)
        try:
            super()._parse_ckpt_path()
        except (SystemExit, KeyboardInterrupt):
            raise
        except Exception as err:
            raise ValueError(
                f"--ckpt_path {path}: cannot read it as a checkpoint ({type(err).__name__}: {err})"
            ) from err

    def instantiate_classes(self) -> None:
        """Build the config's classes; an error raised by one of them records its option (shown by :func:`main`),
        then the backbone's ``in_channels`` is checked against the data's channels, before anything runs."""
        try:
            super().instantiate_classes()
        except Exception as err:
            config = self.config.get(self.subcommand) if self.subcommand else self.config
            try:
                setattr(err, OPTION_ATTRIBUTE, failed_option(err, config))
            except Exception:  # noqa: BLE001 - finding the option must never hide the error itself
                pass
            raise
        ckpt_path = self.config[self.subcommand].get("ckpt_path") if self.subcommand else None
        # a checkpoint file's saved hyper-parameters built the model (LightningCLI._parse_ckpt_path)
        from_file = isinstance(ckpt_path, str) and not _is_remote(ckpt_path) and os.path.isfile(ckpt_path)
        check_channels(self.model, self.datamodule, ckpt_path if from_file else None)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_counts", "model.init_args.class_counts", apply_on="instantiate")
        parser.add_lightning_class_args(TestReport, "test_report")
        parser.add_lightning_class_args(DataFingerprint, "data_fingerprint")
        parser.add_lightning_class_args(PredictionWriter, "prediction")
        parser.set_defaults(DEFAULTS)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Trainer:
        check_accelerator(config.get("accelerator"))
        self._no_logger_root: str | None = None
        if _has_no_logger(config):
            config, callbacks = self._without_logger(config, callbacks)
        if config.get("enable_checkpointing") is False:
            config = _without_checkpoints(config)
        configured = list(config.get("callbacks") or []) + list(callbacks)
        if config.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in configured
        ):
            callbacks = [*callbacks, RichProgressBar()]
        if _default_checkpoint_io_fits(config):
            config = {**config, "plugins": [AtomicCheckpointIO()]}
        return super()._instantiate_trainer(config, callbacks)

    def _without_logger(self, config: dict[str, Any], callbacks: list[Any]) -> tuple[dict[str, Any], list[Any]]:
        """Drop ``LearningRateMonitor`` (it raises without a logger) and give the run its own folder.

        Without a logger ``trainer.log_dir`` is ``default_root_dir``, the current directory by default, where
        ``config.yaml``, the test report and ``ModelCheckpoint`` files without ``dirpath`` would be written and
        overwritten by the next run: unless the user set ``default_root_dir``, it becomes the next free
        ``logs/no_logger/version_N``.
        """
        configured = config.get("callbacks")
        configured = [] if configured is None else list(configured) if isinstance(configured, list) else [configured]
        dropped = [c for c in configured + list(callbacks) if isinstance(c, LearningRateMonitor)]
        if dropped:
            rank_zero_info("trainer.logger is false: LearningRateMonitor dropped (it needs a logger)")
            config = {**config, "callbacks": [c for c in configured if not isinstance(c, LearningRateMonitor)]}
            callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
        if config.get("default_root_dir") is None:
            self._no_logger_root = NO_LOGGER_ROOT
            run_dir = _next_version_dir(NO_LOGGER_ROOT)
            rank_zero_info(f"trainer.logger is false: this run's folder (trainer.default_root_dir) is {run_dir}")
            config = {**config, "default_root_dir": run_dir}
        return config, callbacks

    def before_instantiate_classes(self) -> None:
        """Refuse ``test`` / ``validate`` / ``predict`` without a checkpoint (before any data is loaded)."""
        super().before_instantiate_classes()
        subcommand = self.subcommand
        if subcommand == "study":
            raise ValueError("study is a command of its own: give it first, `lt-lightning study -c STUDY.yaml ...`")
        if subcommand in EVALUATING and self.config[subcommand].get("ckpt_path") is None:
            raise ValueError(
                f"{subcommand}: no checkpoint given, it would evaluate the untrained initial weights; pass --ckpt_path "
                f"PATH (or last: the newest last.ckpt of this run directory), or --ckpt_path {UNTRAINED} to evaluate "
                "the initial weights on purpose"
            )

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        """Resolve ``ckpt_path``'s ``last`` (:meth:`find_last_checkpoint`) and ``untrained`` (``None``)."""
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if kwargs.get("ckpt_path") == UNTRAINED:
            kwargs["ckpt_path"] = None
        elif kwargs.get("ckpt_path") == "last":
            found = self.find_last_checkpoint(subcommand)
            if found is not None:  # None: a remote directory, left to Lightning's own "last" lookup
                rank_zero_info(f"{subcommand} --ckpt_path last: {found}")
                kwargs["ckpt_path"] = found
        return kwargs

    def _last_checkpoint_folders(self) -> tuple[list[str], list[str]]:
        """The folders ``--ckpt_path last`` searches, as glob patterns: (the logger's run tree, ``dirpath`` ones)."""
        trainer = self.trainer
        callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
        explicit = list(dict.fromkeys(str(c.dirpath) for c in callbacks if c.dirpath is not None))
        tree: list[str] = []
        if not callbacks or any(c.dirpath is None for c in callbacks):
            # where ModelCheckpoint puts its files without a dirpath, for every version of the first logger
            if trainer.loggers:
                logger = trainer.loggers[0]
                save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
                tree.append(os.path.join(str(save_dir), str(logger.name or ""), "*", "checkpoints"))
            elif getattr(self, "_no_logger_root", None):  # every run folder of logger: false (_without_logger)
                tree.append(os.path.join(str(self._no_logger_root), "*", "checkpoints"))
            else:
                explicit.append(os.path.join(str(trainer.default_root_dir), "checkpoints"))
        return tree, explicit

    def _model_config(self, subcommand: str) -> Any:
        """The ``model`` section of this command's config, as :class:`SaveConfigCallback` writes it (or ``None``)."""
        try:
            dumped = self._parser(subcommand).dump(self.config[subcommand], skip_none=False)
            return yaml.safe_load(dumped).get("model")
        except Exception:  # noqa: BLE001 - an undumpable config only disables the check
            return None

    def find_last_checkpoint(self, subcommand: str) -> str | None:
        """The newest ``last*.ckpt`` of the run directory (by modification time, like Lightning's ``"last"``).

        Searched: ``<save_dir>/<name>/*/checkpoints`` of the first logger (every version of the run; the trainer's
        ``default_root_dir/checkpoints`` without a logger, every ``logs/no_logger/version_N`` one where the CLI chose
        the folder) where a ``ModelCheckpoint`` has no ``dirpath``, each
        ``ModelCheckpoint`` ``dirpath``, and :class:`~lightning.pytorch.callbacks.OnExceptionCheckpoint` files. A
        checkpoint in a version folder whose ``config.yaml`` (written by the CLI) has another ``model`` section than
        this command's belongs to another method and is skipped.

        Returns:
            The checkpoint's path, or ``None`` when a folder is remote (``s3://``...): Lightning resolves ``"last"``.

        Raises:
            ValueError: no such checkpoint, naming the folders searched (and the skipped ones of other models).
        """
        tree, explicit = self._last_checkpoint_folders()
        if any(_is_remote(folder) for folder in tree + explicit):
            return None
        names = {(c.CHECKPOINT_NAME_LAST, c.FILE_EXTENSION) for c in self.trainer.checkpoint_callbacks}
        names = names or {(ModelCheckpoint.CHECKPOINT_NAME_LAST, ModelCheckpoint.FILE_EXTENSION)}

        def lasts(folder: str) -> list[str]:
            found = []
            for path in sorted(glob.glob(os.path.join(folder, "*"))):
                base = os.path.basename(path)
                if os.path.isfile(path) and any(
                    base.endswith(ext) and re.fullmatch(rf"{re.escape(name)}(-\d+)?", base[: -len(ext)])
                    for name, ext in names
                ):
                    found.append(os.path.normpath(path))
            return found

        config_name = self.save_config_kwargs.get("config_filename", "config.yaml")
        model = self._model_config(subcommand) if self.save_config_callback else None
        candidates, other_models = [], []
        for pattern in tree:
            for folder in glob.glob(pattern):
                saved = os.path.join(os.path.dirname(folder), config_name)
                if model is not None and os.path.isfile(saved):
                    try:
                        with open(saved) as f:
                            same = (yaml.safe_load(f) or {}).get("model") == model
                    except (OSError, yaml.YAMLError):
                        same = True  # an unreadable config.yaml decides nothing
                    if not same:
                        other_models += lasts(folder)
                        continue
                candidates += lasts(folder)
        for folder in explicit:
            candidates += lasts(folder)
        for callback in self.trainer.callbacks:
            if isinstance(callback, OnExceptionCheckpoint) and os.path.isfile(callback.ckpt_path):
                candidates.append(os.path.normpath(callback.ckpt_path))
        if candidates:
            return max(candidates, key=lambda path: (os.path.getmtime(path), path))
        searched = ", ".join(tree + explicit)
        if other_models:
            raise ValueError(
                f"{subcommand} --ckpt_path last: no last.ckpt of this model config in {searched}; those there belong "
                f"to runs of other model configs (their config.yaml differs): {', '.join(other_models)}; pass "
                "--ckpt_path PATH to use one"
            )
        raise ValueError(
            f"{subcommand} --ckpt_path last: no last.ckpt in {searched}; "
            + ("run fit without --ckpt_path first" if subcommand == "fit" else "fit first, or pass --ckpt_path PATH")
        )


def run(args: list[str] | None = None) -> LongTailCLI:
    """Run the CLI and return it (for Python callers and tests: ``run(["fit", "-c", "configs/quickstart.yaml"])``)."""
    return LongTailCLI(args=args)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lt-lightning`` console script and ``python -m lt_lightning``.

    Returns ``None`` so that the console script exits with status 0 (``sys.exit(main())``); use :func:`run` to get
    the CLI object. ``lt-lightning study ...`` (first argument ``study``) runs the survey's empirical study instead
    (:mod:`lt_lightning.study.cli`) and exits with its status.

    An error of the user's input (:func:`~lt_lightning.cli_errors.is_user_error`: a bad value refused by a class of
    the config, a wrong ``--ckpt_path``, a missing file, a channel mismatch, an unavailable accelerator) prints a few
    lines (:func:`~lt_lightning.cli_errors.short_error`: the message, the option, how to see more) and exits with
    status 1; ``--debug`` (anywhere in the arguments) or ``LT_LIGHTNING_DEBUG=1`` raises it with its traceback.
    Other errors keep their traceback. :func:`run` always raises.
    """
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["study"]:
        from lt_lightning.study.cli import main as study_main

        status = study_main(argv[1:])
        if status:
            sys.exit(status)
        return
    debug = debug_requested(argv)
    if DEBUG_FLAG in argv:
        argv = [a for a in argv if a != DEBUG_FLAG]
        if args is None:  # the console script: LightningCLI reads sys.argv (given args too, it warns)
            sys.argv[1:] = argv
        else:
            args = argv
    try:
        run(args)
    except Exception as err:
        if debug or not is_user_error(err):
            raise
        sys.stderr.write(short_error(err) + "\n")
        sys.exit(1)
