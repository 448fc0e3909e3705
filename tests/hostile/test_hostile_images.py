"""Hostile image data: broken files, odd colour modes, empty class folders, bad CIFAR pickles, NaN inputs.

Every case ends in a clear error naming the file (or folder) and what is wrong, or in an explicitly requested and
counted skip (``on_error="skip"``, ``on_empty_class="skip"``); decoded images always reach the model as 3-channel
``uint8`` tensors, while the 1-channel Digits path stays 1-channel.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from lt_lightning.backbones.resnet_cifar import ResNet32
from lt_lightning.data.base import TensorImageDataset
from lt_lightning.data.cifar import CIFAR10LTDataModule, read_cifar
from lt_lightning.data.digits import DigitsLTDataModule
from lt_lightning.data.folder import ImageFolderLTDataModule
from lt_lightning.data.image_files import ImageFileDataset, UnreadableImageError, load_rgb, to_rgb
from lt_lightning.data.split_file_datamodule import SplitFileDataModule
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.data.transforms import DeviceAugmentation, check_finite_batch, normalize
from tests.cifar_files import write_tiny_cifar10
from tests.hostile._fuzz import FUZZ

pytestmark = pytest.mark.usefixtures("one_thread")


def _bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _rgb(height: int = 12, width: int = 10, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _png_16bit_rgb(pixels: np.ndarray, size: tuple[int, int] | None = None) -> bytes:
    """A 16-bit-per-channel RGB PNG (colour type 2, bit depth 16), written by hand: PIL cannot write one.

    ``size`` (width, height) overrides the size written in the header (a lying header).
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    height, width, _ = pixels.shape
    width, height = size if size is not None else (width, height)
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(pixels.shape[0]))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


# ============================================================================================ broken files
PNG = _bytes(_rgb(), "PNG")
JPEG = _bytes(_rgb(), "JPEG", quality=90)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("half.jpg", JPEG[: len(JPEG) // 2]),
        ("no_end.jpg", JPEG[:-40]),
        ("header_only.jpg", JPEG[:20]),
        ("half.png", PNG[: len(PNG) // 2]),
        ("header_only.png", PNG[:40]),
        ("signature_only.png", PNG[:8]),
        ("empty.jpg", b""),
        ("empty.png", b""),
        ("random.jpg", np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes()),
        ("random.png", np.random.default_rng(2).integers(0, 256, 500, dtype=np.uint8).tobytes()),
        ("random.webp", np.random.default_rng(3).integers(0, 256, 500, dtype=np.uint8).tobytes()),
        ("text.bmp", b"this is not an image at all\n"),
        ("png_named.jpg", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30),  # a valid signature, then garbage
    ],
)
def test_hostile_broken_file_names_the_file(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(UnreadableImageError, match=name) as info:
        load_rgb(str(path))
    assert info.value.path == str(path)


def test_hostile_png_without_its_end_chunk_still_decodes_exactly(tmp_path: Path) -> None:
    # the image data is complete, only IEND (the last 12 bytes) is missing: nothing is wrong with the pixels
    path = tmp_path / "no_iend.png"
    path.write_bytes(PNG[:-12])
    assert np.array_equal(np.asarray(load_rgb(str(path))), np.asarray(_rgb()))


def test_hostile_directory_and_missing_path_name_the_path(tmp_path: Path) -> None:
    (tmp_path / "folder.jpg").mkdir()
    for path in (tmp_path / "folder.jpg", tmp_path / "absent.png"):
        with pytest.raises(UnreadableImageError, match=path.name):
            load_rgb(str(path))


def test_hostile_decompression_bomb_header_names_the_file(tmp_path: Path) -> None:
    # a PNG header claiming 100,000 x 100,000 pixels (10^10, beyond PIL's MAX_IMAGE_PIXELS) and no data
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_16bit_rgb(np.zeros((1, 1, 3), dtype=np.uint16), size=(100_000, 100_000)))
    with pytest.raises(UnreadableImageError, match=r"bomb\.png.*DecompressionBomb"):
        load_rgb(str(path))


def test_hostile_unsupported_colour_mode_is_refused_not_mangled() -> None:
    # PIL "converts" LAB to RGB by relabelling channels: a black LAB pixel would come out blue-ish; refuse instead
    with pytest.raises(ValueError, match="colour mode 'LAB' is not supported"):
        to_rgb(Image.new("LAB", (2, 2)))


def test_hostile_unreadable_image_error_survives_pickling_and_workers() -> None:
    error = UnreadableImageError("/data/a 'b'.jpg", OSError("image file is truncated"))
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, UnreadableImageError) and str(again) == str(error) and again.path == "/data/a 'b'.jpg"
    # DataLoader workers re-raise by constructing the class from the formatted traceback alone
    rebuilt = UnreadableImageError(
        f"Caught UnreadableImageError in DataLoader worker process 0.\nOriginal ...\n{error}"
    )
    assert rebuilt.path == "/data/a 'b'.jpg"


@FUZZ
@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about the corrupt EXIF data it skips
@given(
    prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"RIFF", b"II*\x00"]),
    body=st.binary(max_size=200),
)
def test_fuzz_hostile_random_bytes_behind_an_image_signature(tmp_path: Path, prefix: bytes, body: bytes) -> None:
    """Whatever the bytes, :func:`load_rgb` returns an RGB image or raises :class:`UnreadableImageError` naming it."""
    path = tmp_path / "fuzz.img"
    path.write_bytes(prefix + body)
    try:
        image = load_rgb(str(path))
    except UnreadableImageError as exc:
        assert exc.path == str(path) and "fuzz.img" in str(exc)
    else:
        assert image.mode == "RGB" and image.width >= 1 and image.height >= 1


@FUZZ
@pytest.mark.filterwarnings("ignore::UserWarning")
@given(fmt=st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]), cut=st.floats(0.0, 1.0))
def test_fuzz_hostile_truncated_at_any_byte(tmp_path: Path, fmt: str, cut: float) -> None:
    """A file truncated anywhere raises :class:`UnreadableImageError`, or decodes to exactly the untruncated image
    (only trailing metadata was cut): never a partly grey or smaller image."""
    data = _bytes(_rgb(9, 7, seed=4), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data)
    whole = np.asarray(load_rgb(str(path)))
    path.write_bytes(data[: int(cut * len(data))])
    try:
        image = load_rgb(str(path))
    except UnreadableImageError as exc:
        assert exc.path == str(path)
    else:
        assert np.array_equal(np.asarray(image), whole)


# ============================================================================================ colour modes
def _decoded(tmp_path: Path, name: str, data: bytes) -> np.ndarray:
    path = tmp_path / name
    path.write_bytes(data)
    image = load_rgb(str(path))
    assert image.mode == "RGB"
    return np.asarray(image)


def test_hostile_grey_palette_and_bilevel_files_decode_to_rgb(tmp_path: Path) -> None:
    grey = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8), mode="L")
    assert _decoded(tmp_path, "grey.png", _bytes(grey, "PNG")).tolist() == [[[0] * 3, [77] * 3, [255] * 3]]
    bilevel = Image.fromarray(np.array([[False, True]]))
    assert _decoded(tmp_path, "bw.png", _bytes(bilevel, "PNG")).tolist() == [[[0] * 3, [255] * 3]]
    palette = Image.fromarray(np.array([[0, 1, 2]], dtype=np.uint8), mode="P")
    palette.putpalette([255, 0, 0, 0, 0, 255, 9, 8, 7])
    palette.info["transparency"] = 0  # entry 0 is transparent: dropped, its colour kept
    assert _decoded(tmp_path, "pal.png", _bytes(palette, "PNG", transparency=0)).tolist() == [
        [[255, 0, 0], [0, 0, 255], [9, 8, 7]]
    ]
    assert _decoded(tmp_path, "pal.gif", _bytes(palette, "GIF")).tolist() == [[[255, 0, 0], [0, 0, 255], [9, 8, 7]]]


def test_hostile_alpha_is_dropped_not_composited(tmp_path: Path) -> None:
    """RGBA / LA: the colour values are kept whatever the alpha (not composited on black), torchvision's rule."""
    rgba = np.array([[[10, 20, 30, 0], [200, 100, 50, 128], [1, 2, 3, 255]]], dtype=np.uint8)
    out = _decoded(tmp_path, "rgba.png", _bytes(Image.fromarray(rgba, mode="RGBA"), "PNG"))
    assert out.tolist() == [[[10, 20, 30], [200, 100, 50], [1, 2, 3]]]  # composited on black would give 0 and 100
    la = np.array([[[100, 0], [200, 255]]], dtype=np.uint8)
    assert _decoded(tmp_path, "la.png", _bytes(Image.fromarray(la, mode="LA"), "PNG")).tolist() == [
        [[100] * 3, [200] * 3]
    ]


def test_hostile_cmyk_files_decode_to_rgb(tmp_path: Path) -> None:
    # PIL: R = (255 - C)(255 - K) / 255 (likewise G from M, B from Y), rounded
    cmyk = Image.fromarray(
        np.array([[[255, 0, 0, 0], [0, 0, 0, 255], [0, 0, 0, 0], [100, 0, 0, 100]]], np.uint8), "CMYK"
    )
    expected = [[[0, 255, 255], [0, 0, 0], [255, 255, 255], [94, 155, 155]]]  # 155 * 155 / 255 = 94.2
    assert _decoded(tmp_path, "cmyk.tif", _bytes(cmyk, "TIFF")).tolist() == expected
    jpeg = _decoded(tmp_path, "cmyk.jpg", _bytes(cmyk, "JPEG", quality=100))  # lossy, and Adobe-inverted on disk
    assert np.abs(jpeg.astype(int) - np.array(expected)).max() <= 8


def test_hostile_16_bit_files_decode_full_scale(tmp_path: Path) -> None:
    # 16-bit grey (PIL mode I;16): v * 255 / 65535 rounded -- 32768 -> 127.5 -> 128, full scale stays full scale
    grey16 = Image.fromarray(np.array([[0, 257, 32768, 65535]], dtype=np.uint16))
    assert grey16.mode == "I;16"
    out = _decoded(tmp_path, "grey16.png", _bytes(grey16, "PNG"))
    assert out[0, :, 0].tolist() == [0, 1, 128, 255] and (out == out[..., :1]).all()
    # 16-bit RGB: PIL opens it as 8-bit RGB, the high byte of each sample
    rgb16 = np.array([[[65535, 0, 32768], [256, 511, 4660]]], dtype=np.uint16)
    assert _decoded(tmp_path, "rgb16.png", _png_16bit_rgb(rgb16)).tolist() == [[[255, 0, 128], [1, 1, 18]]]


MODE_FILES = {
    "rgb.jpg": lambda: _bytes(_rgb(), "JPEG"),
    "grey.png": lambda: _bytes(_rgb().convert("L"), "PNG"),
    "bilevel.png": lambda: _bytes(_rgb().convert("1"), "PNG"),
    "palette.gif": lambda: _bytes(_rgb().convert("P"), "GIF"),
    "rgba.png": lambda: _bytes(_rgb().convert("RGBA"), "PNG"),
    "la.png": lambda: _bytes(_rgb().convert("LA"), "PNG"),
    "cmyk.jpg": lambda: _bytes(_rgb().convert("CMYK"), "JPEG"),
    "grey16.png": lambda: _bytes(Image.fromarray(np.full((12, 10), 40000, dtype=np.uint16)), "PNG"),
    "rgb16.png": lambda: _png_16bit_rgb(np.full((12, 10, 3), 1000, dtype=np.uint16)),
}


def test_hostile_every_mode_reaches_a_3_channel_model_as_3_channels(tmp_path: Path) -> None:
    lines = []
    for i, (name, make) in enumerate(MODE_FILES.items()):
        for split in ("train", "val", "test"):
            (tmp_path / split).mkdir(exist_ok=True)
            (tmp_path / split / name).write_bytes(make())
            lines.append((split, f"{split}/{name} {i % 3}"))
    files = {}
    for split in ("train", "val", "test"):
        files[split] = tmp_path / f"{split}.txt"
        files[split].write_text("\n".join(line for s, line in lines if s == split) + "\n")
    dm = SplitFileDataModule(
        root=str(tmp_path), train_file=str(files["train"]), val_file=str(files["val"]), test_file=str(files["test"]),
        image_size=8, batch_size=len(MODE_FILES), augment=False,
    )  # fmt: skip
    dm.setup("fit")
    x, y = next(iter(dm.val_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (len(MODE_FILES), 3, 8, 8)
    features = ResNet32(in_channels=3)(dm.on_after_batch_transfer([x, y], 0)[0])
    assert features.shape == (len(MODE_FILES), 64) and torch.isfinite(features).all()


def test_hostile_digits_one_channel_path_is_untouched() -> None:
    dm = DigitsLTDataModule(batch_size=8)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (8, 1, 8, 8)
    assert dm.on_after_batch_transfer([x, y], 0)[0].shape == (8, 1, 8, 8)
    # a 1-channel batch given to a 3-channel normalisation is a clear error, not a broadcast
    with pytest.raises(ValueError, match="one entry per channel .*1-channel batch"):
        DeviceAugmentation((0.5,) * 3, (0.25,) * 3)(x)


# ============================================================================================ through the datamodules
def _split_tree(root: Path, broken: dict[str, bytes]) -> dict[str, str]:
    """3 classes x 3 train / 1 val / 1 test PNGs, some replaced by ``broken[relative path]``."""
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for split, per_class in (("train", 3), ("val", 1), ("test", 1)):
        for c in range(3):
            for i in range(per_class):
                rel = f"{split}/c{c}/{i}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(broken.get(rel, _bytes(_rgb(seed=10 * c + i), "PNG")))
                lines[split].append(f"{rel} {c}")
    out = {}
    for split, rows in lines.items():
        out[split] = str(root / f"{split}.txt")
        Path(out[split]).write_text("\n".join(rows) + "\n")
    return out


def _split_dm(root: Path, files: dict[str, str], **kwargs) -> SplitFileDataModule:
    args = dict(root=str(root), train_file=files["train"], val_file=files["val"], test_file=files["test"])
    return SplitFileDataModule(**args, image_size=8, batch_size=16, **kwargs)


BROKEN = {"train/c0/1.png": PNG[: len(PNG) // 2], "train/c1/2.png": b"", "train/c2/0.png": b"garbage " * 20}


def test_hostile_raise_mode_names_the_file_in_the_main_process_and_across_workers(tmp_path: Path) -> None:
    files = _split_tree(tmp_path, {"train/c0/1.png": PNG[: len(PNG) // 2]})
    dm = _split_dm(tmp_path, files)
    dm.setup("fit")  # the file exists: it is found when decoded
    with pytest.raises(UnreadableImageError, match=r"train/c0/1\.png.*truncated") as info:
        next(iter(dm.train_dataloader()))
    assert info.value.path.endswith("train/c0/1.png")
    in_worker = _split_dm(tmp_path, files, num_workers=1)
    in_worker.setup("fit")
    with pytest.raises(UnreadableImageError, match=r"worker process 0") as info:  # the type survives the worker
        next(iter(in_worker.train_dataloader()))
    assert info.value.path is not None and info.value.path.endswith("train/c0/1.png")


def test_hostile_skip_mode_counts_and_names_the_skipped_files_once(tmp_path: Path) -> None:
    files = _split_tree(tmp_path, BROKEN)
    (tmp_path / "val/c1/0.png").unlink()  # missing: skipped too
    dm = _split_dm(tmp_path, files, on_error="skip")
    with pytest.warns(RuntimeWarning) as record:
        dm.setup("fit")
    messages = [str(w.message) for w in record if "skipped" in str(w.message)]
    assert len(messages) == 2  # once per split
    train = next(m for m in messages if "train image" in m)
    assert "skipped 3 unreadable train image(s) of 9" in train and "skipped_files['train']" in train
    assert all(name in train for name in ("train/c0/1.png", "train/c1/2.png", "train/c2/0.png"))
    assert sorted(os.path.relpath(p, tmp_path) for p in dm.skipped_files["train"]) == sorted(BROKEN)
    assert [os.path.relpath(p, tmp_path) for p in dm.skipped_files["val"]] == ["val/c1/0.png"]
    assert dm.num_skipped_files == 4 and dm.class_counts == [2, 2, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left to skip while loading
        x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (6, 3, 8, 8)


def test_hostile_missing_file_names_the_split_file_line(tmp_path: Path) -> None:
    files = _split_tree(tmp_path, {})
    (tmp_path / "train/c2/1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of the 9 train images are missing.*train/c2/1\.png.*train\.txt:8"):
        _split_dm(tmp_path, files).setup("fit")


# ============================================================================================ class folders
def _folder(root: Path, sizes: dict[str, dict[str, int]]) -> None:
    for split, classes in sizes.items():
        for name, n in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (root / split / name / f"{i}.png").write_bytes(_bytes(_rgb(seed=i), "PNG"))


def _folder_dm(root: Path, **kwargs) -> ImageFolderLTDataModule:
    return ImageFolderLTDataModule(root=str(root), image_size=8, batch_size=4, **kwargs)


def test_hostile_empty_class_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    _folder(tmp_path, {"train": {"ant": 2, "bee": 0, "cat": 2}, "val": {"ant": 1, "cat": 1}, "test": {"ant": 1}})
    (tmp_path / "train/bee/notes.txt").write_text("not an image")  # present, but no image in it
    with pytest.raises(ValueError, match=r"class folder '.*train/bee' holds no image.*on_empty_class='skip'"):
        _folder_dm(tmp_path)
    with pytest.raises(ValueError, match="on_empty_class must be one of"):
        _folder_dm(tmp_path, on_empty_class="ignore")


def test_hostile_empty_class_folder_skipped_and_counted_on_request(tmp_path: Path) -> None:
    _folder(tmp_path, {"train": {"ant": 2, "bee": 0, "cat": 3, "dog": 0}, "val": {"ant": 1, "bee": 1, "cat": 1}})
    _folder(tmp_path, {"test": {"ant": 1, "cat": 1}})
    with pytest.warns(RuntimeWarning, match=r"on_empty_class='skip': 2 empty class folder\(s\).*3 folder\(s\) left"):
        dm = _folder_dm(tmp_path, on_empty_class="skip")
    assert dm.class_names == ["ant", "cat"] and dm.num_classes == 2 and dm.class_counts == [2, 3]
    assert sorted(os.path.relpath(p, tmp_path) for p in dm.skipped_class_folders) == [
        "train/bee",
        "train/dog",
        "val/bee",  # its namesake in val/ is left out too: "bee" is not a class
    ]
    assert dm.image_lists["val"][1] == [0, 1]  # ant -> 0, cat -> 1


@pytest.mark.parametrize("on_empty_class", ["error", "skip"])
def test_hostile_tree_without_any_image_is_an_error(tmp_path: Path, on_empty_class: str) -> None:
    _folder(tmp_path, {"train": {"ant": 0, "bee": 0}})
    with pytest.raises(ValueError, match=r"holds no image at all: its 2 class folder\(s\) are empty"):
        _folder_dm(tmp_path, val_per_class=1, test_per_class=1, on_empty_class=on_empty_class)


def test_hostile_images_without_class_folders_get_a_hint(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "loose.png").write_bytes(PNG)
    with pytest.raises(ValueError, match=r"no class sub-folders.*1 image\(s\) lie directly in it.*loose\.png"):
        _folder_dm(tmp_path, val_per_class=1, test_per_class=1)


# ============================================================================================ CIFAR files
def _write_pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def _tiny_cifar10(root: Path, per_class: int = 2) -> Path:
    """``root/cifar-10-batches-py``: 5 training batches + test batch, ``per_class`` images per class in each."""
    return write_tiny_cifar10(root, train_per_class=5 * per_class, test_per_class=per_class)


class _Exploit:
    """A pickle payload that would create a file when loaded by a plain ``pickle.load``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _good_batch() -> dict:
    return {"data": np.zeros((10, 3072), dtype=np.uint8), "labels": list(range(10))}


CIFAR_CASES = {
    "truncated": lambda m: pickle.dumps(_good_batch())[:100],
    "random bytes": lambda m: np.random.default_rng(5).integers(0, 256, 400, dtype=np.uint8).tobytes(),
    "empty": lambda m: b"",
    "a list": lambda m: pickle.dumps([1, 2, 3]),
    "no data key": lambda m: pickle.dumps({"labels": list(range(10))}),
    "wrong row size": lambda m: pickle.dumps({**_good_batch(), "data": np.zeros((10, 1024), dtype=np.uint8)}),
    "pixel values": lambda m: pickle.dumps({**_good_batch(), "data": np.full((10, 3072), 300, dtype=np.int64)}),
    "float pixels": lambda m: pickle.dumps({**_good_batch(), "data": np.zeros((10, 3072), dtype=np.float32)}),
    "too few labels": lambda m: pickle.dumps({**_good_batch(), "labels": list(range(9))}),
    "label 10": lambda m: pickle.dumps({**_good_batch(), "labels": [0] * 9 + [10]}),
    "negative label": lambda m: pickle.dumps({**_good_batch(), "labels": [-1] + [0] * 9}),
    "code": lambda m: pickle.dumps(_Exploit(m)),
}
CIFAR_MESSAGES = {
    "truncated": "not a readable CIFAR pickle",
    "random bytes": "not a readable CIFAR pickle",
    "empty": "not a readable CIFAR pickle",
    "a list": "holds a list, not a dict",
    "no data key": "keys: .*expected 'data' and 'labels'",
    "wrong row size": r"shape \[N, 3072\].*\(10, 1024\)",
    "pixel values": r"pixel values in \[0, 255\], got \[300, 300\]",
    "float pixels": "integer numpy array",
    "too few labels": "9 labels for 10 images",
    "label 10": r"label 10 at index 9 is outside \[0, 10\)",
    "negative label": r"label -1 at index 0 is outside",
    "code": "refusing to load global pathlib",
}


@pytest.mark.parametrize("case", list(CIFAR_CASES))
def test_hostile_cifar_file_of_the_wrong_layout_names_the_file(tmp_path: Path, case: str) -> None:
    base = _tiny_cifar10(tmp_path)
    marker = tmp_path / "exploited"
    (base / "data_batch_3").write_bytes(CIFAR_CASES[case](marker))
    with pytest.raises(ValueError, match=r"data_batch_3.*" + CIFAR_MESSAGES[case]):
        read_cifar(str(tmp_path), 10, train=True)
    assert not marker.exists()  # the restricted unpickler never ran the payload


def test_hostile_cifar_meta_and_test_files_are_checked_too(tmp_path: Path) -> None:
    base = _tiny_cifar10(tmp_path)
    assert read_cifar(str(tmp_path), 10, train=False)[0].shape == (20, 3, 32, 32)
    _write_pickle(base / "batches.meta", {"label_names": ["only", "nine"] + ["x"] * 7})
    with pytest.raises(ValueError, match=r"batches\.meta: 'label_names' must be a list of 10 class names, got 9"):
        read_cifar(str(tmp_path), 10, train=False)
    other = tmp_path / "other"
    _tiny_cifar10(other)
    _write_pickle(other / "cifar-10-batches-py" / "test_batch", {**_good_batch(), "labels": [3] * 9 + [12]})
    with pytest.raises(ValueError, match=r"test_batch.*label 12"):
        CIFAR10LTDataModule(root=str(other), imbalance_ratio=1.0, val_per_class=0).setup()


# ============================================================================================ NaN / inf inputs
def test_hostile_nan_images_are_refused_by_the_in_memory_dataset() -> None:
    images = torch.full((4, 3, 8, 8), float("nan"))
    with pytest.raises(ValueError, match="images must be uint8"):
        TensorImageDataset(images, torch.zeros(4))  # uint8 only: NaN / inf cannot be stored at all


@pytest.mark.parametrize("noise_std", [float("nan"), float("inf"), -1.0])
def test_hostile_synthetic_datamodule_refuses_non_finite_noise(noise_std: float) -> None:
    with pytest.raises(ValueError, match="noise_std must be a finite number >= 0"):
        SyntheticLTDataModule(noise_std=noise_std).setup()


def test_hostile_non_finite_float_batches_are_refused_on_request() -> None:
    x = torch.rand(2, 3, 4, 4)
    x[1, 2, 0, 3] = float("nan")
    x[0, 0, 1, 1] = float("inf")
    with pytest.raises(ValueError, match=r"2 non-finite value\(s\) \(1 NaN, 1 inf\), first at index \(0, 0, 1, 1\)"):
        check_finite_batch(x)
    assert check_finite_batch(torch.zeros(2, 3, 4, 4, dtype=torch.uint8)).dtype == torch.uint8  # nothing to check
    checked = DeviceAugmentation((0.5,) * 3, (0.25,) * 3, check_finite=True)
    with pytest.raises(ValueError, match="non-finite"):
        checked(x)
    assert checked(torch.zeros(2, 3, 4, 4, dtype=torch.uint8)).isfinite().all()
    assert torch.isnan(DeviceAugmentation((0.5,) * 3, (0.25,) * 3)(x)).any()  # the default trusts float inputs


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        ((0.5,), (float("nan"),), "std must be positive and finite"),
        ((0.5,), (float("inf"),), "std must be positive and finite"),
        ((0.5,), (0.0,), "std must be positive and finite"),
        ((float("nan"),), (0.5,), "mean must be finite"),
        ((), (), "same length >= 1"),
    ],
)
def test_hostile_normalisation_statistics_must_be_finite(mean, std, match) -> None:
    with pytest.raises(ValueError, match=match):
        DeviceAugmentation(mean, std)
    if mean:
        with pytest.raises(ValueError, match=match):
            normalize(torch.zeros(1, 1, 2, 2), mean, std)
    with pytest.raises(ValueError, match="std must be positive and finite"):
        normalize(torch.zeros(1, 1, 2, 2), torch.tensor([0.5]), torch.tensor([float("nan")]))  # CPU tensors checked


def test_hostile_image_file_dataset_never_yields_other_than_3_channels(tmp_path: Path) -> None:
    paths = []
    for name, make in MODE_FILES.items():
        (tmp_path / name).write_bytes(make())
        paths.append(str(tmp_path / name))
    dataset = ImageFileDataset(paths, [0] * len(paths), image_size=6, train=True)
    for i in range(len(dataset)):
        x, _ = dataset[i]
        assert x.dtype == torch.uint8 and x.shape == (3, 6, 6), paths[i]
