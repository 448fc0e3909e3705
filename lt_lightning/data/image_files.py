"""A dataset of image files on disk: decode with PIL, convert to RGB, crop/resize to a square uint8 tensor.

The per-sample CPU work (in DataLoader workers) is what must happen before images can be stacked into a batch --
decode, colour conversion, a crop or resize to ``image_size`` -- plus the train-time flip. Conversion to float and
normalisation happen batched on the device in :meth:`lt_lightning.data.base.LongTailDataModule.on_after_batch_transfer`.

Resize pipelines (the usual ImageNet recipe, e.g. facebookresearch/classifier-balancing, which the ImageNet-LT and
Places-LT numbers of the survey use):

* train: ``RandomResizedCrop(image_size)`` (scale (0.08, 1), ratio (3/4, 4/3)) and ``RandomHorizontalFlip(0.5)``;
* eval: ``Resize(resize_size)`` of the shorter side, then ``CenterCrop(image_size)``; ``resize_size`` defaults to
  ``int(image_size / 0.875)`` (256 -> 224 for the default size).

Unreadable images (missing, empty, truncated, corrupt, random bytes behind an image extension, an unsupported colour
mode; :func:`load_rgb`): with ``on_error="raise"`` (the default) a file that cannot be decoded raises
:class:`UnreadableImageError` naming the file (raised in a DataLoader worker, it reaches the main process as an
``UnreadableImageError`` whose message is the worker's traceback, file name included). With
``on_error="skip"`` the owner of the dataset is expected to call :meth:`ImageFileDataset.drop_unreadable` once before
training (the datamodules do it in ``setup``): it decodes every file, removes the bad ones and returns their paths, so
the number of skipped files is exact and reported once, in the main process. Should a file still fail later (it changed
on disk), ``__getitem__`` returns the next readable sample, warns naming the file, and increments
:attr:`ImageFileDataset.num_skipped`; that counter is per process (each DataLoader worker holds its own copy of the
dataset), so it is a diagnostic, not a global total.

:class:`ImageFileDataModule` is the base of the datamodules that read such files
(:class:`~lt_lightning.data.split_file_datamodule.SplitFileDataModule`,
:class:`~lt_lightning.data.folder.ImageFolderLTDataModule`): ImageNet normalisation, worker-side crop and flip,
and the missing/unreadable-file policy in ``setup``.
"""

from __future__ import annotations

import ast
import os
import re
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from lt_lightning.data.base import ImageBatch, LongTailDataModule, SamplerFactory
from lt_lightning.data.samplers import UnpaddedDistributedSampler
from lt_lightning.data.split_file import find_split_file_line
from lt_lightning.data.transforms import check_augmentation_preset, image_train_transform, pad_crop_padding

ON_ERROR_CHOICES = ("raise", "skip")

#: Ratio between the eval crop and the resize of the shorter side (224 / 256).
EVAL_CROP_RATIO = 0.875

#: default ``cache_max_bytes`` of the image-file datamodules: 4 GiB
DEFAULT_CACHE_MAX_BYTES = 4 * 2**30


class UnreadableImageError(RuntimeError):
    """An image file could not be opened or decoded.

    ``UnreadableImageError(path, cause)`` names the file and the decoder's error. A DataLoader worker's exception is
    re-raised in the main process by constructing its class from the worker's formatted traceback alone
    (``torch.utils.data``'s ``ExceptionWrapper``): ``UnreadableImageError(message)`` keeps that message and reads the
    path back from it, so ``except UnreadableImageError`` works across workers too.

    Attributes:
        path: the file that failed (``None`` if it cannot be read back from a worker's message).
    """

    def __init__(self, path: str, cause: BaseException | None = None) -> None:
        if cause is None:  # rebuilt from a worker's message
            super().__init__(path)
            found = _PATH_IN_MESSAGE.findall(path)
            self.path: str | None = _unquote(found[-1]) if found else None
            return
        super().__init__(f"cannot read image file {path!r}: {type(cause).__name__}: {cause}")
        self.path = path


_PATH_IN_MESSAGE = re.compile(r"cannot read image file ('(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\")")


def _unquote(text: str) -> str | None:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, str) else None


def validate_on_error(on_error: str) -> str:
    """Return ``on_error`` if it is ``"raise"`` or ``"skip"``, else raise ``ValueError`` naming it."""
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    return on_error


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
    if isinstance(resize_size, bool) or not isinstance(resize_size, int) or resize_size < image_size:
        raise ValueError(f"resize_size must be an integer >= image_size={image_size}, got {resize_size!r}")
    if resize_size > 2 * image_size:
        raise ValueError(
            f"resize_size={resize_size} with image_size={image_size}: the evaluation centre crop would keep "
            f"{image_size / resize_size:.0%} of each side; leave resize_size unset (it is then "
            f"int(image_size / {EVAL_CROP_RATIO}) = {int(image_size / EVAL_CROP_RATIO)}) or give one <= 2 x image_size"
        )
    return resize_size


#: colour modes :func:`to_rgb` converts (PIL's names); others (e.g. ``"LAB"``, which PIL converts by relabelling the
#: channels) are refused
SUPPORTED_MODES: frozenset[str] = frozenset(
    {"RGB", "L", "1", "P", "PA", "RGBA", "LA", "RGBX", "RGBa", "CMYK", "YCbCr", "HSV", "F"}
    | {"I", "I;16", "I;16B", "I;16L", "I;16N"}
)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a PIL image to 8-bit 3-channel RGB, the input of every 3-channel model here.

    * ``"RGB"`` is returned as is; ``"L"`` and ``"1"`` (grey: the value repeated in R, G and B), ``"CMYK"``
      (PIL's ``R = (255 - C)(255 - K) / 255``, likewise G from M and B from Y), ``"YCbCr"``, ``"HSV"``, ``"RGBX"``
      are converted by PIL.
    * Alpha is **dropped, not composited**: ``"RGBA"``, ``"RGBa"``, ``"LA"`` keep their colour values whatever the
      alpha (a fully transparent ``(10, 20, 30, 0)`` pixel gives ``(10, 20, 30)``), as torchvision's
      ``ImageFolder`` loader (``Image.convert("RGB")``) does, which the published recipes train with. Palette images
      (``"P"``, ``"PA"``) go through RGBA, so a transparency entry is dropped the same way (without PIL's warning).
    * 16- and 32-bit integer grey images (``"I;16"``, ``"I;16B"``, ``"I;16L"``, ``"I"``; PIL opens 16-bit grey PNGs in
      one of these modes) are taken as 16-bit data: clipped to [0, 65535] and mapped to 8 bits by ``v * 255 / 65535``
      rounded, so full scale stays full scale. (PIL itself opens 16-bit RGB(A) PNGs as 8-bit ``"RGB(A)"``: the high
      byte.)
    * 32-bit float grey images (``"F"``) are clipped to [0, 255] and rounded (NaN becomes 0).

    Raises:
        ValueError: a mode outside :data:`SUPPORTED_MODES`.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode not in SUPPORTED_MODES:
        raise ValueError(f"colour mode {mode!r} is not supported (supported: {sorted(SUPPORTED_MODES)})")
    if mode.startswith("I"):  # "I", "I;16", "I;16B", "I;16L", "I;16N"
        values = np.asarray(image).astype(np.float64)
        gray = np.rint(np.clip(values, 0.0, 65535.0) * (255.0 / 65535.0)).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        gray = np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode in ("P", "PA"):
        return image.convert("RGBA").convert("RGB")
    return image.convert("RGB")


def check_max_image_pixels(max_image_pixels: int | None) -> int | None:
    """``max_image_pixels`` if it is ``None`` or an integer ``>= 1``, else ``ValueError`` naming it."""
    if max_image_pixels is not None and (
        isinstance(max_image_pixels, bool) or not isinstance(max_image_pixels, int) or max_image_pixels < 1
    ):
        raise ValueError(f"max_image_pixels must be an integer >= 1 or None (PIL's limit), got {max_image_pixels!r}")
    return max_image_pixels


def apply_max_image_pixels(max_image_pixels: int | None) -> None:
    """Set PIL's decompression-bomb limit ``Image.MAX_IMAGE_PIXELS`` (process-wide) unless ``max_image_pixels`` is
    ``None``. PIL warns above the limit and refuses images of more than twice as many pixels."""
    if check_max_image_pixels(max_image_pixels) is not None and Image.MAX_IMAGE_PIXELS != max_image_pixels:
        Image.MAX_IMAGE_PIXELS = max_image_pixels


def load_rgb(path: str, max_image_pixels: int | None = None) -> Image.Image:
    """Open ``path``, decode it fully and return an RGB image (:func:`to_rgb`).

    Any failure -- a missing, empty, truncated or corrupt file, random bytes behind an image extension, an
    unsupported colour mode, a decompression bomb (PIL's ``Image.MAX_IMAGE_PIXELS``) -- raises
    :class:`UnreadableImageError` naming the file and the decoder's error. Truncated files fail as long as PIL's
    global ``ImageFile.LOAD_TRUNCATED_IMAGES`` is ``False`` (its default; when a program sets it, PIL pads them
    with grey instead, by that program's choice). A decompression bomb's message names the ``max_image_pixels``
    option of the datamodules, which raises the limit.

    Args:
        path: the image file.
        max_image_pixels: PIL's decompression-bomb limit to apply first (:func:`apply_max_image_pixels`; it is
            process-wide); ``None`` keeps the current one (PIL's default: 89,478,485 pixels, refused above twice that).
    """
    apply_max_image_pixels(max_image_pixels)
    try:
        with Image.open(path) as image:
            image.load()
            rgb = to_rgb(image)
    except Image.DecompressionBombError as exc:
        hint = Image.DecompressionBombError(
            f"{exc} -- if the image is genuine, raise the limit with the datamodule's max_image_pixels option "
            f"(e.g. --data.init_args.max_image_pixels {2 * _image_pixels(exc)}; now {Image.MAX_IMAGE_PIXELS}, "
            "PIL's Image.MAX_IMAGE_PIXELS)"
        )
        raise UnreadableImageError(path, hint) from exc
    except Exception as exc:  # noqa: BLE001 -- PIL's plugins raise many types (OSError, SyntaxError, struct.error, ...)
        raise UnreadableImageError(path, exc) from exc
    if rgb.mode != "RGB" or rgb.width < 1 or rgb.height < 1:  # defensive: never hand a non-RGB image on
        raise UnreadableImageError(path, ValueError(f"decoded to mode {rgb.mode!r}, size {rgb.size}"))
    return rgb


def _image_pixels(exc: BaseException) -> int:
    """The pixel count PIL's decompression-bomb message reports (``"Image size (N pixels) exceeds ..."``), else 0."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return int(found.group(1)) if found else 0


def _is_readable(path: str, max_image_pixels: int | None = None) -> bool:
    try:
        load_rgb(path, max_image_pixels)
    except UnreadableImageError:
        return False
    return True


CACHE_KINDS: tuple[str, ...] = ("decoded", "output")


class ImageCache:
    """Images of a dataset held in memory as ``uint8`` in one flat buffer (so forked DataLoader workers share it).

    ``kind="decoded"``: the decoded RGB image of each file (``[H, W, 3]``, its own size), for pipelines that are
    random and must start from the whole image. ``kind="output"``: the final ``[3, S, S]`` tensor of a
    deterministic pipeline (evaluation; the ``pad_crop`` preset's training part), so loading is a copy.

    Attributes:
        kind: ``"decoded"`` or ``"output"``.
        nbytes: size of the buffer in bytes.
    """

    def __init__(self, kind: str, arrays: Sequence[np.ndarray]) -> None:
        if kind not in CACHE_KINDS:
            raise ValueError(f"kind must be one of {CACHE_KINDS}, got {kind!r}")
        self.kind = kind
        sizes = np.array([a.size for a in arrays], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.shapes = [tuple(int(d) for d in a.shape) for a in arrays]
        self.buffer = np.empty(int(self.offsets[-1]), dtype=np.uint8)
        for i, a in enumerate(arrays):
            self.buffer[self.offsets[i] : self.offsets[i + 1]] = a.reshape(-1)

    @property
    def nbytes(self) -> int:
        return int(self.buffer.nbytes)

    def __len__(self) -> int:
        return len(self.shapes)

    def get(self, index: int) -> np.ndarray:
        """Image ``index`` as a read-only view of the buffer."""
        view = self.buffer[self.offsets[index] : self.offsets[index + 1]].reshape(self.shapes[index])
        view.flags.writeable = False
        return view

    def take(self, indices: Sequence[int]) -> ImageCache:
        """A cache of the images ``indices`` (in that order), e.g. after unreadable files were dropped."""
        return ImageCache(self.kind, [self.get(i) for i in indices])


def _bytes(n: int) -> str:
    """``n`` bytes in the largest binary unit that keeps at least 1 (``"1.5 KiB"``, ``"4.0 GiB"``)."""
    value, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"


def _header_size(path: str) -> tuple[int, int]:
    """``(width, height)`` from the file's header (no decoding); ``(0, 0)`` if it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.size
    except Exception:  # noqa: BLE001 -- an unreadable file is reported when it is decoded
        return 0, 0


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
        return sum(3 * w * h for w, h in map(_header_size, self.paths))

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
            readable = list(pool.map(lambda p: _is_readable(p, self.max_image_pixels), self.paths))
        dropped = [path for path, ok in zip(self.paths, readable, strict=True) if not ok]
        if dropped:
            kept = [i for i, ok in enumerate(readable) if ok]
            self.paths = [self.paths[i] for i in kept]
            self.labels = [self.labels[i] for i in kept]
            if self.cache is not None:
                self.cache = self.cache.take(kept)
        return dropped


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
        batch_size, eval_batch_size, num_workers, seed, augment, pin_memory, sampler: see
            :class:`~lt_lightning.data.base.LongTailDataModule`.

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
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            seed=seed,
            augment=augment,
            pin_memory=pin_memory,
            sampler=sampler,
        )
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be an integer >= 1, got {image_size!r}")
        self.image_size = image_size
        self.augmentation_preset = check_augmentation_preset(augmentation_preset)
        self.resize_size = default_resize_size(image_size, resize_size, self.augmentation_preset)
        self.on_error = validate_on_error(on_error)
        if self.augmentation_preset == "pad_crop":  # the random crop and the flip run batched on the device
            self.crop_padding = pad_crop_padding(image_size)
            self.horizontal_flip = True
        self.cache_images = bool(cache_images)
        if isinstance(cache_max_bytes, bool) or not isinstance(cache_max_bytes, int) or cache_max_bytes < 0:
            raise ValueError(f"cache_max_bytes must be an integer >= 0, got {cache_max_bytes!r}")
        self.cache_max_bytes = cache_max_bytes
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
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
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
            held = f" (plus {_bytes(self.cache_bytes)} already cached)" if self.cache_bytes else ""
            raise ValueError(
                f"cache_images=True: the {len(dataset)} {split} images need about {_bytes(estimate)} in memory{held}, "
                f"over cache_max_bytes={self.cache_max_bytes} ({_bytes(self.cache_max_bytes)}):"
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
