"""``MomentumEncoder``: EMA update by hand, FIFO queue with pointer wrap, a real fit with PaCo (no gradient into the
copy, nothing saved twice), and resume: from an epoch-boundary checkpoint the run equals the uninterrupted one; a
mid-epoch checkpoint restores its step's exact state."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor

from lt_lightning.callbacks.momentum_encoder import MomentumEncoder
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.heads.linear import LinearHead
from lt_lightning.heads.projection import ProjectionHead
from lt_lightning.losses.paco import PaCoLoss
from lt_lightning.module import LongTailModule
from tests.helpers import SaveMidEpoch, StopAfter, TinyBackbone, assert_equal_states, quiet_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

BATCH = 4  # images per batch; 2 views -> 8 rows
QUEUE = 10


def _data() -> SyntheticLTDataModule:
    """3 classes, counts [16, 8, 4] (28 images of 3x8x8 -> 7 batches per epoch), two identical views (no
    augmentation, so a resumed run sees the same batches)."""
    return SyntheticLTDataModule(
        num_classes=3, n_max=16, imbalance_ratio=4, image_size=8, val_per_class=2, batch_size=BATCH, augment=False,
        views=2,
    )  # fmt: skip


def _model(head=None) -> LongTailModule:
    head = head or functools.partial(ProjectionHead, projection_dim=4, batch_norm=True, detach_classifier=False)
    return LongTailModule(
        TinyBackbone(3 * 8 * 8, 6, relu=True),
        num_classes=3,
        class_counts=[16, 8, 4],
        classifier=head,
        criterion=PaCoLoss(alpha=0.5, temperature=0.2),
        optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9),
    )


class Record(L.Callback):
    """The first-view labels of every training batch, in order."""

    def __init__(self) -> None:
        self.labels: list[Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.labels.append(batch[1][:BATCH].clone())


def _fit(tmp: Path, callbacks: list, max_epochs: int = 2, ckpt_path: str | None = None):
    L.seed_everything(0, verbose=False)
    dm, model = _data(), _model()
    trainer = quiet_trainer(tmp, callbacks, max_epochs=max_epochs, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
    return trainer, model


def _assert_same_state(a: MomentumEncoder, b: MomentumEncoder) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["pointer"] == sb["pointer"]
    assert torch.equal(sa["queue"], sb["queue"]) and torch.equal(sa["queue_labels"], sb["queue_labels"])
    assert sa["encoder"].keys() == sb["encoder"].keys()
    for key in sa["encoder"]:
        assert torch.equal(sa["encoder"][key], sb["encoder"][key]), key


# ---------------------------------------------------------------------------------------------- by hand
def test_ema_update_by_hand() -> None:
    torch.manual_seed(0)
    model = _model()
    cb = MomentumEncoder(momentum=0.9, queue_size=QUEUE)
    cb._build(model)
    start = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    enc = cb._encoder_parameters()
    assert all(torch.equal(a, b) for a, b in zip(enc, start, strict=True))  # starts as a copy
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    cb.update(model)  # theta_k = 0.9 theta_k + 0.1 theta_q = theta_0 + 0.1
    for k, p0 in zip(cb._encoder_parameters(), start, strict=True):
        assert torch.allclose(k, p0 + 0.1, atol=1e-6)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    cb.update(model)  # 0.9 (theta_0 + 0.1) + 0.1 (theta_0 + 2) = theta_0 + 0.29
    for k, p0 in zip(cb._encoder_parameters(), start, strict=True):
        assert torch.allclose(k, p0 + 0.29, atol=1e-6)
        assert not k.requires_grad


def test_queue_fifo_and_pointer_wrap() -> None:
    cb = MomentumEncoder(queue_size=5)
    cb._build(_model())
    assert cb.queue.shape == (5, 4) and cb.queue_labels.tolist() == [-1] * 5
    keys = torch.arange(16.0).repeat_interleave(4).view(16, 4)  # row r holds r
    cb.enqueue(keys[0:3], torch.tensor([0, 1, 2]))
    assert cb.pointer == 3 and cb.queue_labels.tolist() == [0, 1, 2, -1, -1]
    cb.enqueue(keys[3:6], torch.tensor([3, 4, 5]))  # wraps: 3, 4 at slots 3, 4; 5 at slot 0
    assert cb.pointer == 1 and cb.queue_labels.tolist() == [5, 1, 2, 3, 4]
    assert cb.queue[:, 0].tolist() == [5.0, 1.0, 2.0, 3.0, 4.0]
    cb.enqueue(keys[6:13], torch.arange(6, 13))  # 7 > K keys: the newest 5 where writing all 7 in turn leaves them
    assert cb.pointer == 3 and cb.queue_labels.tolist() == [10, 11, 12, 8, 9]
    assert cb.queue[:, 0].tolist() == [10.0, 11.0, 12.0, 8.0, 9.0]


def test_bad_arguments_and_state() -> None:
    for kwargs in ({"momentum": 1.5}, {"momentum": -0.1}, {"queue_size": -1}, {"views": 0}):
        with pytest.raises(ValueError):
            MomentumEncoder(**kwargs)
    cb = MomentumEncoder(queue_size=QUEUE)
    cb._build(_model())
    state = cb.state_dict()
    with pytest.raises(ValueError, match="queue_size"):
        MomentumEncoder(queue_size=QUEUE + 1).load_state_dict(state)


def test_a_head_without_projection_is_refused(tmp_path: Path) -> None:
    trainer = quiet_trainer(tmp_path, [MomentumEncoder()], max_steps=1)
    with pytest.raises(ValueError, match="ProjectionHead"):
        trainer.fit(_model(head=LinearHead), datamodule=_data())


# ---------------------------------------------------------------------------------------------- in a fit
def test_fit_fills_the_queue_and_keeps_the_copy_out_of_the_module(tmp_path: Path) -> None:
    cb, record = MomentumEncoder(momentum=0.99, queue_size=QUEUE), Record()
    trainer, model = _fit(tmp_path, [cb, record], max_epochs=1)
    # the queue holds the first-view labels of the last batches, slot = write index mod K
    labels = torch.cat(record.labels)
    written = labels.shape[0]
    expected = [int(labels[max(w for w in range(written) if w % QUEUE == slot)]) for slot in range(QUEUE)]
    assert cb.queue_labels.tolist() == expected and cb.pointer == written % QUEUE
    assert torch.allclose(cb.queue.norm(dim=1), torch.ones(QUEUE))
    # no gradient into the copy; the copy has moved away from its start and from the online weights
    enc = cb._encoder_parameters()
    assert all(not p.requires_grad and p.grad is None for p in enc)
    online = list(model.backbone.parameters()) + list(model.classifier.parameters())
    assert any(not torch.equal(k, q) for k, q in zip(enc, online, strict=True))
    # train_extras cleared after the fit; the copy is not a sub-module, so not in the module's state dict
    assert model.train_extras == {}
    assert set(model.state_dict()) == set(_model().state_dict())
    ckpt = tmp_path / "end.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=False)
    assert set(saved["state_dict"]) == set(model.state_dict())  # saved once: in the callback state
    (state,) = [v for k, v in saved["callbacks"].items() if "MomentumEncoder" in k]
    assert set(state["encoder"]) == {k for k in model.state_dict() if k.split(".")[0] in ("backbone", "classifier")}


class Snapshot(L.Callback):
    """The encoder's state right after batch ``batch_idx`` of epoch 0 (after its enqueue), and at train start."""

    def __init__(self, cb: MomentumEncoder, batch_idx: int | None = None) -> None:
        self.cb, self.batch_idx = cb, batch_idx
        self.state: dict | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if self.batch_idx is None:
            self.state = self.cb.state_dict()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 0 and batch_idx == self.batch_idx:
            self.state = self.cb.state_dict()


def test_mid_epoch_checkpoint_restores_the_state_of_its_step(tmp_path: Path) -> None:
    # the resumed fit starts from the exact encoder, queue and pointer of the saved step, and (the train loader
    # skipping the trained batches) ends as the uninterrupted run did
    ckpt = tmp_path / "mid.ckpt"
    full_cb = MomentumEncoder(momentum=0.9, queue_size=QUEUE)
    at_save = Snapshot(full_cb, batch_idx=2)
    _, full_model = _fit(tmp_path / "full", [full_cb, at_save, SaveMidEpoch(0, ckpt, batch_idx=2)])
    resumed_cb = MomentumEncoder(momentum=0.9, queue_size=QUEUE)
    at_start = Snapshot(resumed_cb)
    _, resumed_model = _fit(tmp_path / "b", [resumed_cb, at_start], ckpt_path=str(ckpt))
    _assert_same_state(full_cb, resumed_cb)
    assert_equal_states(full_model.state_dict(), resumed_model.state_dict())
    assert at_save.state is not None and at_start.state is not None
    assert at_save.state["pointer"] == 3 * BATCH % QUEUE
    a, b = MomentumEncoder(queue_size=QUEUE), MomentumEncoder(queue_size=QUEUE)
    for cb, state in ((a, at_save.state), (b, at_start.state)):
        cb._build(_model())
        cb.load_state_dict(state)
    _assert_same_state(a, b)


def test_resume_at_an_epoch_boundary_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    full_cb = MomentumEncoder(momentum=0.9, queue_size=QUEUE)
    _, full = _fit(tmp_path / "full", [full_cb])
    trainer, _ = _fit(tmp_path / "a", [MomentumEncoder(momentum=0.9, queue_size=QUEUE), StopAfter(1)])
    ckpt = tmp_path / "stopped.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed_cb = MomentumEncoder(momentum=0.9, queue_size=QUEUE)
    _, resumed = _fit(tmp_path / "b", [resumed_cb], ckpt_path=str(ckpt))
    _assert_same_state(full_cb, resumed_cb)
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
