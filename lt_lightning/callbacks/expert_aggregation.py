"""SADE's test-time self-supervised aggregation of experts: expert weights learned on unlabeled test images.

Zhang et al., "Self-Supervised Aggregation of Diverse Experts for Test-Agnostic Long-Tailed Recognition", NeurIPS
2022, Sec. 4.2 (code: Vanint/SADE-AgnosticLT, ``test_training_cifar.py``). The experts' logits ``z_e`` of a trained
multi-expert model are combined as ``z = Σ_e w_e z_e`` with ``w = softmax(a)`` on the simplex. Before testing, the
logits ``a`` (initialised to ``1/E`` each, i.e. uniform weights) are learned on the **unlabeled** test images by
maximising the stability of the aggregated prediction across two augmented views of each image:

    maximise  mean_i  cos( softmax(Σ_e w_e z_e(view1(x_i))), softmax(Σ_e w_e z_e(view2(x_i))) )

with the model frozen (eval mode). Defaults are the reference's CIFAR settings (``configs/test_time_cifar100_*``):
SGD lr 0.1, momentum 0.9, weight decay 5e-4, Nesterov, 5 epochs over the test loader, stopping after an epoch in
which a weight fell below 0.05. The views are the datamodule's train-time device augmentation (random crop, flip
where the dataset flips); the reference's views add colour jitter, grayscale and blur (left out here).

The images are all this callback sees: it takes ``batch[0]`` of each test batch (or a bare image batch) and never
touches the labels; the predict loop works the same on image-only loaders. Under DDP each process works on its
shard, and the gradient of the mean cosine over the union of the processes' batches is summed with
``trainer.strategy.reduce`` before every step, so all processes hold the same weights. The weights are then the
module's :attr:`~lt_lightning.module.LongTailModule.test_expert_weights` until the test (or predict) ends: the test
logits are ``sum_e w_e z_e`` over the output's ``expert_logits`` (no state-dict change, the per-expert logits and
their metrics stay as they are); ``test/expert_weight_{e}`` is logged. The views are drawn from a
``torch.Generator`` seeded with ``seed + rank``, so the weights are a function of the seed, the model and the test
data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from lt_lightning._checks import check_float, check_int
from lt_lightning._lightning_compat import unwrap_batch_sampler
from lt_lightning.heads.base import head_num_experts
from lt_lightning.output import ModelOutput
from lt_lightning.slots import require_long_tail_module


def batch_images(batch: Any) -> Tensor:
    """The images of a batch: ``batch`` itself if it is a tensor, else ``batch[0]``; the labels are not touched."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise ValueError(f"a test batch must be an image tensor or [images, ...], got {type(batch).__name__}")


def private_loader(loader: Any) -> Any:
    """A new :class:`DataLoader` over the same dataset, batches, collate function and workers as ``loader``.

    The trainer's own test / predict loader must not be iterated here: its iterator already exists when
    ``on_test_start`` runs, and persistent workers or the predict loop's index-recording batch sampler (which keeps
    one iterator) share their state with any new iteration, so the test would see an exhausted loader. Other
    iterables are returned as they are.
    """
    if not isinstance(loader, DataLoader):
        return loader
    batch_sampler = loader.batch_sampler
    # Lightning's predict loop wraps the batch sampler in an index recorder whose iterator is shared: unwrap it
    batch_sampler = unwrap_batch_sampler(batch_sampler)
    common = {
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "worker_init_fn": loader.worker_init_fn,
        "persistent_workers": loader.num_workers > 0,  # kept over the aggregation's epochs, then released
    }
    if batch_sampler is None:  # automatic batching disabled: the dataset yields whole batches
        return DataLoader(loader.dataset, batch_size=None, sampler=loader.sampler, **common)
    return DataLoader(loader.dataset, batch_sampler=batch_sampler, **common)


def aggregate_expert_logits(expert_logits: Tensor, weights: Tensor) -> Tensor:
    """``Σ_e w_e z_e``: ``[E, B, C]`` expert logits weighted by ``[E]`` weights -> ``[B, C]``."""
    if expert_logits.ndim != 3 or weights.ndim != 1 or weights.shape[0] != expert_logits.shape[0]:
        raise ValueError(
            f"expected expert_logits [E, B, C] and weights [E], got {tuple(expert_logits.shape)} and "
            f"{tuple(weights.shape)}"
        )
    return torch.einsum("e,ebc->bc", weights.to(expert_logits), expert_logits)


def prediction_stability(expert_logits_1: Tensor, expert_logits_2: Tensor, weights: Tensor) -> Tensor:
    """Per-image cosine similarity ``[B]`` of the aggregated softmax predictions of two views (SADE's objective)."""
    p1 = F.softmax(aggregate_expert_logits(expert_logits_1, weights), dim=1)
    p2 = F.softmax(aggregate_expert_logits(expert_logits_2, weights), dim=1)
    return F.cosine_similarity(p1, p2, dim=1, eps=1e-6)


def _check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    return float(check_float(name, value, minimum=0, exclusive_minimum=not allow_zero))


class TestTimeAggregation(Callback):
    """Learn SADE's expert weights on the unlabeled test images before testing (or predicting), then test with them.

    Needs a :class:`~lt_lightning.module.LongTailModule` whose classifier returns ``expert_logits`` ``[E, B, C]``
    (e.g. :class:`~lt_lightning.heads.multi_expert.MultiExpertHead`) and declares ``num_experts``.

    Args:
        epochs: passes over the test loader (reference: 5).
        lr: SGD learning rate (reference: 0.1).
        momentum: SGD momentum (reference: 0.9).
        weight_decay: SGD weight decay on the weight logits (reference: 5e-4).
        nesterov: Nesterov momentum (reference: true).
        min_weight: stop after an epoch that leaves a weight below this (reference: 0.05; 0 never stops early).
        max_steps: optional cap on the optimisation steps (``None``: ``epochs`` full passes).
        seed: seed of the augmented views (process ``r`` uses ``seed + r``).
        augmentation: the view transform, called as ``augmentation(uint8_images, train=True, generator=g)`` and
            returning normalised float images (a :class:`~lt_lightning.data.transforms.DeviceAugmentation`); default
            the datamodule's ``augmentation``.
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(
        self,
        epochs: int = 5,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = True,
        min_weight: float = 0.05,
        max_steps: int | None = None,
        seed: int = 0,
        augmentation: nn.Module | None = None,
    ) -> None:
        check_int("epochs", epochs, minimum=1)
        check_int("max_steps", max_steps, minimum=1, or_none=True)
        self.epochs = epochs
        self.lr = _check_positive("lr", lr)
        self.momentum = _check_positive("momentum", momentum, allow_zero=True)
        if self.momentum > 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.weight_decay = _check_positive("weight_decay", weight_decay, allow_zero=True)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.min_weight = _check_positive("min_weight", min_weight, allow_zero=True)
        if self.min_weight >= 1:
            raise ValueError(f"min_weight must be < 1, got {min_weight!r}")
        self.max_steps = max_steps
        self.seed = int(seed)
        if augmentation is not None and not callable(augmentation):
            raise ValueError(f"augmentation must be callable, got {augmentation!r}")
        self.augmentation = augmentation
        #: the learned weights ``[E]`` on the simplex (CPU), after the last test / predict start
        self.weights: Tensor | None = None
        #: mean cosine stability of each epoch of the last aggregation
        self.history: list[float] = []
        self._module: pl.LightningModule | None = None
        self._views_checked = False

    # ------------------------------------------------------------------ learning
    @staticmethod
    def _num_experts(pl_module: pl.LightningModule) -> int:
        classifier = getattr(pl_module, "classifier", None)
        num = head_num_experts(classifier) if isinstance(classifier, nn.Module) else 1
        if num < 2:
            raise ValueError(
                "TestTimeAggregation needs a LongTailModule with a multi-expert classifier that declares "
                f"`num_experts` (e.g. MultiExpertHead); got classifier {type(classifier).__name__}"
            )
        return num

    @staticmethod
    def _expert_logits(pl_module: pl.LightningModule, x: Tensor, num_experts: int) -> Tensor:
        output = pl_module(x)
        expert_logits = output.expert_logits if isinstance(output, ModelOutput) else None
        if expert_logits is None or expert_logits.ndim != 3 or expert_logits.shape[0] != num_experts:
            found = None if expert_logits is None else tuple(expert_logits.shape)
            raise ValueError(
                f"TestTimeAggregation needs the model's output to carry expert_logits [{num_experts}, B, C], "
                f"got {found}"
            )
        return expert_logits.detach().float()

    def learn_weights(
        self,
        pl_module: pl.LightningModule,
        loader: Iterable[Any] | None,
        augmentation: nn.Module | None = None,
        strategy: Any = None,
        rank: int = 0,
        max_batches: int | None = None,
    ) -> Tensor:
        """Learn the expert weights on the images of ``loader`` and return them (``[E]``, on the simplex, CPU).

        Args:
            pl_module: the trained multi-expert module (put in eval mode here, its mode restored afterwards).
            loader: a loader of test batches (``[images, ...]`` or image tensors); only the images are used.
            augmentation: the view transform (default: this callback's ``augmentation``).
            strategy: a Lightning strategy whose ``reduce`` sums across processes (``None``: one process).
            rank: the process rank (seeds the views with ``seed + rank``).
            max_batches: use at most this many batches of ``loader`` per epoch (the trainer's
                ``limit_test_batches`` / ``fast_dev_run``; ``None``: all).
        """
        if loader is None:
            raise ValueError(
                "TestTimeAggregation needs a test loader (trainer.test(model, datamodule=...) or dataloaders=...)"
            )
        augmentation = augmentation if augmentation is not None else self.augmentation
        if augmentation is None:
            raise ValueError(
                "TestTimeAggregation needs an augmentation for the two views: give `augmentation` or use a "
                "LongTailDataModule (its `augmentation`)"
            )
        num_experts = self._num_experts(pl_module)
        device = pl_module.device
        try:
            local_steps = len(loader)  # type: ignore[arg-type]
        except TypeError as err:
            raise ValueError("TestTimeAggregation needs a test loader with a length (a DataLoader)") from err
        if max_batches is not None:
            local_steps = min(local_steps, int(max_batches))
        steps = torch.tensor(float(local_steps), device=device)
        if strategy is not None:
            steps = strategy.reduce(steps, reduce_op="max")
        steps_per_epoch = int(steps.item())
        if steps_per_epoch == 0:
            raise ValueError("the test loader is empty: TestTimeAggregation has no image to learn the weights on")

        generator = torch.Generator().manual_seed(self.seed + int(rank))
        was_training = pl_module.training
        pl_module.eval()
        self.history = []
        self._views_checked = False
        step = 0
        try:
            # the test / predict loops run under inference mode: leave it to learn the weights
            with torch.inference_mode(False), torch.enable_grad():
                logits = torch.full((num_experts,), 1.0 / num_experts, device=device, requires_grad=True)
                optimizer = torch.optim.SGD(
                    [logits], lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay, nesterov=self.nesterov
                )
                for _ in range(self.epochs):
                    total = torch.zeros(2, dtype=torch.float64, device=device)  # [sum of cosines, images]
                    batches: Iterator[Any] = iter(loader)
                    for _ in range(steps_per_epoch):
                        batch = next(batches, None)
                        packed = self._local_gradient(pl_module, batch, logits, augmentation, generator, num_experts)
                        if strategy is not None:
                            packed = strategy.reduce(packed, reduce_op="sum")
                        grad, stability, count = packed[:num_experts], packed[num_experts], packed[num_experts + 1]
                        total += torch.stack([stability, count]).double()
                        logits.grad = (grad / count.clamp(min=1)).to(logits.dtype)
                        optimizer.step()
                        step += 1
                        if self.max_steps is not None and step >= self.max_steps:
                            break
                    self.history.append(float(total[0] / total[1].clamp(min=1)))
                    weights = F.softmax(logits.detach(), dim=0)
                    if self.max_steps is not None and step >= self.max_steps:
                        break
                    if self.min_weight > 0 and float(weights.min()) < self.min_weight:
                        break
        finally:
            pl_module.train(was_training)
        self.weights = F.softmax(logits.detach(), dim=0).cpu()
        return self.weights

    def _local_gradient(
        self,
        pl_module: pl.LightningModule,
        batch: Any,
        logits: Tensor,
        augmentation: nn.Module,
        generator: torch.Generator,
        num_experts: int,
    ) -> Tensor:
        """``[grad of -Σ cos (E values), Σ cos, number of images]`` of this process's batch (zeros without one)."""
        packed = torch.zeros(num_experts + 2, device=logits.device)
        if batch is None:
            return packed
        images = batch_images(batch)
        if images.shape[0] == 0:
            return packed
        images = pl_module.transfer_batch_to_device(images, pl_module.device, 0)
        if images.is_inference():
            images = images.clone()
        with torch.no_grad():
            view1 = augmentation(images, train=True, generator=generator)
            view2 = augmentation(images, train=True, generator=generator)
            if not self._views_checked:
                self._views_checked = True
                if torch.equal(view1, view2):
                    rank_zero_warn(
                        "TestTimeAggregation: the two augmented views of the first test batch are identical (the "
                        "augmentation does not crop or flip?): the predictions are stable for any weights, which "
                        "stay uniform; give an `augmentation` with random crops or flips"
                    )
            z1 = self._expert_logits(pl_module, view1, num_experts)
            z2 = self._expert_logits(pl_module, view2, num_experts)
        cosine = prediction_stability(z1, z2, F.softmax(logits, dim=0))
        (grad,) = torch.autograd.grad(-cosine.sum(), logits)
        packed[:num_experts] = grad
        packed[num_experts] = cosine.detach().sum()
        packed[num_experts + 1] = cosine.shape[0]
        return packed

    # ------------------------------------------------------------------ installing
    def _remove_hook(self) -> None:
        """Give the module back its own combination of the experts."""
        if self._module is not None:
            self._module.clear_test_expert_weights(owner=self)
            self._module = None

    def _install(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loaders: Any, stage: str) -> None:
        self._remove_hook()
        require_long_tail_module(pl_module, self)
        if isinstance(loaders, (list, tuple)):
            if len(loaders) > 1:
                raise ValueError(f"TestTimeAggregation supports one {stage} loader, got {len(loaders)}")
            loaders = loaders[0] if loaders else None
        if loaders is None:
            raise ValueError(
                f"TestTimeAggregation needs a {stage} loader: trainer.{stage}(model, datamodule=...) or dataloaders=..."
            )
        augmentation = self.augmentation
        if augmentation is None:
            augmentation = getattr(trainer.datamodule, "augmentation", None)
        limits = trainer.num_test_batches if stage == "test" else trainer.num_predict_batches
        limit = limits[0] if limits and math.isfinite(limits[0]) else None
        loader = private_loader(loaders)
        weights = self.learn_weights(pl_module, loader, augmentation, trainer.strategy, trainer.global_rank, limit)
        pl_module.install_test_expert_weights(weights.to(pl_module.device), owner=self)
        self._module = pl_module
        shown = ", ".join(f"{w:.3f}" for w in weights.tolist())
        rank_zero_info(f"TestTimeAggregation: expert weights [{shown}] (learned on the unlabeled {stage} images)")

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer, pl_module, trainer.test_dataloaders, "test")

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer, pl_module, trainer.predict_dataloaders, "predict")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.weights is not None:
            for i, w in enumerate(self.weights.tolist()):
                pl_module.log(f"test/expert_weight_{i}", float(w), sync_dist=False, rank_zero_only=False)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hook()

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hook()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._remove_hook()


__all__ = ["TestTimeAggregation", "aggregate_expert_logits", "batch_images", "prediction_stability", "private_loader"]
