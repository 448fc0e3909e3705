"""Datasets listed in split files, the format of ImageNet-LT, Places-LT and iNaturalist 2018.

A split file has one image per line: a path relative to the dataset root, whitespace, an integer label::

    train/n01440764/n01440764_762.JPEG 0

This is the format published with Liu et al., "Large-Scale Long-Tailed Recognition in an Open World" (OLTR,
CVPR 2019; ImageNet-LT and Places-LT) and used by facebookresearch/classifier-balancing for iNaturalist 2018.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_INTEGER = re.compile(r"[+-]?[0-9]+")


def _split_line(line: str) -> list[str]:
    """Tokens of ``line`` up to the first token that starts with ``#`` (a comment)."""
    tokens = line.split()
    for i, token in enumerate(tokens):
        if token.startswith("#"):
            return tokens[:i]
    return tokens


def parse_split_file(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
) -> tuple[list[str], list[int]]:
    """Read a split file into image paths and labels.

    Format, one image per line: ``relative/path label``, separated by whitespace. The path may not contain
    whitespace and may not start with ``#``. Blank lines are ignored; ``#`` starts a comment when it begins a line
    or a whitespace-separated token (``train/a.jpg 3  # note`` is fine). The label is a non-negative decimal
    integer. A UTF-8 byte-order mark is ignored. Nothing is checked on disk: the images need not exist for the file
    to parse.

    Args:
        path: the split file.
        root: if given, each image path is joined to it (``os.path.join``, so absolute paths in the file are kept).
        num_classes: if given, every label must be in ``[0, num_classes)``.

    Returns:
        ``(paths, labels)`` in file order.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: for a line that is not ``path label``, whose label is not a non-negative integer or (with
            ``num_classes``) is ``>= num_classes``; the message names the file, the 1-based line number and the line.
    """
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be an integer >= 1 or None, got {num_classes!r}")
    split_path = Path(path)
    if not split_path.is_file():
        raise FileNotFoundError(f"split file not found: {str(split_path)!r}")
    paths: list[str] = []
    labels: list[int] = []
    root_str = None if root is None else os.fspath(root)
    with split_path.open(encoding="utf-8-sig") as handle:  # tolerate a byte-order mark
        for line_no, line in enumerate(handle, start=1):
            tokens = _split_line(line)
            if not tokens:
                continue
            if len(tokens) != 2:
                raise ValueError(
                    f"{split_path}:{line_no}: expected 'relative/path label' (2 fields, the path without spaces), "
                    f"got {len(tokens)} field(s): {line.rstrip()!r}"
                )
            image_path, label_text = tokens
            if _INTEGER.fullmatch(label_text) is None:
                raise ValueError(f"{split_path}:{line_no}: label {label_text!r} is not an integer: {line.rstrip()!r}")
            label = int(label_text)
            if label < 0:
                raise ValueError(f"{split_path}:{line_no}: label {label} is negative: {line.rstrip()!r}")
            if num_classes is not None and label >= num_classes:
                raise ValueError(
                    f"{split_path}:{line_no}: label {label} is outside [0, num_classes={num_classes}): "
                    f"{line.rstrip()!r}"
                )
            paths.append(image_path if root_str is None else os.path.join(root_str, image_path))
            labels.append(label)
    return paths, labels
