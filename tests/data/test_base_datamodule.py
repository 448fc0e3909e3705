"""The base datamodule (``lt_lightning.data.base``) through the real datamodules and a real ``lightning.Trainer``.

The fit tests record the labels (and images) each training batch carries and compare them with the sampler's
global order for that epoch, also across a checkpoint resume with worker processes (Lightning issue #21938: the
first epoch after a resume must not replay epoch 0's order).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from lt_lightning.backbones.base import Backbone
from lt_lightning.data.base import (
    ImageBatch,
    LongTailDataModule,
    TensorImageDataset,
    TrainIndices,
    check_labels,
    collate_image_batch,
)
from lt_lightning.data.digits import DigitsLTDataModule
from lt_lightning.data.resampling import ClassBalancedSampler
from lt_lightning.data.samplers import InstanceBalancedSampler, UnpaddedDistributedSampler
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.module import LongTailModule


def _synthetic(**kwargs) -> SyntheticLTDataModule:
    """4 classes, counts [24, 15, 9, 6] (24 * 0.25 ** (c / 3)), 54 training images of 3x4x4, batch 8."""
    args = {"num_classes": 4, "n_max": 24, "imbalance_ratio": 4, "image_size": 4, "batch_size": 8, "seed": 3}
    return SyntheticLTDataModule(**{**args, **kwargs})


# ---------------------------------------------------------------------------------------------- class info, loaders
def test_class_info_is_set_right_after_init() -> None:
    dm = _synthetic()
    assert dm.train_dataset is None  # nothing built yet
    assert dm.num_classes == 4 and dm.class_counts == [24, 15, 9, 6]
    assert dm.class_names == ["0", "1", "2", "3"]
    assert dm.train_labels.dtype == torch.long and dm.train_labels.shape == (54,)
    digits = DigitsLTDataModule()
    assert digits.train_dataset is None and digits.num_classes == 10 and sum(digits.class_counts) == 461
    assert torch.bincount(digits.train_labels).tolist() == digits.class_counts


def test_loaders_give_uint8_image_and_label_batches() -> None:
    dm = _synthetic()
    with pytest.raises(RuntimeError, match=r"train_dataset is not built: call setup\(\)"):
        dm.train_dataloader()
    dm.setup("fit")
    assert dm.eval_batch_size == 16
    train = dm.train_dataloader()
    assert isinstance(train.sampler, InstanceBalancedSampler) and train.sampler.epoch == 0
    batches = list(train)
    assert [b[0].shape[0] for b in batches] == [8] * 6 + [6]
    for images, labels in batches:
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 4, 4) and labels.dtype == torch.long
    order = InstanceBalancedSampler(dm.train_labels, seed=3).global_indices(0)
    assert torch.cat([b[1] for b in batches]).tolist() == dm.train_labels[order].tolist()
    assert torch.equal(torch.cat([b[0] for b in batches]), dm.train_dataset.images[order])
    for loader, dataset in (
        (dm.val_dataloader(), dm.val_dataset),
        (dm.test_dataloader(), dm.test_dataset),
        (dm.predict_dataloader(), dm.test_dataset),
    ):
        assert isinstance(loader.sampler, UnpaddedDistributedSampler)
        images, labels = (torch.cat(t) for t in zip(*list(loader), strict=True))
        assert images.dtype == torch.uint8
        assert torch.equal(images, dataset.images) and torch.equal(labels, dataset.labels)  # in order, once each


def test_train_loader_checks_dataset_length() -> None:
    dm = _synthetic()
    dm.setup()
    dm.train_dataset = TensorImageDataset(dm.train_dataset.images[:10], dm.train_dataset.labels[:10])
    with pytest.raises(RuntimeError, match="train_dataset has 10 samples but train_labels has 54"):
        dm.train_dataloader()


def test_on_after_batch_transfer_without_trainer_is_eval_normalisation() -> None:
    dm = DigitsLTDataModule()  # crop_padding 1, but no trainer -> never augmented
    dm.setup()
    images = dm.train_dataset.images[:5]
    labels = dm.train_dataset.labels[:5]
    expected = (images.float() / 255.0 - 0.3053) / 0.3759
    out = dm.on_after_batch_transfer([images, labels], 0)
    assert isinstance(out, list) and torch.allclose(out[0], expected, atol=1e-6) and out[1] is labels
    out_tuple = dm.on_after_batch_transfer((images, labels, "extra"), 0)
    assert isinstance(out_tuple, tuple) and out_tuple[2] == "extra" and torch.allclose(out_tuple[0], expected)
    assert torch.allclose(dm.on_after_batch_transfer(images, 0), expected, atol=1e-6)
    with pytest.raises(ValueError, match="batch must be an image tensor or"):
        dm.on_after_batch_transfer({"x": images}, 0)
    assert dm.augmentation.padding == 1 and dm.augmentation.flip is False


# ---------------------------------------------------------------------------------------------- label checks
def test_check_labels() -> None:
    out = check_labels([0, 2, 1], 3)
    assert out.dtype == torch.long and out.tolist() == [0, 2, 1]
    assert check_labels(np.array([1.0, 0.0]), 2).tolist() == [1, 0]  # integral floats accepted
    assert check_labels(torch.tensor([[1], [0]]), 2).tolist() == [1, 0]  # flattened
    with pytest.raises(ValueError, match=r"my labels\[2\] = 3 is outside \[0, num_classes=3\)"):
        check_labels([0, 1, 3], 3, origin="my labels")
    with pytest.raises(ValueError, match=r"labels\[0\] = -1"):
        check_labels([-1, 0], 3)
    with pytest.raises(ValueError, match="labels must be integers"):
        check_labels([0.5, 1.0], 3)


def test_set_class_info_errors_and_names() -> None:
    dm = LongTailDataModule()
    dm._set_class_info([1, 0, 1, 2], 3, ["a", "b", "c"])
    assert dm.num_classes == 3 and dm.class_counts == [1, 2, 1] and dm.class_names == ["a", "b", "c"]
    assert dm.train_labels.tolist() == [1, 0, 1, 2]
    with pytest.raises(ValueError, match=r"class 1 \('b'\) has no training images in train.txt$"):
        dm._set_class_info([0, 2, 2], 3, ["a", "b", "c"], origin="train.txt")
    with pytest.raises(ValueError, match=r"class 1 \('1'\) has no training images .*\(3 empty classes: \[1, 2, 3\]\)"):
        dm._set_class_info([0, 0], 4)
    with pytest.raises(ValueError, match=r"training labels\[1\] = 5 is outside \[0, num_classes=3\)"):
        dm._set_class_info([0, 5, 1, 2], 3)
    with pytest.raises(ValueError, match="class_names has 2 entries but num_classes=3"):
        dm._set_class_info([0, 1, 2], 3, ["a", "b"])
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1, got 0"):
        dm._set_class_info([], 0)
    assert dm.class_counts == [1, 2, 1]  # a failed call leaves the previous information untouched


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"eval_batch_size": 0}, "eval_batch_size must be >= 1 or None, got 0"),
        ({"num_workers": -1}, "num_workers must be >= 0, got -1"),
        ({"views": 0}, "views must be an integer >= 1, got 0"),
        ({"views": 1.5}, "views must be an integer >= 1, got 1.5"),
    ],
)
def test_base_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        LongTailDataModule(**kwargs)


def test_tensor_image_dataset_and_collate() -> None:
    images = torch.arange(4 * 1 * 2 * 2, dtype=torch.uint8).reshape(4, 1, 2, 2)
    ds = TensorImageDataset(images, [3, 1, 2, 0])
    assert len(ds) == 4 and ds[1][1] == 1 and torch.equal(ds[1][0], images[1])
    batch = ds.__getitems__([2, 0])
    assert isinstance(batch, ImageBatch) and batch.labels.tolist() == [2, 3]
    images_out, labels_out = collate_image_batch(batch)
    assert torch.equal(images_out, images[[2, 0]]) and labels_out.tolist() == [2, 3]
    imgs, labels = collate_image_batch([ds[0], ds[3]])  # plain samples go through default_collate
    assert torch.equal(imgs, images[[0, 3]]) and labels.tolist() == [3, 0]
    with pytest.raises(ValueError, match=r"images must be \[N, C, H, W\]"):
        TensorImageDataset(images[0], [0])
    with pytest.raises(ValueError, match="images must be uint8"):
        TensorImageDataset(images.float(), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="images has 4 samples but labels has 3"):
        TensorImageDataset(images, [0, 1, 2])


# ---------------------------------------------------------------------------------------------- fit and resume
class TinyBackbone(Backbone):
    """Flatten + linear: the smallest backbone with a declared ``num_features``."""

    def __init__(self, in_features: int = 3 * 4 * 4, num_features: int = 6) -> None:
        super().__init__()
        self.num_features = num_features
        self.proj = nn.Linear(in_features, num_features)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.proj(x.flatten(1))


class RecordBatches(L.Callback):
    """Records, per epoch, the labels and images of every training batch (after the device transform)."""

    def __init__(self) -> None:
        self.labels: dict[int, list[int]] = {}
        self.images: dict[int, list[Tensor]] = {}
        self.val_images: list[Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.labels.setdefault(trainer.current_epoch, []).extend(batch[1].tolist())
        self.images.setdefault(trainer.current_epoch, []).append(batch[0].detach().clone())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.val_images.append(batch[0].detach().clone())


def _fit(dm: SyntheticLTDataModule, max_epochs: int, tmp: Path, ckpt_path: str | None = None) -> tuple:
    L.seed_everything(0, verbose=False)
    model = LongTailModule(TinyBackbone(), num_classes=dm.num_classes, class_counts=dm.class_counts)
    recorder = RecordBatches()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        callbacks=[recorder],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        default_root_dir=tmp,
    )
    # the module built here pickles its backbone object into hparams: our own checkpoint loads with weights_only=False
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
    return trainer, recorder


def _expected_labels(dm: SyntheticLTDataModule, epoch: int) -> list[int]:
    order = InstanceBalancedSampler(dm.train_labels, seed=dm.seed).global_indices(epoch)
    return dm.train_labels[order].tolist()


def test_fit_sees_sampler_order_and_device_transform(tmp_path: Path) -> None:
    dm = _synthetic(augment=False)
    _, rec = _fit(dm, 2, tmp_path)
    assert sorted(rec.labels) == [0, 1]
    for epoch in (0, 1):
        assert rec.labels[epoch] == _expected_labels(dm, epoch)
        order = InstanceBalancedSampler(dm.train_labels, seed=dm.seed).global_indices(epoch)
        seen = torch.cat(rec.images[epoch])
        assert seen.dtype == torch.float32  # normalised by the datamodule's on_after_batch_transfer
        assert torch.allclose(seen, dm.augmentation(dm.train_dataset.images[order]))
    assert rec.labels[0] != rec.labels[1]
    # validation batches are evaluation-normalised, in dataset order, once per epoch
    val = torch.cat(rec.val_images)
    assert torch.allclose(val, dm.augmentation(dm.val_dataset.images).repeat(2, 1, 1, 1))


def test_fit_augments_training_batches_only(tmp_path: Path) -> None:
    dm = _synthetic()
    dm.crop_padding, dm.horizontal_flip = 1, True  # instance attributes configure the device pipeline
    _, rec = _fit(dm, 1, tmp_path)
    order = InstanceBalancedSampler(dm.train_labels, seed=dm.seed).global_indices(0)
    plain = dm.augmentation(dm.train_dataset.images[order])
    seen = torch.cat(rec.images[0])
    assert seen.shape == plain.shape and not torch.allclose(seen, plain)
    assert rec.labels[0] == _expected_labels(dm, 0)  # augmentation keeps the labels
    assert torch.allclose(torch.cat(rec.val_images), dm.augmentation(dm.val_dataset.images))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_replays_the_uninterrupted_epoch_order(tmp_path: Path, num_workers: int) -> None:
    full_trainer, full = _fit(_synthetic(num_workers=num_workers), 2, tmp_path / "full")
    first_trainer, first = _fit(_synthetic(num_workers=num_workers), 1, tmp_path / "first")
    ckpt = tmp_path / "epoch0.ckpt"
    first_trainer.save_checkpoint(ckpt)
    dm = _synthetic(num_workers=num_workers)
    resumed_trainer, resumed = _fit(dm, 2, tmp_path / "resumed", ckpt_path=str(ckpt))

    assert first.labels[0] == full.labels[0] == _expected_labels(dm, 0)
    assert sorted(resumed.labels) == [1]  # only the second epoch ran after the resume
    assert full.labels[1] == _expected_labels(dm, 1)
    assert resumed.labels[1] == full.labels[1]  # not epoch 0's order again (Lightning issue #21938)
    assert resumed.labels[1] != full.labels[0]
    assert resumed_trainer.current_epoch == full_trainer.current_epoch == 2


def test_two_views_repeat_training_batches_view_major(tmp_path: Path) -> None:
    """``views=2``: each training batch is [view 1 of all B; view 2 of all B] with the labels repeated; each view
    is augmented on its own; validation batches stay single."""
    dm = _synthetic(views=2)
    dm.crop_padding, dm.horizontal_flip = 1, True
    _, rec = _fit(dm, 1, tmp_path)
    order = InstanceBalancedSampler(dm.train_labels, seed=dm.seed).global_indices(0)
    labels = dm.train_labels[order]
    seen_labels, offset = [], 0
    for images in rec.images[0]:
        n = images.shape[0] // 2
        batch_labels = rec.labels[0][offset * 2 : offset * 2 + 2 * n]
        assert batch_labels[:n] == batch_labels[n:] == labels[offset : offset + n].tolist()
        assert not torch.allclose(images[:n], images[n:])  # independent augmentations of the same images
        seen_labels += batch_labels[:n]
        offset += n
    assert seen_labels == labels.tolist()
    assert torch.allclose(torch.cat(rec.val_images), dm.augmentation(dm.val_dataset.images))


# ---------------------------------------------------------------------------------------------- train set on device
def test_train_set_on_device_is_off_by_default_and_yields_index_batches() -> None:
    assert _synthetic().train_set_on_device is False
    dm = _synthetic(train_set_on_device=True)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, TrainIndices) and batch.indices.dtype == torch.long and batch.indices.shape == (8,)


@pytest.mark.parametrize("sampler", [None, ClassBalancedSampler])
def test_train_set_on_device_batches_equal_the_loader_path(sampler) -> None:
    """Every batch of two epochs, gathered by ``transfer_batch_to_device`` on the CPU, equals the loader's batch."""
    plain, device = _synthetic(sampler=sampler), _synthetic(sampler=sampler, train_set_on_device=True)
    for dm in (plain, device):
        dm.setup("fit")
    cpu = torch.device("cpu")
    for epoch in (0, 1):
        loaders = []
        for dm in (plain, device):
            loader = dm.train_dataloader()
            loader.sampler.set_epoch(epoch)
            loaders.append(loader)
        pairs = list(zip(*loaders, strict=True))
        assert len(pairs) == 7  # 54 images, batch 8
        for expected, indices in pairs:
            images, labels = device.transfer_batch_to_device(indices, cpu, 0)
            assert torch.equal(images, expected[0]) and images.dtype == torch.uint8
            assert torch.equal(labels, expected[1])


def test_train_set_on_device_fit_equals_the_loader_fit(tmp_path: Path) -> None:
    """Two epochs with crop + flip: the same augmented batches and the same final weights, bit for bit."""
    runs = []
    for on_device in (False, True):
        dm = _synthetic(train_set_on_device=on_device)
        dm.crop_padding, dm.horizontal_flip = 1, True
        trainer, rec = _fit(dm, 2, tmp_path / str(on_device))
        runs.append((trainer.lightning_module.state_dict(), rec))
    (weights_a, rec_a), (weights_b, rec_b) = runs
    assert rec_a.labels == rec_b.labels
    for epoch in (0, 1):
        assert all(torch.equal(a, b) for a, b in zip(rec_a.images[epoch], rec_b.images[epoch], strict=True))
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_train_set_on_device_needs_an_in_memory_train_set() -> None:
    dm = _synthetic(train_set_on_device=True)
    dm.setup("fit")
    dm.train_dataset = torch.utils.data.Subset(dm.train_dataset, range(len(dm.train_dataset)))
    with pytest.raises(ValueError, match="train_set_on_device=True needs an in-memory training set"):
        dm.train_dataloader()
