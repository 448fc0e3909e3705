"""Datasets listed in split files, the format of ImageNet-LT, Places-LT and iNaturalist 2018.

A split file has one image per line: a path relative to the dataset root, whitespace, an integer label::

    train/n01440764/n01440764_762.JPEG 0

This is the format published with Liu et al., "Large-Scale Long-Tailed Recognition in an Open World" (OLTR,
CVPR 2019; ImageNet-LT and Places-LT) and used by facebookresearch/classifier-balancing for iNaturalist 2018.

What :func:`parse_split_file` accepts, exactly (anything else is a ``ValueError`` naming ``file:line``):

* UTF-8 text; a byte-order mark at the very start is ignored; LF or CRLF line endings (a carriage return anywhere
  else is an error, so line numbers are those of ``sed -n Np`` and of editors);
* fields separated by ASCII spaces or tabs: ``path label``. **Paths with spaces are not supported** (the published
  split files have none, and allowing them would make ``a.jpg 3 5`` -- a line with an extra field -- parse silently
  as the image ``a.jpg 3``); a path may not contain any other whitespace or control / format character either
  (a no-break space, a byte-order mark in the middle of the file, a NUL byte ...);
* blank lines; ``#`` starts a comment when it begins a line or a field (``train/a.jpg 3  # note``);
* a non-negative decimal label of ASCII digits (``+3`` and ``007`` are 3 and 7); with ``num_classes`` it must be
  ``< num_classes``; without it, labels of :data:`MAX_INFERRED_LABEL` or more are refused (a stray number, not a
  class id: pass ``num_classes`` to allow more classes);
* every image once per file (``os.path.normpath`` of the path): a repeated image is an error naming both lines;
* at least one image.

Nothing is checked on disk here; :func:`find_split_file_line` finds the line of an image for error messages.
"""

from __future__ import annotations

import codecs
import os
import re
import unicodedata
from pathlib import Path

from lt_lightning._checks import check_int

_INTEGER = re.compile(r"[+-]?[0-9]+")
_FIELD_SEPARATOR = re.compile(r"[ \t]+")

#: without ``num_classes``, a label this large or larger is refused (the class count is inferred from the labels,
#: and ``C`` empty classes would be allocated); ImageNet-21k has 21,841 classes
MAX_INFERRED_LABEL = 1_000_000

#: invisible characters refused in a field besides whitespace and control characters: a byte-order mark inside the
#: file (two files concatenated) and the zero-width space
_INVISIBLE = frozenset("\ufeff\u200b")

#: byte-order marks of other encodings (UTF-32 first: its little-endian mark starts with UTF-16's)
_OTHER_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)

#: the longest label text parsed (longer ones are out of any range; ``int`` of a very long string is slow)
_MAX_LABEL_DIGITS = 18


def _split_line(line: str) -> list[str]:
    """Fields of ``line`` (separated by spaces / tabs) up to the first one that starts with ``#`` (a comment)."""
    tokens = [t for t in _FIELD_SEPARATOR.split(line) if t]
    for i, token in enumerate(tokens):
        if token.startswith("#"):
            return tokens[:i]
    return tokens


def _bad_character(text: str) -> str | None:
    """A description of the first whitespace / control / format character of ``text``, or ``None``."""
    for char in text:
        if char.isspace() or unicodedata.category(char) == "Cc" or char in _INVISIBLE:
            name = unicodedata.name(char, "unnamed")
            return f"U+{ord(char):04X} ({name})"
    return None


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{where}: not valid UTF-8 ({exc.reason} at byte {exc.start} of the line: {raw[:80]!r}); "
            "save the split file as UTF-8"
        ) from None


def _check_num_classes(num_classes: int | None) -> None:
    check_int("num_classes", num_classes, minimum=1, or_none=True)


def _read_lines(split_path: Path) -> list[bytes]:
    """The raw lines of the file (split on LF only, a trailing CR removed), after a UTF-8 byte-order mark."""
    if not split_path.is_file():
        raise FileNotFoundError(f"split file not found: {str(split_path)!r}")
    data = split_path.read_bytes()
    for bom, name in _OTHER_BOMS:
        if data.startswith(bom):
            raise ValueError(f"{split_path}:1: the file starts with a {name} byte-order mark; save it as UTF-8")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def parse_split_file(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
) -> tuple[list[str], list[int]]:
    """Read a split file into image paths and labels (the accepted format is in the module docstring).

    Args:
        path: the split file.
        root: if given, each image path is joined to it (``os.path.join``, so absolute paths in the file are kept).
        num_classes: if given, every label must be in ``[0, num_classes)``.

    Returns:
        ``(paths, labels)`` in file order.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: the file is not UTF-8, lists no image, or has a line that is not ``path label`` (a missing or
            extra field, a path with a space or control character, a label that is not a non-negative integer, out of
            range, or an image listed twice); the message names the file, the 1-based line number and the line.
    """
    _check_num_classes(num_classes)
    split_path = Path(path)
    raw_lines = _read_lines(split_path)
    paths: list[str] = []
    labels: list[int] = []
    first_line: dict[str, int] = {}
    root_str = None if root is None else os.fspath(root)
    for line_no, raw in enumerate(raw_lines, start=1):
        where = f"{split_path}:{line_no}"
        line = _decode(raw, where)
        tokens = _split_line(line)
        if not tokens:
            continue
        shown = repr(line[:200])
        for token in tokens:
            bad = _bad_character(token)
            if bad is not None:
                hint = (
                    "a carriage return inside the line: only LF or CRLF line endings are supported"
                    if "\r" in token
                    else "paths may not contain whitespace or control characters"
                )
                raise ValueError(f"{where}: {bad} in field {token!r} ({hint}): {shown}")
        if len(tokens) != 2:
            raise ValueError(
                f"{where}: expected 'relative/path label' (2 fields separated by spaces or tabs; paths with spaces "
                f"are not supported), got {len(tokens)} field(s): {shown}"
            )
        image_path, label_text = tokens
        if _INTEGER.fullmatch(label_text) is None:
            raise ValueError(f"{where}: label {label_text!r} is not an integer: {shown}")
        if len(label_text.lstrip("+-0")) > _MAX_LABEL_DIGITS:
            raise ValueError(f"{where}: label {label_text[:30]!r}... is out of any class range: {shown}")
        label = int(label_text)
        if label < 0:
            raise ValueError(f"{where}: label {label} is negative: {shown}")
        if num_classes is not None and label >= num_classes:
            raise ValueError(f"{where}: label {label} is outside [0, num_classes={num_classes}): {shown}")
        if num_classes is None and label >= MAX_INFERRED_LABEL:
            raise ValueError(
                f"{where}: label {label} is implausibly large for a class id (>= {MAX_INFERRED_LABEL:,}, and "
                f"num_classes is not given, so {label + 1:,} classes would be assumed); pass num_classes if it is "
                f"right: {shown}"
            )
        key = os.path.normpath(image_path)
        if key in first_line:
            raise ValueError(
                f"{where}: image {image_path!r} is already listed at line {first_line[key]} (each image once per "
                f"split file; a repeated line would silently count it twice): {shown}"
            )
        first_line[key] = line_no
        paths.append(image_path if root_str is None else os.path.join(root_str, image_path))
        labels.append(label)
    if not paths:
        raise ValueError(f"{split_path}: lists no image ({len(raw_lines)} line(s), all blank or comments)")
    return paths, labels


def find_split_file_line(
    path: str | os.PathLike[str], image: str, root: str | os.PathLike[str] | None = None
) -> int | None:
    """The 1-based line of ``path`` that lists ``image`` (as :func:`parse_split_file` returns it), or ``None``.

    For error messages about an image (missing, unreadable): a linear scan of the file, only on the error path.
    """
    split_path = Path(path)
    if not split_path.is_file():
        return None
    root_str = None if root is None else os.fspath(root)
    target = os.path.normpath(image)
    for line_no, raw in enumerate(_read_lines(split_path), start=1):
        tokens = _split_line(raw.decode("utf-8", errors="replace"))
        if len(tokens) != 2:
            continue
        listed = tokens[0] if root_str is None else os.path.join(root_str, tokens[0])
        if os.path.normpath(listed) == target:
            return line_no
    return None


__all__ = ["MAX_INFERRED_LABEL", "find_split_file_line", "parse_split_file"]
