"""Loading speed of a folder of small images with and without the in-memory cache (``cache_images``), next to the
in-memory CIFAR path.

Writes ``--classes x --per-class`` random ``--size x --size`` images (PNG, or JPEG with ``--format jpg``) to a
temporary folder, then for each augmentation preset given builds an
:class:`~lt_lightning.data.folder.ImageFolderLTDataModule` (``val_per_class = test_per_class = 1``) with
``cache_images`` off and on, and times:

* ``setup("fit")``: listing the files; with the cache also decoding every training / validation image once;
* ``--epochs`` passes over the training loader (``--batch-size``, ``--workers`` DataLoader workers, the seeded
  instance-balanced sampler): everything a DataLoader does up to the ``uint8`` batch (the device-side crop, flip and
  normalisation are not timed -- they are the same for every row).

The reference row ("CIFAR path") is a :class:`~lt_lightning.data.base.TensorImageDataset` of the same number of
``uint8 [3, S, S]`` images through the same loader code, i.e. what :class:`~lt_lightning.data.cifar.CIFARLTDataModule`
trains from. The script prints a Markdown table: setup seconds, training images/s (median over epochs) and the
speed-up of the cache. No assertion: it prints figures.

    python benchmarks/image_cache.py        # 2,000 32x32 PNGs; presets pad_crop and random_resized_crop
    python benchmarks/image_cache.py --format jpg --size 64 --presets pad_crop,randaugment --workers 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lt_lightning.data.base import LongTailDataModule, TensorImageDataset
from lt_lightning.data.folder import ImageFolderLTDataModule


def write_folder(root: Path, classes: int, per_class: int, size: int, fmt: str) -> None:
    """``root/train/class_<c>/<i>.<fmt>``: random ``size x size`` RGB images."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / "train" / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.{fmt}")


def epoch_rates(dm: LongTailDataModule, epochs: int) -> list[float]:
    """Training images/s of each of ``epochs`` passes over ``dm.train_dataloader()``."""
    rates = []
    loader = dm.train_dataloader()
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        start, seen = time.perf_counter(), 0
        for images, _ in loader:
            seen += images.shape[0]
        rates.append(seen / (time.perf_counter() - start))
    return rates


class _InMemory(LongTailDataModule):
    """The CIFAR path: a TensorImageDataset of ``n`` random ``uint8`` images."""

    def __init__(self, n: int, size: int, classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        labels = torch.arange(n) % classes
        self._set_class_info(labels, classes, origin="random images")
        images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)
        self.train_dataset = TensorImageDataset(images, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--size", type=int, default=32, help="image side on disk = image_size")
    parser.add_argument("--format", default="png", choices=("png", "jpg"))
    parser.add_argument("--presets", default="pad_crop,random_resized_crop", help="comma-separated presets")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loader_args = dict(batch_size=args.batch_size, num_workers=args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_folder(root, args.classes, args.per_class, args.size, args.format)
        n_train = args.classes * (args.per_class - 2)
        print(
            f"{n_train} training images of {args.size}x{args.size} ({args.format}), batch {args.batch_size}, "
            f"{args.workers} worker(s), {args.threads} thread(s), load average {os.getloadavg()}"
        )
        print("\n| data | setup s | train images/s | cache speed-up |\n|---|---:|---:|---:|")
        start = time.perf_counter()
        reference = _InMemory(n_train, args.size, args.classes, **loader_args)
        cifar_rate = statistics.median(epoch_rates(reference, args.epochs))
        print(f"| CIFAR path (TensorImageDataset) | {time.perf_counter() - start:.2f} | {cifar_rate:,.0f} | |")
        for preset in args.presets.split(","):
            rates = {}
            for cache in (False, True):
                start = time.perf_counter()
                dm = ImageFolderLTDataModule(
                    str(root),
                    val_per_class=1,
                    test_per_class=1,
                    image_size=args.size,
                    augmentation_preset=preset,
                    cache_images=cache,
                    **loader_args,
                )
                dm.setup("fit")
                setup = time.perf_counter() - start
                rates[cache] = statistics.median(epoch_rates(dm, args.epochs))
                ratio = f"{rates[True] / rates[False]:.1f}x" if cache else ""
                name = f"folder, {preset}, cache_images={str(cache).lower()}"
                print(f"| {name} | {setup:.2f} | {rates[cache]:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
