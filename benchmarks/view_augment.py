"""Images/s of the device-side train augmentation: ``standard`` (pad-4 crop + flip) vs ``simclr`` views.

Times :class:`~lt_lightning.data.transforms.DeviceAugmentation` with CIFAR's mean / std, ``padding=4``, ``flip=True``,
``train=True`` on a ``uint8 [B, 3, H, W]`` batch (``B = 256``, ``H = W = 32`` by default) already on the device --
what ``on_after_batch_transfer`` runs per view of every training batch -- for ``view_augment="standard"`` and
``"simclr"``, then each stage of the simclr view alone on the float batch (random resized crop, flip, colour
jitter ``(0.4, 0.4, 0.4, 0.1)`` with ``p = 0.8``, grayscale ``p = 0.2``). Each row: ``--warmup`` calls, then
``--repeats`` timings of ``--steps`` calls (``torch.cuda.synchronize`` at both marks on CUDA); images/s =
``steps * B / time``, the median over repeats. Runs on the CPU and, if available, on CUDA.

    python benchmarks/view_augment.py                              # CPU (+ CUDA when present), 1 thread
    python benchmarks/view_augment.py --threads 2 --steps 20 --repeats 5
    python benchmarks/view_augment.py --devices cuda --steps 200
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from lt_lightning.data.transforms import CIFAR_MEAN, CIFAR_STD, DeviceAugmentation, random_horizontal_flip
from lt_lightning.data.views import (
    SIMCLR_CROP_SCALE,
    SIMCLR_GRAYSCALE_P,
    SIMCLR_JITTER,
    SIMCLR_JITTER_P,
    color_jitter,
    random_grayscale,
    random_resized_crop,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(fn: Callable[[], Tensor], batch: int, device: torch.device, args: argparse.Namespace) -> float:
    """Median over ``args.repeats`` of ``args.steps * batch / seconds`` after ``args.warmup`` calls."""
    for _ in range(args.warmup):
        fn()
    _sync(device)
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            fn()
        _sync(device)
        rates.append(args.steps * batch / (time.perf_counter() - start))
    return statistics.median(rates)


def rows(device: torch.device, args: argparse.Namespace) -> list[tuple[str, float]]:
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, device=device, generator=g)
    floats = images.float() / 255.0
    standard = DeviceAugmentation(CIFAR_MEAN, CIFAR_STD, padding=4, flip=True)
    simclr = DeviceAugmentation(CIFAR_MEAN, CIFAR_STD, padding=4, flip=True, view_augment="simclr")
    cases: list[tuple[str, Callable[[], Tensor]]] = [
        ("standard: pad-4 crop + flip + normalise", lambda: standard(images, train=True)),
        ("simclr: full view + normalise", lambda: simclr(images, train=True)),
        ("  random_resized_crop (0.2, 1)", lambda: random_resized_crop(floats, SIMCLR_CROP_SCALE)),
        ("  random_horizontal_flip", lambda: random_horizontal_flip(floats, 0.5)),
        ("  color_jitter (0.4, 0.4, 0.4, 0.1), p 0.8", lambda: color_jitter(floats, *SIMCLR_JITTER, p=SIMCLR_JITTER_P)),
        ("  random_grayscale p 0.2", lambda: random_grayscale(floats, SIMCLR_GRAYSCALE_P)),
    ]
    with torch.no_grad():
        return [(name, images_per_second(fn, args.batch, device, args)) for name, fn in cases]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=32, help="image height = width")
    parser.add_argument("--steps", type=int, default=10, help="calls per timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped when unavailable")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = f"[{args.batch}, 3, {args.size}, {args.size}]"
    print(f"batch {shape} uint8, {args.threads} CPU thread(s), load average {os.getloadavg()}")
    for name in args.devices.split(","):
        device = torch.device(name.strip())
        if device.type == "cuda" and not torch.cuda.is_available():
            print("\ncuda: not available, skipped")
            continue
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"\n| {label} | images/s |\n|---|---:|")
        results = rows(device, args)
        for row, rate in results:
            print(f"| {row} | {rate:,.0f} |")
        print(f"simclr / standard: {results[1][1] / results[0][1]:.3f}")


if __name__ == "__main__":
    main()
