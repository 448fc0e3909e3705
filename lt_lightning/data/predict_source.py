"""What ``lt-lightning predict`` runs on: a split of the datamodule, or a folder of unlabelled images.

:attr:`LongTailDataModule.predict_source <lt_lightning.data.datamodule.LongTailDataModule.predict_source>` (set by
:class:`~lt_lightning.callbacks.prediction_writer.PredictionWriter` from ``--prediction.source``) is one of

* ``"test"`` (default), ``"val"``: that evaluation split, as ``test`` / ``validate`` see it;
* ``"train"``: each training image once, through the evaluation pipeline (no augmentation, no re-sampling);
* a folder: every image file under it (recursive, sorted;
  :data:`~lt_lightning.data.image_listing.IMAGE_EXTENSIONS`), without labels. Each file is decoded
  (:func:`~lt_lightning.data.image_decoding.load_rgb`), converted to the channels of the model's input (grey
  ``"L"`` for one channel), its shorter side resized to ``resize_size`` and centre-cropped to the test images'
  ``H x W``, so it reaches the model exactly like a test image of the datamodule (same size, same device-side
  normalisation).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from lt_lightning.data.image_decoding import load_rgb

#: the datamodule splits ``--prediction.source`` accepts besides a folder
PREDICT_SPLITS: tuple[str, ...] = ("test", "val", "train")

#: the label of an unlabelled image in a predict batch
NO_LABEL = -1


def check_predict_source(source: str) -> str:
    """Return ``source`` if it is a split of :data:`PREDICT_SPLITS` or an existing folder.

    Raises:
        ValueError: anything else, naming the option and what it accepts.
    """
    if not isinstance(source, str) or not source:
        raise ValueError(f"prediction source must be one of {PREDICT_SPLITS} or a folder of images, got {source!r}")
    if source in PREDICT_SPLITS or os.path.isdir(source):
        return source
    raise ValueError(
        f"prediction source {source!r} is neither a split {PREDICT_SPLITS} nor an existing folder of images "
        f"(--prediction.source; relative paths are taken from the current directory {os.getcwd()!r})"
    )


class PredictImageFolder(Dataset):
    """Unlabelled image files shaped like the datamodule's test images: ``(uint8 [C, H, W], -1)`` per file.

    Args:
        paths: the image files.
        channels: ``C``, 1 (grey) or 3 (RGB).
        size: ``(H, W)`` of the centre crop (the test images' size).
        resize_size: the shorter side is resized to this before the crop (default ``max(H, W)``).
    """

    def __init__(
        self, paths: Sequence[str], channels: int, size: tuple[int, int], resize_size: int | None = None
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        height, width = int(size[0]), int(size[1])
        if height < 1 or width < 1:
            raise ValueError(f"size must be two positive integers, got {size!r}")
        self.paths = list(paths)
        self.channels = channels
        self.size = (height, width)
        self.resize_size = max(height, width) if resize_size is None else int(resize_size)
        if self.resize_size < max(height, width):
            raise ValueError(f"resize_size={self.resize_size} is smaller than the crop {self.size}")
        self.transform = v2.Compose([v2.Resize(self.resize_size, antialias=True), v2.CenterCrop(self.size)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = load_rgb(self.paths[index])
        if self.channels == 1:
            image = image.convert("L")
        return F.pil_to_tensor(self.transform(image)).contiguous(), NO_LABEL
