"""Epoch schedules under DDP (2 CPU processes, gloo, through the CLI) switch as in one process: LDAM-DRW's
deferred re-weighting turns the same effective-number weights on at the same epoch on every rank."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lt_lightning.data.digits import DigitsLTDataModule
from lt_lightning.experiments import experiment_args
from lt_lightning.losses.weighting import effective_number_weights
from tests.test_ddp import _cli, _ddp

pytestmark = pytest.mark.ddp
LDAM_DRW = experiment_args("digits_lt", "ldam_drw")


def _run(tmp_path: Path, name: str, devices: int) -> list[dict]:
    out = tmp_path / name
    override = tmp_path / f"{name}.yaml"
    override.write_text(
        "trainer:\n"
        "  max_epochs: 3\n"  # switch_epoch 0.8 of 3 epochs: the weights are on from epoch 2
        "  limit_train_batches: 2\n"
        "  limit_val_batches: 1\n"
        "  num_sanity_val_steps: 0\n"
        "  logger: false\n"
        "  callbacks:\n"
        "    - class_path: lt_lightning.callbacks.deferred_reweighting.DeferredReweighting\n"
        "      init_args: {switch_epoch: 0.8, weighting: effective_number, beta: 0.9999}\n"
        "    - class_path: tests.ddp_probe.CriterionProbe\n"
        f"      init_args: {{out_dir: {out}}}\n"
    )
    strategy = _ddp(devices) if devices > 1 else ["--trainer.accelerator", "cpu", "--trainer.devices", "1"]
    _cli(["fit", *LDAM_DRW, "-c", str(override), *strategy], tmp_path)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(devices)]


def test_ddp_deferred_reweighting_switches_like_one_process(tmp_path: Path) -> None:
    two, one = _run(tmp_path, "two", 2), _run(tmp_path, "one", 1)[0]
    counts = DigitsLTDataModule().class_counts
    expected = effective_number_weights(counts, 0.9999).tolist()
    for rank in (*two, one):
        weights = {e: rank["epochs"][e]["buffers"]["class_weights"] for e in ("0", "1", "2")}
        assert weights["0"] == weights["1"] == [1.0] * 10  # unweighted before the switch (LDAM-DRW's beta = 0)
        assert weights["2"] == pytest.approx(expected, rel=1e-6)
    for epoch in ("0", "1", "2"):
        assert (
            two[0]["epochs"][epoch]["buffers"] == two[1]["epochs"][epoch]["buffers"] == one["epochs"][epoch]["buffers"]
        )
    assert torch.tensor(expected).sum().item() == pytest.approx(10.0, rel=1e-6)
