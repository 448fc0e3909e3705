"""Decoding an image file into an 8-bit RGB PIL image, and the errors and limits around it.

:func:`load_rgb` opens and fully decodes a file and converts it with :func:`to_rgb` (alpha dropped, 16-bit grey
scaled, palettes through RGBA); any failure -- missing, empty, truncated or corrupt file, random bytes behind an image
extension, an unsupported colour mode, a decompression bomb -- is an :class:`UnreadableImageError` naming the file.
PIL's decompression-bomb limit is set with :func:`apply_max_image_pixels` (the datamodules' ``max_image_pixels``).
"""

from __future__ import annotations

import ast
import re

import numpy as np
from PIL import Image

from lt_lightning._checks import check_int

__all__ = [
    "SUPPORTED_MODES",
    "UnreadableImageError",
    "apply_max_image_pixels",
    "check_max_image_pixels",
    "header_size",
    "is_readable",
    "load_rgb",
    "to_rgb",
]


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
    return check_int(
        "max_image_pixels", max_image_pixels, minimum=1, or_none=True, what="an integer >= 1 or None (PIL's limit)"
    )


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


def is_readable(path: str, max_image_pixels: int | None = None) -> bool:
    try:
        load_rgb(path, max_image_pixels)
    except UnreadableImageError:
        return False
    return True


def header_size(path: str) -> tuple[int, int]:
    """``(width, height)`` from the file's header (no decoding); ``(0, 0)`` if it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.size
    except Exception:  # noqa: BLE001 -- an unreadable file is reported when it is decoded
        return 0, 0
