"""The one checkpoint reader of lt_lightning, with one safety rule: nothing in a checkpoint is executed.

Every checkpoint the package reads -- a stage-1 model for ``init_from`` (cRT / LWS, RIDE's router, MiSLAS), a
self-supervised pre-training (SSP), a distillation teacher, the data fingerprint of an ``init_from`` file, the epoch of
a study unit's fit, pretrained backbone weights -- is read here, always with ``torch.load(..., weights_only=True)``
(PyTorch's restricted unpickler: tensors, plain containers and numbers, and the types allow-listed below). A
checkpoint that needs any other type is refused with a :class:`UnsafeCheckpointError` naming the types and the file;
there is no retry with ``weights_only=False``.

What our checkpoints legitimately hold besides tensors and plain values (measured over the 1,279 checkpoints of this
project's runs and tests with ``torch.serialization.get_unsafe_globals_in_checkpoint``, torch 2.x, Lightning 2.6.6):

* a checkpoint written by the ``lt-lightning`` CLI holds nothing else: LightningCLI saves the model's and the
  datamodule's YAML arguments as hyper-parameters, the callbacks' states are plain values;
* a datamodule built in Python records its arguments as given (``save_hyperparameters``): a ``pathlib`` path
  (``root=Path(...)``) or a NumPy scalar (``imbalance_ratio=np.float64(...)``) -- :data:`ALLOWED_TYPES`;
* a :class:`~lt_lightning.module.LongTailModule` built in Python pickles its parts (backbone, head, loss, optimizer
  factory: ``nn.Module`` subclasses, ``functools.partial``, test or notebook classes) into its hyper-parameters, so
  that ``load_from_checkpoint`` can rebuild it. Those are code, not data: they are refused, and the error lists them.
  Whoever trusts them allows them explicitly with PyTorch's own ``torch.serialization.add_safe_globals([...])`` (or
  the ``safe_globals`` context manager), which this reader honours -- still with ``weights_only=True``.

Lightning's own loading for ``--ckpt_path`` (resume, validate, test, predict) does not go through this module:
Lightning 2.6.6 passes ``weights_only=None`` to ``torch.load`` (``fabric/utilities/cloud_io.py::_load``), i.e.
PyTorch's default, ``True`` since torch 2.6, unless the caller passes ``trainer.fit(..., weights_only=False)``
(remote ``http`` paths default to ``False``). A CLI checkpoint resumes under that default.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import pickle
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = [
    "ALLOWED_TYPES",
    "CHECKPOINT_MAGIC",
    "UnsafeCheckpointError",
    "allowed_types",
    "checkpoint_file_problem",
    "load_module",
    "read_checkpoint",
]

#: the first bytes of a file ``torch.save`` writes: a zip archive (PyTorch >= 1.6) or a pickle (legacy format)
CHECKPOINT_MAGIC: tuple[bytes, ...] = (b"PK\x03\x04", b"\x80")

try:  # NumPy >= 2
    from numpy._core.multiarray import scalar as _NUMPY_SCALAR
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import scalar as _NUMPY_SCALAR  # type: ignore[no-redef]

ALLOWED_TYPES: tuple[Any, ...] = (
    pathlib.PosixPath,
    pathlib.WindowsPath,
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
    _NUMPY_SCALAR,  # NumPy scalars: numpy.float64(...), numpy.int64(...), numpy.bool_(...)
    np.dtype,
    *{type(np.dtype(kind)) for kind in "?bhilqBHILQefdgFDG"},  # the dtype classes of NumPy >= 1.25
)
"""The non-tensor types a checkpoint may hold besides PyTorch's own allow-list: ``pathlib`` paths and NumPy scalars
(a datamodule built in Python records its arguments as given). Nothing here runs code when unpickled."""

_LIGHTNING_ONLY = "lt_lightning reads checkpoints with torch.load(weights_only=True) only"
_ModuleT = TypeVar("_ModuleT")


class UnsafeCheckpointError(ValueError, pickle.UnpicklingError):
    """A checkpoint holds pickled types that ``weights_only=True`` loading refuses (``types``: their dotted names)."""

    def __init__(self, message: str, types: list[str]) -> None:
        super().__init__(message)
        self.types = types


@contextlib.contextmanager
def allowed_types() -> Iterator[None]:
    """Allow :data:`ALLOWED_TYPES` in ``weights_only=True`` loads inside the block (on top of the user's own
    ``torch.serialization.add_safe_globals``)."""
    with torch.serialization.safe_globals(list(ALLOWED_TYPES)):
        yield


def checkpoint_file_problem(path: str | os.PathLike) -> str | None:
    """Why the local file ``path`` cannot be a checkpoint (``"it is empty"``, ``"it starts with b'...'"``), or ``None``.

    A file ``torch.save`` writes starts with a zip archive's or a pickle's magic bytes (:data:`CHECKPOINT_MAGIC`).
    """
    with open(path, "rb") as f:
        head = f.read(16)
    if any(head.startswith(magic) for magic in CHECKPOINT_MAGIC):
        return None
    return "it is empty" if not head else f"it starts with {head!r}"


def _dotted(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', ''))}"


def _refused_types(path: str) -> list[str]:
    """The dotted names of the globals of ``path`` that neither PyTorch, the user nor :data:`ALLOWED_TYPES` allow."""
    allowed = {_dotted(t) for t in ALLOWED_TYPES}
    allowed |= {
        entry[1] if isinstance(entry, tuple) else _dotted(entry) for entry in torch.serialization.get_safe_globals()
    }
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - only used to word the error; the load itself failed already
        return []
    return sorted(name for name in names if name not in allowed)


def _unsafe(path: str, purpose: str, error: Exception) -> UnsafeCheckpointError:
    types = _refused_types(path)
    if types:
        what = ", ".join(types)
    else:  # the names could not be listed (e.g. a legacy pickle): PyTorch's own message names the first one
        what = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return UnsafeCheckpointError(
        f"{purpose}: {path} holds Python objects besides tensors (pickled types: {what}), which weights_only=True "
        "loading refuses "
        f"({_LIGHTNING_ONLY}; a LongTailModule built in Python pickles its parts into the checkpoint's "
        "hyper-parameters). If you trust these types, allow them before the fit: "
        "torch.serialization.add_safe_globals([...those classes...]); or, for a file you trust, extract its weights "
        f"once: torch.save({{'state_dict': torch.load(path, weights_only=False)['state_dict']}}, 'weights.ckpt') and "
        "pass that file",
        types,
    )


def _load(path: str, map_location: Any, mmap: bool) -> Any:
    if mmap:
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
        except RuntimeError as error:  # a legacy (non-zip) checkpoint cannot be memory-mapped
            if "mmap" not in str(error) and "zip" not in str(error):
                raise
    return torch.load(path, map_location=map_location, weights_only=True)


def read_checkpoint(
    path: str | os.PathLike,
    *,
    map_location: Any = "cpu",
    purpose: str = "checkpoint",
    mmap: bool = False,
    require_state_dict: bool = True,
) -> Any:
    """Load a checkpoint file with ``weights_only=True`` and :data:`ALLOWED_TYPES`; refuse anything else, clearly.

    Args:
        path: the local file.
        map_location: ``torch.load``'s ``map_location`` (the CPU by default).
        purpose: who reads it and why, the start of every error message (e.g. ``"ClassifierRetraining: init_from"``).
        mmap: memory-map the tensors (they are not read until used; a legacy non-zip file is read whole).
        require_state_dict: the file must be a dict with a ``state_dict`` dict (a Lightning checkpoint); ``False``
            returns whatever the file holds (a bare ``state_dict``, a timm checkpoint, ...).

    Returns:
        The loaded object (a dict for a Lightning checkpoint).

    Raises:
        FileNotFoundError: ``path`` does not exist (or is not a file).
        UnsafeCheckpointError: the file holds pickled types outside PyTorch's allow-list, :data:`ALLOWED_TYPES` and the
            user's ``torch.serialization.add_safe_globals`` (a ``ValueError`` naming the types and the file).
        ValueError: the file is not a checkpoint (another kind of file, or a truncated or corrupt one), or has no
            ``state_dict`` while ``require_state_dict``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{purpose} checkpoint {path!r} does not exist")
    problem = checkpoint_file_problem(path)
    if problem is not None:
        raise ValueError(
            f"{purpose}: {path} is not a checkpoint ({problem}; a checkpoint written by Lightning or torch.save is a "
            "zip archive)"
        )
    try:
        with allowed_types():
            checkpoint = _load(path, map_location, mmap)
    except pickle.UnpicklingError as error:  # weights_only refused a global (or the pickle is broken)
        if "weights_only" in str(error) or "global" in str(error).lower():
            raise _unsafe(path, purpose, error) from error
        raise ValueError(f"{purpose}: {path} is not a readable checkpoint ({error})") from error
    except (RuntimeError, EOFError) as error:  # a truncated or corrupt archive
        raise ValueError(f"{purpose}: {path} is not a readable checkpoint (truncated or corrupt: {error})") from error
    if require_state_dict and not (
        isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping)
    ):
        raise ValueError(f"{purpose}: {path} is not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


def load_module(cls: type[_ModuleT], path: str | os.PathLike, *, purpose: str = "checkpoint") -> _ModuleT:
    """Rebuild a LightningModule of class ``cls`` from ``path`` on the CPU, under the same rule as
    :func:`read_checkpoint`.

    The file is checked by :func:`read_checkpoint` first (memory-mapped: its tensors are not read), so a missing,
    foreign, unsafe or ``state_dict``-less file fails with the same errors; then Lightning's ``load_from_checkpoint``
    rebuilds the module with ``weights_only=True`` and :data:`ALLOWED_TYPES`.

    Raises:
        FileNotFoundError, UnsafeCheckpointError, ValueError: as :func:`read_checkpoint`; ``ValueError`` also when
            Lightning cannot rebuild ``cls`` from the file's hyper-parameters (a checkpoint of another module).
    """
    path = os.fspath(path)
    read_checkpoint(path, purpose=purpose, mmap=True)
    load: Callable[..., _ModuleT] = cls.load_from_checkpoint  # type: ignore[attr-defined]
    try:
        with allowed_types():
            return load(path, map_location="cpu", weights_only=True)
    except (KeyError, TypeError) as error:
        raise ValueError(f"{purpose}: {path} is not a checkpoint of a {cls.__name__} ({error})") from error
