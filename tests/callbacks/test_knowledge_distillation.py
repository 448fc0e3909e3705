"""``KnowledgeDistillation`` through a real ``lightning.Trainer``: a frozen teacher in eval mode, never saved in the
student's checkpoint, reloaded on resume; and the teacher fitted within the same command from its config."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor

from lt_lightning.callbacks.knowledge_distillation import KnowledgeDistillation, student_data_arguments
from lt_lightning.cli import run as main
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.losses.distillation import DistillationLoss
from lt_lightning.module import LongTailModule
from lt_lightning.output import ModelOutput
from tests.checkpointing.python_built import trusting
from tests.helpers import BNBackbone, SaveMidEpoch, StopAfter, assert_equal_states, quiet_trainer, tiny_lt_data

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*needs weights_only=False to load"),
]


_data = tiny_lt_data


@pytest.fixture(autouse=True)
def _trust_python_built_checkpoints():
    """The checkpoints loaded here come from modules built in Python: their classes are allowed explicitly (the
    package reads checkpoints with weights_only=True and refuses them otherwise)."""
    with trusting(RecordingLoss):
        yield


class RecordingLoss(DistillationLoss):
    """DistillationLoss that keeps the teacher logits it was given (one tensor per step)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seen: list[Tensor] = []

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        if "teacher_logits" in output.extras:
            self.seen.append(output.extras["teacher_logits"].detach().clone())
        return super().forward(output, target)


class Record(L.Callback):
    """The images of every batch and the teacher's mode and grad flags at every step."""

    def __init__(self, distill: KnowledgeDistillation) -> None:
        self.distill = distill
        self.images: list[Tensor] = []
        self.teacher_training: set[bool] = set()
        self.teacher_grad: set[bool] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.images.append(batch[0].detach().clone())
        teacher = self.distill.teacher
        self.teacher_training |= {m.training for m in teacher.modules()}
        self.teacher_grad |= {p.requires_grad for p in teacher.parameters()}


def _teacher(tmp_path: Path, dm: SyntheticLTDataModule | None = None, seed: int = 1) -> Path:
    """A teacher fitted for 2 epochs from Python (its checkpoint pickles its parts: weights_only=False)."""
    dm = dm or _data()
    L.seed_everything(seed, verbose=False)
    model = LongTailModule(BNBackbone(), num_classes=dm.num_classes, class_counts=dm.class_counts)
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    path = tmp_path / f"teacher{seed}.ckpt"
    trainer.save_checkpoint(path)
    return path


def _fit(tmp: Path, callbacks: list, max_epochs: int = 2, ckpt_path: str | None = None, dm=None):
    dm = dm or _data()
    L.seed_everything(0, verbose=False)
    criterion = RecordingLoss(temperature=2.0, alpha=0.5, teacher_power=0.5)
    model = LongTailModule(BNBackbone(), num_classes=dm.num_classes, class_counts=dm.class_counts, criterion=criterion)
    trainer = quiet_trainer(tmp, callbacks, max_epochs=max_epochs, num_sanity_val_steps=0, limit_val_batches=1)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
    return trainer, model


def test_teacher_is_frozen_in_eval_mode_and_gives_its_plain_logits(tmp_path: Path) -> None:
    path = _teacher(tmp_path)
    saved = copy.deepcopy(torch.load(path, weights_only=False)["state_dict"])
    distill = KnowledgeDistillation(teacher_checkpoint=str(path))
    record = Record(distill)
    trainer, model = _fit(tmp_path, [distill, record])
    assert record.teacher_training == {False} and record.teacher_grad == {False}
    # the teacher's weights and BatchNorm statistics are exactly those of its checkpoint after the fit
    teacher_state = distill.teacher.state_dict()
    assert teacher_state.keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(teacher_state[key], value), key
    # the loss got teacher(x).logits of the very batch the student saw
    reference = LongTailModule.load_from_checkpoint(path, weights_only=False).eval()
    assert len(model.criterion.seen) == len(record.images) == 8
    with torch.no_grad():
        for x, seen in zip(record.images, model.criterion.seen, strict=True):
            assert torch.equal(reference(x).logits, seen)
    # the module is left without the teacher; its state dict never had it
    assert "teacher_logits" not in model.train_extras
    student_ckpt = tmp_path / "student.ckpt"
    trainer.save_checkpoint(student_ckpt)
    checkpoint = torch.load(student_ckpt, weights_only=False)
    plain = LongTailModule(BNBackbone(), num_classes=3, class_counts=[16, 8, 4], criterion=DistillationLoss())
    assert checkpoint["state_dict"].keys() == plain.state_dict().keys()
    assert checkpoint["callbacks"]["KnowledgeDistillation"] == {"teacher_checkpoint": str(path)}


@pytest.mark.filterwarnings("ignore:.*resuming with the checkpoint's teacher")
def test_resume_reloads_the_checkpoints_teacher_and_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    path = _teacher(tmp_path / "a", seed=1)
    other = _teacher(tmp_path / "b", seed=2)
    _, full = _fit(tmp_path / "full", [KnowledgeDistillation(teacher_checkpoint=str(path))], max_epochs=3)
    trainer, _ = _fit(tmp_path / "first", [KnowledgeDistillation(teacher_checkpoint=str(path)), StopAfter(1)], 3)
    ckpt = tmp_path / "stopped.ckpt"
    trainer.save_checkpoint(ckpt)
    # the resumed command names another teacher: the checkpoint's own teacher is reloaded, with a warning
    distill = KnowledgeDistillation(teacher_checkpoint=str(other))
    with pytest.warns(UserWarning, match="resuming with the checkpoint's teacher"):
        _, resumed = _fit(tmp_path / "resumed", [distill], max_epochs=3, ckpt_path=str(ckpt))
    assert distill.teacher_path == str(path)
    full_state, resumed_state = full.state_dict(), resumed.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key in full_state:
        assert torch.equal(full_state[key], resumed_state[key]), key


@pytest.mark.filterwarnings("ignore:.*resuming with the checkpoint's teacher")
def test_mid_epoch_resume_distils_from_the_checkpoints_teacher(tmp_path: Path) -> None:
    # the teacher is the saved run's (not the one configured now), and the resumed run ends as the uninterrupted one
    path = _teacher(tmp_path / "a", seed=1)
    other = _teacher(tmp_path / "b", seed=2)
    mid = tmp_path / "mid.ckpt"
    first = [KnowledgeDistillation(teacher_checkpoint=str(path)), SaveMidEpoch(1, mid, 1)]
    _, full = _fit(tmp_path / "first", first, 3)
    distill = KnowledgeDistillation(teacher_checkpoint=str(other))
    record = Record(distill)
    _, resumed = _fit(tmp_path / "resumed", [distill, record], max_epochs=3, ckpt_path=str(mid))
    assert distill.teacher_path == str(path)
    reference = LongTailModule.load_from_checkpoint(path, weights_only=False).eval()
    with torch.no_grad():
        for x, seen in zip(record.images, resumed.criterion.seen, strict=True):
            assert torch.equal(reference(x).logits, seen)
    assert record.teacher_training == {False} and record.teacher_grad == {False}
    assert_equal_states(full.state_dict(), resumed.state_dict())


def test_teacher_of_other_classes_is_refused_naming_both(tmp_path: Path) -> None:
    path = _teacher(tmp_path, dm=_data(imbalance_ratio=2))  # counts [16, 11, 8]
    with pytest.raises(
        ValueError, match=r"counts \[16, 11, 8\], but the student has 3 classes with counts \[16, 8, 4\]"
    ):
        _fit(tmp_path / "s", [KnowledgeDistillation(teacher_checkpoint=str(path))])
    four = _teacher(tmp_path / "four", dm=_data(num_classes=4))
    with pytest.raises(ValueError, match="trained on 4 classes"):
        _fit(tmp_path / "s4", [KnowledgeDistillation(teacher_checkpoint=str(four))])


def test_missing_teacher_checkpoint_and_missing_callback_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="teacher checkpoint .*nope.ckpt' does not exist"):
        _fit(tmp_path, [KnowledgeDistillation(teacher_checkpoint=str(tmp_path / "nope.ckpt"))])
    with pytest.raises(ValueError, match="add the KnowledgeDistillation callback"):
        _fit(tmp_path, [])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of teacher_checkpoint and teacher_config"),
        ({"teacher_checkpoint": "a.ckpt", "teacher_config": "b.yaml"}, "exactly one of"),
        ({"teacher_checkpoint": ""}, "teacher_checkpoint must be a non-empty path"),
        ({"teacher_checkpoint": "a.ckpt", "teacher_args": ["--trainer.max_epochs=2"]}, "need teacher_config"),
        ({"teacher_config": "b.yaml", "teacher_args": [3]}, "teacher_args must be a list of strings"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        KnowledgeDistillation(**kwargs)


def test_student_data_arguments_say_which_data_and_leave_the_recipe() -> None:
    args = student_data_arguments(_data(val_per_class=3, data_seed=5, views=2))
    assert "--data.init_args.val_per_class=3" in args and "--data.init_args.data_seed=5" in args
    assert "--data.init_args.augment=false" in args and "--data.init_args.test_distribution=null" in args
    assert not any(a.split("=")[0].rsplit(".", 1)[1] in {"batch_size", "views", "sampler"} for a in args)


# ---------------------------------------------------------------------------------------------- teacher_config
TINY_DIGITS = """\
seed_everything: 0
trainer:
  max_epochs: 1
  limit_train_batches: 2
  limit_val_batches: 1
  num_sanity_val_steps: 0
  accelerator: cpu
  devices: 1
  enable_model_summary: false
  callbacks:{callbacks}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{save_last: true}}
data:
  class_path: lt_lightning.data.digits.DigitsLTDataModule
  init_args: {{batch_size: 32}}
model:
  class_path: lt_lightning.module.LongTailModule
  init_args:
    backbone:
      class_path: lt_lightning.backbones.resnet_cifar.ResNet20
      init_args: {{in_channels: 1}}
    criterion:{criterion}
"""
DISTILL = """
    - class_path: lt_lightning.callbacks.knowledge_distillation.KnowledgeDistillation
      init_args: {{teacher_config: {teacher}, prestage_dir: {prestages}}}"""
DISTILL_LOSS = """
      class_path: lt_lightning.losses.distillation.DistillationLoss
      init_args: {teacher_power: 0.5}"""
BSCE = """
      class_path: lt_lightning.losses.logit_adjustment.BalancedSoftmaxLoss"""


def test_teacher_config_is_fitted_once_within_the_command_and_reused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    teacher = tmp_path / "teacher.yaml"
    teacher.write_text(TINY_DIGITS.format(callbacks="", criterion=BSCE))
    student = tmp_path / "student.yaml"
    distill = DISTILL.format(teacher=teacher, prestages=tmp_path / "prestages")
    student.write_text(TINY_DIGITS.format(callbacks=distill, criterion=DISTILL_LOSS))
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.logger=false"]

    cli = main(["fit", "-c", str(student), *quiet])
    assert cli.trainer.state.finished
    (callback,) = [c for c in cli.trainer.callbacks if isinstance(c, KnowledgeDistillation)]
    (folder,) = (tmp_path / "prestages").iterdir()
    assert callback.teacher_path == os.fspath(folder / "checkpoints" / "last.ckpt")
    assert (folder / "done").is_file()
    log = (folder / "stage.log").stat().st_mtime_ns
    stage = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)  # a CLI checkpoint
    assert stage["global_step"] == 2
    assert torch.equal(stage["state_dict"]["class_counts"], cli.model.class_counts)

    again = main(
        ["fit", "-c", str(student), *quiet, f"--trainer.default_root_dir={tmp_path / 'again'}"]
    )  # the same command: the finished teacher is reused
    assert again.trainer.state.finished
    assert list((tmp_path / "prestages").iterdir()) == [folder]
    assert (folder / "stage.log").stat().st_mtime_ns == log


def test_share_data_needs_the_same_datamodule_class(tmp_path: Path) -> None:
    teacher = tmp_path / "teacher.yaml"
    teacher.write_text(TINY_DIGITS.format(callbacks="", criterion=BSCE))
    distill = KnowledgeDistillation(teacher_config=str(teacher), prestage_dir=str(tmp_path / "prestages"))
    with pytest.raises(ValueError, match="trains on DigitsLTDataModule but the student on SyntheticLTDataModule"):
        _fit(tmp_path, [distill])
    assert not (tmp_path / "prestages").exists()
