"""Read a local weights file into a plain ``state_dict`` (shared by the timm and torchvision adapters)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from torch import Tensor

from lt_lightning.checkpoint_reader import read_checkpoint

_WRAPPER_KEYS = ("state_dict", "model", "module")
_PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(path: str | Path, argument: str) -> dict[str, Tensor]:
    """Load the tensors of a local checkpoint without executing pickled code.

    Accepts a bare ``state_dict``, a dict wrapping one under ``state_dict`` / ``model`` / ``module`` (Lightning,
    timm and DeiT-style checkpoints), and ``.safetensors`` files. ``module.`` (DDP/DataParallel) and
    ``_orig_mod.`` (``torch.compile``) prefixes are removed.

    Args:
        path: the file to read.
        argument: name of the user-facing argument, used in error messages.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a checkpoint, holds no tensors, or holds pickled objects that ``weights_only=True``
            loading refuses (:class:`~lt_lightning.checkpoint_reader.UnsafeCheckpointError`).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{argument}: no such file: {str(path)!r}")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        checkpoint: object = load_file(str(file), device="cpu")
    else:
        # the one reader: weights_only=True; a file holding pickled objects (e.g. a Lightning checkpoint whose
        # hyper_parameters hold modules) is refused, naming the types, with how to extract its weights
        checkpoint = read_checkpoint(file, purpose=f"{argument}={str(path)!r}", require_state_dict=False)
    while isinstance(checkpoint, dict):
        wrapped = next((key for key in _WRAPPER_KEYS if isinstance(checkpoint.get(key), dict)), None)
        if wrapped is None:
            break
        checkpoint = checkpoint[wrapped]
    if not isinstance(checkpoint, dict) or not any(isinstance(v, Tensor) for v in checkpoint.values()):
        raise ValueError(f"{argument}={str(path)!r} holds no state_dict of tensors")
    state_dict: dict[str, Tensor] = {}
    for key, value in checkpoint.items():
        if not isinstance(value, Tensor):
            continue
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        state_dict[key] = value
    return state_dict


def drop_prefixed(state_dict: dict[str, Tensor], prefixes: Iterable[str]) -> dict[str, Tensor]:
    """Return ``state_dict`` without the entries of the modules named in ``prefixes`` (e.g. the classifier ``fc``)."""
    names = tuple(f"{prefix}." for prefix in prefixes)
    return {key: value for key, value in state_dict.items() if not key.startswith(names)}


def describe_mismatch(missing: list[str], unexpected: list[str], limit: int = 8) -> str:
    """One line listing (the first ``limit``) missing and unexpected keys of a ``load_state_dict``."""

    def head(keys: list[str]) -> str:
        shown = ", ".join(keys[:limit])
        return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")

    parts = []
    if missing:
        parts.append(f"missing keys: {head(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {head(unexpected)}")
    return "; ".join(parts)


def match_prefix(
    state_dict: dict[str, Tensor], model_keys: Iterable[str], prefixes: Iterable[str]
) -> dict[str, Tensor]:
    """Strip the one prefix in ``prefixes`` (e.g. ``"backbone.model."`` of an lt_lightning checkpoint) that makes the
    most keys of ``state_dict`` match ``model_keys``; keys without that prefix are dropped. Unchanged if no prefix
    matches more keys than the file as it is."""
    wanted = set(model_keys)
    best, best_hits = state_dict, len(wanted.intersection(state_dict))
    for prefix in prefixes:
        stripped = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
        hits = len(wanted.intersection(stripped))
        if hits > best_hits:
            best, best_hits = stripped, hits
    return best
