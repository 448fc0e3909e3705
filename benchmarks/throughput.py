"""Training images/s of ResNet-32 on CIFAR-sized data for each fast-path combination, bare loop vs lt_lightning.

Combinations: ``{fp32, bf16} x {channels_last off, on} x {compile off, on}``, named ``fp32``, ``fp32-cl``,
``fp32-compile``, ``bf16-cl-compile``, ... (``bf16`` is bfloat16 autocast over float32 weights, i.e. Lightning's
``bf16-mixed``). Each one is run on two sides that do the same work:

* **bare**: a plain PyTorch loop -- CIFAR ResNet-32 + linear head (100 classes), ``autocast`` for bf16, cross-entropy
  on float32 logits, ``loss.backward()``, SGD step (lr 0.1, momentum 0.9, weight decay 2e-4), ``zero_grad``; for
  ``cl`` the model and each batch in ``torch.channels_last``; for ``compile`` the backbone compiled with
  :meth:`torch.nn.Module.compile` (what the module does);
* **lt_lightning**: :class:`~lt_lightning.module.LongTailModule` (``channels_last`` / ``compile`` options, the same
  weights) fitted by a ``Trainer`` with ``precision`` ``32-true`` / ``bf16-mixed``, no logger, no checkpointing, no
  progress bar, no model summary, no validation, ``log_every_n_steps=50``, the module's per-step loss logging and
  its default finite-loss check (``--finite-check-every``).

The data are already on the device: a pool of 8 batches of random normalised ``float32 [B, 3, 32, 32]`` images and
labels, cycled (no loader, no augmentation: the model's cost only). Each side runs ``--warmup`` steps (compilation
happens there), then ``--steps`` timed steps; images/s = ``steps * batch / time``, with ``torch.cuda.synchronize`` at
both marks on CUDA. The script prints a Markdown table (images/s of each side and the ratio lt_lightning / bare) and
the wall time of the 200-epoch CIFAR-100-LT (rho = 100) ResNet-32 recipe, 10,847 images per epoch, at the measured
lt_lightning rate (training steps only: no validation, data loading or augmentation).

    python benchmarks/throughput.py --device cpu --steps 5 --warmup 2 --threads 1     # a couple of minutes, no compile
    python benchmarks/throughput.py --device cuda --steps 200 --warmup 20             # a GPU, every combination
    python benchmarks/throughput.py --combos fp32,bf16-cl,bf16-cl-compile --compile-mode max-autotune
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import lightning as L
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lt_lightning.backbones import ResNet32
from lt_lightning.data.profiles import long_tail_counts
from lt_lightning.heads.linear import LinearHead
from lt_lightning.module import LongTailModule, ldam_drw_sgd

NUM_CLASSES = 100
#: CIFAR-100-LT at imbalance ratio 100: 500 images of the head class down to 5 (10,847 in all)
RECIPE_COUNTS = long_tail_counts(NUM_CLASSES, 500, 100.0, "exp")
RECIPE_EPOCHS = 200
POOL = 8
PRECISIONS = ("fp32", "bf16")
ALL_COMBOS = tuple(
    "-".join([p, *(["cl"] if cl else []), *(["compile"] if c else [])])
    for p, cl, c in itertools.product(PRECISIONS, (False, True), (False, True))
)


class Combo(NamedTuple):
    """One fast-path combination."""

    name: str
    bf16: bool
    channels_last: bool
    compile: bool

    @classmethod
    def parse(cls, name: str) -> Combo:
        precision, *flags = name.split("-")
        if precision not in PRECISIONS or len(set(flags)) != len(flags) or not set(flags) <= {"cl", "compile"}:
            raise ValueError(f"combination {name!r}: expected fp32|bf16 followed by -cl and/or -compile")
        return cls(name, precision == "bf16", "cl" in flags, "compile" in flags)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batches(args: argparse.Namespace, device: torch.device) -> list[tuple[Tensor, Tensor]]:
    """``warmup + steps`` references to a pool of :data:`POOL` batches already on ``device``."""
    generator = torch.Generator().manual_seed(args.seed)
    pool = [
        (
            torch.randn(args.batch_size, 3, 32, 32, generator=generator).to(device),
            torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=generator).to(device),
        )
        for _ in range(POOL)
    ]
    return [pool[i % POOL] for i in range(args.warmup + args.steps)]


def compile_options(args: argparse.Namespace) -> dict[str, Any]:
    return {} if args.compile_mode is None else {"mode": args.compile_mode}


def run_bare(
    combo: Combo, batches: list[tuple[Tensor, Tensor]], args: argparse.Namespace, device: torch.device
) -> float:
    """Seconds of the ``steps`` timed steps of the plain PyTorch loop."""
    torch.manual_seed(args.seed)
    backbone = ResNet32()
    head = LinearHead(backbone.num_features, NUM_CLASSES)
    model = nn.ModuleDict({"backbone": backbone, "head": head}).to(device).train()
    if combo.channels_last:
        model.to(memory_format=torch.channels_last)
    if combo.compile:
        backbone.compile(**compile_options(args))
    optimizer = ldam_drw_sgd(model.parameters())
    start = 0.0
    for i, (x, y) in enumerate(batches):
        if i == args.warmup:
            synchronize(device)
            start = time.perf_counter()
        if combo.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=combo.bf16):
            logits = head(backbone(x))
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return time.perf_counter() - start


class Batches:
    """The batch list as one iterable (Lightning would read a bare list as a list of dataloaders)."""

    def __init__(self, batches: list[tuple[Tensor, Tensor]]) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class StepTimer(L.Callback):
    """Time from the start of training batch ``first`` to the end of batch ``last`` (synchronised on CUDA)."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.start: float | None = None
        self.seconds: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if idx == self.first:
            synchronize(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, out: Any, batch: Any, idx: int
    ) -> None:
        if idx == self.last and self.start is not None:
            synchronize(pl_module.device)
            self.seconds = time.perf_counter() - self.start


def run_lightning(
    combo: Combo, batches: list[tuple[Tensor, Tensor]], args: argparse.Namespace, device: torch.device
) -> float:
    """Seconds of the ``steps`` timed steps of ``LongTailModule`` + ``Trainer``."""
    torch.manual_seed(args.seed)
    module = LongTailModule(
        ResNet32(),
        num_classes=NUM_CLASSES,
        class_counts=RECIPE_COUNTS,
        classifier=LinearHead,
        optimizer=ldam_drw_sgd,
        finite_check_every_n_steps=args.finite_check_every,
        channels_last=combo.channels_last,
        compile=compile_options(args) if combo.compile else False,
    )
    timer = StepTimer(args.warmup, len(batches) - 1)
    trainer = L.Trainer(
        accelerator=device.type,
        devices=1,
        precision="bf16-mixed" if combo.bf16 else "32-true",
        max_epochs=1,
        max_steps=len(batches),
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=50,
        callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=Batches(batches))
    if timer.seconds is None:
        raise RuntimeError(f"{combo.name}: the timed steps did not run ({trainer.global_step} steps)")
    return timer.seconds


SIDES: dict[str, Callable[..., float]] = {"bare": run_bare, "lt_lightning": run_lightning}


def fmt_hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda if available); default auto")
    parser.add_argument("--steps", type=int, default=50, help="timed training steps per run; default 50")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation); default 10")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size; default 128")
    parser.add_argument(
        "--combos", default="all", help=f"comma-separated combinations, or all (default): {','.join(ALL_COMBOS)}"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side per combination (median); default 1")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; default: torch's")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode (e.g. max-autotune); default none")
    parser.add_argument(
        "--finite-check-every",
        type=int,
        default=50,
        help="the module's finite_check_every_n_steps (50, its default: recorded on the device every step, one host "
        "sync every 50 steps; 1: a sync per step; 0: never)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data and weights; default 0")
    args = parser.parse_args(argv)
    for name in ("steps", "warmup", "batch_size", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.finite_check_every < 0:
        parser.error(f"--finite-check-every must be >= 0, got {args.finite_check_every}")
    names = ALL_COMBOS if args.combos == "all" else tuple(c.strip() for c in args.combos.split(",") if c.strip())
    try:
        args.combos = [Combo.parse(name) for name in names]
    except ValueError as error:
        parser.error(f"--combos: {error}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available")
    if torch.device(args.device).type not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or cuda[:N], got {args.device!r}")
    return args


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    threads = torch.get_num_threads()
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, {threads} torch threads"


def quiet() -> None:
    """Keep the output to the measurements: no Lightning banners, no warnings about the absent validation loop."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    for message in (".*no `val_dataloader`", ".*isinstance\\(treespec, LeafSpec\\)", ".*does not have many workers"):
        warnings.filterwarnings("ignore", message=message)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    batches = make_batches(args, device)
    images = args.steps * args.batch_size
    load_before = os.getloadavg()
    rows = []
    for combo in args.combos:
        rates: dict[str, list[float]] = {side: [] for side in SIDES}
        for repeat in range(args.repeats):
            order = list(SIDES) if repeat % 2 == 0 else list(reversed(SIDES))
            for side in order:
                if combo.compile:
                    torch._dynamo.reset()  # each compiled run compiles afresh (and never hits the recompile limit)
                seconds = SIDES[side](combo, batches, args, device)
                rates[side].append(images / seconds)
                print(f"{combo.name:<16} {side:<13} run {repeat + 1}: {images / seconds:9.1f} img/s", flush=True)
        bare, lt = statistics.median(rates["bare"]), statistics.median(rates["lt_lightning"])
        rows.append((combo.name, bare, lt))
    load_after = os.getloadavg()
    recipe_images = RECIPE_EPOCHS * sum(RECIPE_COUNTS)
    baseline = rows[0][2]
    print()
    print(
        f"device: {describe_device(device)}; torch {torch.__version__}, lightning {L.__version__}; ResNet-32, "
        f"{NUM_CLASSES} classes, batch {args.batch_size}, {args.warmup} warm-up + {args.steps} timed steps, "
        f"{args.repeats} repeat(s), finite check every {args.finite_check_every} step(s)"
        + (f", compile mode {args.compile_mode}" if args.compile_mode else "")
    )
    if device.type == "cpu":
        print(f"1-min load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print()
    print(
        f"| combination | bare img/s | lt_lightning img/s | lt_lightning / bare | vs {rows[0][0]} (lt_lightning) "
        f"| {RECIPE_EPOCHS} epochs x {sum(RECIPE_COUNTS):,} images |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, bare, lt in rows:
        print(
            f"| {name} | {bare:.1f} | {lt:.1f} | {lt / bare:.3f} | {lt / baseline:.2f}x "
            f"| {fmt_hours(recipe_images / lt)} |"
        )
    print()
    print(
        f"Wall time of the {RECIPE_EPOCHS}-epoch CIFAR-100-LT (rho=100) ResNet-32 recipe ({sum(RECIPE_COUNTS):,} "
        f"images/epoch) at the lt_lightning rate: training steps only (no validation, data loading or augmentation)."
    )


if __name__ == "__main__":
    main()
