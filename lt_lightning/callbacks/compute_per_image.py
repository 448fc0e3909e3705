"""``ComputePerImage``: inference compute per image (GFLOPs), for any model, with RIDE's dynamic expert routing.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on one image: convolutions and matrix
products, ``2 · MACs`` each (a multiply-add is 2 FLOPs); element-wise operations, pooling and normalisation are not
counted (they are a small fraction of a ResNet's). Convolution and linear FLOPs grow linearly with the batch, so the
count of one image is exact per image.

* Any model: ``FLOPs(forward(x)) / B``, the whole forward pass (every expert of an ensemble: RIDE without the
  router, SADE, BBN's two branches).
* A :class:`~lt_lightning.heads.routed_multi_expert.RoutedMultiExpertHead` with routing on (after the router stage):
  image ``b`` that used ``k_b`` experts costs ``F_shared + sum_{j<k_b} F_expert_j + sum_{i<min(k_b, E-1)}
  F_decision_i`` (the shared trunk, the experts it used with their heads, the routing decisions it passed through),
  what :func:`~lt_lightning.heads.routed_multi_expert.routed_predict` computes; the average over the evaluated images
  is logged, with the average number of experts per image (RIDE reports both).

Logged at the end of each selected stage: ``{stage}/gflops_per_image`` and, for multi-expert heads,
``{stage}/experts_per_image`` (``stage`` is ``val`` or ``test``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from lt_lightning.heads.base import head_num_experts
from lt_lightning.heads.routed_multi_expert import RoutedMultiExpertHead, check_routable

__all__ = ["ComputePerImage", "RoutedFlops", "count_flops", "model_flops_per_image", "routed_flops"]

_STAGES = ("val", "test")


def count_flops(fn: Callable[..., Any], *args: Any) -> int:
    """FLOPs of the operations ``fn(*args)`` runs (``FlopCounterMode``: ``2 · MACs`` of convolutions and matmuls)."""
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())


def _batch_size(x: Tensor) -> int:
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x must be a non-empty batch tensor, got {type(x).__name__} {getattr(x, 'shape', '')}")
    return int(x.shape[0])


@torch.no_grad()
def model_flops_per_image(model: nn.Module, x: Tensor) -> float:
    """``FLOPs(model(x)) / B``: the forward pass of a batch ``x``, per image."""
    return count_flops(model, x) / _batch_size(x)


@dataclass(frozen=True)
class RoutedFlops:
    """Per-image FLOPs of the parts of a routed multi-expert model.

    Attributes:
        shared: the shared trunk (stem and shared stages).
        experts: expert ``j``'s stages, pooling and head, for each ``j``.
        decisions: routing decision ``i``, for ``i = 0 .. E-2``.
    """

    shared: float
    experts: tuple[float, ...]
    decisions: tuple[float, ...]

    def per_image(self, num_experts: int) -> float:
        """FLOPs of an image that used ``num_experts`` experts (``1 .. E``)."""
        if not 1 <= num_experts <= len(self.experts):
            raise ValueError(f"num_experts must be in [1, {len(self.experts)}], got {num_experts}")
        used_decisions = min(num_experts, len(self.decisions))
        return self.shared + sum(self.experts[:num_experts]) + sum(self.decisions[:used_decisions])

    def mean(self, counts: Tensor) -> float:
        """Average FLOPs per image for a histogram ``counts[k]`` = images that used ``k`` experts (``[E + 1]``)."""
        counts = counts.detach().cpu().to(torch.float64).flatten()
        if counts.numel() != len(self.experts) + 1 or counts[0] != 0:
            raise ValueError(f"counts must be a histogram over 1..{len(self.experts)} experts, got {counts.tolist()}")
        total = float(counts.sum())
        if total <= 0:
            raise ValueError("counts is empty: no image evaluated")
        return sum(float(counts[k]) * self.per_image(k) for k in range(1, counts.numel())) / total


def _expert_logits(backbone: nn.Module, head: RoutedMultiExpertHead, shared: Tensor, expert: int) -> Tensor:
    return head.heads[expert](backbone.expert_features(shared, expert))


@torch.no_grad()
def routed_flops(backbone: nn.Module, head: RoutedMultiExpertHead, x: Tensor) -> RoutedFlops:
    """Measure :class:`RoutedFlops` on a batch ``x`` (per image) for a multi-expert backbone and a routed head."""
    check_routable(backbone, head)
    batch = _batch_size(x)
    shared_map = backbone.shared_features(x)
    shared = count_flops(backbone.shared_features, x) / batch
    experts, decisions = [], []
    logit_sum = None
    for j in range(head.num_experts):
        experts.append(count_flops(_expert_logits, backbone, head, shared_map, j) / batch)
        logits = _expert_logits(backbone, head, shared_map, j)
        logit_sum = logits if logit_sum is None else logit_sum + logits
        if j < head.num_experts - 1:
            features = backbone.expert_features(shared_map, j)
            decisions.append(count_flops(head.router.decision_logit, j, logit_sum / (j + 1), features) / batch)
    return RoutedFlops(shared=shared, experts=tuple(experts), decisions=tuple(decisions))


class ComputePerImage(Callback):
    """Log inference GFLOPs per image (and experts per image for multi-expert heads) at the end of val / test.

    YAML (``trainer.callbacks``)::

        - class_path: lt_lightning.callbacks.compute_per_image.ComputePerImage
          init_args: {stages: [test]}

    The FLOPs are measured at the start of every val / test epoch on the first image of its first batch (a few
    forward passes of one image). For a routed head with routing on, the experts each image used are read from the
    head after every batch (``last_num_experts``) and summed over processes at the end.

    Args:
        stages: where to log, among ``"val"`` and ``"test"``.
    """

    def __init__(self, stages: Sequence[str] = ("test",)) -> None:
        super().__init__()
        stages = tuple(stages)
        if not stages or any(s not in _STAGES for s in stages):
            raise ValueError(f"stages must be a non-empty subset of {_STAGES}, got {stages!r}")
        self.stages = stages
        self._flops: dict[str, float | RoutedFlops | None] = {}
        self._counts: dict[str, Tensor | None] = {}

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _routed_head(pl_module: pl.LightningModule) -> RoutedMultiExpertHead | None:
        head = getattr(pl_module, "classifier", None)
        if isinstance(head, RoutedMultiExpertHead) and head.routing:
            return head
        return None

    @staticmethod
    def _images_of(batch: Any) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, Tensor):
            raise ValueError(f"ComputePerImage: cannot find the images in a batch of type {type(batch).__name__}")
        return x

    def _start(self, stage: str) -> None:
        self._flops[stage] = None
        self._counts[stage] = None

    def _batch_start(self, stage: str, pl_module: pl.LightningModule, batch: Any) -> None:
        if stage not in self.stages or self._flops.get(stage) is not None:
            return
        x = self._images_of(batch)[:1]
        head = self._routed_head(pl_module)
        if head is not None:
            self._flops[stage] = routed_flops(pl_module.backbone, head, x)
        else:
            self._flops[stage] = float(model_flops_per_image(pl_module, x))

    def _batch_end(self, stage: str, pl_module: pl.LightningModule) -> None:
        if stage not in self.stages:
            return
        head = self._routed_head(pl_module)
        if head is not None and head.last_num_experts is not None:
            used = torch.bincount(head.last_num_experts.flatten(), minlength=head.num_experts + 1)
            previous = self._counts.get(stage)
            self._counts[stage] = used if previous is None else previous + used
            head.last_num_experts = None  # counted once

    def _epoch_end(self, stage: str, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if stage not in self.stages:
            return
        flops = self._flops.get(stage)
        values: dict[str, float] = {}
        if self._routed_head(pl_module) is not None:
            counts = self._counts.get(stage)
            if counts is None:
                counts = torch.zeros(pl_module.classifier.num_experts + 1, dtype=torch.long)
            # a collective on every process, also one that evaluated no batch
            counts = trainer.strategy.reduce(counts.to(pl_module.device), reduce_op="sum").cpu().double()
            if isinstance(flops, RoutedFlops) and float(counts.sum()) > 0:
                values["gflops_per_image"] = flops.mean(counts) / 1e9
                used = torch.arange(counts.numel(), dtype=torch.float64)
                values["experts_per_image"] = float((counts * used).sum() / counts.sum())
        elif isinstance(flops, float):
            values["gflops_per_image"] = flops / 1e9
            head = getattr(pl_module, "classifier", None)
            num_experts = head_num_experts(head) if isinstance(head, nn.Module) else 1
            if num_experts > 1:  # a multi-expert head evaluates all its experts on every image
                values["experts_per_image"] = float(num_experts)
        for name, value in values.items():
            pl_module.log(f"{stage}/{name}", value, on_step=False, on_epoch=True, batch_size=1, sync_dist=False)

    # ------------------------------------------------------------------ hooks
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start("val")

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start("test")

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._batch_start("val", pl_module, batch)

    def on_test_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._batch_start("test", pl_module, batch)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batch_end("val", pl_module)

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batch_end("test", pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end("val", trainer, pl_module)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end("test", trainer, pl_module)
