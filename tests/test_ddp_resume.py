"""A mid-epoch resume under DDP (2 CPU processes, gloo, through the CLI) is the uninterrupted DDP run: every rank
skips exactly the batches of its own shard that were trained, augments as before, and ends bit-identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_ddp import QUICKSTART, _cli, _ddp

pytestmark = pytest.mark.ddp


def _override(tmp_path: Path, name: str, out: Path, save_every: int | None) -> Path:
    checkpoint = (
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        f"      init_args: {{dirpath: {tmp_path / 'ckpts'}, every_n_train_steps: {save_every}, save_top_k: -1,"
        " filename: '{step}', auto_insert_metric_name: false}\n"
        if save_every
        else ""
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        "trainer:\n"
        "  max_epochs: 2\n"
        "  limit_train_batches: 4\n"
        "  limit_val_batches: 2\n"
        "  num_sanity_val_steps: 0\n"
        "  logger: false\n"
        "  callbacks:\n"
        f"{checkpoint}"
        "    - class_path: tests.ddp_probe.BatchProbe\n"
        f"      init_args: {{out_dir: {out}}}\n"
    )
    return path


def _ranks(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_ddp_resume_mid_epoch_is_the_uninterrupted_ddp_run(tmp_path: Path) -> None:
    full_out, resumed_out = tmp_path / "full", tmp_path / "resumed"
    full_cfg = _override(tmp_path, "full", full_out, save_every=5)  # global step 5: epoch 1, after its first batch
    _cli(["fit", "-c", str(QUICKSTART), "-c", str(full_cfg), *_ddp(2)], tmp_path)
    ckpt = tmp_path / "ckpts" / "5.ckpt"
    assert ckpt.is_file(), sorted(p.name for p in (tmp_path / "ckpts").iterdir())
    resumed_cfg = _override(tmp_path, "resumed", resumed_out, save_every=None)
    _cli(["fit", "-c", str(QUICKSTART), "-c", str(resumed_cfg), *_ddp(2), "--ckpt_path", str(ckpt)], tmp_path)
    full, resumed = _ranks(full_out), _ranks(resumed_out)
    for rank in (0, 1):
        assert sorted(resumed[rank]["batches"]) == ["1/1", "1/2", "1/3"]  # not epoch 1's first batch again
        for key, labels in resumed[rank]["batches"].items():
            assert labels == full[rank]["batches"][key], (rank, key)
        assert resumed[rank]["state"] == full[rank]["state"]  # bit-identical weights and BatchNorm statistics
    assert full[0]["batches"]["1/1"] != full[1]["batches"]["1/1"]  # the ranks train on different shards
    assert full[0]["state"] == full[1]["state"]
