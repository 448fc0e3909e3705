"""RIDE loss: diversity term (zero when experts agree, hand numbers), LDAM-DRW term, DRW switch, Trainer fit, resume."""

from __future__ import annotations

import contextlib
import functools
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lt_lightning.backbones.multi_expert import MultiExpertResNetCifar
from lt_lightning.callbacks.deferred_reweighting import DeferredReweighting
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.heads.cosine import CosineHead
from lt_lightning.heads.multi_expert import MultiExpertHead
from lt_lightning.losses.ldam import ldam_loss, ldam_margins
from lt_lightning.losses.ride import RIDELoss, ride_diversity_loss, ride_diversity_temperature, ride_loss
from lt_lightning.losses.weighting import effective_number_weights
from lt_lightning.module import LongTailModule
from lt_lightning.output import ModelOutput
from tests.helpers import StopAfter, quiet_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@contextlib.contextmanager
def _one_thread():
    """Tiny models train many times faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


TWO_EXPERTS = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # [E=2, B=1, C=2]


def _output(expert_logits: Tensor) -> ModelOutput:
    return ModelOutput(
        logits=expert_logits.mean(0), features=torch.zeros(expert_logits.shape[1], 1), expert_logits=expert_logits
    )


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pc * math.log(pc / qc) for pc, qc in zip(p, q, strict=True))


def _softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


# ---------------------------------------------------------------------------------------------- diversity term
@pytest.mark.parametrize("temperature", [1.0, 2.5, torch.tensor([0.5, 1.0, 0.8, 1.0, 0.7])])
def test_diversity_is_zero_when_all_experts_agree(temperature) -> None:
    z = torch.randn(1, 4, 5).expand(3, 4, 5)
    assert ride_diversity_loss(z, temperature).item() == pytest.approx(0.0, abs=1e-6)


def test_diversity_hand_numbers_scalar_temperature() -> None:
    # z1 = [1, 0], z2 = [0, 1]: ensemble [0.5, 0.5], p = [1/2, 1/2]; KL(p || softmax(z_e / T)) per expert is
    # log((1 + e^{1/T}) / 2) - 1/(2T); by symmetry both experts give the same value.
    for t in (1.0, 2.0):
        kl = math.log((1 + math.exp(1 / t)) / 2) - 1 / (2 * t)
        assert ride_diversity_loss(TWO_EXPERTS, t).item() == pytest.approx(t * t * 2 * kl, rel=1e-6)
    assert 2 * (math.log((1 + math.e) / 2) - 0.5) == pytest.approx(0.240229, abs=1e-6)  # the T = 1 value


def test_diversity_hand_numbers_per_class_temperature() -> None:
    # T = [1, 0.5]: ensemble / T = [0.5, 1]; expert 1 / T = [1, 0]; expert 2 / T = [0, 2]; T_mean = 0.75.
    p = _softmax([0.5, 1.0])
    expected = 0.75**2 * (_kl(p, _softmax([1.0, 0.0])) + _kl(p, _softmax([0.0, 2.0])))
    got = ride_diversity_loss(TWO_EXPERTS, torch.tensor([1.0, 0.5]))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_diversity_gradient_treats_the_ensemble_as_fixed() -> None:
    # d/dz_e [T^2 KL(p || softmax(z_e / T))] = T (softmax(z_e / T) - p) / B with p held fixed
    z = torch.randn(3, 4, 5, requires_grad=True)
    t = 2.0
    ride_diversity_loss(z, t).backward()
    with torch.no_grad():
        p = F.softmax(z.mean(0) / t, dim=-1)
        expected = t * (F.softmax(z / t, dim=-1) - p) / 4
    torch.testing.assert_close(z.grad, expected)


def test_distribution_aware_temperature_hand_numbers() -> None:
    # counts [3, 1]: pi = [3/4, 1/4], C = 2, r = 0.05: C pi r + 1 - r = [1.025, 0.975], / max -> [1, 0.975/1.025]
    got = ride_diversity_temperature([3, 1], base_temperature=2.0, reweight_factor=0.05)
    torch.testing.assert_close(got, torch.tensor([2.0, 2.0 * 0.975 / 1.025]))
    torch.testing.assert_close(ride_diversity_temperature([3, 1], 1.5, 0.0), torch.tensor([1.5, 1.5]))


# ---------------------------------------------------------------------------------------------- full loss
def test_ride_loss_hand_numbers() -> None:
    # counts [4, 1], max_m 0.5: m = [0.5 * 4^-1/4, 0.5] = [0.353553, 0.5]; target 0, logit scale 1.
    # expert 1: CE([1 - m0, 0], 0) = log(1 + e^{-(1 - m0)}); expert 2: CE([-m0, 1], 0) = log(1 + e^{1 + m0})
    m0 = 0.5 / math.sqrt(2.0)
    individual = math.log(1 + math.exp(-(1 - m0))) + math.log(1 + math.exp(1 + m0))
    diversity = 2 * (math.log((1 + math.e) / 2) - 0.5)
    loss = RIDELoss(max_m=0.5, logit_scale=1.0, diversity_factor=-0.2)
    loss.set_class_counts(torch.tensor([4.0, 1.0]))
    got = loss(_output(TWO_EXPERTS), torch.tensor([0]))
    assert got.item() == pytest.approx(individual - 0.2 * diversity, rel=1e-6)
    assert individual == pytest.approx(0.421276 + 1.583331, abs=1e-5)


def test_scaled_cosine_heads_equal_ldam_with_scale() -> None:
    # heads scale cosines by s = 30 and the loss subtracts s * m: the individual term is LDAM(cos, s = 30)
    cos = torch.rand(3, 6, 4) * 2 - 1
    target = torch.tensor([0, 1, 2, 3, 0, 3])
    counts = torch.tensor([50.0, 20.0, 5.0, 2.0])
    loss = RIDELoss(diversity_factor=0.0)
    loss.set_class_counts(counts)
    margins = ldam_margins(counts, 0.5)
    expected = sum(ldam_loss(c, target, margins, s=30.0) for c in cos)
    torch.testing.assert_close(loss(_output(30 * cos), target), expected)


def _reference_transcription(z: Tensor, target: Tensor, counts: Tensor, drw_on: bool) -> Tensor:
    """The reference's RIDELoss.forward (frank-xwang/RIDE-LongTailRecognition model/loss.py), restated plainly."""
    s, max_m, factor, r = 30.0, 0.5, -0.2, 0.05
    m = 1.0 / counts.double().pow(0.25)
    m = (m * (max_m / m.max())).float()
    beta = 0.9999
    w = (1 - beta) / (1 - torch.pow(beta, counts.double()))
    w = (w / w.sum() * counts.numel()).float()
    prior = counts.double() / counts.sum()
    v = counts.numel() * prior * r + 1 - r
    v = (v / v.max()).float()
    mean = z.mean(0)
    total = torch.zeros(())
    for logits in z:
        x = logits - F.one_hot(target, counts.numel()) * (m * s)
        total = total + F.cross_entropy(x, target, weight=w if drw_on else None)
        temp = v.view(1, -1) if drw_on else torch.tensor(1.0)
        t_mean = temp.mean()
        kl = F.kl_div(F.log_softmax(logits / temp, 1), F.softmax(mean / temp, 1).detach(), reduction="batchmean")
        total = total + factor * t_mean * t_mean * kl
    return total


@pytest.mark.parametrize("drw_on", [False, True])
def test_matches_the_reference_formula(drw_on: bool) -> None:
    torch.manual_seed(1)
    counts = torch.tensor([100.0, 40.0, 12.0, 5.0, 2.0])
    z = 30 * (torch.rand(3, 16, 5) * 2 - 1)
    target = torch.randint(0, 5, (16,))
    loss = RIDELoss()
    loss.set_class_counts(counts)
    if drw_on:
        loss.set_class_weights(effective_number_weights(counts, 0.9999))
    torch.testing.assert_close(loss(_output(z), target), _reference_transcription(z, target, counts, drw_on))


def test_drw_switches_weights_and_temperature_together() -> None:
    counts = torch.tensor([9.0, 3.0, 1.0])
    loss = RIDELoss()
    loss.set_class_counts(counts)
    assert loss.temperature() == 1.0 and not bool(loss.reweighted)
    weights = effective_number_weights(counts, 0.9999)
    loss.set_class_weights(weights)
    torch.testing.assert_close(loss.class_weights, weights)
    torch.testing.assert_close(loss.temperature(), ride_diversity_temperature(counts, 1.0, 0.05))
    loss.set_class_weights(None)
    assert loss.temperature() == 1.0
    torch.testing.assert_close(loss.class_weights, torch.ones(3))
    loss.set_class_weights(weights)
    loss.set_class_counts(counts)  # new counts reset the weights, and the temperature with them
    assert loss.temperature() == 1.0


def test_drw_state_survives_a_state_dict_round_trip() -> None:
    counts = torch.tensor([9.0, 3.0, 1.0])
    source = RIDELoss()
    source.set_class_counts(counts)
    source.set_class_weights(effective_number_weights(counts, 0.9999))
    target = RIDELoss()
    target.set_class_counts(counts)
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(target.temperature(), source.temperature())
    torch.testing.assert_close(target.class_weights, source.class_weights)


def test_distribution_aware_temperature_can_be_switched_off() -> None:
    counts = torch.tensor([9.0, 3.0, 1.0])
    loss = RIDELoss(distribution_aware_temperature=False, diversity_temperature=2.0)
    loss.set_class_counts(counts)
    loss.set_class_weights(effective_number_weights(counts, 0.9999))
    assert loss.temperature() == 2.0


def test_functional_core_matches_the_module() -> None:
    counts = torch.tensor([9.0, 3.0, 1.0])
    z = torch.randn(2, 5, 3)
    target = torch.tensor([0, 1, 2, 0, 0])
    loss = RIDELoss(logit_scale=1.0, base_loss_factor=0.5, diversity_factor=-0.4)
    loss.set_class_counts(counts)
    expected = ride_loss(z, target, ldam_margins(counts, 0.5), None, -0.4, 1.0, 0.5)
    torch.testing.assert_close(loss(_output(z), target), expected)


def test_soft_targets_are_the_expectation_of_hard_ones() -> None:
    counts = torch.tensor([9.0, 3.0, 1.0])
    loss = RIDELoss(logit_scale=1.0, reduction="mean")
    loss.set_class_counts(counts)
    z = torch.randn(3, 4, 3)
    hard = torch.tensor([0, 2, 1, 1])
    torch.testing.assert_close(loss(_output(z), F.one_hot(hard, 3).float()), loss(_output(z), hard))


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors() -> None:
    loss = RIDELoss()
    single = ModelOutput(logits=torch.randn(2, 3), features=torch.zeros(2, 1))
    with pytest.raises(ValueError, match="class counts"):
        loss(_output(torch.randn(3, 2, 3)), torch.tensor([0, 1]))
    loss.set_class_counts(torch.tensor([5.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="per-expert logits"):
        loss(single, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="0 experts"):
        loss(_output(torch.randn(0, 2, 3)), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="4 classes"):
        loss(_output(torch.randn(3, 2, 4)), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="temperature"):
        ride_diversity_loss(torch.randn(2, 2, 3), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="temperature"):
        ride_diversity_loss(torch.randn(2, 2, 3), 0.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_m": -0.1},
        {"logit_scale": 0.0},
        {"base_loss_factor": -1.0},
        {"diversity_factor": math.inf},
        {"diversity_temperature": 0.0},
        {"reweight_factor": 1.5},
        {"reduction": "sum"},
    ],
)
def test_bad_arguments(kwargs) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RIDELoss(**kwargs)


# ---------------------------------------------------------------------------------------------- Trainer
def _data() -> SyntheticLTDataModule:
    """3 classes, counts [16, 8, 4], 8x8 RGB images, batch 8 (4 steps per epoch)."""
    return SyntheticLTDataModule(
        num_classes=3, n_max=16, imbalance_ratio=4, image_size=8, batch_size=8, seed=3, augment=False
    )


def _model(dm: SyntheticLTDataModule) -> LongTailModule:
    backbone = MultiExpertResNetCifar(depth=8, num_experts=3, widths=(4, 8, 8), expert_widths=(6, 12))
    return LongTailModule(
        backbone,
        num_classes=dm.num_classes,
        class_counts=dm.class_counts,
        classifier=functools.partial(
            MultiExpertHead, num_experts=3, expert_head=functools.partial(CosineHead, scale=30.0)
        ),
        criterion=RIDELoss(),
    )


class RecordTemperature(L.Callback):
    def __init__(self) -> None:
        self.by_epoch: dict[int, Tensor | float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        t = pl_module.criterion.temperature()
        self.by_epoch[trainer.current_epoch] = t.clone() if isinstance(t, Tensor) else t


def _trainer(tmp: Path, max_epochs: int, callbacks: list[L.Callback], val: bool = False) -> L.Trainer:
    limit_val = None if val else 0
    return quiet_trainer(tmp, callbacks, max_epochs=max_epochs, num_sanity_val_steps=0, limit_val_batches=limit_val)


def test_trainer_fit_with_multi_expert_model_and_drw(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    dm = _data()
    model = _model(dm)
    recorder = RecordTemperature()
    trainer = _trainer(tmp_path, 2, [DeferredReweighting(switch_epoch=1), recorder], val=True)
    trainer.fit(model, datamodule=dm)
    assert trainer.state.finished
    assert math.isfinite(float(trainer.callback_metrics["train/loss_epoch"]))
    assert "val/acc" in trainer.callback_metrics
    assert recorder.by_epoch[0] == 1.0  # DRW off: T_0
    counts = torch.tensor(dm.class_counts, dtype=torch.float32)
    torch.testing.assert_close(recorder.by_epoch[1], ride_diversity_temperature(counts, 1.0, 0.05))
    torch.testing.assert_close(model.criterion.class_weights, effective_number_weights(counts, 0.9999))


def _fit(tmp: Path, stop_after: int, ckpt_path: str | None = None, save_to: Path | None = None) -> LongTailModule:
    L.seed_everything(0, verbose=False)
    dm = _data()
    model = _model(dm)
    # a 3-epoch run stopped after `stop_after` epochs (DRW at epoch 1 must lie inside the run)
    trainer = _trainer(tmp, 3, [DeferredReweighting(switch_epoch=1), StopAfter(stop_after)])
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
    if save_to is not None:
        trainer.save_checkpoint(save_to)
    return model


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, Tensor]:
    with _one_thread():
        return _fit(tmp_path_factory.mktemp("ride_reference"), 3).state_dict()


@pytest.mark.parametrize("stop_after", [1, 2], ids=["before_switch", "after_switch"])
def test_resume_before_and_after_the_switch_equals_an_uninterrupted_run(
    tmp_path: Path, stop_after: int, uninterrupted: dict[str, Tensor]
) -> None:
    # DRW switches at epoch 1: a checkpoint after epoch 0 resumes across the switch, one after epoch 1 beyond it
    ckpt = tmp_path / "stop.ckpt"
    _fit(tmp_path / "a", stop_after, save_to=ckpt)
    resumed = _fit(tmp_path / "b", 3, ckpt_path=str(ckpt))
    for (name, a), b in zip(uninterrupted.items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    assert bool(resumed.criterion.reweighted)
