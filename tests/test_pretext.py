"""``SelfSupervisedPretraining`` (SSP's stage 1): rotation targets by hand, labels never read, SimCLR, resume.

The fit tests use a tiny in-memory datamodule of 4x4 one-channel images; "labels unused" permutes the labels of the
same images and requires the identical run. The mid-epoch resume test factors the data order out (all training
images equal) and checks what this module owns: the rotation draws, seeded by (seed, global step, rank).
"""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor, nn

from lt_lightning.data.base import LongTailDataModule, TensorImageDataset
from lt_lightning.losses.contrastive import simclr_loss
from lt_lightning.pretext import (
    SelfSupervisedPretraining,
    all_rotations,
    contrastive_accuracy,
    reference_rotation_labels,
    rotate_batch,
    step_generator,
)
from tests.helpers import SaveMidEpoch, StopAfter, TinyBackbone, assert_equal_states, quiet_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_EPOCHS = 3


class ImagesLT(LongTailDataModule):
    """Given uint8 ``[N, 1, 4, 4]`` images and labels: the training set; its first 6 images: validation and test."""

    mean = (0.5,)
    std = (0.25,)

    def __init__(self, images: Tensor, labels: Tensor, num_classes: int = 3, **kwargs) -> None:
        super().__init__(**{"batch_size": 4, "augment": False, **kwargs})
        self.images, self.labels = images, labels
        self._set_class_info(labels, num_classes)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is None:
            self.train_dataset = TensorImageDataset(self.images, self.labels)
            self.val_dataset = TensorImageDataset(self.images[:6], self.labels[:6])
            self.test_dataset = self.val_dataset


def _images(n: int = 24, same: bool = False) -> Tensor:
    g = torch.Generator().manual_seed(5)
    if same:
        return torch.randint(0, 256, (1, 1, 4, 4), generator=g, dtype=torch.uint8).expand(n, 1, 4, 4).clone()
    return torch.randint(0, 256, (n, 1, 4, 4), generator=g, dtype=torch.uint8)


LABELS = torch.tensor([0] * 12 + [1] * 8 + [2] * 4)


def _model(dm: LongTailDataModule, **kwargs) -> SelfSupervisedPretraining:
    L.seed_everything(0, verbose=False)
    optimizer = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    return SelfSupervisedPretraining(
        TinyBackbone(16, 4), dm.num_classes, dm.class_counts, optimizer=optimizer, **kwargs
    )


class Record(L.Callback):
    """Per training batch: the images given to training_step (before rotation)."""

    def __init__(self) -> None:
        self.images: dict[int, list[Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.images.setdefault(trainer.global_step, []).append(batch[0].clone())


def _fit(tmp: Path, dm: LongTailDataModule, callbacks=(), ckpt_path=None, max_epochs=MAX_EPOCHS, **kwargs):
    model = _model(dm, **kwargs)
    trainer = quiet_trainer(tmp, list(callbacks), max_epochs=max_epochs, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
    return trainer, model


# ---------------------------------------------------------------------------------------------- rotation by hand
def test_rotation_targets_by_hand_on_a_2x2_image() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).expand(4, 1, 2, 2)
    rotated = rotate_batch(x, torch.tensor([0, 1, 2, 3]))
    # counter-clockwise quarter turns of [[1, 2], [3, 4]]
    assert rotated[0, 0].tolist() == [[1, 2], [3, 4]]
    assert rotated[1, 0].tolist() == [[2, 4], [1, 3]]
    assert rotated[2, 0].tolist() == [[4, 3], [2, 1]]
    assert rotated[3, 0].tolist() == [[3, 1], [4, 2]]
    images, k = all_rotations(x[:1])
    assert k.tolist() == [0, 1, 2, 3]
    assert torch.equal(images, rotated)


def test_rotation_is_a_quarter_turn_permutation_of_the_pixels() -> None:
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    once = rotate_batch(x, torch.ones(2, dtype=torch.long))
    h = x.shape[-1]
    for i in range(h):
        for j in range(h):
            assert torch.equal(once[:, :, i, j], x[:, :, j, h - 1 - i])  # (i, j) <- (j, H-1-i)
    assert torch.equal(rotate_batch(once, torch.tensor([1, 1])), rotate_batch(x, torch.tensor([2, 2])))
    four = x
    for _ in range(4):
        four = rotate_batch(four, torch.ones(2, dtype=torch.long))
    assert torch.equal(four, x)
    for k in range(4):  # the same pixels, moved
        out = rotate_batch(x, torch.full((2,), k))
        assert torch.equal(out.flatten(2).sort(dim=2).values, x.flatten(2).sort(dim=2).values)


def test_reference_rotation_labels_are_a_seeded_balanced_draw() -> None:
    # utils.rotation: the first B of a shuffled [0, 1, 2, 3] * (B // 4 + 1): each k at most B // 4 + 1 times
    labels = reference_rotation_labels(8, step_generator(0, 3, 0))
    pool = torch.tensor([0, 1, 2, 3] * 3)
    assert torch.equal(labels, pool[torch.randperm(12, generator=step_generator(0, 3, 0))][:8])
    assert max(torch.bincount(labels, minlength=4).tolist()) <= 3
    assert torch.bincount(reference_rotation_labels(400, step_generator(1, 0, 0)), minlength=4).min() >= 99
    assert torch.equal(labels, reference_rotation_labels(8, step_generator(0, 3, 0)))
    draws = {tuple(reference_rotation_labels(8, step_generator(0, s, r)).tolist()) for s in range(6) for r in range(2)}
    assert len(draws) > 6  # step and rank change the draw


def test_training_loss_is_cross_entropy_on_the_seeded_rotation_labels() -> None:
    dm = ImagesLT(_images(), LABELS)
    model = _model(dm)
    x = torch.randn(8, 1, 4, 4)
    k = reference_rotation_labels(8, step_generator(0, 0, 0))
    expected = nn.functional.cross_entropy(model.head(model.backbone(rotate_batch(x, k))), k)
    loss, _ = model._rotation(x, step_generator(0, 0, 0))
    assert torch.allclose(loss, expected)
    loss_all, _ = model._rotation(x, None)
    images, k_all = all_rotations(x)
    assert torch.allclose(loss_all, nn.functional.cross_entropy(model(images), k_all))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task": "jigsaw"}, "task must be"),
        ({"rotations": "some"}, "rotations must be"),
        ({"temperature": 0.0}, "temperature must be"),
        ({"projection_dim": 0}, "projection_dim must be"),
        ({"seed": 0.5}, "seed must be"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SelfSupervisedPretraining(TinyBackbone(16, 4), 3, [3, 2, 1], **kwargs)


def test_rotation_needs_square_images() -> None:
    with pytest.raises(ValueError, match="square images"):
        rotate_batch(torch.zeros(2, 1, 4, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\{0, 1, 2, 3\}"):
        rotate_batch(torch.zeros(2, 1, 4, 4), torch.tensor([0, 4]))


# ---------------------------------------------------------------------------------------------- fits
def test_labels_are_never_used(tmp_path: Path) -> None:
    images = _images()
    _, plain = _fit(tmp_path / "a", ImagesLT(images, LABELS))
    shuffled = LABELS[torch.randperm(LABELS.numel(), generator=torch.Generator().manual_seed(1))]
    assert not torch.equal(shuffled, LABELS)
    trainer, other = _fit(tmp_path / "b", ImagesLT(images, shuffled))
    assert_equal_states(plain.state_dict(), other.state_dict())
    assert {"val/loss", "val/acc"} <= set(trainer.callback_metrics)
    assert plain.last_val_results["loss"] == other.last_val_results["loss"]


def test_checkpoint_holds_the_backbone_under_backbone(tmp_path: Path) -> None:
    trainer, model = _fit(tmp_path, ImagesLT(_images(), LABELS), max_epochs=1)
    path = tmp_path / "pretext.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=False)["state_dict"]
    assert {k for k in state if k.startswith("backbone.")} == {"backbone.fc.weight", "backbone.fc.bias"}
    assert torch.equal(state["backbone.fc.weight"], model.backbone.fc.weight)
    assert {k for k in state if k.startswith("head.")} == {"head.weight", "head.bias"}


@pytest.mark.parametrize("rotations", ["random", "all"])
def test_resume_at_an_epoch_boundary_equals_the_uninterrupted_run(tmp_path: Path, rotations: str) -> None:
    dm = functools.partial(ImagesLT, _images(), LABELS)
    _, full = _fit(tmp_path / "full", dm(), rotations=rotations)
    trainer, _ = _fit(tmp_path / "a", dm(), [StopAfter(1)], rotations=rotations)
    ckpt = tmp_path / "stopped.ckpt"
    trainer.save_checkpoint(ckpt)
    _, resumed = _fit(tmp_path / "b", dm(), ckpt_path=str(ckpt), rotations=rotations)
    assert_equal_states(full.state_dict(), resumed.state_dict())


def test_mid_epoch_resume_draws_the_rotations_of_the_uninterrupted_run(tmp_path: Path) -> None:
    # all training images are one image, so the run depends on the rotation draws only (24 images, 6 batches of 4)
    dm = functools.partial(ImagesLT, _images(same=True), LABELS)
    full_record, record = Record(), Record()
    _, full = _fit(tmp_path / "full", dm(), [full_record])
    ckpt = tmp_path / "mid.ckpt"
    _fit(tmp_path / "a", dm(), [SaveMidEpoch(1, ckpt, batch_idx=2)])
    _, resumed = _fit(tmp_path / "b", dm(), [record], ckpt_path=str(ckpt))
    assert min(record.images) == 6 + 3  # resumed at global step 9: the 4th batch of epoch 1
    assert_equal_states(full.state_dict(), resumed.state_dict())


def test_mid_epoch_resume_replays_even_a_draw_from_the_global_rng(tmp_path: Path) -> None:
    """The datamodule re-seeds the global generators at every training batch from (seed, epoch, batch, rank), so a
    subclass drawing its rotations from the global RNG is replayed exactly after a mid-epoch resume too."""

    class GlobalDraw(SelfSupervisedPretraining):
        def training_step(self, batch, batch_idx):
            x = batch[0]
            k = torch.randint(0, 4, (x.shape[0],))
            return nn.functional.cross_entropy(self(rotate_batch(x, k)), k)

    dm = functools.partial(ImagesLT, _images(same=True), LABELS)

    def fit(tmp: Path, callbacks=(), ckpt_path=None):
        L.seed_everything(0, verbose=False)
        model = GlobalDraw(TinyBackbone(16, 4), 3, [12, 8, 4], optimizer=functools.partial(torch.optim.SGD, lr=0.1))
        trainer = quiet_trainer(
            tmp, list(callbacks), max_epochs=MAX_EPOCHS, num_sanity_val_steps=0, limit_val_batches=0
        )
        trainer.fit(model, datamodule=dm(), ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
        return model

    full = fit(tmp_path / "full")
    ckpt = tmp_path / "mid.ckpt"
    fit(tmp_path / "a", [SaveMidEpoch(1, ckpt, batch_idx=2)])
    resumed = fit(tmp_path / "b", ckpt_path=str(ckpt))
    assert_equal_states(full.state_dict(), resumed.state_dict())


# ---------------------------------------------------------------------------------------------- SimCLR
def test_contrastive_accuracy_by_hand() -> None:
    # 2 images x 2 views, view-major: rows 0, 2 are image 0; rows 1, 3 image 1
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    assert contrastive_accuracy(z, 2).item() == 1.0
    swapped = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])  # nearest is the other image
    assert contrastive_accuracy(swapped, 2).item() == 0.0
    with pytest.raises(ValueError, match="views"):
        contrastive_accuracy(z, 3)


def test_simclr_step_is_nt_xent_of_the_normalised_projections(tmp_path: Path) -> None:
    dm = ImagesLT(_images(), LABELS, views=2)
    model = _model(dm, task="simclr", temperature=0.5, projection_dim=8)
    assert isinstance(model.head, nn.Sequential) and model.head[-1].out_features == 8
    x = torch.randn(8, 1, 4, 4)  # 4 images x 2 views
    loss, _ = model._simclr(x)
    z = nn.functional.normalize(model.head(model.backbone(x)), dim=1)
    assert torch.allclose(loss, simclr_loss(z, 2, 0.5))


def test_simclr_fit_uses_two_views_and_logs_the_pretext_metrics(tmp_path: Path) -> None:
    images = _images()
    trainer, model = _fit(tmp_path / "a", ImagesLT(images, LABELS, views=2, augment=True), task="simclr", max_epochs=2)
    assert model.views == 2
    assert {"val/loss", "val/acc", "train/loss"} <= set(trainer.callback_metrics)
    shuffled = LABELS.flip(0)
    _, other = _fit(tmp_path / "b", ImagesLT(images, shuffled, views=2, augment=True), task="simclr", max_epochs=2)
    assert_equal_states(model.state_dict(), other.state_dict())


def test_simclr_without_two_views_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="views >= 2"):
        _fit(tmp_path, ImagesLT(_images(), LABELS), task="simclr", max_epochs=1)
