"""The data fingerprint of a checkpoint: resuming or initialising from other data refuses, naming the difference."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from lt_lightning.callbacks.data_fingerprint import (
    DataFingerprint,
    check_init_from,
    check_resume,
    data_mismatch_allowed,
    fingerprint_of_checkpoint,
)
from lt_lightning.checkpointing import data_fingerprint, fingerprint_difference
from lt_lightning.data.cifar import CIFAR100LTDataModule
from lt_lightning.data.digits import DigitsLTDataModule
from lt_lightning.data.split_file_datamodule import SplitFileDataModule
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.module import LongTailModule
from tests.checkpointing.python_built import trusting
from tests.cifar_files import write_tiny_cifar100
from tests.helpers import TinyBackbone, tiny_lt_data

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


@pytest.fixture(autouse=True)
def _trust_python_built_checkpoints():
    """The checkpoints loaded here come from modules built in Python: their classes are allowed explicitly (the
    package reads checkpoints with weights_only=True and refuses them otherwise)."""
    with trusting():
        yield


class BlobsLT(SyntheticLTDataModule):
    """Another dataset of the same shapes (3 classes of 3x2x2 images)."""


# ------------------------------------------------------------------ the fingerprint
def test_fingerprint_is_plain_stable_and_loads_with_weights_only(tmp_path) -> None:
    fp = data_fingerprint(DigitsLTDataModule())
    assert fp == data_fingerprint(DigitsLTDataModule())
    assert fp["dataset"] == "DigitsLTDataModule"
    assert fp["num_classes"] == 10 and fp["class_counts"] == [114, 88, 68, 52, 40, 31, 24, 19, 14, 11]
    assert fp["balanced_reference"] is False and fp["train_images"].startswith("sha256:")
    torch.save({"fp": fp}, tmp_path / "fp.pt")
    assert torch.load(tmp_path / "fp.pt", weights_only=True)["fp"] == fp
    assert fingerprint_difference(fp, dict(fp)) is None


def test_difference_names_the_imbalance_ratio_and_summarises_100_class_counts(tmp_path) -> None:
    write_tiny_cifar100(tmp_path)
    holdout = {"val_source": "holdout", "val_per_class": 2}
    saved = data_fingerprint(CIFAR100LTDataModule(root=str(tmp_path), imbalance_ratio=10, **holdout))
    current = data_fingerprint(CIFAR100LTDataModule(root=str(tmp_path), imbalance_ratio=5, profile="step", **holdout))
    assert saved["imbalance_ratio"] == 10 and saved["root"] == tmp_path.name and saved["split_seed"] == 0
    message = fingerprint_difference(saved, current)
    assert "imbalance_ratio: saved 10, current 5" in message
    assert "profile: saved 'exp', current 'step'" in message
    assert "class_counts differ in " in message and " of 100 classes (class " in message
    assert "more)" in message and len(message) < 700  # which classes differ, not a 100-number dump
    assert "train_images" not in message  # implied by the counts


def test_difference_names_dataset_split_seed_and_other_images() -> None:
    a = data_fingerprint(tiny_lt_data())
    assert "dataset: saved 'SyntheticLTDataModule', current 'BlobsLT'" in fingerprint_difference(
        a, data_fingerprint(BlobsLT(**_tiny_args()))
    )
    assert fingerprint_difference(a, data_fingerprint(tiny_lt_data(data_seed=1))) == ("data_seed: saved 0, current 1")
    other = data_fingerprint(DigitsLTDataModule(split_seed=1))  # the same counts drawn with another split seed
    message = fingerprint_difference(data_fingerprint(DigitsLTDataModule()), other)
    assert message == "split_seed: saved 0, current 1"  # named; the images it implies are not listed again


def test_split_files_are_compared_by_content_not_location(tmp_path) -> None:
    def write(root: Path, first_label: int) -> SplitFileDataModule:
        root.mkdir(parents=True)
        lines = [f"img/{c}_{i}.jpg {c}" for c in range(3) for i in range(4 - c)]
        lines[0] = f"img/0_0.jpg {first_label}"
        (root / "train.txt").write_text("\n".join(lines) + "\n")
        (root / "test.txt").write_text("img/t0.jpg 0\nimg/t1.jpg 1\nimg/t2.jpg 2\n")
        (root / "val.txt").write_text("img/v0.jpg 0\nimg/v1.jpg 1\nimg/v2.jpg 2\n")
        files = {name: str(root / f"{name}.txt") for name in ("train", "test", "val")}
        return SplitFileDataModule(str(root), files["train"], files["test"], val_file=files["val"], num_classes=3)

    here = data_fingerprint(write(tmp_path / "a" / "places", 0))
    moved = data_fingerprint(write(tmp_path / "b" / "places", 0))
    assert here["train_file"].startswith("train.txt@sha256:") and here["root"] == "places"
    assert fingerprint_difference(here, moved) is None
    message = fingerprint_difference(here, data_fingerprint(write(tmp_path / "c" / "places", 1)))
    assert message.startswith("train_file: saved 'train.txt@sha256:")
    assert "class 0: saved 4, current 3, class 1: saved 3, current 4" in message


def test_difference_compares_only_fields_both_have_and_rejects_non_mappings() -> None:
    saved = {"dataset": "X", "num_classes": 3}
    assert fingerprint_difference(saved, {"dataset": "X", "num_classes": 3, "imbalance_ratio": 10.0}) is None
    assert fingerprint_difference(saved, {"dataset": "X", "num_classes": 4}) == "num_classes: saved 3, current 4"
    assert "saved 3 classes (6 images), current 2 classes" in fingerprint_difference(
        {"class_counts": [3, 2, 1]}, {"class_counts": [3, 2]}
    )
    with pytest.raises(ValueError, match="saved fingerprint must be a mapping, got list"):
        fingerprint_difference([1], saved)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="allow_data_mismatch must be true or false, got 'yes'"):
        DataFingerprint(allow_data_mismatch="yes")  # type: ignore[arg-type]


# ------------------------------------------------------------------ resume through a Trainer
def _tiny_args(**kwargs) -> dict:
    args = {"num_classes": 3, "n_max": 16, "imbalance_ratio": 4, "image_size": 2, "batch_size": 8, "seed": 3}
    return {**args, "augment": False, **kwargs}


def _fit(tmp_path: Path, dm, callback: DataFingerprint, max_epochs: int, ckpt_path: Path | None = None) -> L.Trainer:
    L.seed_everything(0, verbose=False)
    model = LongTailModule(TinyBackbone(), num_classes=dm.num_classes, class_counts=dm.class_counts)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        limit_train_batches=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[callback],
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
    return trainer


@pytest.fixture
def saved_checkpoint(tmp_path) -> Path:
    trainer = _fit(tmp_path, tiny_lt_data(), DataFingerprint(), max_epochs=1)
    path = tmp_path / "epoch0.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_resume_on_the_same_data_passes(tmp_path, saved_checkpoint) -> None:
    saved = torch.load(saved_checkpoint, weights_only=False)
    assert fingerprint_of_checkpoint(saved) == data_fingerprint(tiny_lt_data())
    callback = DataFingerprint()
    trainer = _fit(tmp_path, tiny_lt_data(), callback, max_epochs=2, ckpt_path=saved_checkpoint)
    assert trainer.global_step == 4 and callback.difference is None


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda: tiny_lt_data(imbalance_ratio=2),
            "class_counts differ in 2 of 3 classes (class 1: saved 8, current 11",
        ),
        (lambda: BlobsLT(**_tiny_args()), "dataset: saved 'SyntheticLTDataModule', current 'BlobsLT'"),
        (lambda: tiny_lt_data(balanced_reference=True), "balanced_reference: saved False, current True"),
    ],
    ids=["class_counts", "dataset", "split"],
)
def test_resume_on_other_data_refuses_naming_the_difference(tmp_path, saved_checkpoint, make, expected) -> None:
    with pytest.raises(ValueError, match="allow_data_mismatch true") as error:
        _fit(tmp_path, make(), DataFingerprint(), max_epochs=2, ckpt_path=saved_checkpoint)
    assert expected in str(error.value) and str(saved_checkpoint) in str(error.value)


def test_resume_on_other_data_with_the_override_warns_and_trains(tmp_path, saved_checkpoint) -> None:
    callback = DataFingerprint(allow_data_mismatch=True)
    with pytest.warns(UserWarning, match=r"class_counts differ .*resuming anyway \(allow_data_mismatch\)"):
        trainer = _fit(tmp_path, tiny_lt_data(imbalance_ratio=2), callback, max_epochs=2, ckpt_path=saved_checkpoint)
    assert trainer.global_step == 4 and "class_counts" in callback.difference


def test_resume_with_another_number_of_classes_names_the_data_not_a_size_mismatch(tmp_path, saved_checkpoint) -> None:
    """LongTailModule.on_load_checkpoint compares the fingerprint before its weights load (a size mismatch of the
    classifier would otherwise speak first)."""
    with pytest.raises(ValueError, match="num_classes: saved 3, current 4"):
        _fit(tmp_path, tiny_lt_data(num_classes=4), DataFingerprint(), max_epochs=2, ckpt_path=saved_checkpoint)


def test_resume_check_before_the_weights_load_raises_the_data_error(tmp_path, saved_checkpoint) -> None:
    """check_resume (for a module's on_load_checkpoint) speaks before a size mismatch can."""

    class CheckingModule(LongTailModule):
        def on_load_checkpoint(self, checkpoint) -> None:
            check_resume(self.trainer, checkpoint)
            super().on_load_checkpoint(checkpoint)

    dm = tiny_lt_data(num_classes=4)
    model = CheckingModule(TinyBackbone(), num_classes=dm.num_classes, class_counts=dm.class_counts)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[DataFingerprint()],
    )
    with pytest.raises(ValueError, match="num_classes: saved 3, current 4"):
        trainer.fit(model, datamodule=dm, ckpt_path=saved_checkpoint, weights_only=False)


def test_resume_from_a_checkpoint_without_fingerprint_passes_with_an_info(tmp_path, saved_checkpoint, caplog) -> None:
    checkpoint = torch.load(saved_checkpoint, weights_only=False)
    del checkpoint["callbacks"]["DataFingerprint"]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    with caplog.at_level(logging.INFO):
        trainer = _fit(tmp_path, tiny_lt_data(imbalance_ratio=2), DataFingerprint(), max_epochs=2, ckpt_path=old)
    assert trainer.global_step == 4
    assert "has no data fingerprint" in caplog.text


def test_testing_a_checkpoint_on_other_data_only_warns(tmp_path, saved_checkpoint) -> None:
    dm = tiny_lt_data(imbalance_ratio=2)
    model = LongTailModule(TinyBackbone(), num_classes=3, class_counts=dm.class_counts)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[DataFingerprint()])
    with pytest.warns(UserWarning, match="class_counts differ .*running test anyway"):
        trainer.test(model, datamodule=dm, ckpt_path=saved_checkpoint, weights_only=False, verbose=False)


# ------------------------------------------------------------------ init_from checkpoints
def test_check_init_from_refuses_other_data_and_passes_the_same(tmp_path, saved_checkpoint, caplog) -> None:
    assert check_init_from(saved_checkpoint, tiny_lt_data(), "ClassifierRetraining") is None
    loaded = torch.load(saved_checkpoint, weights_only=False)
    with pytest.raises(
        ValueError,
        match=r"ClassifierRetraining: the checkpoint was trained on other data .*"
        r"data_seed: saved 0, current 2.*allow_data_mismatch true",
    ):
        check_init_from(loaded, tiny_lt_data(data_seed=2), "ClassifierRetraining")
    with pytest.warns(UserWarning, match="data_seed: saved 0, current 2"):
        assert check_init_from(saved_checkpoint, tiny_lt_data(data_seed=2), "KD", allow_mismatch=True)
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": loaded["state_dict"]}, plain)  # no fingerprint: older or plain torch files
    with caplog.at_level(logging.INFO):
        assert check_init_from(plain, tiny_lt_data(data_seed=2), "SelfSupervisedInit") is None
    assert "SelfSupervisedInit: " in caplog.text and "has no data fingerprint" in caplog.text
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        check_init_from(tmp_path / "nowhere.ckpt", tiny_lt_data(), "KD")


def test_data_mismatch_allowed_reads_the_callback() -> None:
    assert not data_mismatch_allowed(None)
    assert not data_mismatch_allowed(L.Trainer(logger=False, callbacks=[DataFingerprint()]))
    assert data_mismatch_allowed(L.Trainer(logger=False, callbacks=[DataFingerprint(allow_data_mismatch=True)]))


# ------------------------------------------------------------------ the real CLI
def test_cli_resume_on_another_imbalance_ratio_refuses_unless_allowed(tmp_path, monkeypatch) -> None:
    from lt_lightning.cli import run

    monkeypatch.chdir(tmp_path)
    fast = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--trainer.logger", "false"]
    fast += ["--trainer.enable_progress_bar", "false", "--trainer.num_sanity_val_steps", "0"]
    small = ["--model.init_args.backbone", "lt_lightning.backbones.resnet_cifar.ResNet20"]
    small += ["--model.init_args.backbone.in_channels", "1"]
    first = run(["fit", "-c", str(QUICKSTART), *fast, *small, "--trainer.max_epochs", "1"])
    assert any(isinstance(c, DataFingerprint) for c in first.trainer.callbacks)
    assert type(first.trainer.strategy.checkpoint_io).__name__ == "AtomicCheckpointIO"
    last = Path("logs/quickstart/checkpoints/last.ckpt")
    args = ["fit", "-c", str(QUICKSTART), *fast, *small, "--trainer.max_epochs", "2", "--ckpt_path", str(last)]
    with pytest.raises(ValueError, match=r"class_counts differ in 9 of 10 classes \(class 1: saved 88, current 95"):
        run([*args, "--data.init_args.imbalance_ratio", "5"])
    with pytest.warns(UserWarning, match="resuming anyway"):
        resumed = run(
            [*args, "--data.init_args.imbalance_ratio", "5", "--data_fingerprint.allow_data_mismatch", "true"]
        )
    assert resumed.trainer.current_epoch == 2


# ------------------------------------------------------------------ datamodules record their arguments
def _every_datamodule(tmp_path: Path) -> list[tuple[object, dict]]:
    """One instance of every shipped datamodule class with the arguments it was given (some left to defaults the
    datamodule resolves: CIFAR's ``val_per_class=None``, Digits' ``n_max=None``, the folder's ``resize_size``)."""
    from PIL import Image

    from lt_lightning.data.cifar import CIFAR10LTDataModule
    from lt_lightning.data.folder import ImageFolderLTDataModule
    from tests.cifar_files import write_tiny_cifar10

    write_tiny_cifar100(tmp_path / "c100")
    write_tiny_cifar10(tmp_path / "c10", train_per_class=20)
    folder = tmp_path / "folder"
    for c in range(3):
        for i in range(6):
            (folder / "train" / f"class_{c}").mkdir(parents=True, exist_ok=True)
            image = np.random.default_rng(10 * c + i).integers(0, 256, (12, 10, 3), dtype=np.uint8)
            Image.fromarray(image).save(folder / "train" / f"class_{c}" / f"{i}.png")
    split = tmp_path / "split"
    split.mkdir()
    (split / "train.txt").write_text("".join(f"img/{c}_{i}.jpg {c}\n" for c in range(3) for i in range(4 - c)))
    (split / "test.txt").write_text("img/t0.jpg 0\nimg/t1.jpg 1\nimg/t2.jpg 2\n")
    cases: list[tuple[type, dict]] = [
        (DigitsLTDataModule, {"imbalance_ratio": 5, "split_seed": 2, "batch_size": 16}),
        (SyntheticLTDataModule, _tiny_args(data_seed=4)),
        (CIFAR100LTDataModule, {"root": str(tmp_path / "c100"), "imbalance_ratio": 10}),
        (CIFAR10LTDataModule, {"root": tmp_path / "c10", "imbalance_ratio": 5, "val_per_class": 1}),
        (ImageFolderLTDataModule, {"root": str(folder), "val_per_class": 1, "test_per_class": 1, "image_size": 8}),
        (
            SplitFileDataModule,
            {"root": str(split), "train_file": str(split / "train.txt"), "test_file": str(split / "test.txt")}
            | {"val_per_class": 1, "num_classes": 3, "split_seed": 3},
        ),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny CIFAR: classes with fewer validation images than asked
        return [(cls(**given), given) for cls, given in cases]


def test_datamodules_record_their_arguments_and_their_fingerprint_is_unchanged(tmp_path: Path) -> None:
    """``save_hyperparameters`` records the arguments as given (the sampler factory excepted); the fingerprint still
    records the resolved split values from the attributes, so a checkpoint written before the datamodules recorded
    their arguments (``hparams`` empty: deleted here) matches the same datamodule now."""
    for dm, given in _every_datamodule(tmp_path):
        name = type(dm).__name__
        assert {key: dm.hparams[key] for key in given} == given, name
        assert "sampler" not in dm.hparams and dm.hparams["seed"] == given.get("seed", 0), name
        assert not dm._log_hyperparams, name  # not merged into the model's logged hyper-parameters
        now = data_fingerprint(dm)
        del dm._hparams  # the datamodule as it was before it recorded its arguments
        assert not dm.hparams
        assert data_fingerprint(dm) == now, name
        assert fingerprint_difference(now, data_fingerprint(dm)) is None
    cifar100 = next(dm for dm, _ in _every_datamodule(tmp_path / "again") if isinstance(dm, CIFAR100LTDataModule))
    assert cifar100.hparams["val_per_class"] is None and data_fingerprint(cifar100)["val_per_class"] == 20
