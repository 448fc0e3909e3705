"""CIFAR-10-LT and CIFAR-100-LT exactly as LDAM-DRW builds them, with a validation set from unused images.

Long-tailed training set (Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss",
NeurIPS 2019; ``kaidic/LDAM-DRW`` ``imbalance_cifar.py``): head class ``n_max = 50000 / C`` (5,000 for CIFAR-10,
500 for CIFAR-100), per-class counts from :func:`~lt_lightning.data.profiles.long_tail_counts` (``exp`` or
``step`` profile, any ``rho >= 1``), images chosen by :func:`~lt_lightning.data.profiles.select_long_tail_indices`
with LDAM-DRW's seed 0 — the same counts and the same selected indices from the python-pickle files.

Validation set (not in LDAM-DRW, which reports the last epoch on the test set), ``val_source``:

* ``"unused"`` (default): LDAM-DRW's per-class shuffle leaves ``5000 - n_c`` (CIFAR-10) or ``500 - n_c``
  (CIFAR-100) images of class ``c`` unused; the first ``val_per_class`` of them, in that shuffled order, are its
  validation images (default 50 per class for CIFAR-10, 20 for CIFAR-100). The training set is exactly
  LDAM-DRW's. A class whose whole pool is in the training set (the head class of the ``exp`` profile, the
  majority half of ``step``) has no unused image and hence no validation image: a warning names those classes,
  their validation accuracy is NaN and the class-balanced validation accuracy averages the other classes.
* ``"holdout"``: ``val_per_class`` images of every class are held out first (seeded), and the LDAM-DRW selection
  runs on the rest with ``n_max = 50000 / C - val_per_class``: a validation set balanced over all classes, at the
  price of training counts that differ slightly from the paper's (4,950 instead of 5,000 for the head class).

The test set is the balanced official test set (10,000 images); nothing selects on it.

Balanced reference set (``balanced_reference=True``, the survey's relative accuracy; Zhang et al., TPAMI 2023,
Sec. 4): the training set becomes ``floor(N / C)`` images per class, ``N`` the long-tailed total (CIFAR-10-LT
rho = 100: 12,406 images, 1,240 per class), drawn with ``split_seed`` from the full training set minus the validation
images (:mod:`lt_lightning.data.balanced_reference`). Validation and test sets are those of the long-tailed set.

The reader parses the original pickles itself (``cifar-10-batches-py/`` or ``cifar-100-python/`` under ``root``)
and does not run torchvision's md5 check, so re-encoded copies of the same layout work. With ``download=True`` a
missing dataset is fetched first by torchvision's downloader (:func:`download_cifar`: the archive of torchvision's
``CIFAR10`` / ``CIFAR100`` classes, md5-checked, extracted into ``root``).
"""

from __future__ import annotations

import functools
import os
import pickle
import warnings
from typing import Any, Literal

import numpy as np
import torch

from lt_lightning.data._split import hold_out_per_class
from lt_lightning.data.balanced_reference import select_balanced_reference
from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.data.profiles import Profile, long_tail_counts, select_long_tail_indices
from lt_lightning.data.tensor_dataset import TensorImageDataset
from lt_lightning.data.transforms import CIFAR_MEAN, CIFAR_STD

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
_GET_DATA = (
    "set download: true (--data.init_args.download true) to let torchvision download it, or download {url} and "
    "extract it into {root} yourself, so that {path}/ holds the python-pickle batches"
)


#: the globals a CIFAR pickle may reference: numpy arrays / scalars / dtypes (numpy 1 and 2 module names, all
#: pickle protocols) and ``_codecs.encode`` (bytes in protocol <= 2). Anything else -- a pickle can call any importable
#: function while loading -- is refused, so a hostile file cannot run code.
_ALLOWED_GLOBALS = frozenset(
    {("numpy", "dtype"), ("numpy", "ndarray"), ("_codecs", "encode")}
    | {(f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")}
    | {(f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")}
)


class _CIFARUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`_ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} (a CIFAR pickle holds only dicts, lists, strings and numpy "
                "arrays)"
            )
        return super().find_class(module, name)


def _unpickle(path: str) -> dict[str, Any]:
    """Load a CIFAR pickle with :class:`_CIFARUnpickler`; ``ValueError`` naming ``path`` if it is not a dict pickle."""
    try:
        with open(path, "rb") as f:
            entry = _CIFARUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 -- a corrupt pickle fails in many ways (EOFError, KeyError, struct.error...)
        raise ValueError(f"{path} is not a readable CIFAR pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(entry, dict):
        raise ValueError(f"{path} is not a CIFAR pickle: it holds a {type(entry).__name__}, not a dict")
    return entry


def _check_images(value: Any, path: str, num_classes: int) -> np.ndarray:
    """``entry["data"]`` as ``uint8 [N, 3, 32, 32]``: ``[N, 3072]`` (or ``[N, 3, 32, 32]``) integers in [0, 255]."""
    what = f"{path}: 'data' of a CIFAR-{num_classes} pickle"
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iub":
        kind = type(value).__name__ if not isinstance(value, np.ndarray) else f"array of {value.dtype}"
        raise ValueError(f"{what} must be an integer numpy array [N, 3072], got {kind}")
    if not (value.ndim == 2 and value.shape[1] == 3 * 32 * 32) and not (
        value.ndim == 4 and value.shape[1:] == (3, 32, 32)
    ):
        raise ValueError(f"{what} must have shape [N, 3072] (3 x 32 x 32 pixels per row), got {value.shape}")
    if value.dtype != np.uint8 and value.size and (value.min() < 0 or value.max() > 255):
        raise ValueError(f"{what} must hold pixel values in [0, 255], got [{value.min()}, {value.max()}]")
    return np.asarray(value, dtype=np.uint8).reshape(-1, 3, 32, 32)


def _check_labels(value: Any, path: str, key: str, count: int, num_classes: int) -> np.ndarray:
    """``entry[key]``: ``count`` integer labels in ``[0, num_classes)``."""
    what = f"{path}: {key!r} of a CIFAR-{num_classes} pickle"
    try:
        labels = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what} is not a list of integers ({exc})") from None
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"{what} must be a flat list of integers, got {labels.dtype} of shape {labels.shape}")
    if labels.size != count:
        raise ValueError(f"{what} has {labels.size} labels for {count} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(np.flatnonzero((labels < 0) | (labels >= num_classes))[0])
        raise ValueError(f"{what}: label {int(labels[bad])} at index {bad} is outside [0, {num_classes})")
    return labels.astype(np.int64)


def _torchvision_cifar(num_classes: int) -> Any:
    from torchvision import datasets  # local: only download needs it

    if num_classes == 10:
        return datasets.CIFAR10
    if num_classes == 100:
        return datasets.CIFAR100
    raise ValueError(f"num_classes must be 10 or 100 for CIFAR, got {num_classes}")


def cifar_files_present(root: str, num_classes: int) -> bool:
    """Whether every file :func:`read_cifar` reads (train and test batches, meta) exists under ``root``."""
    folder, files = (CIFAR10_DIR, [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"])
    if num_classes == 100:
        folder, files = CIFAR100_DIR, ["train", "test", "meta"]
    return all(os.path.isfile(os.path.join(os.fspath(root), folder, name)) for name in files)


def download_cifar(root: str, num_classes: int) -> bool:
    """Download and extract CIFAR-``num_classes`` into ``root`` with torchvision's downloader, unless it is there.

    Calls ``torchvision.datasets.utils.download_and_extract_archive`` with the ``url``, ``filename`` and ``tgz_md5``
    of torchvision's ``CIFAR10`` / ``CIFAR100`` class (the archive is md5-checked, then extracted into ``root``,
    giving ``root/cifar-10-batches-py/`` or ``root/cifar-100-python/``). Returns ``True`` if it downloaded. Run it
    once on one process before a multi-process (DDP) run: every process that finds the data missing downloads.

    Raises:
        ValueError: ``num_classes`` other than 10 or 100.
    """
    dataset = _torchvision_cifar(num_classes)
    if cifar_files_present(root, num_classes):
        return False
    from torchvision.datasets import utils as tv_utils  # local: only download needs it

    os.makedirs(os.fspath(root), exist_ok=True)
    tv_utils.download_and_extract_archive(
        dataset.url, download_root=os.fspath(root), filename=dataset.filename, md5=dataset.tgz_md5
    )
    return True


def read_cifar(root: str, num_classes: int, train: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read CIFAR-10/100 from the python-pickle layout: ``uint8 [N, 3, 32, 32]``, ``int64 [N]``, class names.

    The last two reads are cached per process (keyed by the files' paths, sizes and modification times), so building
    several datamodules on the same data decodes the pickles once. The arrays are shared: do not modify them.

    Every file is checked and an error names it: a file that is not a pickle (truncated, random bytes) or holds
    anything but dicts, lists, strings and numpy arrays (loaded with a restricted unpickler: a hostile pickle cannot
    run code), ``data`` that is not ``[N, 3072]`` integers in [0, 255], labels that are not ``N`` integers in
    ``[0, num_classes)``, a meta file without ``num_classes`` names.

    Raises:
        FileNotFoundError: naming the missing path and how to get the data.
        ValueError: for ``num_classes`` other than 10 or 100, or a file of the wrong layout (naming it).
    """
    if num_classes == 10:
        folder, files = CIFAR10_DIR, [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        label_key, meta_file, names_key = "labels", "batches.meta", "label_names"
        url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    elif num_classes == 100:
        folder, files = CIFAR100_DIR, ["train" if train else "test"]
        label_key, meta_file, names_key = "fine_labels", "meta", "fine_label_names"
        url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    else:
        raise ValueError(f"num_classes must be 10 or 100 for CIFAR, got {num_classes}")
    base = os.path.join(os.fspath(root), folder)
    stamps = []
    for name in [*files, meta_file]:
        path = os.path.join(base, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"CIFAR-{num_classes} file {path} not found: " + _GET_DATA.format(url=url, root=root, path=base)
            )
        stat = os.stat(path)
        stamps.append((os.path.abspath(path), stat.st_size, stat.st_mtime_ns))
    x, y, names = _read_cifar_files(tuple(stamps), base, tuple(files), label_key, meta_file, names_key, num_classes)
    return x, y, list(names)


@functools.lru_cache(maxsize=2)
def _read_cifar_files(
    stamps: tuple[tuple[str, int, int], ...],
    base: str,
    files: tuple[str, ...],
    label_key: str,
    meta_file: str,
    names_key: str,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    data, labels = [], []
    for name in files:
        path = os.path.join(base, name)
        entry = _unpickle(path)
        if "data" not in entry or label_key not in entry:
            keys = sorted(str(k) for k in entry)[:6]
            raise ValueError(
                f"{path} is not a CIFAR-{num_classes} pickle (keys: {keys}; expected 'data' and {label_key!r})"
            )
        images = _check_images(entry["data"], path, num_classes)
        data.append(images)
        labels.append(_check_labels(entry[label_key], path, label_key, len(images), num_classes))
    meta_path = os.path.join(base, meta_file)
    meta = _unpickle(meta_path)
    names = meta.get(names_key)
    if not isinstance(names, (list, tuple)) or len(names) != num_classes or not all(isinstance(n, str) for n in names):
        shown = f"{len(names)} entries" if isinstance(names, (list, tuple)) else repr(type(names).__name__)
        raise ValueError(f"{meta_path}: {names_key!r} must be a list of {num_classes} class names, got {shown}")
    return np.concatenate(data), np.concatenate(labels), list(names)


class CIFARLTDataModule(LongTailDataModule):
    """CIFAR-LT (base of :class:`CIFAR10LTDataModule` and :class:`CIFAR100LTDataModule`).

    Args:
        root: directory holding ``cifar-10-batches-py/`` or ``cifar-100-python/``.
        imbalance_ratio: ``rho = n_max / n_min`` (LDAM-DRW's ``1 / imb_factor``), ``>= 1``.
        profile: ``"exp"`` or ``"step"``.
        val_per_class: validation images per class.
        val_source: ``"unused"`` (exact LDAM-DRW training set) or ``"holdout"`` (validation balanced over all
            classes); see the module docstring.
        split_seed: seed of LDAM-DRW's selection (``rand_number``, 0 in the paper's runs).
        balanced_reference: train on the balanced reference set (``floor(N / C)`` per class from the training images
            outside the validation set) instead of the long-tailed set; see the module docstring.
        download: fetch the dataset into ``root`` with torchvision's downloader when it is missing
            (:func:`download_cifar`; needs internet). Default ``False``: a missing dataset is a
            ``FileNotFoundError`` that says how to get it.
        **kwargs: :class:`~lt_lightning.data.base.LongTailDataModule` arguments (batch_size, seed, ...).
    """

    dataset_classes: int = 10
    default_val_per_class: int = 50
    mean = CIFAR_MEAN
    std = CIFAR_STD
    crop_padding = 4
    horizontal_flip = True

    def __init__(
        self,
        root: str = "data",
        imbalance_ratio: float = 100.0,
        profile: Profile = "exp",
        val_per_class: int | None = None,
        val_source: Literal["unused", "holdout"] = "unused",
        split_seed: int = 0,
        balanced_reference: bool = False,
        download: bool = False,
        batch_size: int = 128,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        val_per_class = self.default_val_per_class if val_per_class is None else val_per_class
        if val_per_class < 0:
            raise ValueError(f"val_per_class must be >= 0, got {val_per_class}")
        self.root = os.fspath(root)
        self.imbalance_ratio = imbalance_ratio
        self.profile = profile
        self.val_per_class = val_per_class
        self.split_seed = split_seed
        if val_source not in ("unused", "holdout"):
            raise ValueError(f"val_source must be 'unused' or 'holdout', got {val_source!r}")
        self.val_source = val_source
        self.download = bool(download)
        if self.download:
            download_cifar(self.root, self.dataset_classes)
        images, labels, names = read_cifar(self.root, self.dataset_classes, train=True)
        pool = np.arange(len(labels))
        if val_source == "holdout":
            val_index, pool = hold_out_per_class(labels, [val_per_class], self.dataset_classes, split_seed, "train set")
        n_max = len(pool) // self.dataset_classes
        counts = long_tail_counts(self.dataset_classes, n_max, imbalance_ratio, profile)
        chosen, unused = select_long_tail_indices(labels[pool], counts, seed=split_seed)
        selected = pool[chosen]
        if val_source == "unused":
            val_index = np.concatenate([pool[unused[c][:val_per_class]] for c in sorted(unused)]).astype(np.int64)
            short = [c for c, idx in unused.items() if idx.size < val_per_class]
            if short and val_per_class > 0:
                warnings.warn(
                    f"CIFAR-{self.dataset_classes}-LT (imbalance_ratio={imbalance_ratio}, profile={profile!r}): "
                    f"classes {short[:10]}{'...' if len(short) > 10 else ''} use their whole training pool and have "
                    f"fewer than val_per_class={val_per_class} validation images (NaN accuracy when none); "
                    "use val_source='holdout' for a validation set balanced over all classes",
                    stacklevel=2,
                )
        self.balanced_reference = bool(balanced_reference)
        origin = f"CIFAR-{self.dataset_classes}-LT"
        if self.balanced_reference:
            reference_pool = np.setdiff1d(pool, val_index)
            chosen = select_balanced_reference(
                labels[reference_pool], len(selected), self.dataset_classes, split_seed, names, "training set"
            )
            selected, origin = reference_pool[chosen], origin + " (balanced reference)"
        self.train_index = selected
        self.val_index = np.sort(val_index)
        self._train_images, self._train_labels = images, labels
        self._set_class_info(labels[selected], self.dataset_classes, names, origin=origin)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        x, y = self._train_images, self._train_labels
        train_x, train_y = torch.from_numpy(x[self.train_index]), torch.from_numpy(y[self.train_index])
        self.train_dataset = TensorImageDataset(train_x, train_y)
        self.val_dataset = TensorImageDataset(torch.from_numpy(x[self.val_index]), torch.from_numpy(y[self.val_index]))
        test_x, test_y, _ = read_cifar(self.root, self.dataset_classes, train=False)
        self.test_dataset = TensorImageDataset(torch.from_numpy(test_x.copy()), torch.from_numpy(test_y.copy()))


class CIFAR10LTDataModule(CIFARLTDataModule):
    """CIFAR-10-LT (LDAM-DRW split; ρ=100 exp: ``[5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]``)."""

    dataset_classes = 10
    default_val_per_class = 50


class CIFAR100LTDataModule(CIFARLTDataModule):
    """CIFAR-100-LT (LDAM-DRW split; ρ=100 exp: 500 ... 5 images per class, 10,847 in total)."""

    dataset_classes = 100
    default_val_per_class = 20


__all__ = [
    "CIFAR10LTDataModule",
    "CIFAR100LTDataModule",
    "CIFARLTDataModule",
    "cifar_files_present",
    "download_cifar",
    "read_cifar",
]
