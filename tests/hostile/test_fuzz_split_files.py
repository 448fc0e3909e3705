"""Split files made of generated good and garbage lines (hypothesis): the first bad line is reported by number.

Each generated line carries its kind; the oracle knows the rules of :mod:`lt_lightning.data.split_file` (the same
paths are the same image after ``os.path.normpath``), so it predicts either the exact ``(paths, labels)`` or the
``file:line`` and the words of the first error. Arbitrary bytes never raise anything but ``ValueError``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lt_lightning.data.split_file import parse_split_file
from tests.hostile._fuzz import FUZZ

NUM_CLASSES = 20

path_chars = st.sampled_from(list("abcXYZ0189/._-") + ["\u00e9", "\u00df", "\u65e5", "#"])
paths = st.text(path_chars, min_size=1, max_size=10).filter(lambda p: not p.startswith("#"))
labels = st.integers(0, NUM_CLASSES - 1)
label_texts = labels.flatmap(lambda n: st.sampled_from([str(n), f"+{n}", f"0{n}"]))
seps = st.sampled_from([" ", "\t", "  ", " \t "])
pads = st.sampled_from(["", " ", "\t"])
comments = st.sampled_from(["", "  # note", "\t#x"])
not_integers = st.sampled_from(["1.5", "cat", "1e3", "0x1F", "--1", "1_000", "\u0663", "\uff11", "3a", "+-2"])
bad_chars = st.sampled_from(["\x00", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u2028", "\u3000", "\ufeff", "\r"])


@st.composite
def line(draw, num_classes: int | None) -> tuple[str, str, object]:
    """``(kind, text, payload)``: payload is ``(path, label)`` for a good line."""
    kind = draw(
        st.sampled_from(
            ["good"] * 6 + ["blank", "comment", "missing", "non_int", "extra", "space", "negative", "range", "control"]
        )
    )
    pad, sep, comment = draw(pads), draw(seps), draw(comments)
    path, text_label = draw(paths), draw(label_texts)
    if kind == "good":
        return kind, f"{pad}{path}{sep}{text_label}{comment}", (path, int(text_label))
    if kind == "blank":
        return kind, draw(st.sampled_from(["", " ", "\t\t"])), None
    if kind == "comment":
        return kind, f"{pad}# {path} {text_label}", None
    if kind == "missing":
        return kind, f"{pad}{path}{comment}", None
    if kind == "non_int":
        return kind, f"{path}{sep}{draw(not_integers)}{comment}", None
    if kind == "extra":
        return kind, f"{path}{sep}{text_label}{sep}{draw(paths)}", None
    if kind == "space":
        return kind, f"{path} {draw(paths)}{sep}{text_label}", None
    if kind == "negative":
        return kind, f"{path}{sep}-{draw(st.integers(1, 99))}", None
    if kind == "range":
        if num_classes is None:  # no range to violate: a good line
            return "good", f"{path}{sep}{text_label}", (path, int(text_label))
        return kind, f"{path}{sep}{draw(st.integers(num_classes, num_classes + 50))}", None
    char = draw(bad_chars)
    # a BOM that starts the file is the file's byte-order mark (accepted): put it inside the path, never first
    position = draw(st.integers(1 if char == "\ufeff" else 0, len(path)))
    return kind, f"{path[:position]}{char}{path[position:]}{sep}{text_label}", None


#: words the error of each kind of bad line contains
EXPECTED = {
    "missing": "got 1 field",
    "non_int": "is not an integer",
    "extra": "got 3 field",
    "space": "got 3 field",
    "negative": "is negative",
    "range": "is outside [0, num_classes=",
    "control": " in field ",
    "duplicate": "is already listed at line ",
}


@FUZZ
@given(
    data=st.data(),
    bom=st.booleans(),
    crlf=st.booleans(),
    final_newline=st.booleans(),
    with_num_classes=st.booleans(),
)
def test_fuzz_split_file_garbage_lines(tmp_path: Path, data, bom, crlf, final_newline, with_num_classes) -> None:
    num_classes = NUM_CLASSES - 5 if with_num_classes else None
    generated = data.draw(st.lists(line(num_classes), min_size=1, max_size=12), label="lines")
    # repeat an earlier good line's image now and then (a duplicate line)
    if data.draw(st.booleans(), label="duplicate") and any(kind == "good" for kind, _, _ in generated):
        earlier = next(payload for kind, _, payload in generated if kind == "good")
        generated.insert(len(generated), ("good", f"{earlier[0]} {earlier[1]}", earlier))

    expected_paths, expected_labels, first_bad = [], [], None
    seen: dict[str, int] = {}
    for number, (kind, _, payload) in enumerate(generated, start=1):
        if kind == "good":
            path, label = payload  # type: ignore[misc]
            key = os.path.normpath(path)
            if num_classes is not None and label >= num_classes:
                kind = "range"
            elif key in seen:
                kind = "duplicate"
            else:
                seen[key] = number
                expected_paths.append(path)
                expected_labels.append(label)
                continue
        if kind not in ("blank", "comment"):
            first_bad = (number, kind)
            break

    end = "\r\n" if crlf else "\n"
    text = end.join(text for _, text, _ in generated) + (end if final_newline else "")
    split = tmp_path / "fuzz split.txt"  # the split file's own name may have a space
    split.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))

    if first_bad is None and expected_paths:
        assert parse_split_file(split, num_classes=num_classes) == (expected_paths, expected_labels)
        return
    with pytest.raises(ValueError) as info:
        parse_split_file(split, num_classes=num_classes)
    message = str(info.value)
    if first_bad is None:
        assert message.startswith(f"{split}: lists no image"), message
        return
    number, kind = first_bad
    assert message.startswith(f"{split}:{number}: "), (message, generated)
    assert EXPECTED[kind] in message, (kind, message)


@FUZZ
@given(raw=st.binary(max_size=300))
def test_fuzz_split_file_arbitrary_bytes_only_value_errors(tmp_path: Path, raw: bytes) -> None:
    split = tmp_path / "bytes.txt"
    split.write_bytes(raw)
    try:
        paths, labels = parse_split_file(split)
    except ValueError as exc:
        assert str(exc).startswith(f"{split}:"), exc
    else:
        assert len(paths) == len(labels) >= 1 and all(0 <= label < 1_000_000 for label in labels)


@FUZZ
@given(lines=st.lists(st.text(max_size=30), min_size=1, max_size=8))
def test_fuzz_split_file_arbitrary_text_only_value_errors(tmp_path: Path, lines: list[str]) -> None:
    split = tmp_path / "text.txt"
    split.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    try:
        paths, labels = parse_split_file(split, num_classes=10)
    except ValueError as exc:
        message = str(exc)
        assert message.startswith(f"{split}:"), message
    else:
        assert all(0 <= label < 10 for label in labels)
        assert all(p == p.strip() and " " not in p and "\t" not in p and not p.startswith("#") for p in paths)
