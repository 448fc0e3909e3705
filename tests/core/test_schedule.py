"""``lt_lightning.schedule``: epochs or fractions of the run, by hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from lt_lightning.optim import WarmupCosineLR, WarmupMultiStepLR
from lt_lightning.schedule import resolve_epoch, resolve_length, run_epochs, validate_epoch_value
from tests.helpers import lr_sequence


@pytest.mark.parametrize(
    ("value", "run", "epoch"),
    [(160, 200, 160), (0.8, 200, 160), (0.8, 40, 32), (0.8, 10, 8), (0.9, 10, 9), (0.7619, 210, 160), (0, 5, 0)],
)
def test_resolve_epoch(value, run, epoch) -> None:
    assert resolve_epoch(value, run, "milestones") == epoch


@pytest.mark.parametrize(
    ("value", "run", "length"), [(5, 200, 5), (0.025, 200, 5), (0.025, 40, 1), (0.025, 10, 1), (0.0476, 210, 10)]
)
def test_resolve_length(value, run, length) -> None:
    assert resolve_length(value, run, "warmup_epochs") == length


@pytest.mark.parametrize("value", [-1, 1.0, 0.0, 1.5, -0.2, True, "8", None])
def test_bad_values_name_the_setting(value) -> None:
    with pytest.raises(ValueError, match="switch_epoch must be an integer epoch >= 0 or a fraction"):
        validate_epoch_value(value, "switch_epoch")


def test_an_integer_at_or_beyond_the_run_is_an_error_unless_not_strict() -> None:
    with pytest.raises(ValueError, match=r"DRW: switch_epoch=10 is at or beyond the end of a run of .*=10"):
        resolve_epoch(10, 10, "switch_epoch", "DRW")
    with pytest.raises(ValueError, match=r"warmup_epochs=11 epochs is longer than the run"):
        resolve_length(11, 10, "warmup_epochs")
    assert resolve_epoch(160, 1, "milestones", strict=False) == 160  # fast_dev_run: a wiring check


def test_a_fraction_past_the_end_of_a_tiny_run_warns() -> None:
    with pytest.warns(UserWarning, match="milestones=0.8 of a 1-epoch run is epoch 1: it never takes effect"):
        assert resolve_epoch(0.8, 1, "milestones") == 1


def test_a_fraction_needs_the_run_length() -> None:
    with pytest.raises(ValueError, match="is a fraction of the run, but the run's length is None"):
        resolve_epoch(0.5, None, "milestones")


def test_fractional_ldam_drw_schedule_equals_the_absolute_one_at_200_epochs() -> None:
    with run_epochs(200):
        fractional = lr_sequence(lambda o: WarmupMultiStepLR(o, 0.025, [0.8, 0.9], [0.01, 0.0001]), 200)
    absolute = lr_sequence(lambda o: WarmupMultiStepLR(o, 5, [160, 180], [0.01, 0.0001]), 200)
    assert fractional == absolute
    assert absolute[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1]) and absolute[159] == 0.1
    assert absolute[160] == pytest.approx(0.001) and absolute[180] == pytest.approx(0.00001)


def test_fractional_schedule_at_a_10_epoch_budget() -> None:
    lrs = lr_sequence(lambda o: WarmupMultiStepLR(o, 0.025, [0.8, 0.9], [0.01, 0.0001], total_epochs=10), 10)
    assert lrs == pytest.approx([0.1] * 8 + [0.001, 0.00001])


def test_cosine_follows_the_run_or_a_fraction_of_it() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with run_epochs(40):
        assert WarmupCosineLR(optimizer).max_epochs == 40
        assert WarmupCosineLR(optimizer, max_epochs=0.75, warmup_epochs=0.025).max_epochs == 30
    with run_epochs(1):  # a fractional warm-up leaves the cosine one epoch of a 1-epoch run
        assert WarmupCosineLR(optimizer, warmup_epochs=0.06).warmup_epochs == 0
    with pytest.raises(ValueError, match="max_epochs=None spans the run, but the run's length is unknown"):
        WarmupCosineLR(optimizer)


def test_scheduler_with_an_absolute_milestone_beyond_the_run_is_an_error() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with run_epochs(10), pytest.raises(ValueError, match="WarmupMultiStepLR: milestones=160 is at or beyond the end"):
        WarmupMultiStepLR(optimizer, 1, [160, 180])
    with run_epochs(10, strict=False):  # fast_dev_run
        assert WarmupMultiStepLR(optimizer, 1, [160, 180]).milestones == [160, 180]
