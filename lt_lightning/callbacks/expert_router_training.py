"""``ExpertRouterTraining``: RIDE's second stage, training the expert router on the frozen experts.

Wang et al., "Long-tailed Recognition by Routing Diverse Distribution-Aware Experts", ICLR 2021, Sec. 3.3; the
reference's stage 2 (``config_imbalance_cifar100_ride_ea.json``): every parameter but the router's is frozen (frozen
BatchNorm in ``eval()``), the router is trained with :class:`~lt_lightning.losses.expert_router.ExpertRouterLoss`
(BCE, ``pos_weight`` 100) for 5 epochs on class-balanced batches, SGD lr 0.01 (momentum 0.9, Nesterov, weight decay
5e-4), cosine annealing to 0. Afterwards the head predicts with a dynamic number of experts per image.

The model's classifier must be a :class:`~lt_lightning.heads.routed_multi_expert.RoutedMultiExpertHead`. At the
stage switch this callback freezes the backbone and the expert heads in ``eval()`` mode (their weights and BatchNorm
statistics stay bit-identical), re-initialises the router (seeded), turns routing on, trains with the router loss
(``criterion``), switches sampling to class-balanced (``sampler``; a :class:`~lt_lightning.data.staged.StagedSampler`
keeps the dataloader fixed for the fit) and builds the stage's optimizer and LR schedule over the router.

Two ways to run it (as :class:`~lt_lightning.callbacks.classifier_retraining.ClassifierRetraining`):

* **one fit** (``init_from`` unset): the stage is the last ``epochs`` epochs of the fit (or starts at
  ``start_epoch``). The router's parameters are unused before the stage, so DDP needs
  ``strategy: ddp_find_unused_parameters_true`` (checked at setup).
* **a second fit** from a stage-1 checkpoint (``init_from``): the whole fit is the stage; backbone and expert heads
  are loaded (from a ``MultiExpertHead`` or ``RoutedMultiExpertHead`` checkpoint) and frozen in ``setup``.

The batch size stays the fit's (the reference uses 512 in stage 2 against 128 in stage 1; a second fit can set it).
Resume: the stage is derived from the epoch and the checkpointed ``active`` flag, read in ``on_load_checkpoint``
before Lightning builds the optimizers, so a run resumed before, at or after the switch equals the run that never
stopped.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lt_lightning.callbacks._stage import FrozenStage, seeded_reset
from lt_lightning.data.base import SamplerFactory
from lt_lightning.heads.routed_multi_expert import RoutedMultiExpertHead
from lt_lightning.losses.expert_router import ExpertRouterLoss
from lt_lightning.schedule import EpochValue

__all__ = ["ExpertRouterTraining", "ride_router_sgd"]


def ride_router_sgd(params: Any) -> torch.optim.Optimizer:
    """The reference's stage-2 optimizer: SGD lr 0.01, momentum 0.9, Nesterov, weight decay 5e-4."""
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)


class ExpertRouterTraining(FrozenStage):
    """RIDE's stage 2: frozen experts, trained router, routed prediction afterwards.

    YAML (``trainer.callbacks``)::

        - class_path: lt_lightning.callbacks.expert_router_training.ExpertRouterTraining
          init_args: {epochs: 5, criterion: {class_path: lt_lightning.losses.expert_router.ExpertRouterLoss,
                                             init_args: {pos_weight: 100}}}

    Args:
        start_epoch: first epoch (0-based) of the stage in a single fit, or a fraction of ``trainer.max_epochs`` in
            ``(0, 1)``; ``None``: the last ``epochs`` epochs. Not allowed with ``init_from``.
        epochs: length of the stage when ``start_epoch`` is ``None`` (reference: 5): epochs, or a fraction of the
            run in ``(0, 1)``.
        init_from: a stage-1 checkpoint; the whole fit is then the stage.
        optimizer: optimizer factory of the stage over the router; ``None``: :func:`ride_router_sgd`.
        lr_scheduler: scheduler factory (per epoch, counted from the stage's first epoch); ``None``: cosine to 0.
        criterion: loss of the stage; ``None``: :class:`ExpertRouterLoss` with its defaults.
        sampler: sampler factory of the stage; ``None``: class-balanced. Must draw as many indices as stage 1's.
        seed: seed of the router's re-initialisation at the switch.

    Attributes:
        active: whether the stage is on.
        resolved_start_epoch: the stage's first epoch (resolved at setup).
    """

    trains = "the expert router"
    log_key = "expert_router/stage"

    def __init__(
        self,
        start_epoch: int | float | None = None,
        epochs: EpochValue = 5,
        init_from: str | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        criterion: nn.Module | None = None,
        sampler: SamplerFactory | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(start_epoch, epochs, init_from, optimizer, lr_scheduler, criterion, sampler, seed)

    @staticmethod
    def _head(pl_module: pl.LightningModule) -> RoutedMultiExpertHead:
        head = pl_module.classifier
        if not isinstance(head, RoutedMultiExpertHead):
            raise ValueError(
                "ExpertRouterTraining trains the router of a RoutedMultiExpertHead (lt_lightning.heads."
                f"routed_multi_expert.RoutedMultiExpertHead); the classifier is {type(head).__name__}"
            )
        return head

    def _prepare(self, pl_module: pl.LightningModule) -> None:
        self._head(pl_module)

    def _is_stage1_weight(self, key: str) -> bool:
        # the experts of a MultiExpertHead or RoutedMultiExpertHead checkpoint; the router starts fresh
        return super()._is_stage1_weight(key) and not key.startswith(
            ("classifier.router.", "classifier.routing_enabled")
        )

    def _set_active(self, pl_module: pl.LightningModule, active: bool) -> None:
        self._head(pl_module).set_routing(active)

    def _freeze(self, pl_module: pl.LightningModule) -> None:
        head = self._head(pl_module)
        pl_module.backbone.requires_grad_(False)
        pl_module.backbone.eval()
        head.heads.requires_grad_(False)
        head.heads.eval()
        head.router.requires_grad_(True)

    def _reinitialise(self, pl_module: pl.LightningModule) -> None:
        seeded_reset(self._head(pl_module).router, self.seed)

    def _default_criterion(self) -> nn.Module:
        return ExpertRouterLoss()

    def _default_optimizer(self) -> Any:
        return ride_router_sgd
