"""The base datamodule of images stored as files, decoded in DataLoader workers (:class:`ImageFileDataModule`).

See :mod:`lt_lightning.data.image_files` for the pipelines and the unreadable-file policy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from lt_lightning._checks import check_choice, check_int
from lt_lightning.data.datamodule import LongTailDataModule, SamplerFactory
from lt_lightning.data.image_cache import DEFAULT_CACHE_MAX_BYTES, format_bytes
from lt_lightning.data.image_dataset import ImageFileDataset, default_resize_size, validate_on_error
from lt_lightning.data.image_decoding import apply_max_image_pixels, check_max_image_pixels
from lt_lightning.data.samplers import UnpaddedDistributedSampler
from lt_lightning.data.split_file import find_split_file_line
from lt_lightning.data.transforms import check_augmentation_preset, pad_crop_padding

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "SPLITS", "ImageFileDataModule"]

#: ImageNet per-channel mean / std of ``[0, 1]`` RGB images (torchvision's; also used for Places-LT and iNaturalist).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: split names, in the order :meth:`ImageFileDataModule.setup` builds them
SPLITS: tuple[str, ...] = ("train", "val", "test")
_STAGE_SPLITS: dict[str | None, tuple[str, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("test",),
    None: SPLITS,
}


class ImageFileDataModule(LongTailDataModule):
    """Base of the datamodules whose images are files on disk, decoded in DataLoader workers.

    A subclass lists its images in ``__init__`` (no decoding) and calls :meth:`_set_image_lists`, which sets
    ``image_lists`` and the class statistics from the training list. :meth:`setup` then builds one
    :class:`ImageFileDataset` per split: the training one with the train pipeline of ``augmentation_preset`` when
    ``augment`` is true, every other one with the evaluation pipeline (resize + centre crop). The device pipeline
    converts to float and normalises with ImageNet's mean / std; with the worker-side presets (random resized crop,
    RandAugment, TrivialAugment) it augments nothing (``crop_padding = 0``, ``horizontal_flip = False``: the crop and
    the flip already happened in the workers); with ``augmentation_preset="pad_crop"`` it does the random crop with
    :func:`~lt_lightning.data.transforms.pad_crop_padding` zero padding and the flip, as for CIFAR.

    In-memory cache (``cache_images=True``, for datasets that fit in memory): :meth:`setup` decodes every image of
    each split it builds once (:meth:`ImageFileDataset.build_cache`, a thread pool) and keeps ``uint8`` arrays --
    the final ``[3, S, S]`` tensors where the per-image pipeline is deterministic (evaluation splits; training with
    ``"pad_crop"``, which then loads batches like the in-memory CIFAR path), the decoded images otherwise -- so an
    epoch only augments. The batches are those of the uncached path, byte for byte. Before decoding, the size is
    estimated (the outputs' size, or the decoded sizes from the files' headers) and a total over the splits above
    ``cache_max_bytes`` is a ``ValueError`` naming both options. Every process holds its own cache (DDP: one per
    rank); DataLoader workers started by ``fork`` share the parent's. ``benchmarks/image_cache.py`` measures it.

    Options of the base datamodule (test-agnostic ``test_distribution``, ``views``, ``view_augment``,
    ``train_set_on_device``) work as for any datamodule. ``views > 1`` needs views that differ: with a worker-side
    preset the crop and the flip happen once per image in the DataLoader worker and the device pipeline augments
    nothing, so ``view_augment="standard"`` would give ``views`` identical copies -- a ``ValueError``; use
    ``view_augment="simclr"`` (the SimCLR / SupCon views on the device, after the worker's pipeline) or
    ``augmentation_preset="pad_crop"`` (crop and flip on the device, per view). ``train_set_on_device=True`` needs an
    in-memory training set, which files are not: the train loader refuses it (``ValueError``).

    Missing and unreadable files (checked in :meth:`setup`, per split built):

    * ``on_error="raise"``: a missing file raises ``FileNotFoundError`` naming it, the number missing and, for split
      files, the ``file:line`` that lists it (one ``stat`` per file, no decoding); a file that exists but cannot be
      decoded raises :class:`UnreadableImageError` naming it when a worker reaches it.
    * ``on_error="skip"``: every file is decoded once (:meth:`ImageFileDataset.drop_unreadable`), missing or
      unreadable ones are dropped and reported in one ``RuntimeWarning`` per split (on global rank 0) with their
      count and the first three names; the paths are kept in ``skipped_files`` (their number:
      ``num_skipped_files``). Dropping training images changes the class counts: ``class_counts`` and
      ``train_labels`` are recomputed (a class left without images raises ``ValueError``) and the warning says that
      a model built from the ``__init__`` counts (the CLI link) still holds the old ones. Under DDP every process
      decodes every file once.

    Args:
        image_size: side of the square crops fed to the model.
        resize_size: shorter side before the evaluation centre crop (default ``int(image_size / 0.875)``, 256 for
            224; ``image_size`` with ``augmentation_preset="pad_crop"``).
        on_error: ``"raise"`` or ``"skip"``.
        augmentation_preset: the training augmentation, one of
            :data:`~lt_lightning.data.transforms.AUGMENTATION_PRESETS`:
            ``"random_resized_crop"`` (the default, ImageNet-style), ``"pad_crop"`` (CIFAR-style, for small images),
            ``"randaugment"`` / ``"trivialaugment"`` (torchvision's policies after the random resized crop); see
            :func:`~lt_lightning.data.transforms.image_train_transform`.
        cache_images: decode every image once in :meth:`setup` and keep it in memory (see above).
        cache_max_bytes: the largest cache allowed (default 4 GiB), over all splits; above it :meth:`setup` refuses.
        max_image_pixels: PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, set process-wide when given)
            for datasets of very large images; ``None`` keeps PIL's (89,478,485 pixels; an image of more than twice
            as many is refused as a possible decompression bomb, with an error naming this option).
        batch_size, eval_batch_size, num_workers, seed, augment, pin_memory, sampler, test_distribution,
            test_imbalance_ratio, views, view_augment, train_set_on_device, augment_policy, cutout: every option of
            the base datamodule, see
            :class:`~lt_lightning.data.datamodule.LongTailDataModule` (``views > 1``: see above).

    Attributes:
        image_lists: ``{"train" | "val" | "test": (paths, labels)}``, set in ``__init__``.
        skipped_files: ``{split: [path, ...]}`` of the files dropped with ``on_error="skip"``.
    """

    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    crop_padding = 0
    horizontal_flip = False

    #: appended to "not found" errors: where the data comes from (subclasses override it)
    how_to_get_data: str = ""

    def __init__(
        self,
        image_size: int = 224,
        resize_size: int | None = None,
        on_error: str = "raise",
        augmentation_preset: str = "random_resized_crop",
        cache_images: bool = False,
        cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES,
        max_image_pixels: int | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        augment: bool = True,
        pin_memory: bool = False,
        sampler: SamplerFactory | None = None,
        test_distribution: Literal["forward", "uniform", "backward"] | None = None,
        test_imbalance_ratio: float = 1.0,
        views: int = 1,
        view_augment: str = "standard",
        train_set_on_device: bool = False,
        augment_policy: str = "none",
        cutout: int = 0,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            seed=seed,
            augment=augment,
            pin_memory=pin_memory,
            sampler=sampler,
            test_distribution=test_distribution,
            test_imbalance_ratio=test_imbalance_ratio,
            views=views,
            view_augment=view_augment,
            train_set_on_device=train_set_on_device,
            augment_policy=augment_policy,
            cutout=cutout,
        )
        self.image_size = check_int("image_size", image_size, minimum=1)
        self.augmentation_preset = check_augmentation_preset(augmentation_preset)
        self.resize_size = default_resize_size(image_size, resize_size, self.augmentation_preset)
        self.on_error = validate_on_error(on_error)
        if self.augmentation_preset == "pad_crop":  # the random crop and the flip run batched on the device
            self.crop_padding = pad_crop_padding(image_size)
            self.horizontal_flip = True
        if (
            self.views > 1
            and self.augment
            and self.view_augment == "standard"
            and self.augmentation_preset != "pad_crop"
        ):
            raise ValueError(
                f"views={self.views} with augmentation_preset={self.augmentation_preset!r} and view_augment='standard' "
                "would give identical views (the crop and flip run once per image in the DataLoader worker): set "
                "view_augment='simclr' or augmentation_preset='pad_crop'"
            )
        self.cache_images = bool(cache_images)
        self.cache_max_bytes = check_int("cache_max_bytes", cache_max_bytes, minimum=0)
        self.max_image_pixels = check_max_image_pixels(max_image_pixels)
        apply_max_image_pixels(self.max_image_pixels)
        #: bytes held by the in-memory caches of the splits built so far (``cache_images``)
        self.cache_bytes = 0
        self.image_lists: dict[str, tuple[list[str], list[int]]] = {}
        self.skipped_files: dict[str, list[str]] = {}

    def _set_image_lists(
        self,
        lists: dict[str, tuple[list[str], list[int]]],
        num_classes: int,
        class_names: Sequence[str] | None,
        origin: str,
    ) -> None:
        """Keep the ``train``/``val``/``test`` lists and set the class statistics from the training labels.

        Raises:
            ValueError: a list is missing, or an image is both a training image and a validation / test image (the
                evaluation would measure memorisation, silently): the message names one shared image and the counts.
        """
        missing = [split for split in SPLITS if split not in lists]
        if missing:
            raise ValueError(f"image lists for {missing} are missing (need {SPLITS})")
        self.image_lists = {split: (list(lists[split][0]), list(lists[split][1])) for split in SPLITS}
        train = {os.path.normpath(p) for p in self.image_lists["train"][0]}
        for split in ("val", "test"):
            shared = [p for p in self.image_lists[split][0] if os.path.normpath(p) in train]
            if shared:
                raise ValueError(
                    f"{len(shared)} of the {len(self.image_lists[split][0])} {split} images are also training images "
                    f"({origin}), e.g. {shared[0]!r}{self._listing(split, shared[0])}: the {split} split must not "
                    "overlap the training split"
                )
        self._set_class_info(self.image_lists["train"][1], num_classes, class_names, origin=origin)

    def _listing(self, split: str, path: str) -> str:
        """``" (listed at FILE:LINE)"`` for an image of a split file, else ``""`` (only used in error messages).

        Datamodules that read split files expose them as ``train_file`` / ``val_file`` / ``test_file`` /
        ``reference_file`` and their image root as ``root``
        (:class:`~lt_lightning.data.split_file_datamodule.SplitFileDataModule`); validation images held out of the
        training file are found there.
        """
        root = getattr(self, "root", None)
        for attr in (f"{split}_file", "train_file", "reference_file"):
            split_file = getattr(self, attr, None)
            if not isinstance(split_file, (str, os.PathLike)):
                continue
            try:
                line = find_split_file_line(split_file, path, root)
            except (OSError, ValueError):
                line = None
            if line is not None:
                return f" (listed at {os.fspath(split_file)}:{line})"
        return ""

    def _not_found(self, message: str) -> FileNotFoundError:
        hint = f"; {self.how_to_get_data}" if self.how_to_get_data else ""
        return FileNotFoundError(message + hint)

    def build_dataset(self, split: str) -> ImageFileDataset:
        """The :class:`ImageFileDataset` of ``split`` (no file checks); train-time pipeline for an augmented train."""
        check_choice("split", split, SPLITS)
        paths, labels = self.image_lists[split]
        return ImageFileDataset(
            paths,
            labels,
            image_size=self.image_size,
            train=split == "train" and self.augment,
            on_error=self.on_error,
            resize_size=self.resize_size,
            augmentation_preset=self.augmentation_preset,
            max_image_pixels=self.max_image_pixels,
        )

    def train_eval_dataloader(self) -> DataLoader:
        """The (readable) training images once each through the evaluation pipeline (resize + centre crop)."""
        train = self._require("train_dataset")
        dataset = ImageFileDataset(
            train.paths,
            train.labels,
            image_size=self.image_size,
            train=False,
            on_error=self.on_error,
            resize_size=self.resize_size,
            augmentation_preset=self.augmentation_preset,
            max_image_pixels=self.max_image_pixels,
        )
        if isinstance(train, ImageFileDataset) and train.cache is not None and train.cache.kind == "decoded":
            dataset.cache = train.cache  # the decoded training images: only the evaluation resize + crop remain
        num_replicas, rank = self._world()
        return self._loader(dataset, self.eval_batch_size, UnpaddedDistributedSampler(len(dataset), num_replicas, rank))

    def _build_cache(self, dataset: ImageFileDataset, split: str) -> list[str]:
        """:meth:`ImageFileDataset.build_cache` after checking the estimated size against ``cache_max_bytes``."""
        estimate = dataset.estimated_cache_bytes()
        if self.cache_bytes + estimate > self.cache_max_bytes:
            held = f" (plus {format_bytes(self.cache_bytes)} already cached)" if self.cache_bytes else ""
            raise ValueError(
                f"cache_images=True: the {len(dataset)} {split} images need about {format_bytes(estimate)} in memory"
                f"{held}, "
                f"over cache_max_bytes={self.cache_max_bytes} ({format_bytes(self.cache_max_bytes)}):"
                " raise cache_max_bytes if the memory is there, or set cache_images=False (decode every epoch)"
                + (
                    ""
                    if dataset.deterministic
                    else "; augmentation_preset='pad_crop' caches the resized images instead"
                )
            )
        dropped = dataset.build_cache()
        self.cache_bytes += dataset.cache.nbytes if dataset.cache is not None else 0
        return dropped

    def _checked_dataset(self, split: str) -> ImageFileDataset:
        dataset = self.build_dataset(split)
        if self.on_error == "raise":
            missing = dataset.missing_files()
            if missing:
                raise self._not_found(
                    f"{len(missing)} of the {len(dataset)} {split} images are missing, e.g. {missing[0]!r}"
                    f"{self._listing(split, missing[0])} (set on_error='skip' to train without them)"
                )
            if self.cache_images:
                self._build_cache(dataset, split)
            return dataset
        dropped = self._build_cache(dataset, split) if self.cache_images else dataset.drop_unreadable()
        self.skipped_files[split] = dropped
        if not dropped:
            return dataset
        if len(dataset) == 0:
            raise RuntimeError(f"none of the {len(dropped)} {split} images is readable, e.g. {dropped[0]!r}")
        note = ""
        if split == "train":
            self._set_class_info(dataset.labels, self.num_classes, self.class_names, origin="readable training images")
            note = (
                "; class_counts and train_labels were recomputed without them (a model built from the earlier "
                "class counts, e.g. through the CLI link, still holds those)"
            )
        shown = ", ".join(repr(p) for p in dropped[:3]) + (", ..." if len(dropped) > 3 else "")
        rank_zero_warn(
            f"skipped {len(dropped)} unreadable {split} image(s) of {len(dropped) + len(dataset)} (on_error='skip'; "
            f"all of them in skipped_files[{split!r}]): {shown}{note}",
            category=RuntimeWarning,
            stacklevel=3,
        )
        return dataset

    @property
    def num_skipped_files(self) -> int:
        """How many images ``on_error="skip"`` dropped, over the splits set up so far (``len`` of ``skipped_files``)."""
        return sum(len(paths) for paths in self.skipped_files.values())

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets ``stage`` needs (fit: train + val; validate: val; test/predict: test; None: all)."""
        if stage not in _STAGE_SPLITS:
            raise ValueError(f"stage must be one of {[s for s in _STAGE_SPLITS if s]} or None, got {stage!r}")
        for split in _STAGE_SPLITS[stage]:
            attr = f"{split}_dataset"
            if getattr(self, attr) is None:
                setattr(self, attr, self._checked_dataset(split))
