"""Safe checkpoints: atomic, durable writes of local checkpoint files (:class:`AtomicCheckpointIO`).

What Lightning 2.6.6 does today (read in the installed wheel, checked by experiment)
------------------------------------------------------------------------------------
``TorchCheckpointIO.save_checkpoint`` (``lightning/fabric/plugins/io/torch_io.py:56-58``) calls ``_atomic_save``
(``lightning/fabric/utilities/cloud_io.py:85-122``): the whole checkpoint is serialised into a ``BytesIO`` (line 98,
so a kill during ``torch.save`` touches no file), then written inside an fsspec transaction (lines 103-117). For a
local path fsspec (2026.9.0) writes the bytes to ``tempfile.mkstemp()`` -- a file in ``$TMPDIR`` (``/tmp``), not
next to the checkpoint (``fsspec/implementations/local.py:404``) -- and commits with ``shutil.move`` (``local.py:449``).
Nothing is fsynced. ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` through the same checkpoint IO
(``_save_last_checkpoint``, ``lightning/pytorch/callbacks/model_checkpoint.py:906``).

Experiment (a process rewriting a 64 MB checkpoint in a loop through ``TorchCheckpointIO``, SIGKILLed while the
target was being rewritten, 8 kills per case, on this machine's ext4 disk):

* ``$TMPDIR`` on the checkpoint's filesystem: ``shutil.move`` is an ``os.rename``, atomic. ``last.ckpt`` loaded after
  8 of 8 kills; each kill during the write left a checkpoint-sized ``tmpXXXXXXXX`` in ``/tmp`` that nothing removes.
* ``$TMPDIR`` on another filesystem (``TMPDIR=/dev/shm``, a tmpfs; the common cluster layout of a node-local ``/tmp``
  and checkpoints on a shared filesystem): ``os.rename`` fails with ``EXDEV`` and ``shutil.move`` falls back to
  ``copy2``, which opens the *target* for writing (truncating it) and copies into it. 6 of 8 kills left a truncated
  ``last.ckpt`` (``torch.load``: ``EOFError``), the other 2 fell outside the copy. ``tests/checkpointing/
  test_atomic_checkpoint.py`` repeats this.
* No fsync of the file or its directory: after a power loss or node crash the renamed file can be empty on
  filesystems that do not order data before a rename.
* ``ModelCheckpoint(save_last="link")`` (``model_checkpoint.py:610-621``) removes ``last.ckpt`` and then creates the
  symlink; a kill in between leaves no ``last.ckpt`` (the target it points to is written by the checkpoint IO). That
  is the callback's logic, outside any checkpoint IO; ``save_last=True`` (a full file) avoids it.

:class:`AtomicCheckpointIO` writes a temporary file in the checkpoint's own directory, fsyncs it, ``os.replace``\\ s
it onto the target (atomic on POSIX and Windows within one filesystem) and fsyncs the directory: a kill at any
moment leaves either the previous checkpoint or the new one, never a partial file. It streams ``torch.save`` into
the file (no second in-memory copy of the checkpoint) and removes the temporary files that killed saves of the same
target left behind.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import socket
import time
from typing import IO, Any

import numpy as np
import torch
from fsspec.utils import get_protocol
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.types import _PATH

from lt_lightning._checks import check_bool

__all__ = ["SLOW_SAVE_ENV", "SLOW_SAVE_SKIP_ENV", "AtomicCheckpointIO"]

SLOW_SAVE_ENV = "LT_LIGHTNING_SLOW_SAVE"
"""Test seam (opt-in, for crash tests only): seconds :class:`AtomicCheckpointIO` sleeps after writing the first part
of the temporary file, so that a test can SIGKILL the process while a save is in progress."""

SLOW_SAVE_SKIP_ENV = "LT_LIGHTNING_SLOW_SAVE_SKIP"
"""With :data:`SLOW_SAVE_ENV`: the number of saves of the process written at full speed before the slow one(s)."""

_TEMP_SUFFIX = ".tmp"


def _seam_setting(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value >= 0 and np.isfinite(value)):
        raise ValueError(f"environment variable {name} must be a number >= 0, got {raw!r}")
    return value


class _PauseAfterFirstWrite:
    """File wrapper of the test seam: flushes and sleeps once, after the first bytes reached the file."""

    def __init__(self, file: IO[bytes], seconds: float) -> None:
        self._file = file
        self._seconds = seconds
        self._paused = False

    def write(self, data: Any) -> int:
        written = self._file.write(data)
        if not self._paused and written:
            self._paused = True
            self._file.flush()
            time.sleep(self._seconds)
        return written

    def flush(self) -> None:
        self._file.flush()


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _fsync_directory(directory: str) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened (Windows) or synced."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic and durable: temp file in the same directory, fsync, replace.

    A save of ``dir/name.ckpt`` streams ``torch.save`` into ``dir/.name.ckpt.<host>-<pid>-<random>.tmp`` (created with
    mode ``0o666`` minus the umask, like any new file), flushes and ``os.fsync``\\ s it, ``os.replace``\\ s it onto
    ``dir/name.ckpt`` and fsyncs ``dir``. Until the replace the previous ``name.ckpt`` is untouched; a process killed
    at any moment leaves the previous or the new checkpoint, complete. Temporary names end in ``.tmp``, so
    ``ckpt_path="last"`` (which looks for ``last*.ckpt``) never picks one. Temporary files of the same target left
    by killed processes of this host (their pid no longer runs) are removed at the next save. Loading and removing
    are :class:`~lightning.fabric.plugins.TorchCheckpointIO`'s. Remote paths (``s3://``, ...) go to
    ``TorchCheckpointIO`` unchanged (fsspec's transaction; an object store replaces an object atomically).

    Test seam (off unless set; for crash tests): the environment variable :data:`SLOW_SAVE_ENV` =
    ``SECONDS`` makes each save sleep ``SECONDS`` after the first bytes of the temporary file are written (the file
    is then partial on disk), and :data:`SLOW_SAVE_SKIP_ENV` = ``N`` writes the first ``N`` saves of this instance
    at full speed.

    Args:
        fsync: fsync the file and its directory (durability across a power loss). ``False`` keeps the atomic replace
            (safety against a killed process) without waiting for the disk.

    Raises:
        TypeError: ``storage_options`` given (as ``TorchCheckpointIO``).
        ValueError: a malformed :data:`SLOW_SAVE_ENV` / :data:`SLOW_SAVE_SKIP_ENV` value.
    """

    def __init__(self, fsync: bool = True) -> None:
        super().__init__()
        self.fsync = check_bool("fsync", fsync)
        self._saves = 0

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(
                "`Trainer.save_checkpoint(..., storage_options=...)` with `storage_options` arg"
                f" is not supported for `{type(self).__name__}`. Please implement your custom `CheckpointIO`"
                " to define how you'd like to use `storage_options`."
            )
        if get_protocol(str(path)) != "file":
            super().save_checkpoint(checkpoint, path)
            return
        self._saves += 1
        target = os.path.abspath(_strip_file_protocol(os.fspath(path)))
        directory, name = os.path.split(target)
        os.makedirs(directory, exist_ok=True)
        self.remove_stale_temporary_files(target)
        slow = _seam_setting(SLOW_SAVE_ENV, 0.0)
        slow = slow if slow and self._saves > int(_seam_setting(SLOW_SAVE_SKIP_ENV, 0.0)) else 0.0
        temp = self._create_temporary(directory, name)
        try:
            with open(temp, "wb") as file:
                torch.save(checkpoint, _PauseAfterFirstWrite(file, slow) if slow else file)
                file.flush()
                if self.fsync:
                    os.fsync(file.fileno())
            os.replace(temp, target)
        except BaseException:
            try:
                os.remove(temp)
            except OSError:
                pass
            raise
        if self.fsync:
            _fsync_directory(directory)

    @staticmethod
    def _create_temporary(directory: str, name: str) -> str:
        prefix = f".{name}.{_host_tag()}-{os.getpid()}-"
        for _ in range(100):
            temp = os.path.join(directory, f"{prefix}{secrets.token_hex(4)}{_TEMP_SUFFIX}")
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            except FileExistsError:
                continue
            os.close(fd)
            return temp
        raise FileExistsError(errno.EEXIST, "no free temporary checkpoint name", os.path.join(directory, prefix))

    @staticmethod
    def temporary_files(target: _PATH) -> list[str]:
        """Temporary files of saves of ``target`` (in progress, or left by killed processes), sorted."""
        directory, name = os.path.split(os.path.abspath(os.fspath(target)))
        pattern = re.compile(rf"^\.{re.escape(name)}\..+-\d+-[0-9a-f]+{re.escape(_TEMP_SUFFIX)}$")
        try:
            entries = os.listdir(directory)
        except OSError:
            return []
        return sorted(os.path.join(directory, e) for e in entries if pattern.match(e))

    @classmethod
    def remove_stale_temporary_files(cls, target: _PATH) -> list[str]:
        """Remove the temporary files of ``target`` whose writer (a process of this host) no longer runs.

        Files of other hosts (a shared filesystem) and of running processes are kept. Returns the removed paths.
        Does nothing on Windows (no safe way to probe a pid there).
        """
        if os.name == "nt":
            return []
        pattern = re.compile(rf"\.(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]+{re.escape(_TEMP_SUFFIX)}$")
        host, removed = _host_tag(), []
        name = os.path.basename(os.path.abspath(os.fspath(target)))
        for temp in cls.temporary_files(target):
            match = pattern.match(os.path.basename(temp)[len(name) + 1 :])
            if match is None or match["host"] != host:
                continue
            pid = int(match["pid"])
            if pid == os.getpid() or _pid_alive(pid):
                continue
            try:
                os.remove(temp)
                removed.append(temp)
            except FileNotFoundError:
                pass
        return removed


def _strip_file_protocol(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path
