"""``ExpertRouterTraining`` (RIDE stage 2) with a real Trainer: frozen experts, trained router, second fit, resume."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor

from lt_lightning.backbones.multi_expert import MultiExpertResNetCifar
from lt_lightning.callbacks.compute_per_image import ComputePerImage
from lt_lightning.callbacks.deferred_reweighting import DeferredReweighting
from lt_lightning.callbacks.expert_router_training import ExpertRouterTraining
from lt_lightning.data.resampling import ClassBalancedSampler
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.heads.cosine import CosineHead
from lt_lightning.heads.multi_expert import MultiExpertHead
from lt_lightning.heads.routed_multi_expert import RoutedMultiExpertHead
from lt_lightning.losses.expert_router import ExpertRouterLoss
from lt_lightning.losses.ride import RIDELoss
from lt_lightning.module import LongTailModule
from tests.checkpointing.python_built import trusting
from tests.helpers import StopAfter, quiet_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

COSINE = functools.partial(CosineHead, scale=30.0)


@pytest.fixture(autouse=True)
def _trust_python_built_checkpoints():
    """The checkpoints loaded here come from modules built in Python: their classes are allowed explicitly (the
    package reads checkpoints with weights_only=True and refuses them otherwise); a routed head pickles a bound method
    (``getattr``)."""
    with trusting(getattr):
        yield


def _data(n_max: int = 16) -> SyntheticLTDataModule:
    """4 classes, counts [16, 10, 6, 4] (36 images), 8x8 grey images, batch 8."""
    return SyntheticLTDataModule(
        num_classes=4, n_max=n_max, imbalance_ratio=4, image_size=8, channels=1, batch_size=8, seed=3, augment=False
    )


def _model(dm: SyntheticLTDataModule, routed: bool = True) -> LongTailModule:
    backbone = MultiExpertResNetCifar(depth=8, num_experts=3, widths=(4, 8, 8), expert_widths=(6, 12), in_channels=1)
    head_class = RoutedMultiExpertHead if routed else MultiExpertHead
    extra = {"top_k": 2} if routed else {}
    head = functools.partial(head_class, num_experts=3, expert_head=COSINE, **extra)
    return LongTailModule(backbone, dm.num_classes, dm.class_counts, classifier=head, criterion=RIDELoss())


def _trainer(tmp: Path, max_epochs: int, callbacks: list[L.Callback], val: bool = False) -> L.Trainer:
    limit_val = None if val else 0
    return quiet_trainer(tmp, callbacks, max_epochs=max_epochs, num_sanity_val_steps=0, limit_val_batches=limit_val)


class Snapshot(L.Callback):
    """The model's state at the start of every epoch (after the callbacks listed before it)."""

    def __init__(self) -> None:
        self.states: dict[int, dict[str, Tensor]] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.states[trainer.current_epoch] = {k: v.clone() for k, v in pl_module.state_dict().items()}


def _split(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    router = {k: v for k, v in state.items() if k.startswith("classifier.router.")}
    frozen = {k: v for k, v in state.items() if k.startswith(("backbone.", "classifier.heads."))}
    return router, frozen


def test_one_fit_freezes_the_experts_and_trains_the_router(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    dm = _data()
    model = _model(dm)
    stage = ExpertRouterTraining(epochs=2, criterion=ExpertRouterLoss(pos_weight=100.0))
    snapshot = Snapshot()
    trainer = _trainer(
        tmp_path, 4, [DeferredReweighting(switch_epoch=1), stage, snapshot, ComputePerImage(["val"])], val=True
    )
    trainer.fit(model, datamodule=dm)
    assert stage.resolved_start_epoch == 2 and stage.active
    head = model.classifier
    assert isinstance(head, RoutedMultiExpertHead) and head.routing
    assert isinstance(model.training_criterion, ExpertRouterLoss)
    # stage 1 trains the experts, not the router; stage 2 the router, not the experts (BN statistics included)
    router0, frozen0 = _split(snapshot.states[0])
    router2, frozen2 = _split(snapshot.states[2])
    router_end, frozen_end = _split(model.state_dict())
    assert any(not torch.equal(frozen0[k], frozen2[k]) for k in frozen0)
    assert all(torch.equal(frozen2[k], frozen_end[k]) for k in frozen2)
    assert any(not torch.equal(router2[k], router_end[k]) for k in router2)
    assert all(torch.equal(router0[k], snapshot.states[1][k]) for k in router0)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert isinstance(trainer.train_dataloader.sampler.stage_sampler(2), ClassBalancedSampler)
    # routed validation: compute and experts per image are logged, between 1 and 3 experts
    assert 1.0 <= float(trainer.callback_metrics["val/experts_per_image"]) <= 3.0
    assert float(trainer.callback_metrics["val/gflops_per_image"]) > 0


def test_second_fit_from_a_stage1_checkpoint(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    dm = _data()
    stage1 = _model(dm, routed=False)  # plain RIDE (MultiExpertHead)
    trainer = _trainer(tmp_path / "s1", 1, [])
    trainer.fit(stage1, datamodule=dm)
    ckpt = tmp_path / "stage1.ckpt"
    trainer.save_checkpoint(ckpt)

    dm = _data()
    model = _model(dm)
    stage = ExpertRouterTraining(init_from=str(ckpt))
    trainer = _trainer(tmp_path / "s2", 1, [stage])
    trainer.fit(model, datamodule=dm)
    assert stage.active and model.classifier.routing
    expected = stage1.state_dict()
    _, frozen = _split(model.state_dict())
    assert frozen and all(torch.equal(v, expected[k]) for k, v in frozen.items())


def test_bad_setup_raises_clear_errors(tmp_path: Path) -> None:
    dm = _data()
    with pytest.raises(ValueError, match="RoutedMultiExpertHead"):
        _trainer(tmp_path, 3, [ExpertRouterTraining(epochs=1)]).fit(_model(dm, routed=False), datamodule=dm)
    with pytest.raises(ValueError, match="leaves no stage-1 epoch"):
        _trainer(tmp_path, 2, [ExpertRouterTraining(epochs=2)]).fit(_model(dm), datamodule=dm)
    with pytest.raises(FileNotFoundError, match="init_from"):
        _trainer(tmp_path, 1, [ExpertRouterTraining(init_from=str(tmp_path / "none.ckpt"))]).fit(
            _model(dm), datamodule=dm
        )
    with pytest.raises(ValueError, match="start_epoch"):
        ExpertRouterTraining(start_epoch=2, init_from="x.ckpt")
    with pytest.raises(ValueError, match="epochs"):
        ExpertRouterTraining(epochs=0)


def test_second_fit_rejects_other_class_counts(tmp_path: Path) -> None:
    dm = _data()
    trainer = _trainer(tmp_path / "s1", 1, [])
    trainer.fit(_model(dm, routed=False), datamodule=dm)
    ckpt = tmp_path / "stage1.ckpt"
    trainer.save_checkpoint(ckpt)
    other = _data(n_max=20)
    with pytest.raises(ValueError, match="classes with counts"):
        _trainer(tmp_path / "s2", 1, [ExpertRouterTraining(init_from=str(ckpt))]).fit(_model(other), datamodule=other)


def _fit(tmp: Path, stop_after: int = 4, ckpt_path: str | None = None, save_to: Path | None = None) -> LongTailModule:
    L.seed_everything(0, verbose=False)
    dm = _data()
    model = _model(dm)
    trainer = _trainer(tmp, 4, [ExpertRouterTraining(start_epoch=2), StopAfter(stop_after)])
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
    if save_to is not None:
        trainer.save_checkpoint(save_to)
    return model


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, Tensor]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(tmp_path_factory.mktemp("router_reference"), 4).state_dict()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("stop_after", [1, 3], ids=["before_stage", "inside_stage"])
def test_resume_equals_an_uninterrupted_run(tmp_path: Path, stop_after: int, uninterrupted) -> None:
    ckpt = tmp_path / "stop.ckpt"
    _fit(tmp_path / "a", stop_after, save_to=ckpt)
    resumed = _fit(tmp_path / "b", ckpt_path=str(ckpt))
    assert resumed.classifier.routing
    for (name, a), b in zip(uninterrupted.items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
