"""The module / callback contract (issue 19, part 2): declared slots whose setters refuse a conflict, callbacks
that do not depend on their order, the criterion override in the module's ``.to()`` but not in its state dict, and the
private reaches gathered in ``lt_lightning._lightning_compat``."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor, nn

from lt_lightning import _lightning_compat as compat
from lt_lightning.callbacks import (
    BatchMixing,
    ClassifierRetraining,
    NearestClassMean,
    ResamplingSchedule,
    TauNormalization,
)
from lt_lightning.data.resampling import ClassPowerSampler
from lt_lightning.heads.linear import LinearHead
from lt_lightning.losses.cross_entropy import CrossEntropyLoss
from lt_lightning.module import LongTailModule
from lt_lightning.slots import MODULE_SLOTS, USER, SlotConflictError, require_long_tail_module
from tests.helpers import TinyBackbone, quiet_trainer, tiny_lt_data


def _module(dm=None) -> LongTailModule:
    dm = dm or tiny_lt_data()
    return LongTailModule(TinyBackbone(), num_classes=3, class_counts=dm.class_counts)


class Owner:
    """A stand-in callback (named by its class in messages)."""


class Other:
    pass


# ---------------------------------------------------------------------------------------------- slots
def test_a_second_owner_is_refused_naming_both() -> None:
    module, a, b = _module(), Owner(), Other()
    head = LinearHead(4, 3)
    module.install_test_head(head, owner=a)
    assert module.test_head is head and module.slot_owner("test_head") is a
    with pytest.raises(SlotConflictError, match=r"Other would replace another test-time head held by Owner"):
        module.install_test_head(LinearHead(4, 3), owner=b)
    module.clear_test_head(owner=b)  # not b's: left alone
    assert module.test_head is head
    module.install_test_head(head, owner=a)  # the holder may install again
    module.clear_test_head(owner=a)
    assert module.test_head is None and module.slot_owner("test_head") is None
    module.install_test_head(LinearHead(4, 3), owner=b)  # free again


@pytest.mark.parametrize(
    ("install", "clear", "attribute", "value"),
    [
        ("install_test_logit_offset", "clear_test_logit_offset", "test_logit_offset", torch.zeros(3)),
        ("install_test_expert_weights", "clear_test_expert_weights", "test_expert_weights", torch.ones(2)),
        ("install_train_batch_transform", "clear_train_batch_transform", "train_batch_transform", lambda x, y: (x, y)),
    ],
)
def test_every_value_slot_refuses_another_owner(install: str, clear: str, attribute: str, value) -> None:
    module, a, b = _module(), Owner(), Other()
    getattr(module, install)(value, owner=a)
    assert getattr(module, attribute) is value
    with pytest.raises(ValueError, match="held by Owner"):
        getattr(module, install)(value, owner=b)
    getattr(module, clear)(owner=a)
    assert getattr(module, attribute) is None


def test_a_value_set_directly_is_user_code_and_not_replaced() -> None:
    module = _module()
    offset = torch.zeros(3)
    module.test_logit_offset = offset  # the old attribute stays assignable
    assert module.slot_owner("test_logit_offset") == USER
    with pytest.raises(SlotConflictError, match="held by user code"):
        module.install_test_logit_offset(torch.ones(3), owner=Owner())
    module.clear_test_logit_offset(owner=Owner())  # a callback never removes the user's value
    assert module.test_logit_offset is offset


def test_training_extras_are_held_per_name() -> None:
    module, a, b = _module(), Owner(), Other()
    fn = lambda x, out: x  # noqa: E731
    module.install_train_extra("teacher_logits", fn, owner=a)
    module.install_train_extra("keys", fn, owner=b)  # another name: no conflict
    with pytest.raises(SlotConflictError, match="training extra 'teacher_logits' held by Owner"):
        module.install_train_extra("teacher_logits", fn, owner=b)
    module.clear_train_extra("teacher_logits", owner=b)
    assert set(module.train_extras) == {"teacher_logits", "keys"}
    module.clear_train_extra("teacher_logits", owner=a)
    assert set(module.train_extras) == {"keys"}
    module.train_extras["probe"] = fn  # user code may still fill the dict
    assert module.slot_owner("train_extras[probe]") == USER


def test_criterion_and_optimization_slots() -> None:
    module, a, b = _module(), Owner(), Other()
    module.optimizer_factory = functools.partial(torch.optim.SGD, lr=0.5)  # user code: stage 1's optimizer
    module.install_optimization(a, functools.partial(torch.optim.SGD, lr=0.1), None)
    with pytest.raises(SlotConflictError, match="optimizer and LR schedule held by Owner"):
        module.install_optimization(b, functools.partial(torch.optim.SGD, lr=0.2), None)
    module.install_criterion_override(CrossEntropyLoss(), owner=a)
    with pytest.raises(SlotConflictError, match="training loss held by Owner"):
        module.install_criterion_override(CrossEntropyLoss(), owner=b)
    module.release_slot("criterion_override", a)  # the value stays, the slot is free
    module.release_slot("optimization", a)
    assert module.criterion_override is not None and module.slot_owner("criterion_override") is None
    module.install_criterion_override(CrossEntropyLoss(), owner=b)
    module.install_optimization(b, functools.partial(torch.optim.SGD, lr=0.2), None)
    assert module.slot_owner("optimization") is b


def test_the_declared_slots_are_attributes_of_the_module() -> None:
    module = _module()
    for slot in MODULE_SLOTS:
        if slot == "optimization":
            assert all(hasattr(module, n) for n in ("optimizer_factory", "lr_scheduler_factory"))
        else:
            assert hasattr(module, slot)
            assert module.slot_owner(slot if slot != "train_extras" else "train_extras[x]") is None


class PlainModule(L.LightningModule):
    pass


def test_a_module_that_is_no_long_tail_module_gets_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Owner needs a LongTailModule .*got PlainModule"):
        require_long_tail_module(PlainModule(), Owner())
    assert require_long_tail_module(_module(), "X") is not None
    with pytest.raises(ValueError, match="BatchMixing needs a LongTailModule"):
        BatchMixing().setup(quiet_trainer(tmp_path, max_epochs=1), PlainModule(), "fit")


# ---------------------------------------------------------------------------------------------- conflicts in a run
@pytest.mark.filterwarnings("ignore:.*does not have many workers")
@pytest.mark.parametrize("order", ["ncm_first", "tau_first"])
def test_two_test_heads_are_refused_in_either_order(tmp_path: Path, order: str) -> None:
    """Before the contract, TauNormalization and NearestClassMean silently overwrote each other's test head."""
    dm = tiny_lt_data()
    ncm, tau = NearestClassMean(), TauNormalization(tau=1.0)
    callbacks = [ncm, tau] if order == "ncm_first" else [tau, ncm]
    first, second = type(callbacks[0]).__name__, type(callbacks[1]).__name__
    model = _module(dm)
    with pytest.raises(ValueError, match=f"{second} would replace another test-time head held by {first}"):
        quiet_trainer(tmp_path, callbacks).test(model, datamodule=dm)


class RecordBatches(L.Callback):
    def __init__(self) -> None:
        self.images: dict[int, list[Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.images.setdefault(trainer.current_epoch, []).append(batch[0].detach().clone())


def _staged_fit(tmp_path: Path, order: str) -> tuple[RecordBatches, object, LongTailModule]:
    L.seed_everything(0, verbose=False)
    dm = tiny_lt_data()
    model = _module(dm)
    resampling, stage, recorder = ResamplingSchedule("progressive"), ClassifierRetraining(epochs=1), RecordBatches()
    callbacks = [resampling, stage] if order == "resampling_first" else [stage, resampling]
    quiet_trainer(tmp_path, [*callbacks, recorder], max_epochs=3, limit_val_batches=0).fit(model, dm)
    return recorder, dm.sampler, model


@pytest.mark.filterwarnings("ignore:.*does not have many workers")
def test_resampling_schedule_and_classifier_stage_work_in_either_order(tmp_path: Path) -> None:
    """Kang et al. (ICLR 2020) learn the representation with any stage-1 sampler (progressively-balanced included)
    before cRT's class-balanced stage: the schedule is the stage's first sampler whatever the callbacks' order (it
    used to fail when the stage came first: 'the datamodule already has a training sampler')."""
    a, sampler_a, model_a = _staged_fit(tmp_path / "a", "resampling_first")
    b, sampler_b, model_b = _staged_fit(tmp_path / "b", "stage_first")
    assert sampler_a is None and sampler_b is None  # the datamodule is left as it was given
    assert set(a.images) == set(b.images) == {0, 1, 2}
    for epoch in a.images:
        assert torch.equal(torch.cat(a.images[epoch]), torch.cat(b.images[epoch]))
    for key, value in model_a.state_dict().items():
        assert torch.equal(value, model_b.state_dict()[key]), key


@pytest.mark.filterwarnings("ignore:.*does not have many workers")
def test_a_data_sampler_with_a_resampling_schedule_is_still_refused_in_either_order(tmp_path: Path) -> None:
    for order in ("resampling_first", "stage_first"):
        dm = tiny_lt_data(sampler=functools.partial(ClassPowerSampler, q=0.5))
        resampling, stage = ResamplingSchedule("progressive"), ClassifierRetraining(epochs=1)
        callbacks = [resampling, stage] if order == "resampling_first" else [stage, resampling]
        with pytest.raises(ValueError, match="already has a training sampler"):
            quiet_trainer(tmp_path, callbacks, max_epochs=3).fit(_module(dm), dm)


@pytest.mark.filterwarnings("ignore:.*does not have many workers")
def test_two_stages_are_refused(tmp_path: Path) -> None:
    dm = tiny_lt_data()
    callbacks = [ClassifierRetraining(epochs=1), ClassifierRetraining("lws", epochs=2)]
    with pytest.raises(ValueError, match=r"would replace another training sampler \(stage\) held by ClassifierRetr"):
        quiet_trainer(tmp_path, callbacks, max_epochs=3).fit(_module(dm), dm)


# ---------------------------------------------------------------------------------------------- criterion override
class BufferedLoss(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("class_weights", torch.tensor([1.0, 2.0, 3.0]))


def test_the_criterion_override_follows_to_but_is_not_checkpointed() -> None:
    module = _module()
    keys = set(module.state_dict())
    override = BufferedLoss()
    module.install_criterion_override(override, owner=Owner())
    assert set(module.state_dict()) == keys  # not a sub-module: checkpoints keep their keys
    assert module.training_criterion is override
    module.to(torch.float64)
    assert override.class_weights.dtype == torch.float64  # follows the module's .to()
    module.to(torch.float32)
    assert override.class_weights.dtype == torch.float32
    assert torch.equal(override.class_weights, torch.tensor([1.0, 2.0, 3.0]))


# ---------------------------------------------------------------------------------------------- private reaches
def test_the_private_reaches_of_the_compat_module() -> None:
    assert compat.ddp_finds_unused_parameters(DDPStrategy(find_unused_parameters=True))
    assert not compat.ddp_finds_unused_parameters(DDPStrategy())
    assert not compat.ddp_finds_unused_parameters(object())
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    assert compat.loaded_checkpoint(trainer) == {}
    inner = torch.utils.data.BatchSampler(range(4), 2, drop_last=False)
    from lightning.pytorch.overrides.distributed import _IndexBatchSamplerWrapper

    assert compat.unwrap_batch_sampler(_IndexBatchSamplerWrapper(inner)) is inner
    assert compat.unwrap_batch_sampler(inner) is inner
    metric = _module().val_metric
    metric.update(torch.eye(3), torch.arange(3))
    first = metric.compute()
    compat.reset_metric_cache(metric)
    assert metric._computed is None and torch.equal(metric.compute()["acc"], first["acc"])


def test_no_callback_reaches_private_lightning_state() -> None:
    import lt_lightning

    root = Path(lt_lightning.__file__).parent
    for path in root.rglob("*.py"):
        if path.name == "_lightning_compat.py":
            continue
        text = path.read_text()
        for reach in ("_ddp_kwargs", "_checkpoint_connector", '"_batch_sampler"', "._computed"):
            assert reach not in text, f"{path.relative_to(root)} reaches {reach}: use lt_lightning._lightning_compat"


# ---------------------------------------------------------------------------------------------- one schedule base
def test_the_five_epoch_schedules_share_one_base() -> None:
    from lt_lightning.callbacks import CumulativeLearning, DeferredReweighting
    from lt_lightning.callbacks._schedule import EpochSchedule
    from lt_lightning.callbacks._stage import FrozenStage

    for cls in (DeferredReweighting, ResamplingSchedule, CumulativeLearning, BatchMixing, FrozenStage):
        assert issubclass(cls, EpochSchedule)
        for hook in ("on_train_start", "on_train_epoch_start", "setup"):
            assert getattr(cls, hook) is getattr(EpochSchedule, hook), (cls.__name__, hook)
    assert BatchMixing().state_dict() == {}  # nothing checkpointed, as before


def test_the_base_warns_once_on_a_resumed_configuration() -> None:
    from lt_lightning.callbacks import DeferredReweighting

    drw = DeferredReweighting(switch_epoch=2)
    drw.load_state_dict({**drw.state_dict(), "beta": 0.5})
    with pytest.warns(UserWarning, match="DeferredReweighting: resuming with .* the run differs"):
        drw._check_resumed_config()
    drw._check_resumed_config()  # once


# ---------------------------------------------------------------------------------------------- stage-2 variants
def test_the_method_strings_name_variant_objects() -> None:
    from lt_lightning.callbacks.classifier_retraining import VARIANTS, LearnableWeightScaling, LWSFinetune, ReTrain

    assert VARIANTS == {"crt": ReTrain, "lws": LearnableWeightScaling, "lws_finetune": LWSFinetune}
    for name, cls in VARIANTS.items():
        stage = ClassifierRetraining(name)
        assert isinstance(stage.variant, cls) and stage.method == name
    with pytest.raises(ValueError, match="method must be one of .* or a ClassifierVariant"):
        ClassifierRetraining("maxnorm")
    with pytest.raises(ValueError, match="method='lws' keeps the classifier frozen"):
        ClassifierRetraining(LearnableWeightScaling(), classifier_lr_factor=0.5)


@pytest.mark.filterwarnings("ignore:.*does not have many workers")
def test_a_new_stage2_variant_plugs_in_without_editing_classifier_retraining(tmp_path: Path) -> None:
    """A variant in the spirit of weight balancing's stage 2 (Alshammari et al., CVPR 2022): keep the stage-1
    classifier and fine-tune only its bias -- a class of a few lines, given as ``method``."""
    from lt_lightning.callbacks.classifier_retraining import ClassifierVariant

    class BiasOnly(ClassifierVariant):
        name = "bias_only"

        def freeze(self, classifier: nn.Module) -> None:
            classifier.requires_grad_(False)
            classifier.fc.bias.requires_grad_(True)

        def reinitialise(self, pl_module, seed: int) -> None:
            pass  # starts from the stage-1 classifier

    L.seed_everything(0, verbose=False)
    dm = tiny_lt_data()
    model = _module(dm)
    stage = ClassifierRetraining(BiasOnly(), epochs=1)
    before: dict[str, Tensor] = {}

    class Snapshot(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if trainer.current_epoch == 1:
                before.update({k: v.clone() for k, v in pl_module.state_dict().items()})

    quiet_trainer(tmp_path, [stage, Snapshot()], max_epochs=2, limit_val_batches=0).fit(model, dm)
    after = model.state_dict()
    assert stage.active and stage.state_dict()["active"]
    assert stage.state_key.startswith("ClassifierRetraining{") and "bias_only" in stage.state_key
    assert torch.equal(after["classifier.fc.weight"], before["classifier.fc.weight"])  # frozen
    assert not torch.equal(after["classifier.fc.bias"], before["classifier.fc.bias"])  # trained
    assert torch.equal(after["backbone.fc.weight"], before["backbone.fc.weight"])  # the backbone frozen
