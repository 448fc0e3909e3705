"""Atomic checkpoint writes: a fit SIGKILLed during a save resumes from the last good checkpoint.

The crash tests use the documented test seam of :class:`AtomicCheckpointIO` (``LT_LIGHTNING_SLOW_SAVE``: the save
sleeps once part of the temporary file is on disk), wait for the temporary file to appear, and SIGKILL the process:
no mock, the real CLI writes and the real Lightning restore reads. A sibling test shows that Lightning's own
``TorchCheckpointIO`` leaves a truncated checkpoint under the same kill when ``$TMPDIR`` is another filesystem.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from lt_lightning.checkpointing import SLOW_SAVE_ENV, SLOW_SAVE_SKIP_ENV, AtomicCheckpointIO, _host_tag

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and POSIX rename semantics")


def _other_filesystem_tmp(tmp_path: Path) -> str | None:
    """A fresh folder on another filesystem than ``tmp_path`` (``/dev/shm``), or ``None`` when there is none."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or shm.stat().st_dev == tmp_path.stat().st_dev:
        return None
    return tempfile.mkdtemp(prefix="lt_lightning_test_", dir=shm)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------ AtomicCheckpointIO in-process
def test_save_replaces_the_target_with_normal_permissions_and_leaves_no_temporary_file(tmp_path) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "new" / "dir" / "last.ckpt"  # the directory is created
    io.save_checkpoint({"step": 1, "w": torch.arange(5.0)}, target)
    io.save_checkpoint({"step": 2, "w": torch.arange(6.0)}, target)
    loaded = io.load_checkpoint(target)
    assert loaded["step"] == 2 and torch.equal(loaded["w"], torch.arange(6.0))
    assert os.listdir(target.parent) == ["last.ckpt"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_a_failed_save_keeps_the_previous_checkpoint_and_removes_its_temporary_file(tmp_path) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)
    with pytest.raises(Exception, match="pickle|lambda"):
        io.save_checkpoint({"step": 2, "bad": lambda: None}, target)  # torch.save fails half-way
    assert io.load_checkpoint(target)["step"] == 1
    assert os.listdir(tmp_path) == ["last.ckpt"]


def test_temporary_files_of_dead_processes_are_removed_at_the_next_save(tmp_path) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    prefix = f".last.ckpt.{_host_tag()}"
    stale = tmp_path / f"{prefix}-{dead.pid}-0badc0de.tmp"
    live = tmp_path / f"{prefix}-{os.getppid()}-0badc0de.tmp"  # a running process: maybe still writing
    other_host = tmp_path / f".last.ckpt.some_other_host-{dead.pid}-0badc0de.tmp"  # shared filesystem: not ours
    other_target = tmp_path / f".epoch=0.ckpt.{prefix[len('.last.ckpt.') :]}-{dead.pid}-0badc0de.tmp"
    for path in (stale, live, other_host, other_target):
        path.write_bytes(b"partial")
    assert AtomicCheckpointIO.temporary_files(target) == sorted(str(p) for p in (stale, live, other_host))
    io.save_checkpoint({"step": 1}, target)
    assert not stale.exists()
    assert live.exists() and other_host.exists() and other_target.exists()
    assert io.load_checkpoint(target)["step"] == 1


def test_remote_paths_go_through_fsspec_and_storage_options_are_rejected(tmp_path) -> None:
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 3}, "memory://lt_lightning_test/last.ckpt")
    assert io.load_checkpoint("memory://lt_lightning_test/last.ckpt")["step"] == 3
    io.remove_checkpoint("memory://lt_lightning_test/last.ckpt")
    with pytest.raises(TypeError, match="storage_options"):
        io.save_checkpoint({"step": 1}, tmp_path / "x.ckpt", storage_options={"a": 1})
    with pytest.raises(ValueError, match="fsync must be a bool"):
        AtomicCheckpointIO(fsync="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["fast", "-1", "nan"])
def test_a_malformed_slow_save_seam_names_the_variable(tmp_path, monkeypatch, value) -> None:
    monkeypatch.setenv(SLOW_SAVE_ENV, value)
    with pytest.raises(ValueError, match=f"{SLOW_SAVE_ENV} must be a number >= 0, got '{value}'"):
        AtomicCheckpointIO().save_checkpoint({"step": 1}, tmp_path / "last.ckpt")


def test_during_a_save_the_target_still_holds_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    """While the new checkpoint is half written (the seam holds the save), readers see the old one, complete."""
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.zeros(1000)}, target)
    monkeypatch.setenv(SLOW_SAVE_ENV, "1.5")
    monkeypatch.setenv(SLOW_SAVE_SKIP_ENV, "1")  # the save above was the first of this instance
    writer = threading.Thread(target=io.save_checkpoint, args=({"step": 2, "w": torch.ones(1000)}, target))
    writer.start()
    deadline = time.monotonic() + 30
    while not AtomicCheckpointIO.temporary_files(target) and time.monotonic() < deadline:
        time.sleep(0.01)
    temps = AtomicCheckpointIO.temporary_files(target)
    assert temps, "the save never created its temporary file"
    assert os.path.getsize(temps[0]) > 0
    assert torch.load(target, weights_only=True)["step"] == 1
    writer.join()
    assert torch.load(target, weights_only=True)["step"] == 2
    assert not AtomicCheckpointIO.temporary_files(target)


# ------------------------------------------------------------------ crash tests (subprocess + SIGKILL)
CONFIG = """
seed_everything: 0
trainer:
  max_epochs: 3
  accelerator: cpu
  devices: 1
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  limit_train_batches: 2
  limit_val_batches: 1
  num_sanity_val_steps: 0
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {dirpath: ckpt, save_last: true, save_top_k: 1, enable_version_counter: false}
data:
  class_path: lt_lightning.data.digits.DigitsLTDataModule
  init_args: {imbalance_ratio: 10.0, batch_size: 16}
model:
  class_path: lt_lightning.module.LongTailModule
  init_args:
    backbone:
      class_path: lt_lightning.backbones.resnet_cifar.ResNet20
      init_args: {in_channels: 1}
    optimizer:
      class_path: torch.optim.SGD
      init_args: {lr: 0.05, momentum: 0.9}
"""


def _wait_for(predicate, proc: subprocess.Popen, log: Path, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the fit ended (status {proc.returncode}) before the awaited save:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no save in progress after {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)


def test_sigkill_during_a_checkpoint_save_then_resume_from_last(tmp_path, monkeypatch) -> None:
    """`lt-lightning fit` killed while writing last.ckpt: last.ckpt is the previous epoch's, loads, and resumes."""
    (tmp_path / "fit.yaml").write_text(CONFIG)
    target = tmp_path / "ckpt" / "last.ckpt"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    # epoch 0 writes epoch=0-step=2.ckpt and last.ckpt (saves 1, 2), epoch 1 epoch=1-step=4.ckpt (3), then last.ckpt
    # (4): held by the seam mid-write, and killed
    env |= {SLOW_SAVE_ENV: "600", SLOW_SAVE_SKIP_ENV: "3"}
    other_tmp = _other_filesystem_tmp(tmp_path)
    if other_tmp is not None:
        env["TMPDIR"] = other_tmp  # where Lightning's own IO would lose the checkpoint (next test); ours does not care
    log = tmp_path / "fit.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lt_lightning", "fit", "-c", "fit.yaml"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        # the held save is the one after epoch=1-step=4.ckpt: epoch 0's fast save of last.ckpt also has a temporary
        # file for a moment, which a busy machine's polling can catch
        held = target.parent / "epoch=1-step=4.ckpt"
        _wait_for(lambda: held.is_file() and bool(AtomicCheckpointIO.temporary_files(target)), proc, log)
        time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        if other_tmp is not None:
            subprocess.run(["rm", "-rf", other_tmp], check=False)

    partial = AtomicCheckpointIO.temporary_files(target)
    assert len(partial) == 1 and os.path.getsize(partial[0]) > 0
    with pytest.raises(Exception):  # noqa: B017 - the killed save's bytes are not a checkpoint
        torch.load(partial[0], weights_only=True)
    last = torch.load(target, weights_only=True)
    assert (last["epoch"], last["global_step"]) == (0, 2)
    assert last["callbacks"]["DataFingerprint"]["data_fingerprint"]["dataset"] == "DigitsLTDataModule"
    assert (tmp_path / "ckpt" / "epoch=1-step=4.ckpt").is_file()

    from lt_lightning.cli import run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cli = run(["fit", "-c", "fit.yaml", "--ckpt_path", "last"])
    assert cli.trainer.ckpt_path == str(target) or Path(cli.trainer.ckpt_path).resolve() == target.resolve()
    assert cli.trainer.global_step == 6 and cli.trainer.current_epoch == 3
    assert torch.load(target, weights_only=True)["global_step"] == 6
    assert not AtomicCheckpointIO.temporary_files(target)  # the killed save's temporary file was cleaned up


LIGHTNING_SAVER = """
import sys
import torch
from lightning.fabric.plugins import TorchCheckpointIO

io, target, w = TorchCheckpointIO(), sys.argv[1], torch.zeros(8 * 2**20)  # 32 MB
io.save_checkpoint({"step": 0, "w": w}, target)
print("saved", flush=True)
step = 0
while True:
    step += 1
    io.save_checkpoint({"step": step, "w": w}, target)
"""


def test_lightning_default_io_truncates_the_checkpoint_when_tmpdir_is_another_filesystem(tmp_path) -> None:
    """Why AtomicCheckpointIO exists: Lightning 2.6's TorchCheckpointIO writes its temporary file in $TMPDIR; on
    another filesystem fsspec's commit copies into the target (shutil.move -> copy2), and a kill then truncates it.

    If this starts failing, Lightning (or fsspec) has made that path atomic: see lt_lightning/checkpointing.py.
    """
    other_tmp = _other_filesystem_tmp(tmp_path)
    if other_tmp is None:
        pytest.skip("needs a second filesystem (/dev/shm) for $TMPDIR")
    target = tmp_path / "last.ckpt"
    env = dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=other_tmp)
    outcomes = []
    try:
        for _ in range(4):
            proc = subprocess.Popen(
                [sys.executable, "-c", LIGHTNING_SAVER, str(target)], env=env, stdout=subprocess.PIPE, text=True
            )
            try:
                assert proc.stdout.readline().strip() == "saved"
                full = target.stat().st_size
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:  # the commit's copy truncates the target, then refills it
                    if target.stat().st_size < full:
                        break
                os.kill(proc.pid, signal.SIGKILL)
            finally:
                proc.kill()
                proc.wait()
                proc.stdout.close()
            try:
                torch.load(target, weights_only=True)
                outcomes.append("complete")
            except Exception as error:  # noqa: BLE001 - any load failure is the corruption shown here
                outcomes.append(f"corrupt: {type(error).__name__}")
                break
        leaked = os.listdir(other_tmp)
    finally:
        subprocess.run(["rm", "-rf", other_tmp], check=False)
    assert outcomes[-1].startswith("corrupt"), f"every kill left a loadable checkpoint: {outcomes}"
    assert leaked, "the killed save left no temporary file in $TMPDIR"
