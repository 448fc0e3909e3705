"""``KnowledgeDistillation``: a frozen teacher whose logits feed the distillation loss (``DistillationLoss``).

The teacher is any lt_lightning checkpoint (written by ``lt-lightning fit`` or by a Python fit): it is rebuilt with
:meth:`LongTailModule.load_from_checkpoint <lightning.pytorch.core.LightningModule.load_from_checkpoint>`, frozen
(``requires_grad=False``), put in ``eval()`` mode (BatchNorm running statistics, no dropout), moved to the student's
device and registered as ``pl_module.train_extras["teacher_logits"]``: every training step computes
``teacher(x).logits`` under ``torch.no_grad`` on the batch the student sees (after augmentation and any batch mixing).
The teacher's plain logits are used (no test-time rule of the teacher applies). Its class counts must equal the
student's.

The teacher is *not* a sub-module of the student: the student's ``state_dict`` and checkpoints hold no teacher weight.
The callback's checkpointed state is the teacher's checkpoint path, so a resumed fit reloads the very teacher it
started with (even if the command now names another one; a warning says so).

Without a checkpoint, ``teacher_config`` names the teacher's YAML files (e.g. ``[configs/data/D.yaml,
configs/method/balanced_softmax.yaml]``, DiVE's teacher): the teacher is fitted first, within the same command, by
:func:`~lt_lightning.callbacks._prestage.run_prestage` (a subprocess ``lt-lightning fit``, once; a later command with
the same config, arguments and data reuses it). With ``share_data`` (default) that pre-stage gets the student's data
arguments, so the teacher trains on the student's training set wherever the data lives (``--data.init_args.root``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from lt_lightning.callbacks._prestage import (
    budget_arguments,
    check_relative_epochs,
    recorded_data_arguments,
    resolve_config,
    run_prestage,
)
from lt_lightning.checkpoint_reader import load_module
from lt_lightning.class_path import import_class_path
from lt_lightning.losses.distillation import TEACHER_KEY
from lt_lightning.module import LongTailModule
from lt_lightning.output import ModelOutput
from lt_lightning.slots import require_long_tail_module

__all__ = ["KnowledgeDistillation", "load_teacher", "student_data_arguments"]

#: datamodule arguments that belong to a recipe or a method rather than to the data: not passed to the teacher
_NOT_SHARED = frozenset({"batch_size", "eval_batch_size", "views", "view_augment", "sampler"})


def load_teacher(path: str | Path, owner: str = "KnowledgeDistillation") -> LongTailModule:
    """Rebuild the :class:`LongTailModule` of an lt_lightning checkpoint on the CPU, frozen and in eval mode.

    Read by :func:`~lt_lightning.checkpoint_reader.load_module` (``weights_only=True``): CLI checkpoints load as they
    are; a checkpoint of a module built in Python pickles its parts in the hyper-parameters and is refused, naming
    them, unless their classes are allowed with ``torch.serialization.add_safe_globals``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a checkpoint of a :class:`LongTailModule`, or holds types that
            ``weights_only=True`` loading refuses (:class:`~lt_lightning.checkpoint_reader.UnsafeCheckpointError`).
    """
    path = os.fspath(path)
    teacher = load_module(LongTailModule, path, purpose=f"{owner}: teacher")
    if not isinstance(teacher, LongTailModule):
        raise ValueError(f"{owner}: {path} holds a {type(teacher).__name__}, not a LongTailModule")
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


def student_data_arguments(datamodule: pl.LightningDataModule) -> list[str]:
    """``--data.init_args.NAME=VALUE`` for the arguments the student datamodule was built with (its ``hparams``).

    The arguments that say *which* data are what a teacher must share with its student; recipe and method arguments
    (``batch_size``, ``eval_batch_size``, ``views``, ``view_augment``, ``sampler``) and non-plain values stay the
    teacher config's own (:func:`~lt_lightning.callbacks._prestage.recorded_data_arguments`). Whatever is not shared
    is still checked through the class counts.
    """
    return recorded_data_arguments(datamodule, _NOT_SHARED)


def _config_data_class(config: Path) -> type | None:
    """The datamodule class a YAML config names in ``data.class_path`` (``None`` when it names none)."""
    try:
        loaded = yaml.safe_load(config.read_text())
    except yaml.YAMLError:
        return None
    data = loaded.get("data") if isinstance(loaded, dict) else None
    return import_class_path(data.get("class_path") if isinstance(data, dict) else None)


class KnowledgeDistillation(Callback):
    """Give the student a frozen teacher: ``output.extras["teacher_logits"] = teacher(x).logits`` in every step.

    YAML (``trainer.callbacks``)::

        - class_path: lt_lightning.callbacks.knowledge_distillation.KnowledgeDistillation
          init_args:
            teacher_config: [configs/data/digits_lt.yaml, configs/method/balanced_softmax.yaml]  # or teacher_checkpoint

    Args:
        teacher_checkpoint: an lt_lightning checkpoint of the teacher (CLI or Python). Exactly one of this and
            ``teacher_config``.
        teacher_config: the teacher's YAML, or its composed YAML files in order (``[DATA, METHOD]``, as
            ``-c DATA -c METHOD``); the teacher is fitted first within the same command (once: cached under
            ``prestage_dir``). ``configs/...`` paths are found in the lt_lightning checkout too.
        teacher_args: further CLI arguments of the teacher's fit (e.g. ``["--trainer.max_epochs=50"]``; they win over
            the budget).
        relative_epochs: with ``teacher_config``, the teacher trains ``round(relative_epochs · trainer.max_epochs)``
            epochs (1.0: as many as the student), so a budget change rescales the teacher too; ``None``: the
            teacher config's own ``max_epochs``.
        prestage_dir: where the teacher's pre-stage folders go.
        share_data: with ``teacher_config``, pass the student's data arguments (see :func:`student_data_arguments`)
            to the teacher's fit, so it trains on the student's training set; its config must then name the same
            datamodule class. ``False``: the teacher config's data as written.

    Attributes:
        teacher: the frozen teacher (after ``setup``).
        teacher_path: the checkpoint it was loaded from.
    """

    def __init__(
        self,
        teacher_checkpoint: str | None = None,
        teacher_config: str | list[str] | None = None,
        teacher_args: list[str] | None = None,
        relative_epochs: float | None = 1.0,
        prestage_dir: str = "logs/prestages",
        share_data: bool = True,
    ) -> None:
        super().__init__()
        if (teacher_checkpoint is None) == (teacher_config is None):
            raise ValueError(
                "KnowledgeDistillation needs exactly one of teacher_checkpoint and teacher_config, got "
                f"teacher_checkpoint={teacher_checkpoint!r}, teacher_config={teacher_config!r}"
            )
        if teacher_checkpoint is not None and (
            not isinstance(teacher_checkpoint, (str, os.PathLike)) or not os.fspath(teacher_checkpoint)
        ):
            raise ValueError(f"teacher_checkpoint must be a non-empty path, got {teacher_checkpoint!r}")
        configs = [teacher_config] if isinstance(teacher_config, (str, os.PathLike)) else list(teacher_config or [])
        if teacher_config is not None and (
            not configs or not all(isinstance(c, (str, os.PathLike)) and os.fspath(c) for c in configs)
        ):
            raise ValueError(f"teacher_config must be a non-empty path or list of paths, got {teacher_config!r}")
        args = list(teacher_args or [])
        if not all(isinstance(a, str) for a in args):
            raise ValueError(f"teacher_args must be a list of strings, got {teacher_args!r}")
        if teacher_args and teacher_config is None:
            raise ValueError(
                f"teacher_args={teacher_args!r} are arguments of the teacher's fit: they need teacher_config"
            )
        self.teacher_checkpoint = None if teacher_checkpoint is None else os.fspath(teacher_checkpoint)
        self.teacher_config = None if teacher_config is None else [os.fspath(c) for c in configs]
        self.teacher_args = args
        self.relative_epochs = check_relative_epochs(relative_epochs)
        self.prestage_dir = prestage_dir
        self.share_data = bool(share_data)
        self.teacher: LongTailModule | None = None
        self.teacher_path: str | None = None
        self._student: pl.LightningModule | None = None

    # ------------------------------------------------------------------ the teacher
    def _teacher_logits(self, x: Tensor, output: ModelOutput) -> Tensor:
        teacher = self.teacher
        if teacher is None:
            raise RuntimeError("KnowledgeDistillation: no teacher is loaded (setup of the fit did not run)")
        with torch.no_grad():
            return teacher(x).logits

    def _use_teacher(self, path: str, pl_module: pl.LightningModule) -> None:
        teacher = load_teacher(path)
        ours = pl_module.class_counts.detach().cpu().float()
        theirs = teacher.class_counts.detach().cpu().float()
        if theirs.shape != ours.shape or not torch.equal(theirs, ours):
            raise ValueError(
                f"KnowledgeDistillation: the teacher {path} was trained on {theirs.numel()} classes with counts "
                f"{theirs.long().tolist()}, but the student has {ours.numel()} classes with counts "
                f"{ours.long().tolist()}: the teacher must be trained on the student's training set"
            )
        self.teacher = teacher.to(device=pl_module.device)
        self.teacher_path = path
        rank_zero_info(f"KnowledgeDistillation: teacher loaded from {path} (frozen, eval mode)")

    def _prestage_args(self, trainer: pl.Trainer) -> list[str]:
        args = [*budget_arguments(trainer, self.relative_epochs), *self.teacher_args]
        datamodule = trainer.datamodule
        if not self.share_data or datamodule is None:
            return args
        classes = [_config_data_class(resolve_config(c)) for c in self.teacher_config or []]
        named = next((c for c in reversed(classes) if c is not None), None)  # the last file naming one wins
        if named is not None and named is not type(datamodule):
            raise ValueError(
                f"KnowledgeDistillation: the teacher config {self.teacher_config} trains on {named.__name__} but the "
                f"student on {type(datamodule).__name__}; share_data passes the student's data arguments to the "
                "teacher, which needs the same datamodule class (set share_data: false to keep the teacher's data)"
            )
        return [*args, *student_data_arguments(datamodule)]

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        require_long_tail_module(pl_module, self)
        if self.teacher_checkpoint is not None:
            path = self.teacher_checkpoint
        else:
            args = self._prestage_args(trainer)
            first, *more = self.teacher_config or []
            more_args = [arg for extra in more for arg in ("-c", extra)]
            checkpoint = run_prestage(trainer, first, [*more_args, *args], self.prestage_dir, "KnowledgeDistillation")
            path = os.fspath(checkpoint)
        self._student = pl_module
        self._use_teacher(path, pl_module)
        pl_module.install_train_extra(TEACHER_KEY, self._teacher_logits, owner=self)

    def state_dict(self) -> dict[str, Any]:
        return {"teacher_checkpoint": self.teacher_path}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("teacher_checkpoint")
        if saved is None or saved == self.teacher_path or self._student is None:
            return
        if not os.path.isfile(saved):
            rank_zero_warn(
                f"KnowledgeDistillation: the resumed checkpoint was trained with the teacher {saved}, which no longer "
                f"exists; going on with {self.teacher_path}"
            )
            return
        rank_zero_warn(
            f"KnowledgeDistillation: resuming with the checkpoint's teacher {saved} (this command names "
            f"{self.teacher_path})"
        )
        self._use_teacher(saved, self._student)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the strategy has moved the student to its device by now
        if self.teacher is not None:
            self.teacher.to(device=pl_module.device)
            self.teacher.eval()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.teacher is not None:
            self.teacher.eval()  # never put in train mode, but nothing outside the callback should change that

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        pl_module.clear_train_extra(TEACHER_KEY, owner=self)
        self._student = None
