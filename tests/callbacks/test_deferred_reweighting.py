"""``DeferredReweighting`` (DRW) with a real ``lightning.Trainer`` on tiny synthetic data.

The criterion is a minimal weighted cross-entropy defined here with the losses' contract (``set_class_counts``,
``set_class_weights`` and a registered ``class_weights`` buffer), so the callback is tested on the contract alone.
Resume tests stop a run before and after the switch epoch, resume from the checkpoint and require the final class
weights and parameters to equal those of a run that never stopped.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lt_lightning.callbacks.deferred_reweighting import DeferredReweighting
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.losses.base import LongTailLoss
from lt_lightning.losses.focal import FocalLoss
from lt_lightning.losses.ldam import LDAMLoss
from lt_lightning.losses.weighted import WeightedCrossEntropyLoss
from lt_lightning.module import LongTailModule
from lt_lightning.output import ModelOutput
from lt_lightning.prior import ClassPriorAware
from tests.helpers import SaveMidEpoch, StopAfter, TinyBackbone

# counts [16, 8, 4] of the synthetic data below; effective-number weights with beta = 0.9 by hand:
# (1 - b) / (1 - b^n) = 0.1 / (1 - 0.9^n), normalised to sum 3
_RAW = [0.1 / (1 - 0.9**16), 0.1 / (1 - 0.9**8), 0.1 / (1 - 0.9**4)]
EFFECTIVE_09 = torch.tensor([3 * w / sum(_RAW) for w in _RAW])


class WeightedCE(LongTailLoss, ClassPriorAware):
    """Weighted softmax cross-entropy with the contract of the re-weighting losses (test double of the contract)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("class_weights", torch.ones(0))

    def set_class_counts(self, class_counts: Tensor) -> None:
        self.class_weights = torch.ones(class_counts.numel(), device=class_counts.device)

    def set_class_weights(self, weights: Tensor | None) -> None:
        if weights is None:
            self.class_weights.fill_(1.0)
            return
        if weights.numel() != self.class_weights.numel():
            raise ValueError(f"weights has {weights.numel()} entries, expected {self.class_weights.numel()}")
        self.class_weights.copy_(weights)

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        return F.cross_entropy(output.logits, target, weight=self.class_weights)


class PlainCE(LongTailLoss):
    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        return F.cross_entropy(output.logits, target)


class RecordWeights(L.Callback):
    """The criterion's class weights at every training batch, per epoch."""

    def __init__(self) -> None:
        self.weights: dict[int, list[Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.weights.setdefault(trainer.current_epoch, []).append(pl_module.criterion.class_weights.clone())


def _data() -> SyntheticLTDataModule:
    """3 classes, counts [16, 8, 4], images 3x2x2, batch 8 (4 steps per epoch)."""
    return SyntheticLTDataModule(
        num_classes=3, n_max=16, imbalance_ratio=4, image_size=2, batch_size=8, seed=3, augment=False
    )


def _fit(
    callbacks: list[L.Callback],
    tmp: Path,
    max_epochs: int = 4,
    ckpt_path: str | None = None,
    criterion: nn.Module | None = None,
) -> tuple[L.Trainer, LongTailModule, RecordWeights]:
    L.seed_everything(0, verbose=False)
    dm = _data()
    model = LongTailModule(
        TinyBackbone(),
        num_classes=dm.num_classes,
        class_counts=dm.class_counts,
        criterion=criterion if criterion is not None else WeightedCE(),
    )
    recorder = RecordWeights()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        callbacks=[*callbacks, recorder],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=tmp,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
    return trainer, model, recorder


# ---------------------------------------------------------------------------------------------- weights, arguments
def test_weights_by_hand() -> None:
    counts = torch.tensor([4.0, 1.0])
    # (1 - .5) / (1 - .5^4) = 8/15 and (1 - .5) / (1 - .5) = 1, normalised to sum 2: [16/23, 30/23]
    got = DeferredReweighting(weighting="effective_number", beta=0.5).class_weights(counts)
    assert torch.allclose(got, torch.tensor([16 / 23, 30 / 23]))
    # n^-1 = [1/4, 1], normalised to sum 2: [0.4, 1.6]; n^-1/2 = [1/2, 1] -> [2/3, 4/3]
    assert torch.allclose(
        DeferredReweighting(weighting="inverse_power").class_weights(counts), torch.tensor([0.4, 1.6])
    )
    got = DeferredReweighting(weighting="inverse_power", power=0.5).class_weights(counts)
    assert torch.allclose(got, torch.tensor([2 / 3, 4 / 3]))
    # beta = 0 (LDAM-DRW's weights before E) is uniform
    assert torch.equal(DeferredReweighting(beta=0.0).class_weights(counts), torch.ones(2))
    # a declared weighting of one's own
    custom = DeferredReweighting(weighting=lambda n: n.max() / n)
    assert torch.equal(custom.class_weights(counts), torch.tensor([1.0, 4.0]))
    with pytest.raises(ValueError, match="returned shape"):
        DeferredReweighting(weighting=lambda n: n[:1]).class_weights(counts)
    with pytest.raises(ValueError, match="zero images"):
        DeferredReweighting().class_weights(torch.tensor([3.0, 0.0]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"switch_epoch": -1}, "switch_epoch"),
        ({"switch_epoch": 1.5}, "switch_epoch"),
        ({"beta": 1.0}, "beta"),
        ({"beta": -0.1}, "beta"),
        ({"power": -1.0}, "power"),
        ({"weighting": "square_root"}, "weighting must be"),
        ({"weighting": 3}, "weighting must be"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DeferredReweighting(**kwargs)


def test_state_keys_differ_per_configuration() -> None:
    keys = {
        DeferredReweighting(160).state_key,
        DeferredReweighting(100).state_key,
        DeferredReweighting(160, beta=0.999).state_key,
        DeferredReweighting(160, weighting="inverse_power").state_key,
    }
    assert len(keys) == 4


@pytest.mark.parametrize(
    "make_loss",
    [lambda: WeightedCrossEntropyLoss(q=0.0), lambda: FocalLoss(gamma=2.0), lambda: LDAMLoss(max_m=0.5, s=30.0)],
    ids=["weighted_ce", "focal", "ldam"],
)
def test_works_with_the_weighted_losses_of_the_package(tmp_path: Path, make_loss) -> None:
    _, model, rec = _fit([DeferredReweighting(switch_epoch=1, beta=0.9)], tmp_path, max_epochs=2, criterion=make_loss())
    assert all(torch.equal(w, torch.ones(3)) for w in rec.weights[0])  # the loss's own default before E
    assert all(torch.allclose(w, EFFECTIVE_09) for w in rec.weights[1])
    assert torch.allclose(model.criterion.class_weights, EFFECTIVE_09)


def test_criterion_without_set_class_weights_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PlainCE has no set_class_weights"):
        _fit([DeferredReweighting(2)], tmp_path, criterion=PlainCE())


# ---------------------------------------------------------------------------------------------- fit, resume
def test_weights_switch_on_at_the_epoch(tmp_path: Path) -> None:
    drw = DeferredReweighting(switch_epoch=2, beta=0.9)
    trainer, model, rec = _fit([drw], tmp_path)
    assert sorted(rec.weights) == [0, 1, 2, 3]
    for epoch in range(4):
        expected = EFFECTIVE_09 if epoch >= 2 else torch.ones(3)
        for w in rec.weights[epoch]:
            assert torch.allclose(w, expected)
    assert drw.active is True and drw.epoch == 3
    assert trainer.callback_metrics["drw/active"].item() == 1.0
    # the weights live in the criterion's buffer, so they are in the state_dict (and the checkpoint)
    assert torch.allclose(model.state_dict()["criterion.class_weights"], EFFECTIVE_09)


@pytest.mark.parametrize("stop_after", [1, 3], ids=["before_E", "after_E"])
def test_resume_before_and_after_the_switch_equals_never_stopping(tmp_path: Path, stop_after: int) -> None:
    _, full, full_rec = _fit([DeferredReweighting(switch_epoch=2, beta=0.9)], tmp_path / "full")
    stopped_trainer, stopped, _ = _fit(
        [DeferredReweighting(switch_epoch=2, beta=0.9), StopAfter(stop_after)], tmp_path / "stop"
    )
    ckpt = tmp_path / "stopped.ckpt"
    stopped_trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=False)
    assert torch.allclose(saved["state_dict"]["criterion.class_weights"], stopped.criterion.class_weights)

    _, resumed, resumed_rec = _fit(
        [DeferredReweighting(switch_epoch=2, beta=0.9)], tmp_path / "resumed", ckpt_path=str(ckpt)
    )
    assert sorted(resumed_rec.weights) == list(range(stop_after, 4))
    for epoch in range(stop_after, 4):
        assert torch.equal(torch.stack(resumed_rec.weights[epoch]), torch.stack(full_rec.weights[epoch]))
    assert torch.allclose(resumed.criterion.class_weights, EFFECTIVE_09)
    assert torch.equal(resumed.criterion.class_weights, full.criterion.class_weights)
    for (name, p_full), (_, p_resumed) in zip(full.named_parameters(), resumed.named_parameters(), strict=True):
        assert torch.allclose(p_full, p_resumed, rtol=0, atol=1e-6), name


def test_mid_epoch_resume_applies_the_weights_of_the_resumed_epoch(tmp_path: Path) -> None:
    # a run without DRW writes a checkpoint in the middle of epoch 2; resuming it with DRW(E=2) must weight every
    # remaining batch of epoch 2, although on_train_epoch_start is not called for a resumed epoch
    ckpt = tmp_path / "mid.ckpt"
    _fit([SaveMidEpoch(2, ckpt)], tmp_path / "plain", max_epochs=3)
    saved = torch.load(ckpt, weights_only=False)
    assert torch.equal(saved["state_dict"]["criterion.class_weights"], torch.ones(3))
    _, _, rec = _fit(
        [DeferredReweighting(switch_epoch=2, beta=0.9)], tmp_path / "drw", max_epochs=3, ckpt_path=str(ckpt)
    )
    assert sorted(rec.weights) == [2]
    assert rec.weights[2]
    for w in rec.weights[2]:
        assert torch.allclose(w, EFFECTIVE_09)


def test_resume_with_another_switch_epoch_warns(tmp_path: Path) -> None:
    trainer, _, _ = _fit([DeferredReweighting(switch_epoch=0, beta=0.9)], tmp_path / "a", max_epochs=1)
    ckpt = tmp_path / "a.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=False)
    old, new = DeferredReweighting(0, beta=0.9), DeferredReweighting(2, beta=0.9)
    state["callbacks"][new.state_key] = state["callbacks"].pop(old.state_key)
    torch.save(state, ckpt)
    with pytest.warns(UserWarning, match="resuming with"):
        _fit([new], tmp_path / "b", max_epochs=3, ckpt_path=str(ckpt))
