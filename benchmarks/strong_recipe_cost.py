"""Seconds per epoch of the strong recipe's augmentation against the standard one, on CIFAR-10-LT-sized batches.

CIFAR-10-LT (rho = 100, LDAM-DRW's split) has 12,406 training images: 97 batches of 128 ``uint8 [3, 32, 32]`` images
per epoch. For each pipeline of :class:`~lt_lightning.data.transforms.DeviceAugmentation` (what the datamodule runs in
``on_after_batch_transfer``), the script augments ``--batches`` random batches (one generator per batch, as the
per-step re-seeding) after one warm-up batch, and prints seconds per batch and per CIFAR-10-LT epoch (x 97):

* ``standard``: pad-4 crop + flip + normalise (the CIFAR recipe of configs/data/cifar10_lt.yaml);
* ``autoaugment+cutout``: the same, then AutoAugment's CIFAR-10 policy and Cutout 16 (configs/recipe/strong.yaml);
* ``randaugment+cutout``: RandAugment (2 operations, magnitude 9 of 31) and Cutout 16 instead.

Only the augmentation is timed (the network's step is the same for every row). No assertion: it prints figures.

    OMP_NUM_THREADS=1 python benchmarks/strong_recipe_cost.py --threads 1 --batches 20
    python benchmarks/strong_recipe_cost.py --device cuda --batches 200
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from lt_lightning.data.transforms import CIFAR_MEAN, CIFAR_STD, DeviceAugmentation

#: training images of CIFAR-10-LT at rho = 100 (LDAM-DRW's exponential profile)
CIFAR10_LT_TRAIN = 12406

PIPELINES = {
    "standard": {},
    "autoaugment+cutout": {"policy": "autoaugment", "cutout": 16},
    "randaugment+cutout": {"policy": "randaugment", "cutout": 16},
}


def time_pipeline(name: str, batches: int, batch_size: int, device: torch.device) -> list[float]:
    """Seconds of each of ``batches`` augmentations of a fresh random ``uint8`` batch (after one warm-up)."""
    aug = DeviceAugmentation(CIFAR_MEAN, CIFAR_STD, padding=4, flip=True, **PIPELINES[name])
    images = torch.randint(0, 256, (batches + 1, batch_size, 3, 32, 32), dtype=torch.uint8, device=device)
    times = []
    for i in range(batches + 1):
        generator = torch.Generator(device=device).manual_seed(i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        aug(images[i], train=True, generator=generator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first batch is the warm-up
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps = -(-CIFAR10_LT_TRAIN // args.batch_size)
    print(f"device {device}, {args.threads} thread(s), batch {args.batch_size}, {steps} batches per CIFAR-10-LT epoch, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("| pipeline | ms / batch (median) | s / CIFAR-10-LT epoch | x standard |")
    print("|---|---|---|---|")
    base = None
    for name in PIPELINES:
        median = statistics.median(time_pipeline(name, args.batches, args.batch_size, device))
        base = base or median
        print(f"| {name} | {1000 * median:.1f} | {steps * median:.2f} | {median / base:.1f} |")


if __name__ == "__main__":
    main()
