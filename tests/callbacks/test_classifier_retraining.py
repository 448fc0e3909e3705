"""``ClassifierRetraining`` (cRT / LWS, Kang et al. 2020) through a real ``lightning.Trainer`` on tiny data.

The backbone has a BatchNorm layer, so "frozen in eval mode" is checked on running statistics as well as weights:
both must be bit-identical after the stage. Resume tests stop a run at epoch boundaries before and after the switch
and require the final weights of the resumed run to equal the run that never stopped.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor, nn

from lt_lightning.callbacks.classifier_retraining import ClassifierRetraining
from lt_lightning.data.resampling import ClassAwareSampler, ClassBalancedSampler
from lt_lightning.data.samplers import InstanceBalancedSampler
from lt_lightning.data.staged import StagedSampler
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.heads.lws import LWSHead
from lt_lightning.module import LongTailModule
from tests.checkpointing.python_built import trusting
from tests.helpers import BNBackbone, SaveMidEpoch, StopAfter, assert_equal_states, tiny_lt_data

MAX_EPOCHS = 4  # stage 1: epochs 0, 1; stage 2 (epochs=2): epochs 2, 3


_data = tiny_lt_data


@pytest.fixture(autouse=True)
def _trust_python_built_checkpoints():
    """The checkpoints loaded here come from modules built in Python: their classes are allowed explicitly (the
    package reads checkpoints with weights_only=True and refuses them otherwise)."""
    with trusting():
        yield


class Record(L.Callback):
    """Snapshots after every epoch, the images of every batch, the LR and the optimizer's parameter count."""

    def __init__(self) -> None:
        self.states: dict[int, dict[str, Tensor]] = {}
        self.images: dict[int, list[Tensor]] = {}
        self.lrs: dict[int, float] = {}
        self.optimized: dict[int, int] = {}
        self.first_batch_classifier: dict[int, dict[str, Tensor]] = {}
        self.backbone_training: dict[int, bool] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        epoch = trainer.current_epoch
        self.images.setdefault(epoch, []).append(batch[0].detach().clone())
        if batch_idx == 0:
            self.lrs[epoch] = trainer.optimizers[0].param_groups[0]["lr"]
            self.optimized[epoch] = sum(p.numel() for g in trainer.optimizers[0].param_groups for p in g["params"])
            self.first_batch_classifier[epoch] = copy.deepcopy(pl_module.classifier.state_dict())
        self.backbone_training[epoch] = pl_module.backbone.training

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.states[trainer.current_epoch] = copy.deepcopy(pl_module.state_dict())


def _module(dm: SyntheticLTDataModule) -> LongTailModule:
    L.seed_everything(0, verbose=False)
    return LongTailModule(BNBackbone(), num_classes=dm.num_classes, class_counts=dm.class_counts)


def _fit(
    callbacks: list[L.Callback],
    tmp: Path,
    max_epochs: int = MAX_EPOCHS,
    ckpt_path: str | None = None,
    dm: SyntheticLTDataModule | None = None,
    validate: bool = True,
) -> tuple[L.Trainer, LongTailModule, Record]:
    dm = dm or _data()
    model = _module(dm)
    record = Record()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        callbacks=[*callbacks, record],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1 if validate else 0,
        default_root_dir=tmp,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
    return trainer, model, record


def _backbone_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in state.items() if k.startswith("backbone.")}


# ---------------------------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "tau"}, "method must be"),
        ({"epochs": 0}, "epochs must be"),
        ({"epochs": 2.5}, "epochs must be"),
        ({"start_epoch": -1}, "start_epoch"),
        ({"start_epoch": 1.5}, "start_epoch"),
        ({"start_epoch": 2, "init_from": "stage1.ckpt"}, "whole fit is the stage"),
        ({"init_from": ""}, "init_from must be"),
        ({"seed": 0.5}, "seed must be"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClassifierRetraining(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 4}, "leaves no stage-1 epoch"),  # stage as long as the fit
        ({"epochs": 9}, "leaves no stage-1 epoch"),  # stage longer than the fit
        ({"start_epoch": 4}, r"must be in \[1, max_epochs=4\)"),  # stage epoch beyond max_epochs
        ({"start_epoch": 0}, r"must be in \[1, max_epochs=4\)"),
        ({"epochs": 2, "sampler": functools.partial(ClassAwareSampler, num_samples=100)}, "as many indices per epoch"),
    ],
)
def test_a_stage_that_cannot_run_is_a_clear_error_at_fit(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _fit([ClassifierRetraining(**kwargs)], tmp_path)


def test_staged_sampler_draws_the_inner_samplers_orders() -> None:
    labels = _data().train_labels
    staged = StagedSampler(labels, seed=5, switch_epoch=2)
    for epoch in range(4):
        inner = InstanceBalancedSampler if epoch < 2 else ClassBalancedSampler
        assert torch.equal(staged.global_indices(epoch), inner(labels, seed=5).global_indices(epoch))
    with pytest.raises(ValueError, match="switch_epoch must be"):
        StagedSampler(labels, switch_epoch=-1)


# ---------------------------------------------------------------------------------------------- cRT in one fit
def test_crt_freezes_the_backbone_bit_identically_and_retrains_a_fresh_classifier(tmp_path: Path) -> None:
    dm = _data()
    trainer, model, rec = _fit([ClassifierRetraining("crt", epochs=2, seed=7)], tmp_path, dm=dm)
    # the backbone (weights AND BatchNorm running statistics) is exactly what stage 1 left, despite validation
    assert_equal_states(_backbone_state(rec.states[1]), _backbone_state(model.state_dict()))
    assert not model.backbone.training and rec.backbone_training == {0: True, 1: True, 2: False, 3: False}
    assert all(not p.requires_grad for p in model.backbone.parameters())
    # the classifier was re-initialised from the seed at the switch, then trained
    torch.manual_seed(7)
    fresh = nn.Linear(4, 3)
    assert torch.equal(rec.first_batch_classifier[2]["fc.weight"], fresh.weight.detach())
    assert torch.equal(rec.first_batch_classifier[2]["fc.bias"], fresh.bias.detach())
    assert not torch.equal(model.classifier.fc.weight.detach(), fresh.weight.detach())
    # a fresh optimizer over the classifier only, with a cosine schedule over the 2 stage epochs
    n_all = sum(p.numel() for p in model.parameters())
    assert rec.optimized[1] == n_all and rec.optimized[2] == rec.optimized[3] == 3 * 4 + 3
    assert rec.lrs == pytest.approx({0: 0.1, 1: 0.1, 2: 0.1, 3: 0.05})
    # sampling: instance-balanced in stage 1, class-balanced in stage 2
    for epoch in range(MAX_EPOCHS):
        inner = InstanceBalancedSampler if epoch < 2 else ClassBalancedSampler
        order = inner(dm.train_labels, seed=dm.seed).global_indices(epoch)
        assert torch.equal(torch.cat(rec.images[epoch]), dm.augmentation(dm.train_dataset.images[order]))
    assert trainer.callback_metrics["classifier_retraining/stage"] == 2.0
    assert dm.sampler is None  # the datamodule is left as it was given


def test_stage_one_is_the_run_without_the_callback(tmp_path: Path) -> None:
    _, _, plain = _fit([], tmp_path / "plain", max_epochs=2)
    _, _, staged = _fit([ClassifierRetraining("crt", epochs=2)], tmp_path / "staged")
    for epoch in (0, 1):
        assert_equal_states(plain.states[epoch], staged.states[epoch])


# ---------------------------------------------------------------------------------------------- LWS in one fit
def test_lws_learns_only_the_scales(tmp_path: Path) -> None:
    _, model, rec = _fit([ClassifierRetraining("lws", epochs=2)], tmp_path)
    assert isinstance(model.classifier, LWSHead)
    final = model.state_dict()
    assert_equal_states(_backbone_state(rec.states[1]), _backbone_state(final))
    for key in ("classifier.base.fc.weight", "classifier.base.fc.bias"):
        assert torch.equal(rec.states[1][key], final[key])
    assert torch.equal(rec.states[1]["classifier.scales"], torch.ones(3))  # untouched by stage 1
    assert not torch.equal(final["classifier.scales"], torch.ones(3))
    assert rec.optimized[2] == 3


def test_lws_checkpoint_loads_into_a_plain_module(tmp_path: Path) -> None:
    trainer, model, _ = _fit([ClassifierRetraining("lws", epochs=2)], tmp_path)
    path = tmp_path / "lws.ckpt"
    trainer.save_checkpoint(path)
    loaded = LongTailModule.load_from_checkpoint(path, weights_only=False)
    assert isinstance(loaded.classifier, LWSHead)
    x = torch.randn(5, 3, 2, 2)
    model.eval(), loaded.eval()
    assert torch.equal(model(x).logits, loaded(x).logits)


# ---------------------------------------------------------------------------------------------- init_from
def _stage1_checkpoint(tmp_path: Path) -> tuple[Path, dict[str, Tensor]]:
    trainer, model, _ = _fit([], tmp_path / "stage1", max_epochs=2)
    path = tmp_path / "stage1.ckpt"
    trainer.save_checkpoint(path)
    return path, copy.deepcopy(model.state_dict())


@pytest.mark.parametrize("method", ["crt", "lws"])
def test_init_from_a_stage1_checkpoint(tmp_path: Path, method: str) -> None:
    path, stage1 = _stage1_checkpoint(tmp_path)
    _, model, rec = _fit([ClassifierRetraining(method, init_from=str(path))], tmp_path / "stage2", max_epochs=2)
    assert_equal_states(_backbone_state(stage1), _backbone_state(model.state_dict()))
    assert rec.backbone_training == {0: False, 1: False}
    if method == "lws":
        assert torch.equal(model.classifier.base.fc.weight, stage1["classifier.fc.weight"])
        assert rec.optimized[0] == 3
    else:
        assert rec.optimized[0] == 15
        assert not torch.equal(model.classifier.fc.weight, stage1["classifier.fc.weight"])


def test_init_from_a_checkpoint_of_other_classes_is_refused(tmp_path: Path) -> None:
    path, _ = _stage1_checkpoint(tmp_path)
    other = _data(imbalance_ratio=2)  # counts [16, 11, 8]
    with pytest.raises(ValueError, match=r"trained on 3 classes with counts \[16, 8, 4\]"):
        _fit([ClassifierRetraining("crt", init_from=str(path))], tmp_path / "other", max_epochs=2, dm=other)
    four = _data(num_classes=4)
    with pytest.raises(ValueError, match="trained on 3 classes"):
        _fit([ClassifierRetraining("crt", init_from=str(path))], tmp_path / "four", max_epochs=2, dm=four)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _fit([ClassifierRetraining("crt", init_from=str(tmp_path / "nope.ckpt"))], tmp_path / "x", max_epochs=2)


# ---------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("method", ["crt", "lws"])
@pytest.mark.parametrize("stop_after", [1, 2, 3])  # in stage 1, at the switch boundary, inside the stage
def test_resume_across_the_switch_equals_the_uninterrupted_run(tmp_path: Path, method: str, stop_after: int) -> None:
    _, full, full_rec = _fit([ClassifierRetraining(method, epochs=2)], tmp_path / "full", validate=False)
    trainer, _, _ = _fit([ClassifierRetraining(method, epochs=2), StopAfter(stop_after)], tmp_path / "a")
    ckpt = tmp_path / "stopped.ckpt"
    trainer.save_checkpoint(ckpt)
    _, resumed, rec = _fit([ClassifierRetraining(method, epochs=2)], tmp_path / "b", ckpt_path=str(ckpt))
    assert_equal_states(full.state_dict(), resumed.state_dict())
    for epoch in range(stop_after, MAX_EPOCHS):
        assert torch.equal(torch.cat(full_rec.images[epoch]), torch.cat(rec.images[epoch]))
        assert rec.lrs[epoch] == pytest.approx(full_rec.lrs[epoch])


def test_mid_stage_checkpoint_resumes_into_the_stage(tmp_path: Path) -> None:
    ckpt = tmp_path / "mid.ckpt"
    _fit([ClassifierRetraining("crt", epochs=2), SaveMidEpoch(3, ckpt, batch_idx=1)], tmp_path / "a")
    saved = torch.load(ckpt, weights_only=False)
    assert len(saved["optimizer_states"][0]["param_groups"][0]["params"]) == 2  # the classifier's weight and bias
    _, model, rec = _fit([ClassifierRetraining("crt", epochs=2)], tmp_path / "b", ckpt_path=str(ckpt))
    assert not model.backbone.training and all(not p.requires_grad for p in model.backbone.parameters())
    assert rec.backbone_training == {3: False}
    assert_equal_states(
        _backbone_state(saved["state_dict"]), {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    )


def test_in_fit_stage_under_plain_ddp_asks_for_find_unused_parameters() -> None:
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    with pytest.raises(ValueError, match="ddp_find_unused_parameters_true"):
        ClassifierRetraining()._check_strategy(trainer)
    ClassifierRetraining(init_from="stage1.ckpt")._check_strategy(trainer)  # frozen before DDP wraps: plain ddp
    ClassifierRetraining()._check_strategy(
        L.Trainer(accelerator="cpu", devices=2, strategy="ddp_find_unused_parameters_true", logger=False)
    )


@pytest.mark.parametrize("method", ["crt", "lws"])
def test_resume_of_a_stage2_fit_from_init_from(tmp_path: Path, method: str) -> None:
    path, _ = _stage1_checkpoint(tmp_path)
    callback = functools.partial(ClassifierRetraining, method, init_from=str(path))
    _, full, full_rec = _fit([callback()], tmp_path / "full", max_epochs=3, validate=False)
    trainer, _, _ = _fit([callback(), StopAfter(1)], tmp_path / "a", max_epochs=3)
    ckpt = tmp_path / "stopped.ckpt"
    trainer.save_checkpoint(ckpt)
    _, resumed, rec = _fit([callback()], tmp_path / "b", max_epochs=3, ckpt_path=str(ckpt))
    assert_equal_states(full.state_dict(), resumed.state_dict())
    assert rec.lrs[2] == pytest.approx(full_rec.lrs[2])


def test_init_from_a_checkpoint_written_by_an_lws_stage(tmp_path: Path) -> None:
    trainer, first, _ = _fit([ClassifierRetraining("lws", epochs=2)], tmp_path / "a")
    path = tmp_path / "lws.ckpt"
    trainer.save_checkpoint(path)
    _, second, _ = _fit([ClassifierRetraining("lws", init_from=str(path))], tmp_path / "b", max_epochs=1)
    assert torch.equal(second.classifier.base.fc.weight, first.classifier.base.fc.weight)
    assert_equal_states(_backbone_state(first.state_dict()), _backbone_state(second.state_dict()))


# ---------------------------------------------------------------------------------------------- backbone_mode
BN_STATS = ("backbone.bn.running_mean", "backbone.bn.running_var", "backbone.bn.num_batches_tracked")


def _only_bn_training(model: LongTailModule) -> bool:
    return model.backbone.bn.training and not model.backbone.training


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backbone_mode": "frozen"}, "backbone_mode must be"),
        ({"shift_bn": True, "backbone_mode": "eval"}, "shift_bn=True"),
    ],
)
def test_bad_backbone_modes_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClassifierRetraining(**kwargs)


def test_backbone_mode_resolves_from_shift_bn() -> None:
    assert ClassifierRetraining().backbone_mode == "eval"
    assert ClassifierRetraining(shift_bn=True).backbone_mode == "train"
    assert ClassifierRetraining(shift_bn=True, backbone_mode="train").backbone_mode == "train"
    assert ClassifierRetraining(backbone_mode="train").backbone_mode == "train"


@pytest.mark.parametrize("method", ["crt", "lws"])
def test_backbone_mode_train_moves_the_batchnorm_statistics_and_no_weight(tmp_path: Path, method: str) -> None:
    """The reference cRT / LWS (classifier-balancing ``run_networks.py``: ``model.train()``, backbone parameters
    frozen): BatchNorm normalises with the stage's batch statistics and its running statistics follow them."""
    _, model, rec = _fit([ClassifierRetraining(method, epochs=2, backbone_mode="train")], tmp_path, validate=False)
    stage1, final = rec.states[1], model.state_dict()
    for key in ("backbone.proj.weight", "backbone.proj.bias", "backbone.bn.weight", "backbone.bn.bias"):
        assert torch.equal(stage1[key], final[key]), key
    for key in BN_STATS[:2]:
        assert not torch.equal(stage1[key], final[key]), key
    batches = len(rec.images[2]) + len(rec.images[3])
    assert final[BN_STATS[2]] == stage1[BN_STATS[2]] + batches
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert rec.backbone_training == {0: True, 1: True, 2: False, 3: False}  # the module eval, its BatchNorm train
    assert model.backbone.bn.training
    # the same run as MiSLAS's shift_bn (one mechanism, two names)
    _, shifted, _ = _fit([ClassifierRetraining(method, epochs=2, shift_bn=True)], tmp_path / "s", validate=False)
    assert_equal_states(final, shifted.state_dict())


@pytest.mark.parametrize("stop_after", [2, 3])  # at the switch boundary, inside the stage
def test_backbone_mode_train_resumes_exactly(tmp_path: Path, stop_after: int) -> None:
    callback = functools.partial(ClassifierRetraining, "crt", epochs=2, backbone_mode="train")
    _, full, _ = _fit([callback()], tmp_path / "full")
    trainer, _, _ = _fit([callback(), StopAfter(stop_after)], tmp_path / "a")
    ckpt = tmp_path / "stopped.ckpt"
    trainer.save_checkpoint(ckpt)
    _, resumed, rec = _fit([callback()], tmp_path / "b", ckpt_path=str(ckpt))
    assert_equal_states(full.state_dict(), resumed.state_dict())
    assert _only_bn_training(resumed)


def test_backbone_mode_train_resumes_exactly_from_the_middle_of_a_stage_epoch(tmp_path: Path) -> None:
    callback = functools.partial(ClassifierRetraining, "crt", epochs=2, backbone_mode="train")
    _, full, _ = _fit([callback()], tmp_path / "full")
    ckpt = tmp_path / "mid.ckpt"
    _fit([callback(), SaveMidEpoch(2, ckpt, batch_idx=0)], tmp_path / "a")
    _, resumed, rec = _fit([callback()], tmp_path / "b", ckpt_path=str(ckpt))
    assert_equal_states(full.state_dict(), resumed.state_dict())
    assert rec.backbone_training == {2: False, 3: False} and _only_bn_training(resumed)
