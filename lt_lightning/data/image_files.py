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

The parts live in one file each, all re-exported here: :mod:`~lt_lightning.data.image_decoding` (decoding and colour
conversion), :mod:`~lt_lightning.data.image_cache` (the in-memory cache), :mod:`~lt_lightning.data.image_dataset`
(:class:`ImageFileDataset`) and :mod:`~lt_lightning.data.image_datamodule` (:class:`ImageFileDataModule`).
"""

from lt_lightning.data.image_cache import CACHE_KINDS, DEFAULT_CACHE_MAX_BYTES, ImageCache
from lt_lightning.data.image_cache import format_bytes as _bytes
from lt_lightning.data.image_datamodule import _STAGE_SPLITS, IMAGENET_MEAN, IMAGENET_STD, SPLITS, ImageFileDataModule
from lt_lightning.data.image_dataset import (
    EVAL_CROP_RATIO,
    ON_ERROR_CHOICES,
    ImageFileDataset,
    default_resize_size,
    validate_on_error,
)
from lt_lightning.data.image_decoding import (
    _PATH_IN_MESSAGE,
    SUPPORTED_MODES,
    UnreadableImageError,
    _image_pixels,
    _unquote,
    apply_max_image_pixels,
    check_max_image_pixels,
    load_rgb,
    to_rgb,
)
from lt_lightning.data.image_decoding import header_size as _header_size
from lt_lightning.data.image_decoding import is_readable as _is_readable

__all__ = [
    "CACHE_KINDS",
    "DEFAULT_CACHE_MAX_BYTES",
    "EVAL_CROP_RATIO",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ON_ERROR_CHOICES",
    "SPLITS",
    "SUPPORTED_MODES",
    "ImageCache",
    "ImageFileDataModule",
    "ImageFileDataset",
    "UnreadableImageError",
    "apply_max_image_pixels",
    "check_max_image_pixels",
    "default_resize_size",
    "load_rgb",
    "to_rgb",
    "validate_on_error",
]
_PRIVATE_ALIASES = (_bytes, _header_size, _is_readable, _image_pixels, _unquote, _PATH_IN_MESSAGE, _STAGE_SPLITS)
