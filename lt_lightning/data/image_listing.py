"""Listing image files on disk: class folders, image files (recursive or flat), the extensions taken as images.

Used by :class:`~lt_lightning.data.folder.ImageFolderLTDataModule` and by ``predict`` on a folder
(:mod:`lt_lightning.data.predict_source`). Lists names only; nothing is opened or decoded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["IMAGE_EXTENSIONS", "list_class_folders", "list_images", "list_images_flat"]

#: file extensions taken as images (case-insensitive), those of torchvision's ``ImageFolder``
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def list_class_folders(folder: str) -> list[str]:
    """Sorted names of the non-hidden sub-directories of ``folder``."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def list_images(folder: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[str]:
    """Sorted paths of the image files under ``folder`` (recursive, symlinks followed, hidden entries skipped)."""
    exts = tuple(e.lower() for e in extensions)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(os.path.join(dirpath, f) for f in filenames if not f.startswith(".") and f.lower().endswith(exts))
    return sorted(found)


def list_images_flat(folder: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[str]:
    """Sorted paths of the image files directly in ``folder`` (not in sub-folders; hidden entries skipped)."""
    exts = tuple(e.lower() for e in extensions)
    with os.scandir(folder) as entries:
        return sorted(
            e.path for e in entries if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(exts)
        )
