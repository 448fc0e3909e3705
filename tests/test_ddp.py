"""DDP through the real CLI with 2 CPU processes (gloo), as ../shared/PITFALLS.md prescribes: subprocesses of
``python -m lt_lightning``, each rank writing JSON, assertions on the files.

The evaluation metric is exact under DDP: the unpadded sampler gives every test image to exactly one rank, and the
per-class correct/total sums equal a single-process run on the same checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lt_lightning.experiments import experiment_args

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
PROBE = "tests.ddp_probe.EvalCountsProbe"

pytestmark = pytest.mark.ddp


def _cli(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lt_lightning", *args, "--trainer.enable_progress_bar", "false"]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    )


def _ddp(devices: int) -> list[str]:
    return ["--trainer.accelerator", "cpu", "--trainer.devices", str(devices), "--trainer.strategy", "ddp"]


@pytest.mark.lean
def test_ddp_fit_and_exact_test_metric_equal_one_process(tmp_path: Path) -> None:
    # 1) a short 2-process fit (sharded train sampler, synced validation) writes the checkpoint
    fit = ["fit", "-c", str(QUICKSTART), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3"]
    _cli([*fit, *_ddp(2)], tmp_path)
    ckpt = tmp_path / "logs" / "quickstart" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    # 2) test it with 2 processes and with 1, each rank writing what it saw
    def test_run(devices: int) -> list[dict]:
        out = tmp_path / f"probe{devices}"
        strategy = _ddp(devices) if devices > 1 else ["--trainer.accelerator", "cpu", "--trainer.devices", "1"]
        probe = ["--trainer.callbacks+=" + PROBE, "--trainer.callbacks.out_dir", str(out)]
        _cli(["test", "-c", str(QUICKSTART), "--ckpt_path", str(ckpt), *strategy, *probe], tmp_path)
        return [json.loads((out / f"rank{r}.json").read_text()) for r in range(devices)]

    two, one = test_run(2), test_run(1)[0]
    assert [r["world_size"] for r in two] == [2, 2] and one["world_size"] == 1

    # every test image evaluated exactly once across ranks: disjoint shards whose union is the whole test set
    a, b = (set(r["images"]) for r in two)
    assert not a & b
    assert sorted(two[0]["images"] + two[1]["images"]) == sorted(one["images"])
    assert len(one["images"]) == 400  # Digits-LT: 40 test images per class

    # per-rank counts sum to the single-process counts, and the synced metric states equal them on every rank
    local_total = [x + y for x, y in zip(two[0]["local_total"], two[1]["local_total"], strict=True)]
    local_correct = [x + y for x, y in zip(two[0]["local_correct"], two[1]["local_correct"], strict=True)]
    assert local_total == one["total"] == one["local_total"] == [40] * 10
    assert local_correct == one["correct"] == one["local_correct"]
    for rank in two:
        assert rank["total"] == one["total"]
        assert rank["correct"] == one["correct"]
        for key in ("test/acc", "test/acc_balanced", "test/acc_many", "test/acc_medium", "test/acc_few"):
            assert rank["logged"][key] == pytest.approx(one["logged"][key], abs=1e-6)


STAGE_PROBE = "tests.ddp_probe.StageProbe"
CRT = experiment_args("digits_lt", "crt")


def _stage_override(tmp_path: Path, name: str, retraining: str, max_epochs: int, out: Path) -> Path:
    """A YAML replacing crt.yaml's callbacks: the given ClassifierRetraining init_args, and the stage probe."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        "trainer:\n"
        f"  max_epochs: {max_epochs}\n"
        "  limit_train_batches: 3\n"
        "  limit_val_batches: 2\n"
        "  logger: false\n"
        "  callbacks:\n"
        "    - class_path: lt_lightning.callbacks.classifier_retraining.ClassifierRetraining\n"
        f"      init_args: {retraining}\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        f"      init_args: {{dirpath: {tmp_path / name}, save_last: true}}\n"
        f"    - class_path: {STAGE_PROBE}\n"
        f"      init_args: {{out_dir: {out}}}\n"
    )
    return path


def _ranks(out: Path, n: int = 2) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(n)]


def test_ddp_classifier_retraining_switch_and_init_from(tmp_path: Path) -> None:
    import torch

    from lt_lightning.data.digits import DigitsLTDataModule
    from lt_lightning.data.staged import StagedSampler

    # 1) one fit under DDP (find_unused_parameters): epoch 0 joint, epoch 1 the cRT stage
    out = tmp_path / "switch"
    cfg = _stage_override(tmp_path, "switch", "{method: crt, epochs: 1}", 2, out)
    ddp = [*_ddp(2)[:-1], "ddp_find_unused_parameters_true"]
    _cli(["fit", *CRT, "-c", str(cfg), *ddp], tmp_path)
    r0, r1 = _ranks(out)
    labels = DigitsLTDataModule().train_labels
    staged = StagedSampler(labels, num_replicas=2, rank=0, seed=0, switch_epoch=1)
    for epoch in ("0", "1"):
        a, b = r0["epochs"][epoch], r1["epochs"][epoch]
        # the ranks' shards interleave to the stage's global draw (instance-balanced, then class-balanced)
        merged = [i for pair in zip(a["indices"], b["indices"], strict=True) for i in pair]
        assert merged == staged.global_indices(int(epoch)).tolist()
        # every rank holds the same weights after each epoch
        assert a["classifier"] == b["classifier"] and a["backbone"] == b["backbone"]
    assert r0["epochs"]["0"]["backbone_trainable"] and r0["epochs"]["0"]["backbone_training"]
    assert not r0["epochs"]["1"]["backbone_trainable"] and not r0["epochs"]["1"]["backbone_training"]
    # the stage left the backbone (weights and BatchNorm statistics) bit-identical, and trained the classifier
    assert r0["epochs"]["1"]["backbone"] == r0["epochs"]["0"]["backbone"]
    assert r0["epochs"]["1"]["classifier"] != r0["epochs"]["0"]["classifier"]

    # 2) a second fit from that checkpoint under plain DDP: LWS on the frozen model
    ckpt = tmp_path / "switch" / "last.ckpt"
    assert ckpt.is_file()
    out2 = tmp_path / "init_from"
    cfg2 = _stage_override(tmp_path, "init_from", f"{{method: lws, init_from: {ckpt}}}", 1, out2)
    _cli(["fit", *CRT, "-c", str(cfg2), *_ddp(2)], tmp_path)
    s0, s1 = _ranks(out2)
    assert s0["epochs"]["0"]["classifier"] == s1["epochs"]["0"]["classifier"] != s0["start"]["classifier"]
    assert s0["epochs"]["0"]["backbone"] == s1["epochs"]["0"]["backbone"] == s0["start"]["backbone"]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert not torch.equal(state["classifier.fc.weight"], torch.zeros(1))  # a real stage-1 classifier was loaded


def test_ddp_nearest_class_mean_and_tau_norm_equal_one_process(tmp_path: Path) -> None:
    # class means summed over processes and the τ sweep's counts summed over processes: the test metric of 2
    # processes equals one process on the same checkpoint
    fit = ["fit", "-c", str(QUICKSTART), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4"]
    _cli([*fit, "--trainer.accelerator", "cpu", "--trainer.devices", "1"], tmp_path)
    ckpt = tmp_path / "logs" / "quickstart" / "checkpoints" / "last.ckpt"
    for callback in ("lt_lightning.callbacks.NearestClassMean", "lt_lightning.callbacks.TauNormalization"):

        def test_run(devices: int, callback: str = callback) -> dict:
            out = tmp_path / f"{callback.rsplit('.', 1)[1]}{devices}"
            strategy = _ddp(devices) if devices > 1 else ["--trainer.accelerator", "cpu", "--trainer.devices", "1"]
            extra = [f"--trainer.callbacks+={callback}", "--trainer.callbacks+=" + PROBE]
            extra += ["--trainer.callbacks.out_dir", str(out)]
            _cli(["test", "-c", str(QUICKSTART), "--ckpt_path", str(ckpt), *strategy, *extra], tmp_path)
            return json.loads((out / "rank0.json").read_text())

        two, one = test_run(2), test_run(1)
        assert two["total"] == one["total"] == [40] * 10
        assert two["correct"] == one["correct"], callback
        assert two["logged"]["test/acc"] == pytest.approx(one["logged"]["test/acc"], abs=1e-6)
