"""Clear errors for ``lt-lightning``: checks made before any work, and the short form of an error.

Checks (each raises one ``ValueError`` line that names the option to change):

* :func:`check_channels`: the backbone's ``in_channels`` against the channels of the data (a Digits config's
  1-channel backbone on RGB data, a Digits checkpoint tested on CIFAR), before anything trains or loads;
* :func:`check_checkpoint_file`: ``--ckpt_path`` names a file that a checkpoint can be (a ``torch.save`` zip archive
  or pickle), before Lightning unpickles it (a text file gave ``KeyError: 101``);
* :func:`check_accelerator`: ``--trainer.accelerator gpu`` (``cuda``, ``mps``) on a machine without one.

Short form: :func:`short_error` turns an exception into a few lines: the message of the error that caused it (the
innermost one that jsonargparse wrapped into its "Does not validate against any of the Union subtypes" report, with
its Namespace dump), the option whose class raised it (:func:`failed_option`), and how to get the traceback
(``--debug`` or ``LT_LIGHTNING_DEBUG=1``). :func:`is_user_error` says which errors get it: errors of the user's input
(``ValueError``, ``OSError``, Lightning's ``MisconfigurationException``, and any error of a class built from the
config); others (bugs) keep their traceback.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterator
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch import nn

from lt_lightning.checkpoint_reader import CHECKPOINT_MAGIC as CHECKPOINT_MAGIC  # re-exported (it lived here)
from lt_lightning.checkpoint_reader import checkpoint_file_problem

#: environment variable that turns on the full traceback (as ``--debug`` does); any value but "", "0", "false", "no"
DEBUG_ENV = "LT_LIGHTNING_DEBUG"
#: the command-line flag that turns on the full traceback (taken out of the arguments before parsing)
DEBUG_FLAG = "--debug"
#: how to get the full traceback, the last line of every short error
DEBUG_HINT = f"(the full traceback: add {DEBUG_FLAG} or set {DEBUG_ENV}=1)"
#: errors of the user's input, printed in the short form wherever they are raised
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, MisconfigurationException)
#: attribute set on an exception raised while building the config's classes: the option whose class raised it
OPTION_ATTRIBUTE = "lt_lightning_option"


def debug_requested(argv: list[str], environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """Whether ``argv`` holds :data:`DEBUG_FLAG` or the environment sets :data:`DEBUG_ENV` to a true value."""
    value = (os.environ if environ is None else environ).get(DEBUG_ENV, "")
    return DEBUG_FLAG in argv or value.strip().lower() not in ("", "0", "false", "no")


# ---------------------------------------------------------------------------------------------- the short form
def _raised_in_jsonargparse(err: BaseException) -> bool:
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}jsonargparse{os.sep}" in tb.tb_frame.f_code.co_filename


def root_error(err: BaseException) -> BaseException:
    """The error behind jsonargparse's wrappers: follow ``__cause__`` while the error was raised by jsonargparse."""
    seen: set[int] = set()
    while id(err) not in seen and err.__cause__ is not None and _raised_in_jsonargparse(err):
        seen.add(id(err))
        err = err.__cause__
    return err


def _failed_class(err: BaseException) -> type | None:
    """The class jsonargparse was building when ``err`` was raised (its innermost ``adapt_class_type`` frame)."""
    found, tb = None, err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "adapt_class_type" and "jsonargparse" in frame.f_code.co_filename:
            value = frame.f_locals.get("val_class")
            found = value if isinstance(value, type) else found
        tb = tb.tb_next
    return found


def _entries(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every mapping entry below ``node`` (lists as ``key[i]``), depth first."""
    if hasattr(node, "__dict__") and type(node).__name__ == "Namespace":
        items: Any = vars(node).items()
    elif isinstance(node, dict):
        items = node.items()
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            key = f"{prefix}[{i}]"
            yield key, value
            yield from _entries(value, key)
        return
    else:
        return
    for name, value in items:
        if str(name).startswith("__"):
            continue  # jsonargparse's own entries (__path__ of a config file)
        key = f"{prefix}.{name}" if prefix else str(name)
        yield key, value
        yield from _entries(value, key)


def _import(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def failed_option(err: BaseException, config: Any) -> str | None:
    """The option (dotted key) of ``config`` whose class raised ``err`` while the config's classes were built.

    The class comes from jsonargparse's frames of the root error (:func:`root_error`); the key is every entry of
    ``config`` with that ``class_path``. When the message names one of that entry's ``init_args`` (``gamma must be
    ...``), the option is that argument: ``--model.init_args.criterion.init_args.gamma``.

    Returns:
        ``None`` when no class or no entry is found.
    """
    root = root_error(err)
    cls = _failed_class(root)
    if cls is None:
        return None
    keys, init_args = [], None
    for key, value in _entries(config, ""):
        class_path = getattr(value, "class_path", None) if not isinstance(value, dict) else value.get("class_path")
        if isinstance(class_path, str) and _import(class_path) is cls:
            keys.append(key)
            init_args = getattr(value, "init_args", None) if not isinstance(value, dict) else value.get("init_args")
    if not keys:
        return None
    message = str(root)
    if len(keys) == 1 and init_args is not None:
        names = [str(k) for k, _ in _entries(init_args, "") if "." not in k and "[" not in k]
        named = sorted(
            (m.start(), name) for name in names if (m := re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", message))
        )
        if named:
            return f"--{keys[0]}.init_args.{named[0][1]} ({cls.__module__}.{cls.__qualname__})"
    return f"{' or '.join(keys)} ({cls.__module__}.{cls.__qualname__})"


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` gets the short form: an error of the user's input (:data:`USER_ERRORS`) or any error of a
    class built from the config (an option was found for it)."""
    return isinstance(root_error(err), USER_ERRORS) or getattr(err, OPTION_ATTRIBUTE, None) is not None


def short_error(err: BaseException) -> str:
    """A few lines for ``err``: ``error: <message>``, the option whose class raised it, :data:`DEBUG_HINT`.

    The message is the root error's (:func:`root_error`) without jsonargparse's ``Given value ...`` dumps.
    """
    root = root_error(err)
    lines = [line for line in str(root).strip().splitlines() if not line.lstrip().startswith("Given value")]
    message = "\n".join(lines) or type(root).__name__
    out = [f"error: {message}"]
    option = getattr(err, OPTION_ATTRIBUTE, None)
    if option:
        out.append(f"  option: {option}")
    out.append(f"  {DEBUG_HINT}")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- checks
def backbone_in_channels(backbone: Any) -> int | None:
    """The image channels a backbone takes: its ``in_channels`` attribute, else its first ``Conv2d``'s (``None``
    when it has neither, e.g. a backbone of flat features)."""
    value = getattr(backbone, "in_channels", None)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(backbone, nn.Module):
        for module in backbone.modules():
            if isinstance(module, nn.Conv2d):
                return int(module.in_channels)
    return None


def data_channels(datamodule: Any) -> int | None:
    """The image channels of a datamodule: its ``channels`` attribute, else the length of its per-channel ``mean``
    (the device pipeline normalises with it and refuses a batch of another channel count)."""
    value = getattr(datamodule, "channels", None)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    mean = getattr(datamodule, "mean", None)
    if isinstance(mean, (tuple, list)) and mean:
        return len(mean)
    return None


def check_channels(model: Any, datamodule: Any, ckpt_path: str | None = None) -> None:
    """Refuse a backbone whose ``in_channels`` differs from the channels of the data.

    Args:
        model: the module (its ``backbone`` is checked).
        datamodule: the datamodule.
        ckpt_path: the checkpoint the command loads, if any: LightningCLI then builds the model from the
            hyper-parameters saved in it, so the message points at the checkpoint rather than the option.

    Raises:
        ValueError: naming the backbone's ``in_channels``, the data's channels and the option to change.
    """
    backbone = getattr(model, "backbone", None)
    expected, given = backbone_in_channels(backbone), data_channels(datamodule)
    if expected is None or given is None or expected == given:
        return
    what = (
        f"channel mismatch: the backbone ({type(backbone).__name__}, model.init_args.backbone) takes "
        f"{expected}-channel images (in_channels={expected}) but the data ({type(datamodule).__name__}) gives "
        f"{given}-channel images"
    )
    if ckpt_path:
        raise ValueError(
            f"{what}; the model is the one saved in --ckpt_path {ckpt_path}, trained on {expected}-channel images: "
            f"evaluate it on data of {expected} channels (the data config it was trained with)"
        )
    raise ValueError(
        f"{what}: set --model.init_args.backbone.init_args.in_channels {given}, or use a model config made for this "
        "data"
    )


def check_checkpoint_file(path: str) -> None:
    """Refuse a local ``--ckpt_path`` file that cannot be a checkpoint (not a zip archive nor a pickle), by the
    reader's test (:func:`~lt_lightning.checkpoint_reader.checkpoint_file_problem`).

    Raises:
        ValueError: naming the path and what the file starts with.
    """
    start = checkpoint_file_problem(path)
    if start is not None:
        raise ValueError(
            f"--ckpt_path {path} is not a checkpoint ({start}; a checkpoint written by Lightning or torch.save is a "
            "zip archive): pass the .ckpt file of a fit, e.g. <run>/checkpoints/last.ckpt, or --ckpt_path last"
        )


def check_accelerator(accelerator: Any) -> None:
    """Refuse ``--trainer.accelerator gpu`` / ``cuda`` / ``mps`` on a machine that has no such device.

    Raises:
        ValueError: naming the option, what is missing and the values that work here.
    """
    if not isinstance(accelerator, str) or accelerator.lower() not in ("gpu", "cuda", "mps"):
        return
    from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

    name = accelerator.lower()
    cuda, mps = CUDAAccelerator.is_available(), MPSAccelerator.is_available()
    if (name == "gpu" and (cuda or mps)) or (name == "cuda" and cuda) or (name == "mps" and mps):
        return
    device = {"gpu": "GPU (CUDA or Apple MPS)", "cuda": "CUDA GPU", "mps": "Apple MPS device"}[name]
    raise ValueError(
        f"--trainer.accelerator {accelerator}: this machine has no {device} that torch can use "
        f"(torch.cuda.is_available() is {cuda}); use --trainer.accelerator cpu, or auto (a GPU when there is one)"
    )


__all__ = [
    "DEBUG_ENV",
    "DEBUG_FLAG",
    "backbone_in_channels",
    "check_accelerator",
    "check_channels",
    "check_checkpoint_file",
    "data_channels",
    "debug_requested",
    "failed_option",
    "is_user_error",
    "root_error",
    "short_error",
]
