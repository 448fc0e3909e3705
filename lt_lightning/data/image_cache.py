"""The in-memory cache of an image-file dataset: ``uint8`` images in one flat buffer, and its size limit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lt_lightning._checks import check_choice

__all__ = ["CACHE_KINDS", "DEFAULT_CACHE_MAX_BYTES", "ImageCache", "format_bytes"]

#: default ``cache_max_bytes`` of the image-file datamodules: 4 GiB
DEFAULT_CACHE_MAX_BYTES = 4 * 2**30

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
        self.kind = check_choice("kind", kind, CACHE_KINDS)
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


def format_bytes(n: int) -> str:
    """``n`` bytes in the largest binary unit that keeps at least 1 (``"1.5 KiB"``, ``"4.0 GiB"``)."""
    value, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
