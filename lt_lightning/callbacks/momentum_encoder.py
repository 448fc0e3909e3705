"""``MomentumEncoder``: MoCo's momentum (key) encoder and queue of keys and labels, for PaCo.

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020, as used by PaCo (Cui et
al., ICCV 2021; dvlab-research/Parametric-Contrastive-Learning ``moco/builder.py``):

* the key encoder is an exponential moving average of the online backbone and head,
  ``theta_k <- m theta_k + (1 - m) theta_q`` (``m = 0.999``), updated at every training step *before* the keys are
  computed (as the reference does), starting from a copy of the online weights; it gets no gradients, runs in
  training mode (its BatchNorm statistics follow its own batches) and is not a sub-module of the LightningModule, so
  it is saved once, in this callback's checkpoint state;
* the queue holds the last ``K`` keys and their labels (``-1``: empty slot). Keys of one view per image (the first;
  the reference enqueues its single key view) are enqueued in ``on_train_batch_end`` after an ``all_gather`` across
  processes, so every rank holds the same queue; the pointer wraps around ``K``.

The callback registers three entries in ``pl_module.train_extras`` (read by
:class:`~lt_lightning.losses.paco.PaCoLoss`): ``momentum_keys`` (``[N, d]`` keys of the batch; updates the encoder
first), ``momentum_queue`` (``[K, d]``) and ``momentum_queue_labels`` (``[K]``), the queue as it was before this
batch. The head must be :class:`~lt_lightning.heads.projection.ProjectionHead` (keys are its ``projection``).

Resume: ``state_dict`` holds the encoder's weights and buffers, the queue, its labels and the pointer, so a run
resumed from any checkpoint -- mid-epoch included -- continues exactly. Put this callback before any callback that
saves checkpoints in ``on_train_batch_end`` (Lightning's ``ModelCheckpoint`` always runs last).
"""

from __future__ import annotations

import copy
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from lt_lightning._checks import check_float, check_int
from lt_lightning.heads.base import head_projection_dim
from lt_lightning.heads.projection import PROJECTION_KEY
from lt_lightning.losses.paco import MOMENTUM_KEYS, QUEUE_KEYS, QUEUE_LABELS
from lt_lightning.output import ModelOutput, as_output
from lt_lightning.slots import require_long_tail_module

__all__ = ["MomentumEncoder"]


class MomentumEncoder(Callback):
    """EMA copy of backbone + head (the key encoder) and a FIFO queue of its keys with labels.

    YAML (``trainer.callbacks``)::

        - class_path: lt_lightning.callbacks.momentum_encoder.MomentumEncoder
          init_args: {momentum: 0.999, queue_size: 1024}

    Args:
        momentum: EMA momentum ``m`` in ``[0, 1]``.
        queue_size: ``K``, number of queued keys (``0``: no queue).
        views: views per image in a training batch (only the first is enqueued); ``None``: the datamodule's
            ``views`` (1 if it has none).

    Attributes:
        encoder: the key encoder (``nn.ModuleDict`` with ``backbone`` and ``classifier``), built at fit start.
        queue, queue_labels, pointer: the queue state.
    """

    def __init__(self, momentum: float = 0.999, queue_size: int = 1024, views: int | None = None) -> None:
        check_float("momentum", momentum, minimum=0, maximum=1)
        check_int("queue_size", queue_size, minimum=0)
        check_int("views", views, minimum=1, or_none=True)
        self.momentum = float(momentum)
        self.queue_size = queue_size
        self.views = views
        self.encoder: nn.ModuleDict | None = None
        self.queue: Tensor | None = None
        self.queue_labels: Tensor | None = None
        self.pointer = 0
        self._module: pl.LightningModule | None = None
        self._pending_keys: Tensor | None = None
        self._loaded_state: dict[str, Any] | None = None
        self._views = 1

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        require_long_tail_module(pl_module, self)
        if head_projection_dim(pl_module.classifier) is None:
            raise ValueError(
                f"MomentumEncoder needs a head with a projection (lt_lightning.heads.projection.ProjectionHead), got "
                f"{type(pl_module.classifier).__name__}"
            )
        views = self.views if self.views is not None else getattr(trainer.datamodule, "views", 1)
        self._views = int(views)

    def _build(self, pl_module: pl.LightningModule) -> None:
        encoder = nn.ModuleDict(
            {"backbone": copy.deepcopy(pl_module.backbone), "classifier": copy.deepcopy(pl_module.classifier)}
        )
        encoder.requires_grad_(False)
        self.encoder = encoder.to(pl_module.device)
        dim = int(pl_module.classifier.projection_dim)
        self.queue = torch.zeros(self.queue_size, dim, device=pl_module.device)
        self.queue_labels = torch.full((self.queue_size,), -1, dtype=torch.long, device=pl_module.device)
        self.pointer = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after the checkpoint's weights are restored and the module is on its device
        self._build(pl_module)
        if self._loaded_state is not None:
            self._apply_state(self._loaded_state)
            self._loaded_state = None
        self._module = pl_module
        pl_module.install_train_extra(MOMENTUM_KEYS, self._keys, owner=self)
        pl_module.install_train_extra(QUEUE_KEYS, self._queue_keys, owner=self)
        pl_module.install_train_extra(QUEUE_LABELS, self._queue_label_values, owner=self)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._unregister(pl_module)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._unregister(pl_module)

    def _unregister(self, pl_module: pl.LightningModule) -> None:
        for name in (MOMENTUM_KEYS, QUEUE_KEYS, QUEUE_LABELS):
            pl_module.clear_train_extra(name, owner=self)
        self._pending_keys = None

    # ------------------------------------------------------------------ EMA and keys
    def _online_parameters(self, pl_module: pl.LightningModule) -> list[nn.Parameter]:
        return list(pl_module.backbone.parameters()) + list(pl_module.classifier.parameters())

    def _built(self) -> tuple[nn.ModuleDict, Tensor, Tensor]:
        if self.encoder is None or self.queue is None or self.queue_labels is None:
            raise RuntimeError("MomentumEncoder is used before fit start built its encoder and queue")
        return self.encoder, self.queue, self.queue_labels

    def _encoder_parameters(self) -> list[nn.Parameter]:
        encoder = self._built()[0]
        return list(encoder["backbone"].parameters()) + list(encoder["classifier"].parameters())

    @torch.no_grad()
    def update(self, pl_module: pl.LightningModule) -> None:
        """One EMA step ``theta_k <- m theta_k + (1 - m) theta_q`` over the backbone's and head's parameters."""
        online = [p.detach() for p in self._online_parameters(pl_module)]
        ema = self._encoder_parameters()
        if len(online) != len(ema):
            raise ValueError("the module's backbone/classifier changed structure after the momentum copy was made")
        torch._foreach_mul_(ema, self.momentum)
        torch._foreach_add_(ema, online, alpha=1.0 - self.momentum)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """The key encoder's L2-normalised projection of ``x``."""
        encoder = self._built()[0]
        features = encoder["backbone"](x)
        output = as_output(encoder["classifier"](features), features)
        return output.extras[PROJECTION_KEY]

    def _keys(self, x: Tensor, output: ModelOutput) -> Tensor:
        """``train_extras`` entry: update the encoder, then the batch's keys ``[N, d]`` (kept for the enqueue)."""
        module = self._module
        if module is None:
            raise RuntimeError("MomentumEncoder's train_extras entry is called outside a fit")
        self.update(module)
        self._built()[0].train(module.training)
        keys = self.encode(x).detach()
        self._pending_keys = keys
        return keys

    def _queue_keys(self, x: Tensor, output: ModelOutput) -> Tensor:
        return self._built()[1].clone()

    def _queue_label_values(self, x: Tensor, output: ModelOutput) -> Tensor:
        return self._built()[2].clone()

    # ------------------------------------------------------------------ queue
    @torch.no_grad()
    def enqueue(self, keys: Tensor, labels: Tensor) -> None:
        """Write ``keys`` ``[n, d]`` and ``labels`` ``[n]`` at the pointer (FIFO, wrapping around ``K``)."""
        _, queue, queue_labels = self._built()
        size = self.queue_size
        if size == 0 or keys.shape[0] == 0:
            return
        if keys.shape[0] > size:  # only the newest K survive, where writing all of them in turn would leave them
            self.pointer = (self.pointer + keys.shape[0] - size) % size
            keys, labels = keys[-size:], labels[-size:]
        n = keys.shape[0]
        index = (self.pointer + torch.arange(n, device=queue.device)) % size
        queue[index] = keys.to(queue)
        queue_labels[index] = labels.to(queue_labels)
        self.pointer = (self.pointer + n) % size

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        keys, self._pending_keys = self._pending_keys, None
        if keys is None:
            return
        labels = batch[1]
        if labels.ndim != 1:
            raise ValueError(f"MomentumEncoder enqueues class-index labels [N], got shape {tuple(labels.shape)}")
        if keys.shape[0] != labels.shape[0]:
            raise ValueError(f"{keys.shape[0]} keys but {labels.shape[0]} labels in the batch")
        images = keys.shape[0] // self._views
        keys, labels = keys[:images], labels[:images]  # one view per image, like the reference's single key view
        if trainer.world_size > 1:
            keys = pl_module.all_gather(keys).flatten(0, 1)
            labels = pl_module.all_gather(labels).flatten(0, 1)
        self.enqueue(keys, labels)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        if self.encoder is None:
            return dict(self._loaded_state or {})
        encoder, queue, queue_labels = self._built()
        return {
            "momentum": self.momentum,
            "queue_size": self.queue_size,
            "encoder": {k: v.detach().clone() for k, v in encoder.state_dict().items()},
            "queue": queue.clone(),
            "queue_labels": queue_labels.clone(),
            "pointer": self.pointer,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if int(state_dict["queue_size"]) != self.queue_size:
            raise ValueError(
                f"MomentumEncoder: the checkpoint's queue_size is {state_dict['queue_size']}, this run's is "
                f"{self.queue_size}"
            )
        if self.encoder is None:
            self._loaded_state = state_dict  # applied at fit start, once the encoder is built
        else:
            self._apply_state(state_dict)

    def _apply_state(self, state: dict[str, Any]) -> None:
        encoder, queue, queue_labels = self._built()
        encoder.load_state_dict(state["encoder"])
        queue.copy_(state["queue"])
        queue_labels.copy_(state["queue_labels"])
        self.pointer = int(state["pointer"])
