"""MiSLAS's stage 2 through ``ClassifierRetraining`` (``lws_finetune``, ``shift_bn``, ``classifier_lr_factor``,
label-aware smoothing) after a mixup stage 1, in one real ``lightning.Trainer`` fit on tiny data.

Shift learning on BatchNorm: the backbone's weights -- BatchNorm's affine parameters included -- stay bit-identical
while its running statistics move. Resume tests stop before, at and inside the stage and require the final state
(running statistics included) to equal the run that never stopped.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor

from lt_lightning.callbacks.batch_mixing import BatchMixing
from lt_lightning.callbacks.classifier_retraining import ClassifierRetraining
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.heads.lws import LWSHead
from lt_lightning.losses.label_aware_smoothing import LabelAwareSmoothingLoss
from lt_lightning.module import LongTailModule
from tests.checkpointing.python_built import trusting
from tests.helpers import BNBackbone, StopAfter, assert_equal_states, quiet_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_EPOCHS = 4  # stage 1 (mixup): epochs 0, 1; stage 2 (epochs=2): epochs 2, 3
BN_STATS = ("backbone.bn.running_mean", "backbone.bn.running_var", "backbone.bn.num_batches_tracked")


@pytest.fixture(autouse=True)
def _trust_python_built_checkpoints():
    """The checkpoints loaded here come from modules built in Python: their classes are allowed explicitly (the
    package reads checkpoints with weights_only=True and refuses them otherwise)."""
    with trusting():
        yield


class Record(L.Callback):
    def __init__(self) -> None:
        self.states: dict[int, dict[str, Tensor]] = {}
        self.first_classifier: dict[int, dict[str, Tensor]] = {}
        self.modes: dict[int, tuple[bool, bool]] = {}
        self.lrs: dict[int, list[float]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        epoch = trainer.current_epoch
        if batch_idx == 0:
            self.first_classifier[epoch] = copy.deepcopy(pl_module.classifier.state_dict())
            self.lrs[epoch] = [g["lr"] for g in trainer.optimizers[0].param_groups]
        self.modes[epoch] = (pl_module.backbone.training, pl_module.backbone.bn.training)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.states[trainer.current_epoch] = copy.deepcopy(pl_module.state_dict())


def _stage(shift_bn: bool = True, factor: float = 0.5, **kwargs) -> ClassifierRetraining:
    las = LabelAwareSmoothingLoss(smooth_head=0.3, smooth_tail=0.0)
    return ClassifierRetraining(
        "lws_finetune", epochs=2, shift_bn=shift_bn, classifier_lr_factor=factor, criterion=las, **kwargs
    )


def _callbacks(**kwargs) -> list[L.Callback]:
    return [BatchMixing("mixup", stop_epoch=2, seed=1), _stage(**kwargs)]


def _fit(
    callbacks: list[L.Callback], tmp: Path, max_epochs: int = MAX_EPOCHS, ckpt_path: str | None = None
) -> tuple[L.Trainer, LongTailModule, Record]:
    dm = SyntheticLTDataModule(
        num_classes=3, n_max=16, imbalance_ratio=4, image_size=2, batch_size=8, seed=3, augment=False
    )
    L.seed_everything(0, verbose=False)
    model = LongTailModule(BNBackbone(), num_classes=3, class_counts=dm.class_counts)
    record = Record()
    trainer = quiet_trainer(
        tmp, callbacks=[*callbacks, record], max_epochs=max_epochs, num_sanity_val_steps=0, limit_val_batches=1
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
    return trainer, model, record


def test_shift_bn_moves_running_statistics_but_no_weight(tmp_path: Path) -> None:
    _, model, rec = _fit(_callbacks(), tmp_path)
    stage1, final = rec.states[1], model.state_dict()
    for key in ("backbone.proj.weight", "backbone.proj.bias", "backbone.bn.weight", "backbone.bn.bias"):
        assert torch.equal(stage1[key], final[key]), key
    for key in BN_STATS:
        assert not torch.equal(stage1[key], final[key]), key
    assert final["backbone.bn.num_batches_tracked"] == stage1["backbone.bn.num_batches_tracked"] + 8  # 2 epochs x 4
    assert all(not p.requires_grad for p in model.backbone.parameters())
    # the backbone is in eval mode except its BatchNorm layers
    assert rec.modes == {0: (True, True), 1: (True, True), 2: (False, True), 3: (False, True)}


def test_without_shift_bn_the_backbone_is_bit_identical(tmp_path: Path) -> None:
    _, model, rec = _fit(_callbacks(shift_bn=False), tmp_path)
    backbone = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    assert_equal_states({k: v for k, v in rec.states[1].items() if k.startswith("backbone.")}, backbone)
    assert rec.modes[2] == (False, False)


def test_lws_finetune_keeps_the_stage1_classifier_and_learns_scales_and_weights(tmp_path: Path) -> None:
    trainer, model, rec = _fit(_callbacks(), tmp_path)
    assert isinstance(model.classifier, LWSHead)
    stage1 = rec.states[1]
    # not re-initialised: the stage starts from stage 1's classifier with every scale 1
    assert torch.equal(rec.first_classifier[2]["base.fc.weight"], stage1["classifier.base.fc.weight"])
    assert torch.equal(rec.first_classifier[2]["scales"], torch.ones(3))
    # both the classifier and the scales are trained
    final = model.state_dict()
    assert not torch.equal(final["classifier.base.fc.weight"], stage1["classifier.base.fc.weight"])
    assert not torch.equal(final["classifier.scales"], torch.ones(3))
    # two parameter groups: the classifier at factor x lr, the scales at lr (cosine over the 2 stage epochs)
    assert rec.lrs[1] == pytest.approx([0.1])
    assert rec.lrs[2] == pytest.approx([0.05, 0.1])
    assert rec.lrs[3] == pytest.approx([0.025, 0.05])
    # the stage's loss is label-aware smoothing, told the class counts [16, 8, 4]
    assert isinstance(model.training_criterion, LabelAwareSmoothingLoss)
    assert model.training_criterion.epsilons.tolist() == pytest.approx([0.3, 0.15, 0.0])
    assert model.train_batch_transform is None


@pytest.mark.parametrize("stop_after", [1, 2, 3])  # in stage 1, at the switch boundary, inside the stage
def test_resume_across_the_switch_equals_the_uninterrupted_run(tmp_path: Path, stop_after: int) -> None:
    _, full, _ = _fit(_callbacks(), tmp_path / "full")
    trainer, _, _ = _fit([*_callbacks(), StopAfter(stop_after)], tmp_path / "a")
    ckpt = tmp_path / "stopped.ckpt"
    trainer.save_checkpoint(ckpt)
    _, resumed, rec = _fit(_callbacks(), tmp_path / "b", ckpt_path=str(ckpt))
    assert_equal_states(full.state_dict(), resumed.state_dict())
    if stop_after >= 2:
        assert rec.lrs[stop_after] == pytest.approx([0.05, 0.1] if stop_after == 2 else [0.025, 0.05])


def test_init_from_keeps_the_loaded_classifier(tmp_path: Path) -> None:
    trainer, stage1_model, _ = _fit([BatchMixing("mixup")], tmp_path / "stage1", max_epochs=2)
    path = tmp_path / "stage1.ckpt"
    trainer.save_checkpoint(path)
    stage1 = copy.deepcopy(stage1_model.state_dict())
    _, model, rec = _fit([_stage(init_from=str(path))], tmp_path / "stage2", max_epochs=2)
    assert torch.equal(rec.first_classifier[0]["base.fc.weight"], stage1["classifier.fc.weight"])
    assert torch.equal(model.backbone.proj.weight, stage1["backbone.proj.weight"])
    assert not torch.equal(model.backbone.bn.running_mean, stage1["backbone.bn.running_mean"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "lws", "classifier_lr_factor": 0.5}, "keeps the classifier frozen"),
        ({"classifier_lr_factor": 0.0}, "classifier_lr_factor must be"),
        ({"shift_bn": 1}, "shift_bn must be a bool"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        functools.partial(ClassifierRetraining, **kwargs)()
