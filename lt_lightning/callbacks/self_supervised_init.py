"""``SelfSupervisedInit``: SSP's stage 2 starts from the backbone of a self-supervised pre-training.

Yang & Xu, "Rethinking the Value of Labels for Improving Class-Imbalanced Learning", NeurIPS 2020 (reference code
YyzHarry/imbalanced-semi-self, ``train.py --pretrained_model``): the long-tailed training is the ordinary one, only
its backbone is initialised from a pretext model (:class:`~lt_lightning.pretext.SelfSupervisedPretraining`) trained
on the same training images without labels; the classifier starts fresh (the reference drops ``fc`` / ``linear``).

The pre-training is given either as a ``checkpoint`` or as the ``config`` of the pretext fit, which then runs within
the same command (:func:`~lt_lightning.callbacks._prestage.run_prestage`: a subprocess on rank 0, cached by config
text and arguments, one step under ``fast_dev_run``). SSP pre-trains on the training images of the main fit, so
when both use the same datamodule class the main fit's data arguments are passed on (:func:`data_arguments`: the
root, the imbalance ratio, ... but not the pretext's own ``views``, batch size, sampler or augmentation switch);
``args`` come after them. After the stage, its ``class_counts`` must equal the main fit's.

In ``on_fit_start`` the checkpoint's ``backbone.`` weights are copied into ``pl_module.backbone`` (shapes checked;
with ``strict`` every backbone key must match). A resumed fit (``trainer.ckpt_path`` set) loads nothing and runs no
pre-training: the resumed checkpoint holds the weights. ``on_fit_start`` and not ``setup``: Lightning (2.6) sets
``trainer.ckpt_path`` and restores a resumed checkpoint only after the setup hooks, so ``setup`` cannot tell a resume
from a fresh fit. The copy is in place (``load_state_dict``), so the optimizers already built over the parameters
stay valid, and every DDP process loads the same file (the replicas stay equal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from lt_lightning.backbones._checkpoint import describe_mismatch
from lt_lightning.callbacks._prestage import (
    budget_arguments,
    check_relative_epochs,
    recorded_data_arguments,
    resolve_config,
    run_prestage,
)
from lt_lightning.callbacks._stage import read_stage1_state
from lt_lightning.callbacks.data_fingerprint import check_init_from, data_mismatch_allowed

__all__ = ["SelfSupervisedInit", "backbone_weights", "data_arguments"]

PREFIX = "backbone."
#: datamodule arguments the pretext config keeps as its own (two views for SimCLR, its batch size, its sampling)
OWN_DATA_ARGUMENTS = frozenset({"views", "view_augment", "batch_size", "eval_batch_size", "sampler", "augment"})


def data_arguments(datamodule: pl.LightningDataModule | None, config: str | Path) -> list[str]:
    """``--data.init_args.NAME=VALUE`` for the main fit's datamodule arguments, to run ``config`` on its data.

    Only when ``config``'s ``data.class_path`` is the main datamodule's class: every argument the datamodule was
    built with (its record of them, ``datamodule.hparams``) that is ``None``, a bool, a number or a string (a path),
    except :data:`OWN_DATA_ARGUMENTS` (:func:`~lt_lightning.callbacks._prestage.recorded_data_arguments`). Empty
    otherwise.
    """
    if datamodule is None:
        return []
    try:
        data = yaml.safe_load(resolve_config(config).read_text()).get("data") or {}
    except (AttributeError, yaml.YAMLError):
        return []
    cls = type(datamodule)
    if not isinstance(data, dict) or data.get("class_path") not in (
        f"{cls.__module__}.{cls.__qualname__}",
        cls.__name__,
    ):
        return []
    return recorded_data_arguments(datamodule, OWN_DATA_ARGUMENTS)


def backbone_weights(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The ``backbone.`` entries of a Lightning ``state_dict``, without the prefix."""
    return {key[len(PREFIX) :]: value for key, value in state.items() if key.startswith(PREFIX)}


class SelfSupervisedInit(Callback):
    """Initialise ``pl_module.backbone`` from a self-supervised pre-training (SSP, Yang & Xu, NeurIPS 2020).

    YAML (``trainer.callbacks``)::

        - class_path: lt_lightning.callbacks.self_supervised_init.SelfSupervisedInit
          init_args: {config: configs/pretext/cifar10_lt_rotation.yaml}

    Args:
        checkpoint: a checkpoint whose ``state_dict`` holds the backbone under ``backbone.`` (a pretext model's, or
            any lt_lightning model's).
        config: the pretext fit's YAML, run within this command when no checkpoint is given (``configs/...``
            paths are also found relative to the lt_lightning checkout).
        args: further CLI arguments of the pretext fit (e.g. ``["--trainer.max_epochs=50"]``; they win over the
            forwarded data and budget).
        relative_epochs: the pretext fit trains ``round(relative_epochs · trainer.max_epochs)`` epochs (1.0: as
            many as this fit, the reference's 200 + 200 on CIFAR), so a budget change rescales the pre-training
            too; ``None``: the pretext config's own ``max_epochs``.
        prestage_dir: folder of the pretext fits (``<prestage_dir>/<config stem>-<hash>``).
        strict: every backbone key must be in the checkpoint and every checkpoint ``backbone.`` key in the backbone;
            ``False`` loads the keys both have (shapes are checked either way).
        forward_data: pass this fit's data arguments to the pretext fit (:func:`data_arguments`), so that it
            pre-trains on this fit's training set (``--data.init_args.root`` / ``imbalance_ratio`` given to the main
            fit reach the pre-training).

    Raises:
        ValueError: not exactly one of ``checkpoint`` / ``config``; at fit start, a checkpoint whose backbone does not
            match (the keys listed), or a pretext fit on another training set.
        FileNotFoundError: a missing config (at setup) or checkpoint (at fit start).
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        config: str | None = None,
        args: list[str] | None = None,
        relative_epochs: float | None = 1.0,
        prestage_dir: str = "logs/prestages",
        strict: bool = True,
        forward_data: bool = True,
    ) -> None:
        super().__init__()
        if (checkpoint is None) == (config is None):
            raise ValueError(
                f"give exactly one of checkpoint / config, got checkpoint={checkpoint!r}, config={config!r}"
            )
        for name, value in (("checkpoint", checkpoint), ("config", config)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty path or None, got {value!r}")
        if config is None and args:
            raise ValueError(f"args {args!r} are arguments of the pretext fit: they need config, not checkpoint")
        if not isinstance(prestage_dir, str) or not prestage_dir:
            raise ValueError(f"prestage_dir must be a non-empty path, got {prestage_dir!r}")
        self.checkpoint = checkpoint
        self.config = config
        self.args = [str(a) for a in (args or [])]
        self.relative_epochs = check_relative_epochs(relative_epochs)
        self.prestage_dir = prestage_dir
        self.strict = bool(strict)
        self.forward_data = bool(forward_data)
        #: the checkpoint loaded by the last setup (the pretext fit's ``last.ckpt`` in config mode)
        self.loaded_from: Path | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(checkpoint=self.checkpoint, config=self.config)

    # ------------------------------------------------------------------ setup
    def _stage_args(self, trainer: pl.Trainer) -> list[str]:
        forwarded: list[str] = []
        if self.forward_data:
            forwarded = data_arguments(trainer.datamodule, self.config)  # type: ignore[arg-type]
        budget = budget_arguments(trainer, self.relative_epochs)
        return [*forwarded, *budget, *self.args]  # the user's arguments come last: they win

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        backbone = getattr(pl_module, "backbone", None)
        if not isinstance(backbone, torch.nn.Module):
            raise ValueError(
                f"SelfSupervisedInit needs a module with a `backbone`; {type(pl_module).__name__} has none"
            )
        if self.config is not None:
            resolve_config(self.config)  # a missing config fails now, not after the model is set up

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The first hook that knows whether the fit resumes: Lightning (2.6) sets trainer.ckpt_path, and restores the
        # resumed checkpoint, only after the setup hooks.
        if trainer.ckpt_path is not None:
            rank_zero_info(f"SelfSupervisedInit: resuming from {trainer.ckpt_path}: its weights are used, none loaded")
            return
        if self.config is not None:
            path = run_prestage(
                trainer, self.config, self._stage_args(trainer), self.prestage_dir, "SelfSupervisedInit"
            )
        else:
            path = Path(self.checkpoint)  # type: ignore[arg-type]
        self.load(pl_module, path, same_training_set=self.config is not None)

    def load(self, pl_module: pl.LightningModule, path: str | Path, same_training_set: bool = False) -> None:
        """Load the ``backbone.`` weights of checkpoint ``path`` into ``pl_module.backbone``.

        Args:
            pl_module: a module with a ``backbone`` (and ``class_counts``, compared with the checkpoint's).
            path: the checkpoint.
            same_training_set: raise (instead of warning) when the checkpoint's ``class_counts`` differ.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SelfSupervisedInit: checkpoint {str(path)!r} does not exist")
        trainer = pl_module._trainer
        datamodule = None if trainer is None else trainer.datamodule
        # a pretext fitted within this command trained on these images: other data is an error; a given checkpoint
        # may come from other data on purpose (a warning)
        check_init_from(path, datamodule, "SelfSupervisedInit", data_mismatch_allowed(trainer) or not same_training_set)
        state = read_stage1_state(str(path), "SelfSupervisedInit")
        self._check_counts(pl_module, state, path, same_training_set)
        weights = backbone_weights(state)
        if not weights:
            raise ValueError(f"SelfSupervisedInit: {path} holds no `backbone.` weights (keys: {sorted(state)[:6]})")
        own = pl_module.backbone.state_dict()
        missing = [k for k in own if k not in weights]
        unexpected = [k for k in weights if k not in own]
        if self.strict and (missing or unexpected):
            raise ValueError(
                f"SelfSupervisedInit: the backbone of {path} does not match {type(pl_module.backbone).__name__}: "
                f"{describe_mismatch(missing, unexpected)} (strict=False loads the keys both have)"
            )
        shared = {k: v for k, v in weights.items() if k in own}
        wrong = [
            f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in shared.items() if v.shape != own[k].shape
        ]
        if wrong:
            raise ValueError(
                f"SelfSupervisedInit: the backbone of {path} has other shapes (checkpoint vs model): "
                + "; ".join(wrong[:8])
            )
        if not shared:
            raise ValueError(f"SelfSupervisedInit: no `backbone.` key of {path} is in the model's backbone")
        pl_module.backbone.load_state_dict(shared, strict=False)
        self.loaded_from = path
        rank_zero_info(f"SelfSupervisedInit: backbone initialised from {path} ({len(shared)} tensors)")

    @staticmethod
    def _check_counts(pl_module: pl.LightningModule, state: dict[str, Any], path: Path, same: bool) -> None:
        counts, ours = state.get("class_counts"), getattr(pl_module, "class_counts", None)
        if counts is None or not isinstance(ours, Tensor):
            return
        ours = ours.detach().cpu().float()
        if counts.shape == ours.shape and torch.equal(counts.float(), ours):
            return
        message = (
            f"SelfSupervisedInit: {path} was pre-trained on a training set with class counts "
            f"{counts.long().tolist()}, this fit's are {ours.long().tolist()}"
        )
        if same:
            raise ValueError(
                f"{message}: the pretext config's data must be this fit's training set (pass its data arguments in "
                "`args`, e.g. --data.init_args.imbalance_ratio=...)"
            )
        rank_zero_warn(message)
