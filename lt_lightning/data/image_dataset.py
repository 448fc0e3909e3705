"""A dataset of image files: decode (:mod:`lt_lightning.data.image_decoding`), crop / resize to a square ``uint8``
tensor, with the unreadable-file policy and the optional in-memory cache (:mod:`lt_lightning.data.image_cache`).

See :mod:`lt_lightning.data.image_files` for the pipelines and the unreadable-file policy.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from lt_lightning._checks import check_choice, check_int
from lt_lightning.data.image_cache import ImageCache
from lt_lightning.data.image_decoding import (
    UnreadableImageError,
    apply_max_image_pixels,
    check_max_image_pixels,
    header_size,
    is_readable,
    load_rgb,
)
from lt_lightning.data.tensor_dataset import ImageBatch
from lt_lightning.data.transforms import check_augmentation_preset, image_train_transform

__all__ = ["EVAL_CROP_RATIO", "ON_ERROR_CHOICES", "ImageFileDataset", "default_resize_size", "validate_on_error"]

ON_ERROR_CHOICES = ("raise", "skip")

#: Ratio between the eval crop and the resize of the shorter side (224 / 256).
EVAL_CROP_RATIO = 0.875


def validate_on_error(on_error: str) -> str:
    """Return ``on_error`` if it is ``"raise"`` or ``"skip"``, else raise ``ValueError`` naming it."""
    return check_choice("on_error", on_error, ON_ERROR_CHOICES)


def default_resize_size(
    image_size: int, resize_size: int | None = None, augmentation_preset: str = "random_resized_crop"
) -> int:
    """The evaluation resize: ``resize_size`` if given, else ``int(image_size / 0.875)`` (derived from the crop, so a
    changed ``image_size`` keeps the evaluation crop's share of the image); with ``augmentation_preset="pad_crop"``
    (CIFAR style: training sees the whole image) the default is ``image_size``, so evaluation sees the whole image.

    Raises:
        ValueError: ``resize_size < image_size``, or ``resize_size > 2 · image_size``: the centre crop would keep less
            than half of each side (a pinned ``resize_size: 256`` with ``image_size: 32`` evaluates 1/64 of the image
            while training sees whole images); leave ``resize_size`` unset to derive it.
    """
    if resize_size is None:
        return (
            int(image_size)
            if check_augmentation_preset(augmentation_preset) == "pad_crop"
            else int(image_size / EVAL_CROP_RATIO)
        )
    check_int("resize_size", resize_size, minimum=image_size, what=f"an integer >= image_size={image_size}")
    if resize_size > 2 * image_size:
        raise ValueError(
            f"resize_size={resize_size} with image_size={image_size}: the evaluation centre crop would keep "
            f"{image_size / resize_size:.0%} of each side; leave resize_size unset (it is then "
            f"int(image_size / {EVAL_CROP_RATIO}) = {int(image_size / EVAL_CROP_RATIO)}) or give one <= 2 x image_size"
        )
    return resize_size


class ImageFileDataset(Dataset):
    """Images listed as ``(path, label)`` pairs; ``__getitem__`` returns ``(uint8 [3, S, S] tensor, int label)``.

    Args:
        paths: image file paths (absolute, or relative to the working directory).
        labels: one integer class label per path.
        image_size: side ``S`` of the square output.
        train: ``True`` for the training pipeline of ``augmentation_preset``
            (:func:`~lt_lightning.data.transforms.image_train_transform`), ``False`` for the evaluation pipeline
            (resize the shorter side to ``resize_size``, centre crop ``S``).
        on_error: ``"raise"`` or ``"skip"``; see the module docstring.
        resize_size: shorter side before the evaluation centre crop; default ``int(S / 0.875)`` (``S`` with
            ``augmentation_preset="pad_crop"``); ``>= S``.
        horizontal_flip: flip with probability 0.5 in the training pipeline (with ``"pad_crop"`` the flip is the
            device pipeline's, not the dataset's).
        augmentation_preset: the training preset, one of
            :data:`~lt_lightning.data.transforms.AUGMENTATION_PRESETS` (default ``"random_resized_crop"``).
        max_image_pixels: PIL's decompression-bomb limit (:func:`load_rgb`); ``None`` keeps PIL's.

    Raises:
        ValueError: if ``paths`` and ``labels`` differ in length, ``image_size < 1``, ``resize_size < image_size``,
            ``on_error`` or ``augmentation_preset`` is unknown.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int],
        image_size: int = 224,
        train: bool = False,
        on_error: str = "raise",
        resize_size: int | None = None,
        horizontal_flip: bool = True,
        augmentation_preset: str = "random_resized_crop",
        max_image_pixels: int | None = None,
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"paths and labels must have the same length, got {len(paths)} and {len(labels)}")
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.paths = list(paths)
        self.labels = [int(label) for label in labels]
        self.image_size = int(image_size)
        self.augmentation_preset = check_augmentation_preset(augmentation_preset)
        self.resize_size = default_resize_size(self.image_size, resize_size, self.augmentation_preset)
        self.train = bool(train)
        self.horizontal_flip = bool(horizontal_flip)
        self.on_error = validate_on_error(on_error)
        self.max_image_pixels = check_max_image_pixels(max_image_pixels)
        self.num_skipped = 0
        self.cache: ImageCache | None = None
        if self.train:
            self.resize: v2.Transform = image_train_transform(
                self.augmentation_preset, self.image_size, self.horizontal_flip
            )
        else:
            self.resize = v2.Compose([v2.Resize(self.resize_size, antialias=True), v2.CenterCrop(self.image_size)])

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def targets(self) -> Tensor:
        """All labels as a ``[N]`` long tensor."""
        return torch.tensor(self.labels, dtype=torch.long)

    @property
    def deterministic(self) -> bool:
        """Whether the per-image pipeline draws nothing at random (evaluation, or the ``pad_crop`` training part)."""
        return not self.train or self.augmentation_preset == "pad_crop"

    def _decode(self, index: int) -> Image.Image:
        if self.cache is not None and self.cache.kind == "decoded":
            return Image.fromarray(self.cache.get(index))
        return load_rgb(self.paths[index], self.max_image_pixels)

    def load(self, index: int) -> Tensor:
        """Decode and resize image ``index`` to a ``uint8 [3, S, S]`` tensor (raises on an unreadable file).

        With a cache (:meth:`build_cache`) nothing is decoded: an ``"output"`` cache hands out a copy of the stored
        tensor, a ``"decoded"`` one runs the pipeline on the stored image -- the same bytes as decoding the file.
        """
        if self.cache is not None and self.cache.kind == "output":
            return torch.from_numpy(self.cache.get(index).copy())
        image = self.resize(self._decode(index))
        return F.pil_to_tensor(image).contiguous()

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if self.on_error == "raise" or self.cache is not None:  # a cache holds readable images only
            return self.load(index), self.labels[index]
        for offset in range(len(self.paths)):
            current = (index + offset) % len(self.paths)
            try:
                return self.load(current), self.labels[current]
            except UnreadableImageError as exc:
                self.num_skipped += 1
                warnings.warn(
                    f"skipping unreadable image {exc.path!r} ({self.num_skipped} skipped in this process)",
                    RuntimeWarning,
                    stacklevel=2,
                )
        raise RuntimeError(f"no readable image among the {len(self.paths)} files of this dataset")

    def __getitems__(self, indices: Sequence[int]) -> Any:
        """A batch: one :class:`~lt_lightning.data.base.ImageBatch` from an ``"output"`` cache (one stacking copy, as
        the in-memory CIFAR path), else the list of samples (collated by ``default_collate``)."""
        if self.cache is not None and self.cache.kind == "output":
            images = np.stack([self.cache.get(i) for i in indices])
            labels = torch.tensor([self.labels[i] for i in indices], dtype=torch.long)
            return ImageBatch(torch.from_numpy(images), labels)
        return [self[i] for i in indices]

    def missing_files(self) -> list[str]:
        """Paths that do not exist as regular files (cheap: one ``stat`` per file, no decoding)."""
        return [path for path in self.paths if not os.path.isfile(path)]

    def estimated_cache_bytes(self) -> int:
        """Bytes :meth:`build_cache` would hold: ``N · 3 · S²`` for a deterministic pipeline (the outputs), else the
        decoded sizes ``Σ 3 · W · H`` read from the files' headers (nothing is decoded)."""
        if self.deterministic:
            return len(self.paths) * 3 * self.image_size * self.image_size
        return sum(3 * w * h for w, h in map(header_size, self.paths))

    def build_cache(self, max_workers: int | None = None) -> list[str]:
        """Decode every file once and keep the result in memory (:class:`ImageCache`); later epochs decode nothing.

        A deterministic pipeline (:attr:`deterministic`) keeps its ``[3, S, S]`` outputs, any other the decoded RGB
        images. Decoding runs in a thread pool. With ``on_error="raise"`` an unreadable file raises
        :class:`UnreadableImageError` naming it; with ``"skip"`` unreadable files are removed (as by
        :meth:`drop_unreadable`) and their paths returned.

        Args:
            max_workers: threads to use; default ``min(8, os.cpu_count())``.
        """
        workers = max_workers if max_workers is not None else min(8, os.cpu_count() or 1)
        if workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.cache = None
        kind = "output" if self.deterministic else "decoded"
        apply_max_image_pixels(self.max_image_pixels)

        def decode(path: str) -> np.ndarray | None:
            try:
                image = load_rgb(path, self.max_image_pixels)
            except UnreadableImageError:
                if self.on_error == "raise":
                    raise
                return None
            if kind == "output":
                return F.pil_to_tensor(self.resize(image)).numpy()
            return np.asarray(image, dtype=np.uint8)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            arrays = list(pool.map(decode, self.paths))
        dropped = [path for path, a in zip(self.paths, arrays, strict=True) if a is None]
        if dropped:
            kept = [i for i, a in enumerate(arrays) if a is not None]
            self.paths = [self.paths[i] for i in kept]
            self.labels = [self.labels[i] for i in kept]
            arrays = [arrays[i] for i in kept]
        self.cache = ImageCache(kind, [a for a in arrays if a is not None])
        return dropped

    def drop_unreadable(self, max_workers: int | None = None) -> list[str]:
        """Decode every file once, remove the unreadable ones from the dataset and return their paths.

        Decoding runs in a thread pool (PIL releases the GIL while decoding). This costs one full decode of the
        dataset, so it is only worth it with ``on_error="skip"``.

        Args:
            max_workers: threads to use; default ``min(8, os.cpu_count())``.
        """
        workers = max_workers if max_workers is not None else min(8, os.cpu_count() or 1)
        if workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            readable = list(pool.map(lambda p: is_readable(p, self.max_image_pixels), self.paths))
        dropped = [path for path, ok in zip(self.paths, readable, strict=True) if not ok]
        if dropped:
            kept = [i for i, ok in enumerate(readable) if ok]
            self.paths = [self.paths[i] for i in kept]
            self.labels = [self.labels[i] for i in kept]
            if self.cache is not None:
                self.cache = self.cache.take(kept)
        return dropped
