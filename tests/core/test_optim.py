"""LR schedules against the recipes' hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from lt_lightning.optim import WarmupCosineLR, WarmupMultiStepLR
from tests.helpers import lr_sequence


def test_ldam_drw_recipe_matches_adjust_learning_rate() -> None:
    """kaidic/LDAM-DRW: epoch+1 <= 5 -> lr*(epoch+1)/5; epoch+1 > 180 -> lr*1e-4; > 160 -> lr*1e-2."""
    lrs = lr_sequence(lambda o: WarmupMultiStepLR(o), 200)

    def reference(epoch: int) -> float:
        e = epoch + 1
        if e <= 5:
            return 0.1 * e / 5
        if e > 180:
            return 0.1 * 0.0001
        if e > 160:
            return 0.1 * 0.01
        return 0.1

    for epoch in range(200):
        assert lrs[epoch] == pytest.approx(reference(epoch), rel=1e-12), epoch
    assert lrs[:6] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.1])
    assert lrs[159] == pytest.approx(0.1) and lrs[160] == pytest.approx(1e-3) and lrs[180] == pytest.approx(1e-5)


def test_cosine_endpoints_and_midpoint() -> None:
    lrs = lr_sequence(lambda o: WarmupCosineLR(o, max_epochs=10, warmup_epochs=0), 10)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[5] == pytest.approx(0.05)
    assert lrs[9] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.9)))
    warm = lr_sequence(lambda o: WarmupCosineLR(o, max_epochs=12, warmup_epochs=2, eta_min=0.001), 12)
    assert warm[:3] == pytest.approx([0.05, 0.1, 0.1])


def test_scheduler_state_resumes_to_same_lr() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = WarmupMultiStepLR(opt, warmup_epochs=2, milestones=[4, 6], factors=[0.1, 0.01])
    for _ in range(5):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched2 = WarmupMultiStepLR(opt2, warmup_epochs=2, milestones=[4, 6], factors=[0.1, 0.01])
    sched2.load_state_dict(state)
    opt2.step()
    sched2.step()
    opt.step()
    sched.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"]) == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warmup_epochs": -1},
        {"milestones": [5, 3], "factors": [0.1, 0.01]},
        {"milestones": [5], "factors": [0.1, 0.01]},
        {"milestones": [5], "factors": [float("nan")]},
    ],
)
def test_multistep_bad_input(kwargs: dict) -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError):
        WarmupMultiStepLR(opt, **kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"max_epochs": 0}, {"max_epochs": 5, "warmup_epochs": 5}, {"max_epochs": 5, "eta_min": -1}]
)
def test_cosine_bad_input(kwargs: dict) -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError):
        WarmupCosineLR(opt, **kwargs)
