"""``SelfSupervisedInit`` (SSP's stage 2): the backbone from a pretext checkpoint, the classifier fresh.

A pretext model (:class:`~lt_lightning.pretext.SelfSupervisedPretraining`) is fitted for an epoch on synthetic data;
a :class:`~lt_lightning.module.LongTailModule` fit with the callback must start from exactly its backbone weights
and from its own classifier. One test runs the pretext fit from a YAML in a subprocess (the config path) and runs
the main fit twice to see the stage reused; the resume test deletes the pretext checkpoint before resuming.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor

from lt_lightning.backbones.resnet_cifar import ResNetCifar
from lt_lightning.callbacks.self_supervised_init import SelfSupervisedInit, backbone_weights, data_arguments
from lt_lightning.data.digits import DigitsLTDataModule
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.module import LongTailModule
from lt_lightning.pretext import SelfSupervisedPretraining
from tests.checkpointing.python_built import trusting
from tests.helpers import StopAfter, TinyBackbone, assert_equal_states, quiet_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = {"num_classes": 3, "n_max": 16, "imbalance_ratio": 4.0, "image_size": 8, "val_per_class": 2}
DATA |= {"test_per_class": 2, "batch_size": 8}


@pytest.fixture(autouse=True)
def _trust_python_built_checkpoints():
    """The checkpoints loaded here come from modules built in Python: their classes are allowed explicitly (the
    package reads checkpoints with weights_only=True and refuses them otherwise)."""
    with trusting(_sgd):
        yield


def _data(**kwargs) -> SyntheticLTDataModule:
    return SyntheticLTDataModule(**{**DATA, "augment": False, **kwargs})


def _backbone(widths: tuple[int, int, int] = (4, 4, 4)) -> ResNetCifar:
    return ResNetCifar(depth=8, widths=widths)


def _sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


class Snapshot(L.Callback):
    """The backbone's and the classifier's state when training starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.backbone = copy.deepcopy(pl_module.backbone.state_dict())
        self.classifier = copy.deepcopy(pl_module.classifier.state_dict())


def _pretext_checkpoint(tmp: Path, widths=(4, 4, 4), **data) -> tuple[Path, dict[str, Tensor]]:
    L.seed_everything(0, verbose=False)
    dm = _data(**data)
    model = SelfSupervisedPretraining(_backbone(widths), dm.num_classes, dm.class_counts, optimizer=_sgd)
    trainer = quiet_trainer(tmp, max_epochs=1, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    path = tmp / "pretext.ckpt"
    trainer.save_checkpoint(path)
    return path, torch.load(path, weights_only=False)["state_dict"]


def _fit(tmp: Path, callbacks=(), max_epochs: int = 1, ckpt_path: str | None = None, backbone=None):
    L.seed_everything(1, verbose=False)
    dm = _data()
    model = LongTailModule(backbone or _backbone(), dm.num_classes, dm.class_counts, optimizer=_sgd)
    snapshot = Snapshot()
    trainer = quiet_trainer(
        tmp, [*callbacks, snapshot], max_epochs=max_epochs, num_sanity_val_steps=0, limit_val_batches=0
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
    return trainer, model, snapshot


# ---------------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of checkpoint / config"),
        ({"checkpoint": "a.ckpt", "config": "b.yaml"}, "exactly one of checkpoint / config"),
        ({"checkpoint": ""}, "checkpoint must be a non-empty path"),
        ({"checkpoint": "a.ckpt", "args": ["--trainer.max_epochs=1"]}, "need config"),
        ({"config": "b.yaml", "prestage_dir": ""}, "prestage_dir"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SelfSupervisedInit(**kwargs)


# ---------------------------------------------------------------------------------------------- loading
def test_the_backbone_is_the_checkpoints_and_the_classifier_is_not_loaded(tmp_path: Path) -> None:
    path, state = _pretext_checkpoint(tmp_path)
    _, _, plain = _fit(tmp_path / "plain")
    callback = SelfSupervisedInit(checkpoint=str(path))
    _, _, loaded = _fit(tmp_path / "ssp", [callback])
    assert_equal_states(loaded.backbone, backbone_weights(state))  # running BN statistics included
    assert_equal_states(loaded.classifier, plain.classifier)  # the classifier starts as without the callback
    assert callback.loaded_from == path


def test_the_classifier_of_a_long_tail_checkpoint_is_not_loaded_either(tmp_path: Path) -> None:
    trainer, source, _ = _fit(tmp_path / "source", max_epochs=1)
    path = tmp_path / "source.ckpt"
    trainer.save_checkpoint(path)
    _, _, plain = _fit(tmp_path / "plain")
    _, _, loaded = _fit(tmp_path / "ssp", [SelfSupervisedInit(checkpoint=str(path))])
    assert_equal_states(loaded.backbone, source.backbone.state_dict())
    assert_equal_states(loaded.classifier, plain.classifier)
    trained = source.classifier.state_dict()
    assert any(not torch.equal(value, trained[key]) for key, value in loaded.classifier.items())


def test_a_missing_checkpoint_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "pretext.ckpt"
    with pytest.raises(FileNotFoundError, match="nowhere/pretext.ckpt"):
        _fit(tmp_path, [SelfSupervisedInit(checkpoint=str(missing))])


def test_another_backbone_is_refused_with_its_keys(tmp_path: Path) -> None:
    path, _ = _pretext_checkpoint(tmp_path)
    with pytest.raises(ValueError, match=r"missing keys: fc\.weight, fc\.bias; unexpected keys: conv1\.weight"):
        _fit(tmp_path / "tiny", [SelfSupervisedInit(checkpoint=str(path))], backbone=TinyBackbone(192, 4))
    wide, _ = _pretext_checkpoint(tmp_path / "wide", widths=(4, 8, 8))
    for strict in (True, False):
        with pytest.raises(
            ValueError, match=r"other shapes .*layer2\.0\.conv1\.weight: \(8, 4, 3, 3\) vs \(4, 4, 3, 3\)"
        ):
            _fit(tmp_path / "narrow", [SelfSupervisedInit(checkpoint=str(wide), strict=strict)])


def test_strict_false_loads_the_keys_both_have(tmp_path: Path) -> None:
    path, state = _pretext_checkpoint(tmp_path)
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["state_dict"]["backbone.extra.weight"] = torch.zeros(2)
    del checkpoint["state_dict"]["backbone.bn1.bias"]
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match=r"missing keys: bn1\.bias; unexpected keys: extra\.weight"):
        _fit(tmp_path / "strict", [SelfSupervisedInit(checkpoint=str(path))])
    _, _, plain = _fit(tmp_path / "plain")
    _, _, loaded = _fit(tmp_path / "loose", [SelfSupervisedInit(checkpoint=str(path), strict=False)])
    assert torch.equal(loaded.backbone["bn1.bias"], plain.backbone["bn1.bias"])
    assert torch.equal(loaded.backbone["conv1.weight"], state["backbone.conv1.weight"])


def test_other_class_counts_warn_for_a_checkpoint_and_fail_for_a_pretext_stage(tmp_path: Path) -> None:
    path, _ = _pretext_checkpoint(tmp_path, n_max=12)
    with pytest.warns(UserWarning, match=r"class counts \[12, 6, 3\], this fit's are \[16, 8, 4\]"):
        _fit(tmp_path / "a", [SelfSupervisedInit(checkpoint=str(path))])
    dm = _data()
    model = LongTailModule(_backbone(), dm.num_classes, dm.class_counts)
    with pytest.raises(ValueError, match="the pretext config's data must be this fit's training set"):
        SelfSupervisedInit(checkpoint=str(path)).load(model, path, same_training_set=True)


def test_resume_does_not_reload_the_pretext_checkpoint(tmp_path: Path) -> None:
    source, _ = _pretext_checkpoint(tmp_path)
    path = tmp_path / "copy.ckpt"
    path.write_bytes(source.read_bytes())
    _, full, _ = _fit(tmp_path / "full", [SelfSupervisedInit(checkpoint=str(path))], max_epochs=2)
    trainer, _, _ = _fit(tmp_path / "a", [SelfSupervisedInit(checkpoint=str(path)), StopAfter(1)], max_epochs=2)
    stopped = tmp_path / "stopped.ckpt"
    trainer.save_checkpoint(stopped)
    path.unlink()  # a reload would fail now
    callback = SelfSupervisedInit(checkpoint=str(path))
    _, resumed, _ = _fit(tmp_path / "b", [callback], max_epochs=2, ckpt_path=str(stopped))
    assert callback.loaded_from is None
    assert_equal_states(full.state_dict(), resumed.state_dict())


# ---------------------------------------------------------------------------------------------- the pretext stage
PRETEXT_YAML = """\
seed_everything: 0
trainer:
  max_epochs: 1
  accelerator: cpu
  devices: 1
  limit_val_batches: 0
  num_sanity_val_steps: 0
  enable_model_summary: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args:
        save_last: true
data:
  class_path: lt_lightning.data.synthetic.SyntheticLTDataModule
  init_args: {num_classes: 3, n_max: 16, imbalance_ratio: 4.0, image_size: 8, batch_size: 8}
model:
  class_path: lt_lightning.pretext.SelfSupervisedPretraining
  init_args:
    backbone:
      class_path: lt_lightning.backbones.resnet_cifar.ResNetCifar
      init_args: {depth: 8, widths: [4, 4, 4]}
"""


def test_a_pretext_config_runs_once_within_the_fit_and_is_reused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "pretext.yaml"
    config.write_text(PRETEXT_YAML)
    stages = tmp_path / "stages"
    first = SelfSupervisedInit(config=str(config), prestage_dir=str(stages))
    _, _, loaded = _fit(tmp_path / "first", [first])
    folders = [p for p in stages.iterdir() if p.is_dir()]
    assert len(folders) == 1 and (folders[0] / "done").is_file()
    checkpoint = folders[0] / "checkpoints" / "last.ckpt"
    assert first.loaded_from == checkpoint
    state = torch.load(checkpoint, weights_only=False)["state_dict"]
    assert_equal_states(loaded.backbone, backbone_weights(state))
    assert (folders[0] / "stage.log").is_file()
    written = os.stat(checkpoint).st_mtime_ns
    second = SelfSupervisedInit(config=str(config), prestage_dir=str(stages))
    _, _, again = _fit(tmp_path / "second", [second])
    assert os.stat(checkpoint).st_mtime_ns == written  # the finished stage is reused, not fitted again
    assert second.loaded_from == checkpoint
    assert_equal_states(again.backbone, loaded.backbone)


def test_data_arguments_pass_the_main_fits_data_to_a_config_of_the_same_datamodule(tmp_path: Path) -> None:
    config = tmp_path / "pretext.yaml"
    config.write_text(PRETEXT_YAML)
    args = data_arguments(_data(noise_std=10.0, views=2, num_workers=0), config)
    assert "--data.init_args.noise_std=10.0" in args
    assert "--data.init_args.num_classes=3" in args
    assert "--data.init_args.test_distribution=null" in args
    assert not [a for a in args if a.split("=")[0].rsplit(".", 1)[1] in ("views", "batch_size", "augment", "sampler")]
    assert data_arguments(DigitsLTDataModule(), config) == []  # another datamodule class: nothing passed
    assert data_arguments(None, config) == []
