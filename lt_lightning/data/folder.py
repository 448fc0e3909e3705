"""A folder of class sub-folders (``root/train/<class>/*.jpg``), optionally made long-tailed by a profile.

Layout (torchvision ``ImageFolder`` style; class ``c`` is the ``c``-th class folder of ``root/train`` in sorted
order, files are found recursively and sorted, hidden entries are ignored)::

    root/train/<class>/...   required, every class needs at least one image (or on_empty_class="skip")
    root/val/<class>/...     optional
    root/test/<class>/...    optional

Splits, seeded by ``split_seed`` (the same steps as :mod:`lt_lightning.data.digits`):

1. A missing ``root/test`` (``root/val``) is replaced by a balanced hold-out of ``test_per_class``
   (``val_per_class``) images per class from ``root/train``: every class is shuffled once with
   ``np.random.RandomState(split_seed)`` and gives its first ``test_per_class`` images to test, the next
   ``val_per_class`` to validation. A missing folder with a zero count is an error (nothing would be tested or
   validated on; the test split is never used for validation); a present folder with a non-zero count is an
   error too (ambiguous), unless ``prefer_split_folders=True``: then the folder is used and the count applies only
   where the folder is missing, so one set of arguments serves both layouts. Class folders of ``val``/``test``
   must be classes of ``train``; a class may be absent.
2. What remains of ``root/train`` is the training *pool*. With ``imbalance_ratio=None`` it is used as is.
   Otherwise class ``c`` keeps ``n_c`` images, ``n_c`` from :func:`~lt_lightning.data.profiles.long_tail_counts`
   (``profile`` ``"exp"`` or ``"step"``, head class ``c = 0`` with ``n_max`` images, default the smallest pool),
   picked by :func:`~lt_lightning.data.profiles.select_long_tail_indices` (LDAM-DRW's selection) with
   ``split_seed``.

3. With ``balanced_reference=True`` the training set is the balanced reference set of the set of step 2 (the
   survey's relative accuracy; :mod:`lt_lightning.data.balanced_reference`): ``floor(N / C)`` images per class,
   ``N`` the size of the training set of step 2, drawn with ``split_seed`` from the pool of step 2 (so never from
   validation or test images). A class with too few images in the pool is a ``ValueError`` naming it.

All of this lists files only (no decoding), so the class statistics exist after ``__init__``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lt_lightning._checks import check_choice, check_int
from lt_lightning.data._split import hold_out_per_class
from lt_lightning.data.balanced_reference import select_balanced_reference
from lt_lightning.data.datamodule import SamplerFactory
from lt_lightning.data.image_cache import DEFAULT_CACHE_MAX_BYTES
from lt_lightning.data.image_datamodule import ImageFileDataModule
from lt_lightning.data.image_listing import IMAGE_EXTENSIONS, list_class_folders, list_images, list_images_flat
from lt_lightning.data.profiles import Profile, long_tail_counts, select_long_tail_indices

ON_EMPTY_CLASS_CHOICES = ("error", "skip")


def scan_split_folder(
    folder: str,
    class_names: Sequence[str] | None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    on_empty_class: str = "error",
    ignore: Sequence[str] = (),
) -> tuple[list[str], list[int], list[str]]:
    """Images of a ``<class>/...`` folder as ``(paths, labels, class_names)``.

    Args:
        folder: the split folder (e.g. ``root/train``).
        class_names: the classes (label = position); ``None`` takes the sorted sub-folders of ``folder`` that hold
            an image.
        extensions: file extensions taken as images.
        on_empty_class: with ``class_names=None``, a class folder without an image is an error (``"error"``) or is
            not a class (``"skip"``: the caller finds the skipped folders as those not in the returned classes).
        ignore: class folder names to leave out (e.g. the classes skipped as empty in the training folder).

    Raises:
        ValueError: ``folder`` has no class folder, an empty class folder (``class_names=None`` and
            ``on_empty_class="error"``), no image at all, or a class folder not in ``class_names``.
    """
    check_choice("on_empty_class", on_empty_class, ON_EMPTY_CLASS_CHOICES)
    ignored = set(ignore)
    names = [n for n in list_class_folders(folder) if n not in ignored]
    if not names:
        loose = list_images_flat(folder, extensions)
        hint = f"; {len(loose)} image(s) lie directly in it, e.g. {loose[0]!r}" if loose else ""
        raise ValueError(f"{folder!r} has no class sub-folders (expected {folder}/<class>/<image>){hint}")
    files = {name: list_images(os.path.join(folder, name), extensions) for name in names}
    if not any(files.values()):
        raise ValueError(
            f"{folder!r} holds no image at all: its {len(names)} class folder(s) are empty "
            f"(extensions {tuple(extensions)})"
        )
    if class_names is None:
        empty = [name for name in names if not files[name]]
        if empty and on_empty_class == "error":
            raise ValueError(
                f"class folder {os.path.join(folder, empty[0])!r} holds no image (extensions {tuple(extensions)})"
                + (f"; {len(empty)} empty class folders: {empty[:5]}" if len(empty) > 1 else "")
                + " -- remove it, or set on_empty_class='skip' to drop empty classes"
            )
        classes = [name for name in names if files[name]]
    else:
        classes = list(class_names)
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise ValueError(f"class folder(s) {unknown[:5]} of {folder!r} are not classes of the training folder")
    index = {name: c for c, name in enumerate(classes)}
    paths: list[str] = []
    labels: list[int] = []
    for name in names:
        if files[name]:
            paths.extend(files[name])
            labels.extend([index[name]] * len(files[name]))
    return paths, labels, classes


class ImageFolderLTDataModule(ImageFileDataModule):
    """Class-folder images, taken as is or made long-tailed; see the module docstring for the splits.

    Args:
        root: directory holding ``train/`` (and optionally ``val/``, ``test/``).
        imbalance_ratio: ``rho = n_max / n_min`` of the long-tailed profile (``>= 1``); ``None`` keeps the pool.
        profile: ``"exp"`` or ``"step"`` (used with ``imbalance_ratio``).
        n_max: head-class images under the profile (default: the smallest class pool).
        val_per_class: without ``root/val``: validation images held out per class from ``root/train``.
        test_per_class: without ``root/test``: test images held out per class from ``root/train``.
        extensions: file extensions taken as images.
        image_size: side of the square crops (small sizes are fine for tests).
        resize_size: shorter side before the evaluation centre crop (default ``int(image_size / 0.875)``).
        on_error: ``"raise"`` or ``"skip"`` for unreadable images.
        on_empty_class: a class folder of ``root/train`` without an image is an error (``"error"``, the default) or is
            dropped (``"skip"``): it is not a class (labels are the positions among the non-empty folders), its
            namesakes in ``root/val`` / ``root/test`` are left out too, and all of them are reported in one warning
            and kept in ``skipped_class_folders``. A tree without any image is an error either way.
        split_seed: seed of the hold-out, of the long-tailed selection and of the balanced reference draw.
        balanced_reference: train on the balanced reference set of the training set (see the module docstring).
        prefer_split_folders: a present ``root/val`` (``root/test``) is used even with ``val_per_class``
            (``test_per_class``) ``> 0``, which then applies only where the folder is missing (one info line says so):
            the same arguments serve both layouts (``configs/data/folder_lt.yaml`` sets it). ``False`` (the default):
            a present folder with a non-zero count is an error (ambiguous).
        augmentation_preset, cache_images, cache_max_bytes, max_image_pixels: the training augmentation preset
            (``"random_resized_crop"``, ``"pad_crop"``, ``"randaugment"``, ``"trivialaugment"``), the in-memory cache
            of decoded images, its size limit and PIL's decompression-bomb limit; see
            :class:`~lt_lightning.data.image_files.ImageFileDataModule`.
        batch_size, eval_batch_size, num_workers, seed, augment, pin_memory, sampler, test_distribution,
            test_imbalance_ratio, views, view_augment, train_set_on_device, augment_policy, cutout: every option of
            the base datamodule, see
            :class:`~lt_lightning.data.datamodule.LongTailDataModule` (and :class:`ImageFileDataModule` for
            ``views`` with the worker-side presets).

    Raises:
        FileNotFoundError: ``root/train`` does not exist.
        ValueError: an empty class folder (unless ``on_empty_class="skip"``), a tree without any image, a
            non-positive ``imbalance_ratio``, a class left with zero images by the profile, a class too small for the
            hold-out, or a missing/present ``val``/``test`` folder that contradicts ``val_per_class`` /
            ``test_per_class``.
    """

    how_to_get_data = "expected root/train/<class>/<image> (and optionally root/val/<class>, root/test/<class>)"

    def __init__(
        self,
        root: str,
        imbalance_ratio: float | None = None,
        profile: Profile = "exp",
        n_max: int | None = None,
        val_per_class: int = 0,
        test_per_class: int = 0,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        image_size: int = 224,
        resize_size: int | None = None,
        on_error: str = "raise",
        augmentation_preset: str = "random_resized_crop",
        cache_images: bool = False,
        cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES,
        max_image_pixels: int | None = None,
        on_empty_class: str = "error",
        split_seed: int = 0,
        balanced_reference: bool = False,
        prefer_split_folders: bool = False,
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
            image_size=image_size,
            resize_size=resize_size,
            on_error=on_error,
            augmentation_preset=augmentation_preset,
            cache_images=cache_images,
            cache_max_bytes=cache_max_bytes,
            max_image_pixels=max_image_pixels,
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
        if imbalance_ratio is not None and not (np.isfinite(imbalance_ratio) and imbalance_ratio > 0):
            raise ValueError(
                f"imbalance_ratio must be positive (>= 1) or None to keep the data as is, got {imbalance_ratio!r}"
            )
        for name, value in (("val_per_class", val_per_class), ("test_per_class", test_per_class)):
            check_int(name, value, minimum=0)
        check_int("n_max", n_max, minimum=1, or_none=True, what="a positive integer or None")
        self.root = os.fspath(root)
        self.imbalance_ratio = imbalance_ratio
        self.profile = profile
        self.n_max = n_max
        self.val_per_class = val_per_class
        self.test_per_class = test_per_class
        self.extensions = tuple(extensions)
        self.split_seed = split_seed
        self.prefer_split_folders = bool(prefer_split_folders)

        train_dir = os.path.join(self.root, "train")
        if not os.path.isdir(train_dir):
            raise self._not_found(f"training folder {train_dir!r} not found")
        self.on_empty_class = check_choice("on_empty_class", on_empty_class, ON_EMPTY_CLASS_CHOICES)
        paths, labels, names = scan_split_folder(train_dir, None, self.extensions, on_empty_class)
        num_classes = len(names)
        empty_names = [n for n in list_class_folders(train_dir) if n not in set(names)]
        #: class folders left out by ``on_empty_class="skip"`` (empty ones of root/train and their val/test namesakes)
        self.skipped_class_folders: list[str] = [os.path.join(train_dir, n) for n in empty_names]

        lists: dict[str, tuple[list[str], list[int]]] = {}
        hold: list[str] = []  # the splits held out of root/train, in hold-out order
        used_folders: list[str] = []  # present folders used although a per-class count was given (prefer_split_folders)
        for split, per_class in (("test", test_per_class), ("val", val_per_class)):
            folder = os.path.join(self.root, split)
            if os.path.isdir(folder):
                if per_class > 0 and not self.prefer_split_folders:
                    raise ValueError(
                        f"{folder!r} exists: give it or {split}_per_class={per_class} > 0, not both (or set "
                        f"prefer_split_folders=True to use the folder and hold {split}_per_class out only without it)"
                    )
                if per_class > 0:
                    used_folders.append(f"{folder!r} (not a hold-out of {split}_per_class={per_class})")
                split_paths, split_labels, _ = scan_split_folder(folder, names, self.extensions, ignore=empty_names)
                present = set(list_class_folders(folder))
                self.skipped_class_folders += [os.path.join(folder, n) for n in empty_names if n in present]
                if not split_paths:
                    raise ValueError(f"{folder!r} holds no image")
                lists[split] = (split_paths, split_labels)
            elif per_class == 0:
                raise ValueError(
                    f"{folder!r} not found: add it, or set {split}_per_class > 0 to hold images out of {train_dir!r}"
                )
            else:
                hold.append(split)
        if used_folders:
            rank_zero_info(f"prefer_split_folders=True: using {' and '.join(used_folders)}")
        sizes = [test_per_class if split == "test" else val_per_class for split in hold]
        *held, pool = hold_out_per_class(labels, sizes, num_classes, split_seed, what=f"training folder {train_dir!r}")
        for split, index in zip(hold, held, strict=True):
            lists[split] = _take(paths, labels, index)
        paths, labels = _take(paths, labels, pool)
        pool_paths, pool_labels = paths, labels

        if imbalance_ratio is not None:
            pool_sizes = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
            if pool_sizes.min() == 0:
                c = int(np.argmin(pool_sizes))
                raise ValueError(f"class {names[c]!r} has no training image left after the val/test hold-out")
            head = int(pool_sizes.min()) if n_max is None else n_max
            counts = long_tail_counts(num_classes, head, float(imbalance_ratio), profile)
            selected, _ = select_long_tail_indices(labels, counts, seed=split_seed)
            paths, labels = _take(paths, labels, np.sort(selected))
        origin = f"training folder {train_dir!r}" + (
            "" if imbalance_ratio is None else f" (profile {profile!r}, imbalance_ratio={imbalance_ratio})"
        )
        self.balanced_reference = bool(balanced_reference)
        if self.balanced_reference:
            what = f"pool of {train_dir!r} (after the val/test hold-out)"
            chosen = select_balanced_reference(pool_labels, len(labels), num_classes, split_seed, names, what)
            paths, labels = _take(pool_paths, pool_labels, chosen)
            origin += " (balanced reference)"
        lists["train"] = (paths, labels)
        self._set_image_lists(lists, num_classes, names, origin=origin)
        if self.skipped_class_folders:
            shown = ", ".join(repr(p) for p in self.skipped_class_folders[:3])
            rank_zero_warn(
                f"on_empty_class='skip': {len(empty_names)} empty class folder(s) of {train_dir!r} are not classes "
                f"({len(self.skipped_class_folders)} folder(s) left out, all in skipped_class_folders): {shown}"
                + (", ..." if len(self.skipped_class_folders) > 3 else ""),
                category=RuntimeWarning,
            )


def _take(paths: list[str], labels: list[int], index: np.ndarray) -> tuple[list[str], list[int]]:
    return [paths[i] for i in index], [labels[i] for i in index]


__all__ = [
    "IMAGE_EXTENSIONS",
    "ON_EMPTY_CLASS_CHOICES",
    "ImageFolderLTDataModule",
    "list_images",
    "list_images_flat",
    "scan_split_folder",
]
