"""Digits-LT: a long-tailed version of scikit-learn's bundled handwritten digits (no download).

scikit-learn ships the UCI "Optical Recognition of Handwritten Digits" test set: 1,797 grayscale 8x8 images of
the digits 0-9 (about 180 per class) with pixel values 0..16. The split, seeded by ``split_seed``:

1. per class, ``test_per_class`` images form the balanced **test** set and the next ``val_per_class`` the
   balanced **validation** set (a per-class shuffle with ``np.random.RandomState(split_seed)``);
2. the rest of each class is the training **pool**; the long-tailed training set keeps ``n_c`` images of class
   ``c`` (:func:`~lt_lightning.data.profiles.long_tail_counts`, head class ``n_max`` = the smallest pool by
   default, i.e. ~114) chosen exactly like LDAM-DRW's CIFAR-LT (:func:`select_long_tail_indices`).

With the defaults (``rho = 10``, exponential profile, test 40 / val 20 per class) the training counts are
``[114, 88, 68, 52, 40, 31, 24, 19, 14, 11]`` (461 images), so the survey's many (> 100), medium and few
(< 20) groups are all non-empty. Pixels are scaled to ``uint8`` (``v * 255 / 16``) and enlarged to
``image_size`` by nearest-neighbour repetition; training augmentation is a random crop with
``crop_padding = image_size // 8`` (no flip: digits are not mirror-symmetric).

With ``balanced_reference=True`` the training set is the long-tailed set's balanced reference set instead
(:mod:`lt_lightning.data.balanced_reference`): ``floor(N / 10)`` images per class drawn with ``split_seed`` from the
same pool (46 per class for the defaults' ``N = 461``); validation and test sets are unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from lt_lightning.data._split import hold_out_per_class
from lt_lightning.data.balanced_reference import select_balanced_reference
from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.data.profiles import Profile, long_tail_counts, select_long_tail_indices
from lt_lightning.data.tensor_dataset import TensorImageDataset

#: mean / std of the [0, 1] digit pixels over the whole scikit-learn set
DIGITS_MEAN = (0.3053,)
DIGITS_STD = (0.3759,)


def load_digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``uint8 [1797, 1, 8, 8]`` images (``v * 255 / 16``) and ``int64`` labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return images, bunch.target.astype(np.int64)


class DigitsLTDataModule(LongTailDataModule):
    """Long-tailed digits with balanced validation and test sets (see the module docstring for the split).

    Args:
        imbalance_ratio: ``rho = n_max / n_min`` of the training set (``>= 1``).
        profile: ``"exp"`` or ``"step"``.
        n_max: head-class training images (default: the smallest class pool).
        val_per_class: balanced validation images per class.
        test_per_class: balanced test images per class.
        image_size: side of the (nearest-neighbour enlarged) square images, a multiple of 8.
        split_seed: seed of the test/val hold-out and of the long-tailed selection.
        balanced_reference: train on the balanced reference set of the long-tailed set (``floor(N / C)`` per class
            from the same pool) instead of the long-tailed set, for the survey's relative accuracy.
        **kwargs: :class:`~lt_lightning.data.base.LongTailDataModule` arguments (batch_size, seed, ...).
    """

    mean = DIGITS_MEAN
    std = DIGITS_STD
    horizontal_flip = False

    def __init__(
        self,
        imbalance_ratio: float = 10.0,
        profile: Profile = "exp",
        n_max: int | None = None,
        val_per_class: int = 20,
        test_per_class: int = 40,
        image_size: int = 8,
        split_seed: int = 0,
        balanced_reference: bool = False,
        batch_size: int = 64,
        **kwargs,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        if image_size < 8 or image_size % 8:
            raise ValueError(f"image_size must be a positive multiple of 8, got {image_size}")
        if test_per_class < 1:
            raise ValueError(f"test_per_class must be >= 1, got {test_per_class}")
        if val_per_class < 1:
            raise ValueError(f"val_per_class must be >= 1, got {val_per_class}")
        self.image_size = image_size
        self.crop_padding = image_size // 8
        # the split arguments, kept for the checkpoints' data fingerprint and for pre-stages fitted on the same data
        self.imbalance_ratio, self.profile, self.split_seed = float(imbalance_ratio), profile, int(split_seed)
        self.val_per_class, self.test_per_class = int(val_per_class), int(test_per_class)
        images, labels = load_digits_uint8()
        test_idx, val_idx, pool_idx = hold_out_per_class(
            labels, [test_per_class, val_per_class], 10, split_seed, what="digits set"
        )
        pool_sizes = np.bincount(labels[pool_idx], minlength=10)
        if n_max is None:
            n_max = int(pool_sizes.min())
        if n_max > pool_sizes.min():
            raise ValueError(
                f"n_max={n_max} exceeds the smallest class pool ({int(pool_sizes.min())} images after holding out "
                f"{test_per_class} test and {val_per_class} validation images per class)"
            )
        self.n_max = int(n_max)
        counts = long_tail_counts(10, n_max, imbalance_ratio, profile)
        chosen, _ = select_long_tail_indices(labels[pool_idx], counts, seed=split_seed)
        self.balanced_reference = bool(balanced_reference)
        if self.balanced_reference:
            chosen = select_balanced_reference(labels[pool_idx], len(chosen), 10, split_seed, what="digits pool")
        self.train_index = pool_idx[chosen]
        self.val_index = val_idx
        self.test_index = test_idx
        self._images = images
        self._labels = labels
        origin = "Digits-LT" + (" (balanced reference)" if self.balanced_reference else "")
        self._set_class_info(labels[self.train_index], 10, [str(d) for d in range(10)], origin=origin)

    def _dataset(self, index: np.ndarray) -> TensorImageDataset:
        x = torch.from_numpy(self._images[index])
        scale = self.image_size // 8
        if scale > 1:
            x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
        return TensorImageDataset(x.contiguous(), torch.from_numpy(self._labels[index]))

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is None:
            self.train_dataset = self._dataset(self.train_index)
            self.val_dataset = self._dataset(self.val_index)
            self.test_dataset = self._dataset(self.test_index)


__all__ = ["DIGITS_MEAN", "DIGITS_STD", "DigitsLTDataModule", "load_digits_uint8"]
