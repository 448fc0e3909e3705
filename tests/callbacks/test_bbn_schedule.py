"""``CumulativeLearning`` (BBN's α schedule) by hand and through a real ``lightning.Trainer``.

The fit tests record, for every training batch, the images, labels and the ``α`` the backbone and the loss hold; the
resume test stops a run after two epochs, resumes it from its checkpoint and requires the remaining epochs (α, the
sampled batches and the final weights) to equal those of a run that never stopped.
"""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor, nn

from lt_lightning.backbones.base import Backbone
from lt_lightning.backbones.bbn import BBNResNetCifar
from lt_lightning.callbacks.bbn_schedule import CumulativeLearning, parabolic_decay
from lt_lightning.data.bilateral_sampler import BilateralSampler
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.losses.bbn import BilateralLoss
from lt_lightning.losses.cross_entropy import CrossEntropyLoss
from lt_lightning.module import LongTailModule
from tests.helpers import StopAfter, quiet_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


BRANCH = 4


def _synthetic(batch_size: int = 2 * BRANCH, sampler=True, **kwargs) -> SyntheticLTDataModule:
    """3 classes, counts [16, 8, 4] (28 images of 3x8x8), no augmentation (so batches are comparable)."""
    factory = functools.partial(BilateralSampler, branch_batch_size=BRANCH) if sampler else None
    args = {"num_classes": 3, "n_max": 16, "imbalance_ratio": 4, "image_size": 8, "val_per_class": 2, "seed": 3}
    return SyntheticLTDataModule(**{**args, "batch_size": batch_size, "augment": False, "sampler": factory, **kwargs})


def _model(dm: SyntheticLTDataModule, backbone: nn.Module | None = None, criterion=None) -> LongTailModule:
    return LongTailModule(
        backbone if backbone is not None else BBNResNetCifar(depth=8, widths=(4, 8, 8)),
        num_classes=dm.num_classes,
        class_counts=dm.class_counts,
        criterion=criterion if criterion is not None else BilateralLoss(),
        optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9),
    )


class Record(L.Callback):
    """Per epoch: the training batches seen and the α of the backbone and the criterion at each batch."""

    def __init__(self) -> None:
        self.batches: dict[int, list[tuple[Tensor, Tensor]]] = {}
        self.alphas: dict[int, set[tuple[float, float]]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        epoch = trainer.current_epoch
        self.batches.setdefault(epoch, []).append((batch[0].detach().clone(), batch[1].detach().clone()))
        self.alphas.setdefault(epoch, set()).add((pl_module.backbone.alpha, pl_module.criterion.alpha))


def _trainer(tmp: Path, callbacks: list, max_epochs: int, validate: bool = False) -> L.Trainer:
    limit_val = None if validate else 0
    return quiet_trainer(tmp, callbacks, max_epochs=max_epochs, num_sanity_val_steps=0, limit_val_batches=limit_val)


def _fit(tmp: Path, max_epochs: int, stop_after: int | None = None, ckpt_path: Path | None = None, **kwargs):
    L.seed_everything(0, verbose=False)
    dm = _synthetic(**kwargs)
    model = _model(dm)
    record = Record()
    callbacks = [CumulativeLearning(), record] + ([StopAfter(stop_after)] if stop_after else [])
    trainer = _trainer(tmp, callbacks, max_epochs)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
    return trainer, model, record


# ---------------------------------------------------------------------------------------------- schedule by hand
def test_parabolic_decay_by_hand() -> None:
    # reference: l = 1 - ((epoch - 1) / div_epoch)^2 with 1-based epochs; here the 0-based epoch e = epoch - 1
    assert [parabolic_decay(e, 4) for e in range(6)] == [1.0, 0.9375, 0.75, 0.4375, 0.0, 0.0]
    assert parabolic_decay(0, 200) == 1.0
    assert parabolic_decay(100, 200) == 0.75
    assert parabolic_decay(199, 200) == pytest.approx(1 - 0.995**2)  # 0.009975, the last epoch of the recipe
    callback = CumulativeLearning(total_epochs=10)
    assert callback.alpha_at(3) == pytest.approx(0.91)
    with pytest.raises(RuntimeError, match="trainer.max_epochs at setup"):
        CumulativeLearning().alpha_at(1)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="total_epochs must be"):
            CumulativeLearning(total_epochs=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="total_epochs must be"):
            parabolic_decay(1, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epoch must be"):
        parabolic_decay(-1, 4)


def test_state_keys_differ_per_configuration() -> None:
    assert CumulativeLearning().state_key != CumulativeLearning(total_epochs=5).state_key
    assert CumulativeLearning(total_epochs=5).state_key == CumulativeLearning(total_epochs=5).state_key


# ---------------------------------------------------------------------------------------------- fit
def test_fit_two_epochs_sets_alpha_and_feeds_both_halves(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    dm = _synthetic()
    model = _model(dm)
    record = Record()
    trainer = _trainer(tmp_path, [CumulativeLearning(), record], max_epochs=2, validate=True)
    trainer.fit(model, datamodule=dm)
    # α(e) = 1 - (e / 2)^2 on both the backbone and the loss at every batch of the epoch
    assert record.alphas == {0: {(1.0, 1.0)}, 1: {(0.75, 0.75)}}
    assert trainer.callback_metrics["bbn/alpha"].item() == 0.75
    assert "val/acc" in trainer.callback_metrics
    # every batch is [instance-balanced half | reversed half] of the sampler's draws of that epoch
    sampler = BilateralSampler(dm.train_labels, seed=dm.seed, branch_batch_size=BRANCH)
    for epoch in (0, 1):
        conventional, reversed_ = sampler.branch_indices(epoch)
        batches = record.batches[epoch]
        assert len(batches) == sampler.num_blocks == 28 // BRANCH
        seen_labels = torch.stack([y for _, y in batches]).view(-1, 2, BRANCH)
        assert torch.equal(seen_labels[:, 0].flatten(), dm.train_labels[conventional])
        assert torch.equal(seen_labels[:, 1].flatten(), dm.train_labels[reversed_])
        seen_images = torch.stack([x for x, _ in batches]).view(-1, 2, BRANCH, 3, 8, 8)
        assert torch.equal(seen_images[:, 1].flatten(0, 1), dm.augmentation(dm.train_dataset.images[reversed_]))


def test_fixed_total_epochs(tmp_path: Path) -> None:
    dm = _synthetic()
    record = Record()
    _trainer(tmp_path, [CumulativeLearning(total_epochs=4), record], max_epochs=2).fit(_model(dm), datamodule=dm)
    assert record.alphas == {0: {(1.0, 1.0)}, 1: {(0.9375, 0.9375)}}


def test_inference_uses_alpha_one_half(tmp_path: Path) -> None:
    """After training (α = 0.75 in the last epoch) predictions use [f_c ‖ f_r] = 2 [0.5 f_c ‖ 0.5 f_r]."""
    dm = _synthetic()
    model = _model(dm)
    _trainer(tmp_path, [CumulativeLearning()], max_epochs=2).fit(model, datamodule=dm)
    assert model.backbone.alpha == 0.75
    model.eval()
    x = dm.augmentation(dm.val_dataset.images.clone())  # type: ignore[union-attr]
    with torch.no_grad():
        logits = model(x).logits
        features = model.backbone.mixed_features(x, x, 0.5)
        assert torch.allclose(logits, model.classifier(features), atol=1e-5)


# ---------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_equals_the_uninterrupted_run(tmp_path: Path, num_workers: int) -> None:
    _, full_model, full = _fit(tmp_path / "full", max_epochs=4, num_workers=num_workers)
    stopped_trainer, _, stopped = _fit(tmp_path / "stop", max_epochs=4, stop_after=2, num_workers=num_workers)
    assert sorted(stopped.batches) == [0, 1]
    ckpt = tmp_path / "epoch1.ckpt"
    stopped_trainer.save_checkpoint(ckpt)
    _, resumed_model, resumed = _fit(tmp_path / "resume", max_epochs=4, ckpt_path=ckpt, num_workers=num_workers)
    assert sorted(resumed.batches) == [2, 3]
    assert full.alphas == {0: {(1.0, 1.0)}, 1: {(0.9375, 0.9375)}, 2: {(0.75, 0.75)}, 3: {(0.4375, 0.4375)}}
    for epoch in (2, 3):
        assert resumed.alphas[epoch] == full.alphas[epoch]
        assert len(resumed.batches[epoch]) == len(full.batches[epoch])
        for (xa, ya), (xb, yb) in zip(resumed.batches[epoch], full.batches[epoch], strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    full_state, resumed_state = full_model.state_dict(), resumed_model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key, value in full_state.items():
        assert torch.allclose(value.float(), resumed_state[key].float(), atol=1e-5), key


def test_resume_with_another_t_max_warns(tmp_path: Path) -> None:
    stopped_trainer, _, _ = _fit(tmp_path / "stop", max_epochs=4, stop_after=1)
    ckpt = tmp_path / "epoch0.ckpt"
    stopped_trainer.save_checkpoint(ckpt)
    with pytest.warns(UserWarning, match="checkpoint was written with"):
        _fit(tmp_path / "resume", max_epochs=2, ckpt_path=ckpt)


# ---------------------------------------------------------------------------------------------- checks at setup
class TinyBackbone(Backbone):
    def __init__(self) -> None:
        super().__init__()
        self.num_features = 4
        self.proj = nn.Linear(3 * 8 * 8, 4)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.proj(x.flatten(1))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: (_synthetic(sampler=False), {}), "training sampler is InstanceBalancedSampler"),
        (lambda: (_synthetic(batch_size=10), {}), r"data.batch_size must be 2 x .* = 8 .* got 10"),
        (lambda: (_synthetic(), {"backbone": TinyBackbone()}), "LongTailModule.backbone` with set_alpha"),
        (lambda: (_synthetic(), {"criterion": CrossEntropyLoss()}), "LongTailModule.criterion` with set_alpha"),
    ],
)
def test_parts_that_do_not_fit_fail_at_setup(tmp_path: Path, make, match: str) -> None:
    dm, parts = make()
    with pytest.raises(ValueError, match=match):
        _trainer(tmp_path, [CumulativeLearning()], max_epochs=1).fit(_model(dm, **parts), datamodule=dm)


def test_needs_a_datamodule_and_a_finite_t_max(tmp_path: Path) -> None:
    dm = _synthetic()
    dm.setup("fit")
    with pytest.raises(ValueError, match="needs a LongTailDataModule"):
        _trainer(tmp_path, [CumulativeLearning()], max_epochs=1).fit(
            _model(dm), train_dataloaders=dm.train_dataloader()
        )
    trainer = L.Trainer(accelerator="cpu", max_epochs=-1, max_steps=2, callbacks=[CumulativeLearning()], logger=False)
    with pytest.raises(ValueError, match="set total_epochs"):
        trainer.fit(_model(dm), datamodule=_synthetic())
