"""ImageNet-LT, Places-LT, iNaturalist 2018 and any dataset described by split files.

Each split is a text file with one ``relative/path label`` per line (:func:`~lt_lightning.data.split_file.
parse_split_file`), the format published with Liu et al., "Large-Scale Long-Tailed Recognition in an Open World"
(OLTR, CVPR 2019). Published facts of the two benchmarks of the survey (Zhang et al., TPAMI 2023, Sec. 5):

* ImageNet-LT: 1,000 classes, train 115,846 images (1,280 ... 5 per class), val 20,000, test 50,000;
  many/medium/few-shot classes (> 100, 20-100, < 20 training images) = 385 / 479 / 136.
* Places-LT: 365 classes, train 62,500 (4,980 ... 5), val 7,300, test 36,500; 131 / 163 / 71.

``__init__`` parses the split files only (no image is opened), so ``num_classes``, ``class_counts`` and
``class_names`` are known before the CLI builds the model. Images are decoded in DataLoader workers
(:class:`~lt_lightning.data.image_files.ImageFileDataModule`).

Validation: with a ``val_file`` (ImageNet-LT and Places-LT ship a balanced one) it is used as is. Without one,
``val_per_class`` images of every class are held out of the *training* file (a seeded balanced hold-out with
``split_seed``; ``class_counts`` are those of what remains), so that model selection never looks at the test
file. Giving neither is an error; giving both is an error too (ambiguous). For iNaturalist 2018, whose
published "val" file is the test set of the literature, pass it as ``test_file`` and set ``val_per_class``
(iNaturalist's smallest class has 2 training images, so at most 1).

Balanced reference set (``balanced_reference=True``; the survey's relative accuracy, Zhang et al., TPAMI 2023,
Sec. 4; :mod:`lt_lightning.data.balanced_reference`): the training set becomes ``floor(N / C)`` images per class,
``N`` the long-tailed training set's size, drawn with ``split_seed`` from ``reference_file`` (a split file of the
images to draw from, e.g. the full ILSVRC-2012 training list for ImageNet-LT; images also listed in the validation
or test split are left out) or, without one, from the training file itself (after the validation hold-out). A class
with fewer images than that is a ``ValueError`` naming it: a long-tailed training file alone rarely suffices.

Class names (``class_names_file``; what :class:`~lt_lightning.callbacks.text_classifier_init.TextClassifierInit`
builds its prompts from): split files carry labels only, so the names come from a file, read by
:func:`read_class_names` in one of three formats (``class_names_format``):

* ``lines`` (the default for any file but ``.json``): one name per line, line ``c`` (1-based ``c + 1``) names class
  ``c``; surrounding whitespace is stripped, trailing blank lines are ignored;
* ``id_name``: an identifier, whitespace, then the name (``n01440764 tench``, ``airfield airfield``): LIFT's
  ``datasets/ImageNet_LT/classnames.txt`` and ``datasets/Places_LT/classnames.txt`` (shijxcs/LIFT
  ``datasets/imagenet_lt.py`` ``read_classnames``: the first field is dropped, the rest joined);
* ``json`` (the default for ``.json``): a list of names, or a list of objects with ``id`` and ``name`` where class
  ``c`` is the object whose ``id`` is ``c``: the iNaturalist 2018 ``categories.json`` (shijxcs/LIFT
  ``datasets/iNaturalist18/categories.json``, whose ids are the labels of the classifier-balancing split files).

The file must name exactly ``num_classes`` classes (``ValueError`` naming the file and both counts otherwise).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from lt_lightning._checks import check_int
from lt_lightning.data._split import hold_out_per_class
from lt_lightning.data.balanced_reference import select_balanced_reference
from lt_lightning.data.datamodule import SamplerFactory
from lt_lightning.data.image_cache import DEFAULT_CACHE_MAX_BYTES
from lt_lightning.data.image_datamodule import ImageFileDataModule
from lt_lightning.data.split_file import parse_split_file

HOW_TO_GET_SPLIT_DATA = (
    "ImageNet-LT / Places-LT split files come with OLTR (https://github.com/zhmiao/OpenLongTailRecognition-OLTR, "
    "README: 'Download the ImageNet_LT and Places_LT'), the images are ILSVRC-2012 (https://image-net.org) and "
    "Places365-Standard (http://places2.csail.mit.edu); `root` is the folder the paths in the split files are "
    "relative to"
)
#: where LIFT's class-name files are (the format to give as ``class_names_format``)
HOW_TO_GET_CLASS_NAMES = (
    "LIFT ships them (https://github.com/shijxcs/LIFT, folder datasets/): ImageNet_LT/classnames.txt and "
    "Places_LT/classnames.txt (class_names_format: id_name), iNaturalist18/categories.json (json)"
)
ClassNamesFormat = Literal["lines", "id_name", "json"]
CLASS_NAMES_FORMATS: tuple[str, ...] = get_args(ClassNamesFormat)


def read_class_names(path: str | os.PathLike[str], class_names_format: ClassNamesFormat | None = None) -> list[str]:
    """The class names listed in ``path``, class ``c`` at index ``c`` (formats: see the module docstring).

    Args:
        path: the class-name file.
        class_names_format: ``"lines"``, ``"id_name"`` or ``"json"``; ``None``: ``"json"`` for a ``.json`` file,
            else ``"lines"``.

    Raises:
        FileNotFoundError: no such file (the message says where LIFT's files are).
        ValueError: an unknown format, a blank name or a line without a name (file and line named), JSON that is not
            a list of names or of ``{"id", "name"}`` objects with the ids ``0 .. C-1`` once each.
    """
    path = Path(path)
    _check_format(class_names_format)
    if class_names_format is None:
        class_names_format = "json" if path.suffix.lower() == ".json" else "lines"
    if not path.is_file():
        raise FileNotFoundError(f"class_names_file {str(path)!r} not found; {HOW_TO_GET_CLASS_NAMES}")
    text = path.read_text(encoding="utf-8-sig")
    if class_names_format == "json":
        return _json_class_names(path, text)
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names = []
    for number, line in enumerate(lines, start=1):
        fields = line.split(maxsplit=1) if class_names_format == "id_name" else [line.strip()]
        if not fields or not fields[0] or (class_names_format == "id_name" and len(fields) < 2):
            what = "a blank line" if not line.strip() else "no name after the identifier"
            raise ValueError(
                f"{path}:{number}: {what} (class_names_format={class_names_format!r}: line c names class c"
                + (", as 'identifier name'" if class_names_format == "id_name" else "")
                + ")"
            )
        names.append(fields[-1].strip())
    if not names:
        raise ValueError(f"class_names_file {str(path)!r} lists no class name")
    return names


def _check_format(class_names_format: object) -> None:
    if class_names_format is not None and class_names_format not in CLASS_NAMES_FORMATS:
        raise ValueError(
            f"class_names_format must be one of {', '.join(CLASS_NAMES_FORMATS)} or None, got {class_names_format!r}"
        )


def _json_class_names(path: Path, text: str) -> list[str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"class_names_file {str(path)!r} is not valid JSON: {error}") from error
    expected = "a JSON list of class names, or of objects with 'id' and 'name' (iNaturalist's categories.json)"
    if not isinstance(data, list) or not data:
        raise ValueError(f"class_names_file {str(path)!r} must hold {expected}")
    if all(isinstance(item, str) and item.strip() for item in data):
        return [item.strip() for item in data]
    if not all(isinstance(item, dict) and "id" in item and "name" in item for item in data):
        raise ValueError(f"class_names_file {str(path)!r} must hold {expected}")
    by_id: dict[int, str] = {}
    for item in data:
        class_id, name = item["id"], item["name"]
        if isinstance(class_id, bool) or not isinstance(class_id, int) or not isinstance(name, str) or not name.strip():
            raise ValueError(f"class_names_file {str(path)!r}: bad category {item!r} (an int id and a non-empty name)")
        if class_id in by_id:
            raise ValueError(f"class_names_file {str(path)!r}: id {class_id} is listed twice")
        by_id[class_id] = name.strip()
    if sorted(by_id) != list(range(len(by_id))):
        missing = sorted(set(range(len(by_id))) - set(by_id))[:5]
        raise ValueError(
            f"class_names_file {str(path)!r}: the ids must be 0 .. {len(by_id) - 1} (the labels), missing {missing}"
        )
    return [by_id[c] for c in range(len(by_id))]


class SplitFileDataModule(ImageFileDataModule):
    """Images listed in split files (``relative/path label`` per line) under ``root``.

    Args:
        root: image root directory; every path in the split files is joined to it.
        train_file: training split file; the class statistics come from it alone.
        test_file: test split file (also used by ``predict``).
        val_file: validation split file; if omitted, ``val_per_class`` must be ``> 0``.
        val_per_class: without ``val_file``: images per class held out of the training file for validation.
        num_classes: number of classes ``C`` (default: largest label over all given files + 1); a label
            ``>= num_classes`` raises ``ValueError`` naming file and line.
        class_names: ``C`` class names (default ``"0" .. "C-1"``, or those of ``class_names_file``).
        class_names_file: a file naming the classes (see the module docstring; LIFT's files for ImageNet-LT,
            Places-LT and iNaturalist 2018): its count must equal ``num_classes``. Not with ``class_names``.
        class_names_format: ``"lines"`` (a name per line), ``"id_name"`` (``<id> <name>`` per line, LIFT's
            ``classnames.txt``) or ``"json"``; ``None`` (default): ``"json"`` for a ``.json`` file, else ``"lines"``.
        image_size: side of the square crops (224 for the ImageNet recipe).
        resize_size: shorter side before the evaluation centre crop (default ``int(image_size / 0.875)``: 256).
        on_error: ``"raise"`` or ``"skip"`` for missing / unreadable images (see
            :class:`~lt_lightning.data.image_files.ImageFileDataModule`).
        split_seed: seed of the ``val_per_class`` hold-out (kept apart from ``seed`` so that runs with different
            training seeds validate on the same images).
        balanced_reference: train on the balanced reference set (see the module docstring).
        reference_file: split file of the images the balanced reference set is drawn from (default the training
            file); only read with ``balanced_reference``.
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
        FileNotFoundError: ``root`` is not a directory or a split file does not exist (the message says how to get
            the data).
        ValueError: a malformed line or out-of-range label (file and line number), a class without training images,
            neither or both of ``val_file`` / ``val_per_class``, a class with too few images for the hold-out.
    """

    how_to_get_data = HOW_TO_GET_SPLIT_DATA

    def __init__(
        self,
        root: str,
        train_file: str,
        test_file: str,
        val_file: str | None = None,
        val_per_class: int = 0,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        class_names_file: str | None = None,
        class_names_format: ClassNamesFormat | None = None,
        image_size: int = 224,
        resize_size: int | None = None,
        on_error: str = "raise",
        augmentation_preset: str = "random_resized_crop",
        cache_images: bool = False,
        cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES,
        max_image_pixels: int | None = None,
        split_seed: int = 0,
        balanced_reference: bool = False,
        reference_file: str | None = None,
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
        check_int("val_per_class", val_per_class, minimum=0)
        if val_file is not None and val_per_class > 0:
            raise ValueError(f"give either val_file ({val_file!r}) or val_per_class ({val_per_class}) > 0, not both")
        if class_names is not None and class_names_file is not None:
            raise ValueError(f"give either class_names or class_names_file ({class_names_file!r}), not both")
        _check_format(class_names_format)
        if val_file is None and val_per_class == 0:
            raise ValueError(
                "no validation split: give val_file, or val_per_class > 0 to hold images out of the training file "
                "(the test file is never used for validation)"
            )
        self.root = os.fspath(root)
        self.train_file = os.fspath(train_file)
        self.test_file = os.fspath(test_file)
        self.val_file = None if val_file is None else os.fspath(val_file)
        self.val_per_class = val_per_class
        self.split_seed = split_seed
        if not os.path.isdir(self.root):
            raise self._not_found(f"image root directory {self.root!r} not found")

        files = {"train": self.train_file, "test": self.test_file}
        if self.val_file is not None:
            files["val"] = self.val_file
        self.balanced_reference = bool(balanced_reference)
        self.reference_file = None if reference_file is None else os.fspath(reference_file)
        if self.balanced_reference and self.reference_file is not None:
            files["reference"] = self.reference_file
        for split, path in files.items():
            if not os.path.isfile(path):
                raise self._not_found(f"{split} split file {path!r} not found")
        parsed = {split: parse_split_file(path, self.root, num_classes) for split, path in files.items()}
        if num_classes is None:
            num_classes = 1 + max((max(labels) for _, labels in parsed.values() if labels), default=-1)
            if num_classes == 0:
                raise ValueError(f"train split file {self.train_file!r} lists no image")
        self.class_names_file = None if class_names_file is None else os.fspath(class_names_file)
        self.class_names_format = class_names_format
        if self.class_names_file is not None:
            class_names = read_class_names(self.class_names_file, class_names_format)
            if len(class_names) != num_classes:
                raise ValueError(
                    f"class_names_file {self.class_names_file!r} names {len(class_names)} classes but num_classes="
                    f"{num_classes} (line / entry c names class c; the file of another dataset, or a wrong "
                    "class_names_format?)"
                )

        if self.val_file is None:
            paths, labels = parsed["train"]
            sizes = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
            if sizes.min() <= val_per_class:
                c = int(np.argmin(sizes))
                raise ValueError(
                    f"val_per_class={val_per_class} leaves class {c} without training images: it has {int(sizes[c])} "
                    f"in {self.train_file!r}; lower val_per_class or give val_file"
                )
            val_idx, train_idx = hold_out_per_class(labels, [val_per_class], num_classes, split_seed)
            parsed["val"] = _take(paths, labels, val_idx)
            parsed["train"] = _take(paths, labels, train_idx)

        origin = f"train split file {self.train_file!r}"
        if self.balanced_reference:
            parsed["train"], origin = self._balanced_reference(parsed, num_classes, class_names), origin + " (balanced)"
        parsed.pop("reference", None)
        self._set_image_lists(parsed, num_classes, class_names, origin=origin)

    def _balanced_reference(
        self, parsed: dict[str, tuple[list[str], list[int]]], num_classes: int, class_names: Sequence[str] | None
    ) -> tuple[list[str], list[int]]:
        """``floor(N / C)`` images per class from ``reference_file`` (minus val/test images) or the training list."""
        if "reference" in parsed:
            held = set(parsed["val"][0]) | set(parsed["test"][0])
            paths, labels = parsed["reference"]
            keep = np.array([i for i, p in enumerate(paths) if p not in held], dtype=np.int64)
            pool, what = _take(paths, labels, keep), f"reference file {self.reference_file!r} (minus val/test images)"
        else:
            pool, what = parsed["train"], f"train split file {self.train_file!r}"
        total = len(parsed["train"][1])
        chosen = select_balanced_reference(pool[1], total, num_classes, self.split_seed, class_names, what)
        return _take(*pool, chosen)


def _take(paths: list[str], labels: list[int], index: np.ndarray) -> tuple[list[str], list[int]]:
    return [paths[i] for i in index], [labels[i] for i in index]


__all__ = ["CLASS_NAMES_FORMATS", "HOW_TO_GET_SPLIT_DATA", "SplitFileDataModule", "read_class_names"]
