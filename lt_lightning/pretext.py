"""``SelfSupervisedPretraining``: stage 1 of SSP, a pretext task on the training images without their labels.

Yang & Xu, "Rethinking the Value of Labels for Improving Class-Imbalanced Learning", NeurIPS 2020: a backbone first
learns from a self-supervised task on the (long-tailed) training images, labels unused; the ordinary long-tailed
training then starts from that backbone (:class:`~lt_lightning.callbacks.self_supervised_init.SelfSupervisedInit`).
Two pretext tasks:

* ``"rotation"`` (Gidaris et al., ICLR 2018; the reference's CIFAR choice, YyzHarry/imbalanced-semi-self
  ``pretrain_rot.py``): image ``x`` is rotated by ``k * 90°`` and a 4-way linear head predicts ``k`` with
  cross-entropy, ``L = CE(W f(rot_k(x)) + b, k)``. ``rotations="random"`` is the reference's draw (its
  ``utils.rotation``): one rotation per image, ``k`` the first ``B`` entries of a shuffled ``[0, 1, 2, 3] *
  (B // 4 + 1)`` (the four rotations nearly equally often in every batch); here the shuffle is seeded by ``(seed,
  global_step, rank)``, so a resumed fit draws what the uninterrupted one drew at the same step.
  ``rotations="all"`` feeds all four rotations of every image (``4B`` images; Gidaris et al.'s RotNet).
* ``"simclr"`` (Chen et al., ICML 2020): the datamodule gives ``V >= 2`` augmented views of each image
  (``data.init_args.views``, view-major), a 2-layer MLP ``g`` projects the features, ``z = g(f(x)) / ||g(f(x))||``,
  and :func:`lt_lightning.losses.contrastive.simclr_loss` (NT-Xent at ``temperature``) pulls the views of one image
  together.

Labels are never read: a datamodule whose labels are permuted gives the same run. The model is a
:class:`~lt_lightning.module.LongTailModule` subclass only so that ``lt-lightning fit`` (whose model class is
``LongTailModule``, in subclass mode) accepts it and links ``num_classes`` / ``class_counts`` into it; these are not
used by the task, the ``classifier`` is ``nn.Identity`` and the pretext head is ``head``.

Validation logs the pretext loss and accuracy as ``val/loss`` and ``val/acc`` (rotation: all four rotations of
every validation image; SimCLR: ``V`` views cropped / flipped with a generator seeded by the batch index, and
accuracy = how often an embedding's nearest other embedding is one of its own image's views). The checkpoint holds
the backbone under ``backbone.`` (the head under ``head.``), which is what SSP's stage 2 loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lt_lightning._checks import check_int, is_integer, is_number
from lt_lightning.backbones.base import Backbone
from lt_lightning.data.transforms import random_crop_with_padding, random_horizontal_flip
from lt_lightning.losses.contrastive import simclr_loss
from lt_lightning.module import LongTailModule

__all__ = [
    "SelfSupervisedPretraining",
    "all_rotations",
    "contrastive_accuracy",
    "no_classifier",
    "reference_rotation_labels",
    "rotate_batch",
    "step_generator",
]

Task = Literal["rotation", "simclr"]
Rotations = Literal["random", "all"]


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, step, rank)`` (numpy's ``SeedSequence``: distinct streams per triple)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(step), int(rank)]).generate_state(2, np.uint32)
    generator = torch.Generator()
    generator.manual_seed(int(state[0]) << 32 | int(state[1]))
    return generator


def reference_rotation_labels(batch_size: int, generator: torch.Generator) -> Tensor:
    """The reference's rotation labels: the first ``B`` entries of a shuffled ``[0, 1, 2, 3] * (B // 4 + 1)``.

    (YyzHarry/imbalanced-semi-self ``utils.rotation``, which shuffles with ``np.random.permutation``; here a seeded
    ``torch.randperm``.) Every ``k`` appears ``B / 4`` times up to the truncation of the last block.
    """
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    pool = torch.arange(4).repeat(batch_size // 4 + 1)
    return pool[torch.randperm(pool.numel(), generator=generator)][:batch_size]


def _check_square(x: Tensor) -> None:
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation needs a batch of square images [B, C, H, H], got shape {tuple(x.shape)}")


def rotate_batch(x: Tensor, k: Tensor) -> Tensor:
    """Image ``i`` rotated counter-clockwise by ``k_i * 90°`` (``torch.rot90`` over ``(H, W)``), ``x`` unchanged.

    Args:
        x: ``[B, C, H, H]`` batch (square: a rotated image keeps its shape).
        k: ``[B]`` integers in ``{0, 1, 2, 3}``.
    """
    _check_square(x)
    k = torch.as_tensor(k, device=x.device).long().flatten()
    if k.numel() != x.shape[0]:
        raise ValueError(f"k has {k.numel()} entries for a batch of {x.shape[0]} images")
    if ((k < 0) | (k > 3)).any():
        raise ValueError(f"rotation labels must be in {{0, 1, 2, 3}}, got {k.unique().tolist()}")
    out = x.clone()
    for r in (1, 2, 3):
        chosen = k == r
        if chosen.any():
            out[chosen] = torch.rot90(x[chosen], r, dims=(2, 3))
    return out


def all_rotations(x: Tensor) -> tuple[Tensor, Tensor]:
    """All four rotations of every image, rotation-major: ``([rot_0(x); rot_1(x); rot_2(x); rot_3(x)], k)``."""
    _check_square(x)
    images = torch.cat([torch.rot90(x, r, dims=(2, 3)) for r in range(4)])
    return images, torch.arange(4, device=x.device).repeat_interleave(x.shape[0])


def contrastive_accuracy(z: Tensor, views: int) -> Tensor:
    """Fraction of the ``V B`` embeddings whose most similar other embedding (cosine) is a view of the same image.

    ``z`` is view-major: rows ``i, B + i, ..., (V - 1) B + i`` are the views of image ``i``.
    """
    n = z.shape[0]
    if views < 2 or n % views:
        raise ValueError(f"{n} embeddings are not {views} views (>= 2) of one batch")
    zn = nn.functional.normalize(z.detach().float(), dim=1)
    sim = zn @ zn.T
    sim.fill_diagonal_(float("-inf"))
    batch = n // views
    image = torch.arange(n, device=z.device) % batch
    return (image[sim.argmax(dim=1)] == image).float().mean()


def no_classifier(num_features: int, num_classes: int) -> nn.Module:
    """The ``classifier`` of a pretext model: none (``nn.Identity``); the pretext head is ``head``."""
    return nn.Identity()


class SelfSupervisedPretraining(LongTailModule):
    """Backbone + pretext head trained without labels (SSP's stage 1): rotation prediction or SimCLR.

    A :class:`~lt_lightning.module.LongTailModule` (so that ``lt-lightning fit`` accepts it and links the data's
    ``num_classes`` / ``class_counts`` into it) whose ``classifier`` is ``nn.Identity`` and whose steps run the pretext
    task; the optimizer / scheduler factories and :meth:`configure_optimizers` are the module's.

    Args:
        backbone: feature extractor with ``num_features`` (the one stage 2 will use).
        num_classes: number of classes (linked by the CLI; not used by the task).
        class_counts: training images per class (linked by the CLI; kept as a buffer, not used by the task).
        task: ``"rotation"`` (4-way rotation prediction) or ``"simclr"`` (two-view contrastive; needs
            ``data.init_args.views >= 2``).
        rotations: ``"random"`` (the reference: one rotation per image, a seeded balanced draw) or ``"all"`` (the
            four rotations of every image).
        temperature: SimCLR's NT-Xent temperature ``tau > 0``.
        projection_dim: output size of SimCLR's projection MLP ``Linear(D, D) -> ReLU -> Linear(D, projection_dim)``.
        optimizer: optimizer factory over the trainable parameters; default :func:`~lt_lightning.module.ldam_drw_sgd`.
        lr_scheduler: optional scheduler factory.
        lr_scheduler_interval: ``"epoch"`` or ``"step"``.
        finite_check_every_n_steps: stop with ``FloatingPointError`` when the pretext loss is NaN / inf, checked every
            ``n`` steps (``0``: never; each check is one host-device sync; a diverged loss stays NaN, so it is caught
            at the next check).
        seed: seed of the rotation draws (with the global step and the rank) and of SimCLR's validation views.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        class_counts: Sequence[int],
        task: Task = "rotation",
        rotations: Rotations = "random",
        temperature: float = 0.5,
        projection_dim: int = 128,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: str = "epoch",
        finite_check_every_n_steps: int = 50,
        seed: int = 0,
    ) -> None:
        if task not in ("rotation", "simclr"):
            raise ValueError(f"task must be 'rotation' or 'simclr', got {task!r}")
        if rotations not in ("random", "all"):
            raise ValueError(f"rotations must be 'random' or 'all', got {rotations!r}")
        if not is_number(temperature) or not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        check_int("projection_dim", projection_dim, minimum=1)
        check_int("seed", seed)
        super().__init__(
            backbone,
            num_classes,
            class_counts,
            classifier=no_classifier,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            lr_scheduler_interval=lr_scheduler_interval,
            finite_check_every_n_steps=finite_check_every_n_steps,
        )
        self.task = task
        self.rotations = rotations
        self.temperature = float(temperature)
        self.seed = seed
        num_features = int(backbone.num_features)
        if task == "rotation":
            self.head: nn.Module = nn.Linear(num_features, 4)
        else:
            self.head = nn.Sequential(
                nn.Linear(num_features, num_features), nn.ReLU(inplace=True), nn.Linear(num_features, projection_dim)
            )
        self.pretext_val_loss = MeanMetric()
        self.pretext_val_acc = MeanMetric()
        self.pretext_test_loss = MeanMetric()
        self.pretext_test_acc = MeanMetric()
        self.views = 2

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        if self.task != "simclr" or stage != "fit":
            return
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        views = getattr(datamodule, "views", None)
        if not is_integer(views) or views < 2:
            raise ValueError(
                "SelfSupervisedPretraining(task='simclr') needs a LongTailDataModule with views >= 2 "
                f"(data.init_args.views: 2); got views={views!r} from {type(datamodule).__name__}"
            )
        self.views = views

    # ------------------------------------------------------------------ pretext
    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """Pretext output: rotation logits ``[B, 4]`` or SimCLR projections ``[B, projection_dim]``."""
        return self.head(self.backbone(x))

    def _rotation(self, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        if generator is None:
            images, k = all_rotations(x)
        else:
            k = reference_rotation_labels(x.shape[0], generator).to(x.device)
            images = rotate_batch(x, k)
        logits = self(images)
        loss = nn.functional.cross_entropy(logits, k)
        return loss, (logits.detach().argmax(dim=1) == k).float().mean()

    def _simclr(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = nn.functional.normalize(self(x), dim=1)
        return simclr_loss(z, self.views, self.temperature), contrastive_accuracy(z, self.views)

    @staticmethod
    def _images(batch: Any) -> Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch  # labels, if any, are never read
        if not isinstance(x, Tensor):
            raise ValueError(f"batch must be an image tensor or [images, labels], got {type(batch).__name__}")
        return x

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = self._images(batch)
        if self.task == "rotation":
            random = self.rotations == "random"
            generator = step_generator(self.seed, self.global_step, self.global_rank) if random else None
            loss, acc = self._rotation(x, generator)
        else:
            if x.shape[0] % self.views:
                raise ValueError(f"a training batch of {x.shape[0]} images is not {self.views} views of one batch")
            loss, acc = self._simclr(x)
        n = self.finite_check_every_n_steps
        if n and self.global_step % n == 0 and not torch.isfinite(loss):
            raise FloatingPointError(f"pretext loss is {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=x.shape[0])
        self.log("train/acc", acc, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return loss

    def _evaluation_views(self, x: Tensor, batch_idx: int) -> Tensor:
        """``V`` views of an (already normalised) evaluation batch: crop / flip as the datamodule's training
        pipeline (zero padding in normalised units), drawn from a generator seeded by ``(seed, batch_idx, rank)``
        (the same views every epoch)."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        padding = int(getattr(datamodule, "crop_padding", 0) or 0)
        flip = bool(getattr(datamodule, "horizontal_flip", False))
        generator = step_generator(self.seed, batch_idx, self.global_rank)
        views = []
        for _ in range(self.views):
            view = random_crop_with_padding(x, padding, generator)
            views.append(random_horizontal_flip(view, 0.5, generator) if flip else view)
        return torch.cat(views)

    def _evaluate(self, batch: Any, batch_idx: int, loss_metric: MeanMetric, acc_metric: MeanMetric) -> None:
        x = self._images(batch)
        if self.task == "rotation":
            loss, acc = self._rotation(x, None)  # all four rotations of every image
        else:
            loss, acc = self._simclr(self._evaluation_views(x, batch_idx))
        loss_metric.update(loss, weight=x.shape[0])
        acc_metric.update(acc, weight=x.shape[0])

    def _results(self, stage: str, loss_metric: MeanMetric, acc_metric: MeanMetric) -> dict[str, Tensor]:
        results = {"loss": loss_metric.compute(), "acc": acc_metric.compute()}
        loss_metric.reset()
        acc_metric.reset()
        # values of metrics whose states are summed over processes: identical on every rank
        self.log_dict({f"{stage}/{k}": v for k, v in results.items()}, sync_dist=False)
        return results

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, self.pretext_val_loss, self.pretext_val_acc)

    def on_validation_epoch_end(self) -> None:
        self.last_val_results = self._results("val", self.pretext_val_loss, self.pretext_val_acc)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, self.pretext_test_loss, self.pretext_test_acc)

    def on_test_epoch_end(self) -> None:
        # pretext numbers, not class accuracies: the long-tailed test report has nothing to show
        self._results("test", self.pretext_test_loss, self.pretext_test_acc)
        self.last_test_results = {}

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """The backbone's features ``[B, D]`` (what stage 2 starts from)."""
        return self.backbone(self._images(batch))
