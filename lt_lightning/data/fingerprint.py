"""The data fingerprint of a run: what data a model is trained on, as plain values, and the difference of two.

:func:`data_fingerprint` describes the data a model is trained on (the datamodule class, its split arguments, the
class counts and a digest of the training set) as plain Python values (they load with ``weights_only=True``);
:func:`fingerprint_difference` names what differs between two fingerprints. The
:class:`~lt_lightning.callbacks.data_fingerprint.DataFingerprint` callback stores one in every checkpoint and
compares it on resume.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["FINGERPRINT_FIELDS", "SPLIT_FIELDS", "SPLIT_FILE_FIELDS", "data_fingerprint", "fingerprint_difference"]

SPLIT_FIELDS: tuple[str, ...] = (
    "imbalance_ratio",
    "profile",
    "n_max",
    "split_seed",
    "data_seed",
    "val_source",
    "val_per_class",
    "test_per_class",
    "balanced_reference",
)
"""Datamodule attributes (or ``hparams`` entries) that define the split, recorded where the datamodule has them."""

SPLIT_FILE_FIELDS: tuple[str, ...] = ("train_file", "val_file", "test_file", "reference_file")
"""Split-file attributes, recorded as ``"<basename>@sha256:<16 hex>"`` of the file's content."""

FINGERPRINT_FIELDS: tuple[str, ...] = (
    "dataset",
    *SPLIT_FIELDS,
    "root",
    *SPLIT_FILE_FIELDS,
    "num_classes",
    "class_counts",
    "train_images",
)
"""Every field a fingerprint can hold, in the order :func:`fingerprint_difference` reports them."""

_MISSING = object()
_SHOWN_CLASSES = 5


def _plain(value: Any) -> Any:
    """``value`` as a plain Python value (bool, int, float, str or None; anything else as its ``str``)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _file_digest(path: str) -> str:
    name = os.path.basename(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return f"{name}@unreadable"
    return f"{name}@sha256:{digest.hexdigest()[:16]}"


def _train_images_digest(datamodule: Any, root: str | None) -> str | None:
    """A digest of which images train, in order: the labels plus the file paths (relative to root) or indices."""
    digest, used = hashlib.sha256(), False
    labels = getattr(datamodule, "train_labels", None)
    if labels is not None:
        digest.update(b"labels:" + np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64).tobytes())
        used = True
    lists = getattr(datamodule, "image_lists", None)
    index = getattr(datamodule, "train_index", None)
    if isinstance(lists, Mapping) and "train" in lists:
        paths = [os.fspath(p) for p in lists["train"][0]]
        if root is not None:
            paths = [os.path.relpath(p, root) for p in paths]
        digest.update(b"paths:" + "\n".join(p.replace(os.sep, "/") for p in paths).encode())
        used = True
    elif index is not None:
        digest.update(b"index:" + np.asarray(index, dtype=np.int64).tobytes())
        used = True
    return f"sha256:{digest.hexdigest()[:16]}" if used else None


def data_fingerprint(datamodule: Any) -> dict[str, Any]:
    """Describe the training data of ``datamodule`` as a dict of plain values (JSON- and ``weights_only``-safe).

    Fields (each only where the datamodule has it; see :data:`FINGERPRINT_FIELDS`):

    * ``dataset``: the datamodule class's ``__qualname__``;
    * the split arguments of :data:`SPLIT_FIELDS` (``imbalance_ratio``, ``profile``, ``split_seed``,
      ``val_per_class``, ``balanced_reference``, ...), from same-named attributes or ``datamodule.hparams``;
    * ``root``: the basename of ``datamodule.root`` (the data may move; its folder name stays);
    * the split files of :data:`SPLIT_FILE_FIELDS`: ``"<basename>@sha256:<16 hex>"`` of the file's *content*
      (a moved copy matches, an edited file does not);
    * ``num_classes`` and ``class_counts`` (a list of ints);
    * ``train_images``: ``"sha256:<16 hex>"`` of the training labels and the training files (paths relative to
      ``root``) or indices -- the same counts drawn with another seed differ here.

    Args:
        datamodule: a :class:`~lt_lightning.data.base.LongTailDataModule` (any object works: missing attributes are
            left out).
    """
    hparams = getattr(datamodule, "hparams", None)
    hparams = hparams if isinstance(hparams, Mapping) else {}
    fingerprint: dict[str, Any] = {"dataset": type(datamodule).__qualname__}
    for name in SPLIT_FIELDS:
        value = getattr(datamodule, name, _MISSING)
        if value is _MISSING:
            value = hparams.get(name, _MISSING)
        if value is not _MISSING:
            fingerprint[name] = _plain(value)
    root = getattr(datamodule, "root", None)
    root = os.fspath(root) if isinstance(root, (str, os.PathLike)) else None
    if root is not None:
        fingerprint["root"] = os.path.basename(os.path.normpath(root))
    for name in SPLIT_FILE_FIELDS:
        path = getattr(datamodule, name, None)
        if isinstance(path, (str, os.PathLike)) and os.fspath(path):
            fingerprint[name] = _file_digest(os.fspath(path))
    num_classes = getattr(datamodule, "num_classes", None)
    if num_classes is not None:
        fingerprint["num_classes"] = int(num_classes)
    counts = getattr(datamodule, "class_counts", None)
    if counts is not None:
        fingerprint["class_counts"] = [int(n) for n in torch.as_tensor(counts).flatten().tolist()]
    images = _train_images_digest(datamodule, root)
    if images is not None:
        fingerprint["train_images"] = images
    return fingerprint


def _counts_difference(saved: Sequence[int], current: Sequence[int]) -> str | None:
    saved, current = [int(n) for n in saved], [int(n) for n in current]
    if len(saved) != len(current):
        return (
            f"class_counts: saved {len(saved)} classes ({sum(saved)} images), "
            f"current {len(current)} classes ({sum(current)} images)"
        )
    differ = [c for c, (a, b) in enumerate(zip(saved, current, strict=True)) if a != b]
    if not differ:
        return None
    shown = ", ".join(f"class {c}: saved {saved[c]}, current {current[c]}" for c in differ[:_SHOWN_CLASSES])
    more = f", ... ({len(differ) - _SHOWN_CLASSES} more)" if len(differ) > _SHOWN_CLASSES else ""
    return (
        f"class_counts differ in {len(differ)} of {len(saved)} classes ({shown}{more}); "
        f"training images: saved {sum(saved)}, current {sum(current)}"
    )


def fingerprint_difference(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """Name every field that differs between two :func:`data_fingerprint` dicts, with both values; ``None`` if equal.

    Only fields present in both are compared (a fingerprint written before a field existed is not a mismatch).
    ``class_counts`` are summarised (the classes that differ, at most 5 shown, and the totals); ``train_images`` is
    reported only when nothing else differs (it then means: same split arguments and counts, other images).

    Raises:
        ValueError: ``saved`` or ``current`` is not a mapping.
    """
    for label, value in (("saved", saved), ("current", current)):
        if not isinstance(value, Mapping):
            raise ValueError(f"{label} fingerprint must be a mapping, got {type(value).__name__}: {value!r}")
    known = [k for k in FINGERPRINT_FIELDS if k in saved and k in current]
    others = sorted(k for k in saved.keys() & current.keys() if k not in FINGERPRINT_FIELDS)
    parts: list[str] = []
    for key in [*known, *others]:
        if key == "train_images":
            continue
        a, b = saved[key], current[key]
        if key == "class_counts" and isinstance(a, Sequence) and isinstance(b, Sequence):
            part = _counts_difference(a, b)
            if part:
                parts.append(part)
        elif a != b:
            parts.append(f"{key}: saved {a!r}, current {b!r}")
    if not parts and "train_images" in known and saved["train_images"] != current["train_images"]:
        parts.append(
            f"train_images: saved {saved['train_images']!r}, current {current['train_images']!r} (same split "
            "arguments and class counts, other training images: another split seed, other files or another order)"
        )
    return "; ".join(parts) or None
