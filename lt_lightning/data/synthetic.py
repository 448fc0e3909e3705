"""Synthetic Gaussian-blob long-tailed images: a datamodule for tests and examples that needs no file.

Class ``c`` has a fixed random prototype image ``mu_c`` (uniform in ``[64, 192]``); a sample is
``clip(mu_c + sigma * eps, 0, 255)`` as ``uint8`` with ``eps ~ N(0, 1)`` per pixel. Training counts follow a
long-tailed profile (:func:`~lt_lightning.data.profiles.long_tail_counts`); validation and test sets are balanced.
Everything is drawn from one seeded ``torch.Generator``, so the data are identical in every process.

With ``balanced_reference=True`` the training set is the balanced reference set of the long-tailed one
(:mod:`lt_lightning.data.balanced_reference`): ``floor(N / C)`` images per class of the same distribution, drawn
from the same generator *after* the long-tailed, validation and test sets, so validation and test images are the
same as without it and the balanced training images are new ones.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lt_lightning.data.balanced_reference import balanced_reference_per_class
from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.data.profiles import Profile, long_tail_counts
from lt_lightning.data.tensor_dataset import TensorImageDataset


def gaussian_blob_images(
    counts: list[int], prototypes: Tensor, noise_std: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``sum(counts)`` uint8 images, ``counts[c]`` of class ``c`` around ``prototypes[c]``; returns (images, labels)."""
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.as_tensor(counts))
    noise = torch.randn((labels.numel(), *prototypes.shape[1:]), generator=generator) * noise_std
    images = (prototypes[labels] + noise).round().clamp(0, 255).to(torch.uint8)
    return images, labels


class SyntheticLTDataModule(LongTailDataModule):
    """Long-tailed Gaussian blobs of ``channels x image_size x image_size`` uint8 images.

    Args:
        num_classes: number of classes ``C``.
        n_max: training images of the head class.
        imbalance_ratio: ``rho = n_max / n_min`` (``>= 1``).
        profile: ``"exp"`` or ``"step"``.
        val_per_class: balanced validation images per class.
        test_per_class: balanced test images per class.
        image_size: height and width.
        channels: image channels.
        noise_std: pixel noise ``sigma`` (0..255 scale); larger is harder.
        data_seed: seed of the prototypes and samples (the sampler uses ``seed``).
        balanced_reference: train on ``floor(N / C)`` images per class instead of the long-tailed ``N`` (the
            survey's balanced reference set; see the module docstring).
        **kwargs: :class:`~lt_lightning.data.base.LongTailDataModule` arguments (batch_size, seed, ...).
    """

    mean = (0.5,)
    std = (0.25,)

    def __init__(
        self,
        num_classes: int = 5,
        n_max: int = 64,
        imbalance_ratio: float = 10.0,
        profile: Profile = "exp",
        val_per_class: int = 8,
        test_per_class: int = 8,
        image_size: int = 8,
        channels: int = 3,
        noise_std: float = 48.0,
        data_seed: int = 0,
        balanced_reference: bool = False,
        batch_size: int = 32,
        **kwargs,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        for name, value in (("val_per_class", val_per_class), ("test_per_class", test_per_class)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if image_size < 1 or channels < 1:
            raise ValueError(f"image_size and channels must be >= 1, got {image_size}, {channels}")
        if not math.isfinite(noise_std) or noise_std < 0:
            raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std}")
        counts = long_tail_counts(num_classes, n_max, imbalance_ratio, profile)
        self.mean = (0.5,) * channels
        self.std = (0.25,) * channels
        self.n_max, self.imbalance_ratio, self.profile = int(n_max), float(imbalance_ratio), profile
        self.val_per_class = val_per_class
        self.test_per_class = test_per_class
        self.image_size = image_size
        self.channels = channels
        self.noise_std = float(noise_std)
        self.data_seed = data_seed
        self._train_counts = counts
        self.balanced_reference = bool(balanced_reference)
        if self.balanced_reference:
            counts = [balanced_reference_per_class(sum(counts), num_classes)] * num_classes
        self._reference_counts = counts
        labels = torch.repeat_interleave(torch.arange(num_classes), torch.as_tensor(counts))
        self._set_class_info(labels, num_classes, origin="synthetic training labels")

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        g = torch.Generator().manual_seed(self.data_seed)
        shape = (self.num_classes, self.channels, self.image_size, self.image_size)
        prototypes = torch.rand(shape, generator=g) * 128 + 64
        train = gaussian_blob_images(self._train_counts, prototypes, self.noise_std, g)
        val = gaussian_blob_images([self.val_per_class] * self.num_classes, prototypes, self.noise_std, g)
        test = gaussian_blob_images([self.test_per_class] * self.num_classes, prototypes, self.noise_std, g)
        if self.balanced_reference:  # drawn after val/test, so those stay the same images
            train = gaussian_blob_images(self._reference_counts, prototypes, self.noise_std, g)
        self.train_dataset = TensorImageDataset(*train)
        self.val_dataset = TensorImageDataset(*val)
        self.test_dataset = TensorImageDataset(*test)
