"""Hostile split files: every bad line is a ``ValueError`` naming ``file:line`` and what is wrong.

The format (:mod:`lt_lightning.data.split_file`): UTF-8, LF or CRLF, ``path label`` separated by spaces / tabs,
blank lines and ``#`` comments allowed, no spaces in paths, each image once, labels non-negative and below
``num_classes`` when it is given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lt_lightning.data.split_file import MAX_INFERRED_LABEL, find_split_file_line, parse_split_file
from lt_lightning.data.split_file_datamodule import SplitFileDataModule


def _write(path: Path, data: str | bytes) -> str:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return str(path)


GOOD = "train/a.jpg 0\ntrain/b.jpg 1\n"


# ------------------------------------------------------------------------------------------------ bad lines
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("train/c.jpg", r"expected 'relative/path label' .* got 1 field"),
        ("train/c.jpg 1 2", r"got 3 field\(s\)"),
        ("train/c.jpg 1 extra", r"got 3 field\(s\)"),
        ("train/my photo.jpg 1", r"paths with spaces are not supported\), got 3 field"),
        ("train/c.jpg one", r"label 'one' is not an integer"),
        ("train/c.jpg 1.0", r"label '1.0' is not an integer"),
        ("train/c.jpg 0x1", r"label '0x1' is not an integer"),
        ("train/c.jpg \u0663", r"label '\u0663' is not an integer"),  # ARABIC-INDIC DIGIT THREE: int() would take it
        ("train/c.jpg -2", r"label -2 is negative"),
        ("train/c.jpg " + "9" * 5000, r"is out of any class range"),  # int() of 5000 digits raises deep in Python
        (f"train/c.jpg {MAX_INFERRED_LABEL}", r"implausibly large .* pass num_classes"),
        ("train/a.jpg 1", r"image 'train/a.jpg' is already listed at line 1"),
        ("train/./a.jpg 0", r"image 'train/./a.jpg' is already listed at line 1"),  # the same file
        ("train/c\u00a0d.jpg 1", r"U\+00A0 \(NO-BREAK SPACE\) in field"),
        ("train/c\x00.jpg 1", r"U\+0000 .* in field"),
        ("train/c\x0b.jpg 1", r"U\+000B .* in field"),
        ("\ufefftrain/c.jpg 1", r"U\+FEFF \(ZERO WIDTH NO-BREAK SPACE\)"),  # a second file's BOM: concatenated files
        ("train/c.jpg 1\rtrain/d.jpg 2", r"a carriage return inside the line"),  # CR-only line ends
    ],
)
def test_hostile_bad_line_names_file_line_and_problem(tmp_path: Path, bad: str, message: str) -> None:
    path = _write(tmp_path / "split.txt", GOOD + "\n# comment\n" + bad + "\ntrain/z.jpg 1\n")
    with pytest.raises(ValueError, match=message) as info:
        parse_split_file(path)
    assert str(info.value).startswith(f"{path}:5: ")  # blank and comment lines counted


def test_hostile_label_out_of_range_with_num_classes(tmp_path: Path) -> None:
    path = _write(tmp_path / "split.txt", GOOD + "train/c.jpg 2\n")
    with pytest.raises(ValueError, match=r"split\.txt:3: label 2 is outside \[0, num_classes=2\)"):
        parse_split_file(path, num_classes=2)
    assert parse_split_file(path, num_classes=3)[1] == [0, 1, 2]
    big = _write(tmp_path / "big.txt", f"a.jpg {MAX_INFERRED_LABEL}\n")
    assert parse_split_file(big, num_classes=MAX_INFERRED_LABEL + 1)[1] == [MAX_INFERRED_LABEL]  # explicit: allowed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", r"lists no image \(0 line\(s\)"),
        (b"\n\n# only comments\n   \n", r"lists no image \(4 line\(s\), all blank or comments\)"),
        ("train/a.jpg 0\n".encode("utf-16"), r":1: the file starts with a UTF-16 byte-order mark"),
        ("train/a.jpg 0\n".encode("utf-32"), r":1: the file starts with a UTF-32 byte-order mark"),
        (b"train/a.jpg 0\ntrain/caf\xe9.jpg 1\n", r":2: not valid UTF-8 .* save the split file as UTF-8"),  # latin-1
    ],
)
def test_hostile_whole_file_problems(tmp_path: Path, data: bytes, message: str) -> None:
    path = _write(tmp_path / "split.txt", data)
    with pytest.raises(ValueError, match=message):
        parse_split_file(path)


def test_hostile_accepted_variations_parse_exactly(tmp_path: Path) -> None:
    """BOM, CRLF, tabs, blank / comment lines, trailing comments, ``+``/leading zeros, no final newline."""
    data = "\ufeff# header\r\ntrain/a.jpg\t+0\r\n\r\n  train/b.jpg   007  # seven\r\n\ttrain/c\u00e9\u65e5.jpg 1"
    path = _write(tmp_path / "split.txt", data)
    assert parse_split_file(path, root="/r") == (
        ["/r/train/a.jpg", "/r/train/b.jpg", "/r/train/c\u00e9\u65e5.jpg"],
        [0, 7, 1],
    )
    assert find_split_file_line(path, "/r/train/b.jpg", "/r") == 4  # CRLF does not shift line numbers
    assert find_split_file_line(path, "/r/train/zzz.jpg", "/r") is None


# ---------------------------------------------------------------------------------------------- through the datamodule
def _tree(root: Path, lines: dict[str, list[str]]) -> dict[str, str]:
    """Write the split files and a tiny PNG for every listed path."""
    rng = np.random.default_rng(0)
    files = {}
    for split, rows in lines.items():
        for row in rows:
            image = root / row.split()[0]
            image.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(image)
        files[split] = _write(root / f"{split}.txt", "\n".join(rows) + "\n")
    return files


def _dm(root: Path, files: dict[str, str], **kwargs) -> SplitFileDataModule:
    return SplitFileDataModule(
        root=str(root), train_file=files["train"], val_file=files["val"], test_file=files["test"], image_size=4,
        batch_size=2, **kwargs,
    )  # fmt: skip


LINES = {
    "train": ["tr/a.png 0", "tr/b.png 1", "tr/c.png 2", "tr/d.png 0"],
    "val": ["va/a.png 0", "va/b.png 1", "va/c.png 2"],
    "test": ["te/a.png 0", "te/b.png 1", "te/c.png 2"],
}


def test_hostile_path_that_does_not_exist_names_file_and_line(tmp_path: Path) -> None:
    files = _tree(tmp_path, LINES)
    (tmp_path / "va/b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of the 3 val images are missing, e\.g\. .*va/b\.png.*val\.txt:2\)"):
        _dm(tmp_path, files).setup("fit")


def test_hostile_non_contiguous_labels_are_a_clear_error(tmp_path: Path) -> None:
    lines = {**LINES, "train": ["tr/a.png 0", "tr/b.png 1", "tr/c.png 5"]}  # classes 2, 3, 4 have no image
    files = _tree(tmp_path, lines)
    with pytest.raises(ValueError, match=r"class 2 \('2'\) has no training images .*\(3 empty classes: \[2, 3, 4\]\)"):
        _dm(tmp_path, files)
    with pytest.raises(ValueError, match=r"train\.txt:3: label 5 is outside \[0, num_classes=3\)"):
        _dm(tmp_path, files, num_classes=3)


def test_hostile_label_only_in_the_test_file_is_a_clear_error(tmp_path: Path) -> None:
    files = _tree(tmp_path, {**LINES, "test": ["te/a.png 0", "te/b.png 3"]})
    with pytest.raises(ValueError, match=r"class 3 \('3'\) has no training images"):
        _dm(tmp_path, files)


def test_hostile_training_image_in_the_test_split_is_refused(tmp_path: Path) -> None:
    files = _tree(tmp_path, {**LINES, "test": ["te/a.png 0", "tr/c.png 2", "te/c.png 2"]})
    with pytest.raises(ValueError, match=r"1 of the 3 test images are also training images .*tr/c\.png.*test\.txt:2"):
        _dm(tmp_path, files)


def test_hostile_bad_line_in_any_split_file_stops_the_datamodule(tmp_path: Path) -> None:
    files = _tree(tmp_path, LINES)
    _write(Path(files["val"]), "va/a.png 0\nva/b.png\nva/c.png 2\n")
    with pytest.raises(ValueError, match=r"val\.txt:2: expected 'relative/path label'"):
        _dm(tmp_path, files)
