"""``ClassifierRetraining``: the second stage of decoupled training, classifier re-training (cRT) or learnable
weight scaling (LWS).

Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020, Sec. 4: stage 1
learns the representation jointly with the classifier (any loss, instance-balanced sampling); stage 2 keeps the
representation fixed and re-balances the classifier with class-balanced sampling for a few epochs (10 in the paper):

* **cRT** re-initialises the classifier and re-trains it, ``z = W f(x) + b`` with ``f`` frozen;
* **LWS** freezes the classifier too and learns one scale per class, ``z_c = s_c (w_c^T f(x) + b_c)``
  (:class:`~lt_lightning.heads.lws.LWSHead`).

At the stage switch this callback freezes the backbone in ``eval()`` mode (weights and BatchNorm statistics stay
bit-identical), re-initialises the classifier (cRT, seeded: every DDP rank and every resume draws the same weights)
or activates the scales (LWS), switches the loss to cross-entropy (``criterion``), sampling to class-balanced
(``sampler``; :class:`~lt_lightning.data.staged.StagedSampler` keeps the dataloader fixed for the fit), and builds a
fresh optimizer and LR schedule over the parameters left trainable (cosine over the stage by default).

Two ways to run it:

* **one fit** (``init_from`` unset): the stage is the last ``epochs`` epochs of the fit, or starts at ``start_epoch``
  (an epoch, or a fraction of ``trainer.max_epochs``). Freezing mid-run under DDP needs
  ``strategy: ddp_find_unused_parameters_true`` (checked at setup).
* **a second fit** from a stage-1 checkpoint (``init_from``): the whole fit is the stage; the backbone and classifier
  weights are loaded and frozen in ``setup``, before DDP wraps the model, so plain ``ddp`` works. The checkpoint must
  come from the same training set (its ``class_counts`` are compared).

Resume: the stage is derived from the epoch and from the callback's checkpointed ``active`` flag, which is read in
``on_load_checkpoint`` -- before Lightning builds the optimizers -- so a run resumed before, at or after the switch
gives the run that never stopped (same weights, same sampled order, same optimizer state).
"""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lt_lightning.callbacks._stage import FrozenStage, seeded_reset
from lt_lightning.data.base import SamplerFactory
from lt_lightning.heads.lws import LWSHead
from lt_lightning.losses.cross_entropy import CrossEntropyLoss

__all__ = ["ClassifierRetraining"]

Method = Literal["crt", "lws"]


class ClassifierRetraining(FrozenStage):
    """Decoupled training's stage 2: frozen representation, re-balanced classifier (cRT or LWS).

    YAML (``trainer.callbacks``)::

        - class_path: lt_lightning.callbacks.classifier_retraining.ClassifierRetraining
          init_args: {method: crt, epochs: 10}

    Args:
        method: ``"crt"`` (re-initialise and re-train the classifier) or ``"lws"`` (learn per-class scales).
        start_epoch: first epoch (0-based) of the stage in a single fit, or a fraction of ``trainer.max_epochs`` in
            ``(0, 1)``; ``None``: the last ``epochs`` epochs. Not allowed with ``init_from``.
        epochs: length of the stage when ``start_epoch`` is ``None`` (10 in Kang et al.).
        init_from: a stage-1 checkpoint; the whole fit is then the stage (set ``trainer.max_epochs`` to its length).
        optimizer: optimizer factory of the stage over the trainable parameters; ``None``: the module's own.
        lr_scheduler: scheduler factory of the stage (stepped per epoch, counted from the stage's first epoch);
            ``None``: cosine annealing to 0 over the stage (Kang et al.).
        criterion: loss of the stage; ``None``: softmax cross-entropy (the paper's stage 2).
        sampler: sampler factory of the stage; ``None``: class-balanced (``p_c = 1/C``; the reference code's
            ``ClassAwareSampler`` is :class:`~lt_lightning.data.resampling.ClassAwareSampler`). It must draw as many
            indices per epoch as the stage-1 sampler.
        seed: seed of cRT's classifier re-initialisation.

    Attributes:
        active: whether the stage is on (the backbone frozen).
        resolved_start_epoch: the stage's first epoch (resolved at setup).
    """

    trains = "the classifier"
    log_key = "classifier_retraining/stage"

    def __init__(
        self,
        method: Method = "crt",
        start_epoch: int | float | None = None,
        epochs: int = 10,
        init_from: str | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        criterion: nn.Module | None = None,
        sampler: SamplerFactory | None = None,
        seed: int = 0,
    ) -> None:
        if method not in ("crt", "lws"):
            raise ValueError(f"method must be 'crt' or 'lws', got {method!r}")
        super().__init__(start_epoch, epochs, init_from, optimizer, lr_scheduler, criterion, sampler, seed)
        self.method = method

    def _identity(self) -> dict[str, Any]:
        return {"method": self.method, "start_epoch": self.start_epoch, "init_from": self.init_from}

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.method, **super().state_dict()}

    def _prepare(self, pl_module: pl.LightningModule) -> None:
        if self.method == "lws" and not isinstance(pl_module.classifier, LWSHead):
            pl_module.classifier = LWSHead.wrap(pl_module.classifier, pl_module.num_classes)
        if self.method == "crt" and not callable(getattr(pl_module.classifier, "reset_parameters", None)):
            raise ValueError(
                f"cRT re-initialises the classifier, but {type(pl_module.classifier).__name__} has no "
                "reset_parameters()"
            )

    def _adapt_stage1_weights(self, weights: dict, pl_module: pl.LightningModule) -> dict:
        if isinstance(pl_module.classifier, LWSHead) and not any(k.startswith("classifier.base.") for k in weights):
            # a plain stage-1 classifier becomes the base of the LWS head
            return {k.replace("classifier.", "classifier.base.", 1): v for k, v in weights.items()}
        return weights

    def _is_stage1_weight(self, key: str) -> bool:
        # LWS scales start at 1 in every stage: a stage-1 checkpoint's own scales (if any) are not loaded
        return super()._is_stage1_weight(key) and key != "classifier.scales"

    def _set_active(self, pl_module: pl.LightningModule, active: bool) -> None:
        if isinstance(pl_module.classifier, LWSHead):
            pl_module.classifier.active = active

    def _freeze(self, pl_module: pl.LightningModule) -> None:
        pl_module.backbone.requires_grad_(False)
        pl_module.backbone.eval()
        classifier = pl_module.classifier
        if self.method == "lws":
            classifier.base.requires_grad_(False)
            classifier.base.eval()
            classifier.scales.requires_grad_(True)
        else:
            classifier.requires_grad_(True)

    def _reinitialise(self, pl_module: pl.LightningModule) -> None:
        if self.method == "crt":
            seeded_reset(pl_module.classifier, self.seed)
        else:
            pl_module.classifier.scales.data.fill_(1.0)

    def _default_criterion(self) -> nn.Module:
        return CrossEntropyLoss()
