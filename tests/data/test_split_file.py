"""Split files (ImageNet-LT / Places-LT format) and :class:`SplitFileDataModule`."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from lt_lightning.backbones.resnet_cifar import ResNet32
from lt_lightning.data.image_files import IMAGENET_MEAN, IMAGENET_STD, ImageFileDataset
from lt_lightning.data.split_file import parse_split_file
from lt_lightning.data.split_file_datamodule import SplitFileDataModule, read_class_names
from lt_lightning.metrics.long_tail_accuracy import shot_group_masks
from lt_lightning.module import LongTailModule


def _write_lines(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------------------------- parsing
def test_parse_good_lines_blank_lines_comments_and_root(tmp_path: Path) -> None:
    text = (
        "\ufefftrain/n01440764/n01440764_762.JPEG 0\n"  # a byte-order mark is ignored
        "\n"
        "   \n"
        "# a comment line\n"
        "train/n01443537/x.JPEG\t1   # trailing comment\n"
        "  val/a.png   12  \n"
    )
    path = tmp_path / "split.txt"
    path.write_text(text, encoding="utf-8")
    paths, labels = parse_split_file(path)
    assert paths == ["train/n01440764/n01440764_762.JPEG", "train/n01443537/x.JPEG", "val/a.png"]
    assert labels == [0, 1, 12]
    rooted, _ = parse_split_file(path, root="/data/ImageNet_LT")
    assert rooted[0] == "/data/ImageNet_LT/train/n01440764/n01440764_762.JPEG"


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("train/a.jpg", "2 fields"),
        ("train/my image.jpg 3", "2 fields"),
        ("train/a.jpg cat", "not an integer"),
        ("train/a.jpg 1.5", "not an integer"),
        ("train/a.jpg -1", "negative"),
    ],
)
def test_parse_bad_line_names_file_and_line(tmp_path: Path, bad_line: str, message: str) -> None:
    path = _write_lines(tmp_path / "bad.txt", ["train/ok.jpg 0", "", bad_line, "train/ok2.jpg 1"])
    with pytest.raises(ValueError, match=message) as info:
        parse_split_file(path)
    assert f"{path}:3:" in str(info.value)  # 1-based line number, blank lines counted


def test_parse_label_out_of_range_names_file_and_line(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "s.txt", ["a.jpg 0", "b.jpg 4", "c.jpg 5"])
    assert parse_split_file(path, num_classes=6)[1] == [0, 4, 5]
    with pytest.raises(ValueError, match=r"s\.txt:3: label 5 is outside \[0, num_classes=5\)"):
        parse_split_file(path, num_classes=5)
    with pytest.raises(ValueError, match="num_classes"):
        parse_split_file(path, num_classes=0)
    with pytest.raises(FileNotFoundError, match="nothing.txt"):
        parse_split_file(tmp_path / "nothing.txt")


# ---------------------------------------------------------------------------------------------- published facts
def published_counts(num_classes: int, total: int, n_max: int, n_min: int, n_many: int, n_few: int) -> np.ndarray:
    """A count vector with the published properties: sum, max, min and many (> 100) / few (< 20) group sizes.

    Few-shot classes run linearly from 19 down to ``n_min``, medium-shot from 100 down to 20; the head class has
    ``n_max`` and the other many-shot classes ``101 + `` an exponentially decaying share of what is left, so that
    the total is exact.
    """
    n_medium = num_classes - n_many - n_few
    few = np.rint(np.linspace(19, n_min, n_few)).astype(np.int64)
    medium = np.rint(np.linspace(100, 20, n_medium)).astype(np.int64)
    k = n_many - 1
    rest = total - few.sum() - medium.sum() - n_max - 101 * k
    weights = np.exp(-np.arange(k) / (k / 4))
    extra = np.floor(rest * weights / weights.sum()).astype(np.int64)
    extra[: rest - extra.sum()] += 1
    many = np.concatenate([[n_max], 101 + extra])
    counts = np.concatenate([many, medium, few])
    # the construction itself must have the properties the test then reads back
    assert counts.sum() == total and counts.max() == n_max and counts.min() == n_min
    assert ((counts > 100).sum(), (counts < 20).sum()) == (n_many, n_few)
    return counts


def _write_split(path: Path, counts: np.ndarray, folder: str, rng: np.random.Generator) -> str:
    lines = [f"{folder}/c{c:04d}/c{c:04d}_{i}.JPEG {c}" for c, n in enumerate(counts.tolist()) for i in range(n)]
    rng.shuffle(lines)
    return _write_lines(path, lines)


@pytest.mark.parametrize(
    ("name", "num_classes", "total", "n_max", "groups", "val_per_class", "test_per_class"),
    [
        ("ImageNet_LT", 1000, 115_846, 1280, (385, 479, 136), 20, 50),
        ("Places_LT", 365, 62_500, 4980, (131, 163, 71), 20, 100),
    ],
)
def test_published_split_statistics(
    tmp_path: Path,
    name: str,
    num_classes: int,
    total: int,
    n_max: int,
    groups: tuple[int, int, int],
    val_per_class: int,
    test_per_class: int,
) -> None:
    """Split files with the published counts: class statistics from __init__ alone, no image exists."""
    rng = np.random.default_rng(0)
    counts = published_counts(num_classes, total, n_max, 5, groups[0], groups[2])
    counts = counts[rng.permutation(num_classes)]  # head classes are not the first labels
    root = tmp_path / name
    root.mkdir()
    train = _write_split(root / f"{name}_train.txt", counts, "train", rng)
    val = _write_split(root / f"{name}_val.txt", np.full(num_classes, val_per_class), "val", rng)
    test = _write_split(root / f"{name}_test.txt", np.full(num_classes, test_per_class), "val", rng)

    dm = SplitFileDataModule(root=str(root), train_file=train, val_file=val, test_file=test)

    assert dm.num_classes == num_classes
    assert sum(dm.class_counts) == total
    assert max(dm.class_counts) == n_max and min(dm.class_counts) == 5
    assert dm.class_counts == counts.tolist()
    assert dm.train_labels.numel() == total
    masks = shot_group_masks(torch.tensor(dm.class_counts))
    assert (int(masks.many.sum()), int(masks.medium.sum()), int(masks.few.sum())) == groups
    assert len(dm.image_lists["val"][0]) == num_classes * val_per_class  # 20,000 / 7,300
    assert len(dm.image_lists["test"][0]) == num_classes * test_per_class  # 50,000 / 36,500
    assert dm.class_names == [str(c) for c in range(num_classes)]
    # images are only looked at in setup: all of them are missing here
    with pytest.raises(FileNotFoundError, match=f"{total} of the {total} train images are missing"):
        dm.setup("fit")


# ---------------------------------------------------------------------------------------------- a tiny tree
TINY_COUNTS = (6, 3, 2)


def _image(rng: np.random.Generator, height: int, width: int, grey: bool = False) -> Image.Image:
    if grey:
        return Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), mode="L")
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def make_tree(root: Path, counts: tuple[int, ...] = TINY_COUNTS, eval_per_class: int = 2) -> dict[str, str]:
    """Images under ``root/{train,val}/c<k>/`` (PNG, JPEG, one grey image, varied sizes) and the three split files."""
    rng = np.random.default_rng(1)
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    balanced = [eval_per_class] * len(counts)
    for split, per_class in (("train", counts), ("val", balanced), ("test", balanced)):
        folder = "train" if split == "train" else "val"  # ImageNet-LT's test images live in ILSVRC's val/
        for c, n in enumerate(per_class):
            for i in range(n):
                ext = "JPEG" if i % 2 else "png"
                rel = f"{folder}/c{c}/{split}_{i}.{ext}"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                _image(rng, 14 + i, 20 + 3 * c, grey=(c == 1 and i == 0)).save(root / rel)
                lines[split].append(f"{rel} {c}")
    return {split: _write_lines(root / f"tiny_{split}.txt", ls) for split, ls in lines.items()}


def _tiny_dm(root: Path, files: dict[str, str], **kwargs) -> SplitFileDataModule:
    args = dict(root=str(root), train_file=files["train"], val_file=files["val"], test_file=files["test"])
    args.update(image_size=16, batch_size=4, num_workers=0)
    args.update(kwargs)
    return SplitFileDataModule(**args)


def test_tiny_tree_loaders_give_uint8_batches(tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    dm = _tiny_dm(tmp_path, files, class_names=["tench", "goldfish", "shark"])
    assert dm.class_counts == list(TINY_COUNTS) and dm.class_names == ["tench", "goldfish", "shark"]
    assert dm.resize_size == 18  # int(16 / 0.875)
    # ImageNet normalisation on the device; crop and flip happen in the workers, not on the device
    assert dm.mean == IMAGENET_MEAN and dm.std == IMAGENET_STD
    assert dm.crop_padding == 0 and dm.horizontal_flip is False
    dm.setup("fit")
    assert dm.test_dataset is None
    dm.setup("test")
    for name in ("train", "val", "test"):
        dataset = getattr(dm, f"{name}_dataset")
        assert isinstance(dataset, ImageFileDataset)
        assert dataset.train is (name == "train")  # worker augmentation for the train split only
        x, y = next(iter(getattr(dm, f"{name}_dataloader")()))
        batch = 4 if name == "train" else 6  # eval_batch_size = 2 * batch_size = 8 > the 6 images
        assert x.dtype == torch.uint8 and x.shape == (batch, 3, 16, 16), name
        assert y.dtype == torch.long and 0 <= int(y.min()) and int(y.max()) < 3
    assert torch.equal(torch.tensor(dm.train_dataset.labels), dm.train_labels)
    x, _ = next(iter(dm.val_dataloader()))
    z = dm.on_after_batch_transfer([x, None], 0)[0]  # no trainer: evaluation path = normalise only
    mean = torch.tensor(IMAGENET_MEAN)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD)[None, :, None, None]
    torch.testing.assert_close(z, (x.float() / 255 - mean) / std)


def test_augment_false_uses_the_eval_pipeline_for_train(tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    dm = _tiny_dm(tmp_path, files, augment=False, resize_size=16)
    dm.setup("fit")
    assert dm.train_dataset.train is False and dm.train_dataset.resize_size == 16


def test_worker_decoding(tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    dm = _tiny_dm(tmp_path, files, num_workers=1)
    dm.setup("validate")
    batches = list(dm.val_dataloader())
    assert sum(b[0].shape[0] for b in batches) == 6
    assert all(b[0].dtype == torch.uint8 and b[0].shape[1:] == (3, 16, 16) for b in batches)


@pytest.mark.slow
def test_fit_and_test_with_lightning(tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    dm = _tiny_dm(tmp_path, files)
    model = LongTailModule(backbone=ResNet32(), num_classes=dm.num_classes, class_counts=dm.class_counts)
    trainer = L.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    results = trainer.test(model, datamodule=dm, verbose=False)
    assert 0.0 <= results[0]["test/acc"] <= 1.0


def test_val_held_out_of_train_file(tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    dm = _tiny_dm(tmp_path, files, val_file=None, val_per_class=1, split_seed=3)
    assert dm.class_counts == [5, 2, 1]  # (6, 3, 2) minus one per class
    val_paths, val_labels = dm.image_lists["val"]
    assert sorted(val_labels) == [0, 1, 2]
    assert not set(val_paths) & set(dm.image_lists["train"][0])
    assert set(val_paths) | set(dm.image_lists["train"][0]) == set(parse_split_file(files["train"], tmp_path)[0])
    again = _tiny_dm(tmp_path, files, val_file=None, val_per_class=1, split_seed=3)
    assert again.image_lists == dm.image_lists  # seeded
    with pytest.raises(ValueError, match="val_per_class=2"):  # class 2 has 2 images: none left to train on
        _tiny_dm(tmp_path, files, val_file=None, val_per_class=2)
    with pytest.raises(ValueError, match="val_per_class=3"):
        _tiny_dm(tmp_path, files, val_file=None, val_per_class=3)


def test_validation_choice_is_explicit(tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    with pytest.raises(ValueError, match="no validation split"):
        _tiny_dm(tmp_path, files, val_file=None)
    with pytest.raises(ValueError, match="not both"):
        _tiny_dm(tmp_path, files, val_per_class=1)
    with pytest.raises(ValueError, match="val_per_class"):
        _tiny_dm(tmp_path, files, val_file=None, val_per_class=-1)


def test_num_classes_labels_and_names(tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    assert _tiny_dm(tmp_path, files).num_classes == 3  # max label + 1 over all files
    with pytest.raises(ValueError, match=r"tiny_train\.txt:10: label 2 is outside \[0, num_classes=2\)"):
        _tiny_dm(tmp_path, files, num_classes=2)
    with pytest.raises(ValueError, match="class 3 .* no training images"):
        _tiny_dm(tmp_path, files, num_classes=4)
    with pytest.raises(ValueError, match="class_names has 2 entries"):
        _tiny_dm(tmp_path, files, class_names=["a", "b"])
    test_lines = Path(files["test"]).read_text() + "val/c0/extra.png 7\n"
    extra = _write_lines(tmp_path / "test_extra.txt", test_lines.strip().splitlines())
    with pytest.raises(ValueError, match="class 3 .* no training images"):  # label 7 in the test file: C = 8
        _tiny_dm(tmp_path, files, test_file=extra)


# ---------------------------------------------------------------------------------------------- class-name files
def test_class_names_file_formats(tmp_path: Path) -> None:
    """One name per line; LIFT's ``<id> <name>`` classnames.txt; a JSON list; iNaturalist's categories.json."""
    lines = tmp_path / "names.txt"
    lines.write_text("\ufefftench\n golden retriever \nshark\n\n\n", encoding="utf-8")  # BOM, spaces, trailing blanks
    assert read_class_names(lines) == ["tench", "golden retriever", "shark"]
    lift = tmp_path / "classnames.txt"  # shijxcs/LIFT datasets/ImageNet_LT/classnames.txt, Places_LT/classnames.txt
    lift.write_text("n01440764 tench\nn01443537 golden retriever\r\nairfield airfield\n", encoding="utf-8")
    assert read_class_names(lift, "id_name") == ["tench", "golden retriever", "airfield"]
    assert read_class_names(lift) == ["n01440764 tench", "n01443537 golden retriever", "airfield airfield"]
    listed = tmp_path / "names.json"
    listed.write_text('["tench", "goldfish", "shark"]')
    assert read_class_names(listed) == ["tench", "goldfish", "shark"]
    categories = tmp_path / "categories.json"  # iNaturalist 2018: class c is the category whose id is c
    categories.write_text(
        '[{"id": 2, "name": "Serpula columbiana", "kingdom": "Animalia"}, {"id": 0, "name": "Hermodice carunculata"},'
        ' {"id": 1, "name": "Phragmatopoma californica"}]'
    )
    assert read_class_names(categories) == ["Hermodice carunculata", "Phragmatopoma californica", "Serpula columbiana"]
    assert read_class_names(categories, "json") == read_class_names(categories)


@pytest.mark.parametrize(
    ("name", "text", "fmt", "message"),
    [
        ("gap.txt", "a\n\nb\n", None, r"gap\.txt:2: a blank line"),
        ("ids.txt", "n0 tench\nn1\n", "id_name", r"ids\.txt:2: no name after the identifier"),
        ("empty.txt", "\n\n", None, "lists no class name"),
        ("bad.json", "[1, 2]", None, "a JSON list of class names, or of objects"),
        ("bad2.json", "{", None, "not valid JSON"),
        ("twice.json", '[{"id": 0, "name": "a"}, {"id": 0, "name": "b"}]', None, "id 0 is listed twice"),
        ("gapid.json", '[{"id": 0, "name": "a"}, {"id": 2, "name": "b"}]', None, r"0 \.\. 1.*missing \[1\]"),
        ("names.txt", "a\n", "csv", "class_names_format must be one of lines, id_name, json"),
    ],
)
def test_bad_class_names_file_is_named(tmp_path: Path, name: str, text: str, fmt, message: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_class_names(tmp_path / name, fmt)


def test_class_names_file_feeds_the_datamodule_and_must_match_num_classes(tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    names = tmp_path / "classnames.txt"
    names.write_text("n01440764 tench\nn01443537 goldfish\nn01484850 great white shark\n")
    dm = _tiny_dm(tmp_path, files, class_names_file=str(names), class_names_format="id_name")
    assert dm.class_names == ["tench", "goldfish", "great white shark"]
    assert dm.class_counts == list(TINY_COUNTS)
    with pytest.raises(ValueError, match=r"class 2 \('great white shark'\) has 2 images"):  # names in messages too
        _tiny_dm(tmp_path, files, class_names_file=str(names), class_names_format="id_name", balanced_reference=True)
    short = tmp_path / "short.txt"
    short.write_text("tench\ngoldfish\n")
    with pytest.raises(ValueError, match=r"class_names_file .*short\.txt' names 2 classes but num_classes=3"):
        _tiny_dm(tmp_path, files, class_names_file=str(short))
    four = tmp_path / "four.txt"
    four.write_text(names.read_text() + "n09999999 one too many\n")
    with pytest.raises(ValueError, match="names 4 classes but num_classes=3"):
        _tiny_dm(tmp_path, files, class_names_file=str(four), class_names_format="id_name")
    with pytest.raises(ValueError, match="either class_names or class_names_file"):
        _tiny_dm(tmp_path, files, class_names=["a", "b", "c"], class_names_file=str(names))
    with pytest.raises(ValueError, match="class_names_format must be one of"):
        _tiny_dm(tmp_path, files, class_names_format="id-name")
    with pytest.raises(FileNotFoundError, match=r"absent\.txt.*shijxcs/LIFT.*Places_LT/classnames\.txt"):
        _tiny_dm(tmp_path, files, class_names_file=str(tmp_path / "absent.txt"))


def test_missing_root_and_files_say_how_to_get_the_data(tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere.*OpenLongTailRecognition-OLTR"):
        _tiny_dm(tmp_path / "nowhere", files)
    with pytest.raises(FileNotFoundError, match="val split file .*absent.txt.*image-net.org"):
        _tiny_dm(tmp_path, files, val_file=str(tmp_path / "absent.txt"))
    with pytest.raises(ValueError, match="image_size"):
        _tiny_dm(tmp_path, files, image_size=0)
    with pytest.raises(ValueError, match="on_error"):
        _tiny_dm(tmp_path, files, on_error="ignore")


def _corrupt(root: Path, rel: str) -> None:
    (root / rel).write_bytes(b"this is not an image")


def test_unreadable_image_raise_names_the_file(tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    _corrupt(tmp_path, "train/c0/train_0.png")
    dm = _tiny_dm(tmp_path, files, batch_size=16)
    dm.setup("fit")  # the file exists: found only when decoded
    with pytest.raises(RuntimeError, match="train/c0/train_0.png"):
        next(iter(dm.train_dataloader()))
    in_worker = _tiny_dm(tmp_path, files, batch_size=16, num_workers=1)
    in_worker.setup("fit")
    with pytest.raises(RuntimeError, match=r"UnreadableImageError.*train/c0/train_0\.png"):  # crosses the worker
        next(iter(in_worker.train_dataloader()))
    (tmp_path / "val/c2/val_1.JPEG").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of the 6 val images are missing, e\.g\. .*val/c2/val_1\.JPEG"):
        _tiny_dm(tmp_path, files).setup("validate")


def test_unreadable_images_skipped_with_one_warning(tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    _corrupt(tmp_path, "train/c0/train_0.png")
    _corrupt(tmp_path, "train/c1/train_2.png")
    (tmp_path / "val/c2/val_1.JPEG").unlink()
    dm = _tiny_dm(tmp_path, files, on_error="skip", batch_size=16)
    assert dm.class_counts == [6, 3, 2]
    with pytest.warns(RuntimeWarning) as record:
        dm.setup("fit")
    messages = [str(w.message) for w in record if "skipped" in str(w.message)]
    assert len(messages) == 2  # one per split
    train_msg = next(m for m in messages if "train image" in m)
    assert "skipped 2 unreadable train image(s) of 11" in train_msg and "class_counts" in train_msg
    assert any("skipped 1 unreadable val image(s) of 6" in m for m in messages)
    assert dm.class_counts == [5, 2, 2]
    assert dm.train_labels.tolist() == dm.train_dataset.labels
    assert len(dm.skipped_files["train"]) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # nothing left to skip while loading
        x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (9, 3, 16, 16) and sorted(y.tolist()) == [0] * 5 + [1] * 2 + [2] * 2


def test_train_eval_dataloader_reads_the_training_images_without_augmentation(tmp_path: Path) -> None:
    # NCM's class means need the training images through the evaluation pipeline, even with augment=True
    files = make_tree(tmp_path)
    dm = _tiny_dm(tmp_path, files)
    dm.setup("fit")
    assert dm.train_dataset.train is True
    loader = dm.train_eval_dataloader()
    assert loader.dataset.train is False and loader.dataset.paths == dm.train_dataset.paths
    first = torch.cat([x for x, _ in loader])
    again = torch.cat([x for x, _ in dm.train_eval_dataloader()])
    assert torch.equal(first, again)  # deterministic: no random crop or flip
    assert torch.equal(torch.cat([y for _, y in loader]), dm.train_labels)
