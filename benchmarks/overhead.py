"""Training throughput of lt_lightning vs a bare PyTorch loop doing the same work (the framework's overhead).

Both sides train a CIFAR ResNet-32 + linear head (same seed, so the same initial weights) with softmax
cross-entropy and the LDAM-DRW SGD (lr 0.1, momentum 0.9, weight decay 2e-4) on in-memory synthetic CIFAR-sized
``uint8 [N, 3, 32, 32]`` images, batch 128, with the same device-side augmentation
(:class:`lt_lightning.data.transforms.DeviceAugmentation`: pad-4 random crop, horizontal flip, CIFAR normalisation).

* lightning: :class:`~lt_lightning.module.LongTailModule` fitted by a ``Trainer`` with the defaults a user gets
  (progress bar, model summary, ``train/loss`` logged per step and per epoch) except ``logger=False``,
  ``enable_checkpointing=False``, ``log_every_n_steps=50``, ``limit_val_batches=0``; the data come from a
  :class:`~lt_lightning.data.base.LongTailDataModule` subclass (instance-balanced sampler, augmentation in
  ``on_after_batch_transfer``).
* bare: a ``DataLoader`` (shuffle) over the same dataset, then augment, forward, ``loss.backward()``,
  ``optimizer.step()``, ``optimizer.zero_grad()``.

One epoch is ``--steps`` batches. Each side runs a warm-up epoch, then a timed epoch; images/s is
``steps * batch_size / time of the timed epoch``. Sides alternate which goes first in each repeat, and the script
reports the median over ``--repeats`` of each rate and of the per-repeat ratio lightning / bare (target >= 0.95
on CPU). Run ``python benchmarks/overhead.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.nn import functional as F
from torch.utils.data import DataLoader

from lt_lightning.backbones import ResNet32
from lt_lightning.data.base import LongTailDataModule, TensorImageDataset, collate_image_batch
from lt_lightning.data.transforms import CIFAR_MEAN, CIFAR_STD, DeviceAugmentation
from lt_lightning.heads.linear import LinearHead
from lt_lightning.losses.cross_entropy import CrossEntropyLoss
from lt_lightning.module import LongTailModule, ldam_drw_sgd

NUM_CLASSES = 10


class SyntheticCifarDataModule(LongTailDataModule):
    """CIFAR-sized random ``uint8`` images held in memory, with the CIFAR device pipeline (crop 4, flip, normalise).

    Labels are ``i mod 10`` (balanced): the class profile does not change the cost of a step.
    """

    mean = CIFAR_MEAN
    std = CIFAR_STD
    crop_padding = 4
    horizontal_flip = True

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 128, seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=0, seed=seed)
        self.images = images
        self.labels = labels
        self._set_class_info(labels, NUM_CLASSES, origin="synthetic labels")

    def setup(self, stage: str | None = None) -> None:
        dataset = TensorImageDataset(self.images, self.labels)
        self.train_dataset = dataset
        self.val_dataset = dataset
        self.test_dataset = dataset


def synthetic_cifar(num_samples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_samples`` random ``uint8 [3, 32, 32]`` images and labels ``i mod 10``."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (num_samples, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.arange(num_samples) % NUM_CLASSES
    return images, labels


def build_model(seed: int) -> tuple[ResNet32, LinearHead]:
    """ResNet-32 backbone and 10-class linear head, drawn from ``seed`` (identical on both sides)."""
    torch.manual_seed(seed)
    backbone = ResNet32()
    head = LinearHead(backbone.num_features, NUM_CLASSES)
    return backbone, head


def build_module(labels: torch.Tensor, seed: int) -> LongTailModule:
    """The lightning side's module: :func:`build_model`'s weights (backbone, then head drawn from ``seed``)."""
    torch.manual_seed(seed)
    backbone = ResNet32()
    return LongTailModule(
        backbone,
        num_classes=NUM_CLASSES,
        class_counts=torch.bincount(labels, minlength=NUM_CLASSES).tolist(),
        classifier=LinearHead,
        criterion=CrossEntropyLoss(),
        optimizer=ldam_drw_sgd,
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timing(NamedTuple):
    """One timed epoch: its wall time and the wall time of each step (start of one batch to start of the next)."""

    epoch_s: float
    step_s: list[float]
    cpu_s: float = float("nan")  # process CPU time of the epoch (all threads), where measured
    wait_s: float = float("nan")  # time the calling thread waited for a core (run queue), where measured (Linux)


class EpochTimer(Callback):
    """Wall time of one training epoch (``on_train_epoch_start`` to ``on_train_epoch_end``) and of its steps."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.marks: list[float] = []

    def _mark(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            synchronize(pl_module.device)
            self.marks.append(time.perf_counter())

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark(trainer, pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._mark(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark(trainer, pl_module)

    def timing(self, steps: int) -> Timing:
        if len(self.marks) != steps + 2:
            raise RuntimeError(f"timed epoch ran {len(self.marks) - 2} batches, expected {steps}")
        return timing_from_marks(self.marks)


def run_queue_wait() -> float:
    """Seconds the calling thread has spent runnable but waiting for a core (Linux ``/proc/thread-self/schedstat``,
    second field; ``nan`` where unavailable): the part of a wall time that other processes' load adds."""
    try:
        return int(open("/proc/thread-self/schedstat").read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


def timing_from_marks(marks: list[float]) -> Timing:
    """``marks`` = [epoch start, start of batch 1, ..., start of batch n, epoch end]."""
    step_s = [b - a for a, b in zip(marks[1:-1], marks[2:], strict=True)]
    return Timing(epoch_s=marks[-1] - marks[0], step_s=step_s)


def run_lightning(images: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace) -> Timing:
    """Timing of the second (first is warm-up) epoch of a ``Trainer.fit``."""
    torch.set_num_threads(args.threads)
    module = build_module(labels, args.seed)
    datamodule = SyntheticCifarDataModule(images, labels, batch_size=args.batch_size, seed=args.seed)
    timer = EpochTimer(epoch=1)
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=1,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        log_every_n_steps=50,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=datamodule)
    return timer.timing(args.steps)


def train_bare(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    channels_last: bool = False,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    eval_batch_size: int = 256,
) -> list[Timing]:
    """The project's bare PyTorch loop (used by this script and ``benchmarks/epoch_ratio.py``): a :class:`Timing`
    per epoch.

    :func:`build_model`'s ResNet-32 + linear head from ``seed``, :func:`~lt_lightning.module.ldam_drw_sgd`, a
    ``DataLoader`` (shuffle, seeded) over a :class:`TensorImageDataset` of ``images`` / ``labels``, and per batch:
    transfer, :class:`DeviceAugmentation` (pad-4 crop, flip, CIFAR normalisation), ``channels_last`` input when
    asked (the model too), cross-entropy, ``loss.backward()``, ``optimizer.step()``, ``optimizer.zero_grad()``.
    With ``validation = (images, labels)`` each epoch ends with an evaluation pass over them (``eval()`` mode,
    ``inference_mode``, batches of ``eval_batch_size``, normalisation only, top-1 counted on the device), which the
    epoch's time includes. A timing's marks: epoch start, start of each batch, end of the epoch; its ``cpu_s`` is the
    process CPU time of the epoch and ``wait_s`` the time the loop's thread waited for a core
    (:func:`run_queue_wait`).
    """
    backbone, head = build_model(seed)
    backbone.to(device)
    head.to(device)
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
        head.to(memory_format=torch.channels_last)
    params = [*backbone.parameters(), *head.parameters()]
    optimizer = ldam_drw_sgd(params)
    augmentation = DeviceAugmentation(CIFAR_MEAN, CIFAR_STD, padding=4, flip=True)
    loader = DataLoader(
        TensorImageDataset(images, labels),
        batch_size=batch_size,
        shuffle=True,
        num_workers=0,
        collate_fn=collate_image_batch,
        generator=torch.Generator().manual_seed(seed),
    )
    val_loader = None
    if validation is not None:
        val_loader = DataLoader(
            TensorImageDataset(*validation), batch_size=eval_batch_size, num_workers=0, collate_fn=collate_image_batch
        )
    timings: list[Timing] = []
    for _ in range(epochs):
        synchronize(device)
        marks = [time.perf_counter()]
        cpu_start, wait_start = time.process_time(), run_queue_wait()
        backbone.train()
        head.train()
        for x, y in loader:
            synchronize(device)
            marks.append(time.perf_counter())
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            x = augmentation(x, train=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(head(backbone(x)), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if val_loader is not None:
            backbone.eval()
            head.eval()
            correct = torch.zeros((), dtype=torch.long, device=device)
            with torch.inference_mode():
                for x, y in val_loader:
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    x = augmentation(x, train=False)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    correct += (head(backbone(x)).argmax(dim=1) == y).sum()
            correct.item()  # the epoch ends when its evaluation is done
        synchronize(device)
        marks.append(time.perf_counter())
        timing = timing_from_marks(marks)
        timings.append(timing._replace(cpu_s=time.process_time() - cpu_start, wait_s=run_queue_wait() - wait_start))
    return timings


def run_bare(images: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace) -> Timing:
    """Timing of the second (first is warm-up) epoch of the bare loop (:func:`train_bare`)."""
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    timing = train_bare(images, labels, epochs=2, batch_size=args.batch_size, seed=args.seed, device=device)[-1]
    if len(timing.step_s) != args.steps:
        raise RuntimeError(f"timed epoch ran {len(timing.step_s)} batches, expected {args.steps}")
    return timing


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps (= batches per epoch); default 20")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size; default 128")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for both sides; default 2")
    parser.add_argument("--repeats", type=int, default=3, help="repeats (order alternates); default 3")
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu", help="device; default cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and model; default 0")
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "threads", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        parser.error("--accelerator gpu: CUDA is not available")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    images, labels = synthetic_cifar(args.steps * args.batch_size, args.seed)
    sides: dict[str, Callable[[torch.Tensor, torch.Tensor, argparse.Namespace], Timing]] = {
        "lightning": run_lightning,
        "bare": run_bare,
    }
    images_per_epoch = args.steps * args.batch_size
    rates: dict[str, list[float]] = {name: [] for name in sides}  # images/s of each timed epoch
    steps: dict[str, list[float]] = {name: [] for name in sides}  # every timed step's seconds, all repeats
    ratios: list[float] = []
    load_before = os.getloadavg()
    for repeat in range(args.repeats):
        order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
        for name in order:
            timing = sides[name](images, labels, args)
            rates[name].append(images_per_epoch / timing.epoch_s)
            steps[name].extend(timing.step_s)
        ratios.append(rates["lightning"][-1] / rates["bare"][-1])
        print(
            f"repeat {repeat + 1}/{args.repeats} ({' first, '.join(order)} second): "
            f"lightning {rates['lightning'][-1]:.1f} img/s, bare {rates['bare'][-1]:.1f} img/s, "
            f"ratio {ratios[-1]:.3f}",
            flush=True,
        )
    device = torch.cuda.get_device_name() if args.accelerator == "gpu" else f"CPU ({platform.processor() or 'cpu'})"
    step_rate = {name: args.batch_size / statistics.median(steps[name]) for name in sides}
    load_after = os.getloadavg()
    print()
    print(
        f"machine: {device}, {os.cpu_count()} logical cores, torch {torch.__version__}, lightning {L.__version__}, "
        f"threads {args.threads}; 1-min load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(f"setup: ResNet-32 + linear head, batch {args.batch_size}, {args.steps} timed steps, {args.repeats} repeats")
    print(
        f"lightning: {statistics.median(rates['lightning']):.1f} img/s (median over repeats of timed epochs), "
        f"{step_rate['lightning']:.1f} img/s (from the median step time)"
    )
    print(
        f"bare:      {statistics.median(rates['bare']):.1f} img/s (median over repeats of timed epochs), "
        f"{step_rate['bare']:.1f} img/s (from the median step time)"
    )
    print(
        f"ratio lightning/bare: {statistics.median(ratios):.3f} (median of per-repeat ratios), "
        f"{step_rate['lightning'] / step_rate['bare']:.3f} (median step times); target >= 0.95 on CPU"
    )


if __name__ == "__main__":
    main()
