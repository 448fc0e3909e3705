"""What makes two runs the same run: a resolved configuration without what never changes the numbers.

``lt-lightning fit ARGS --print_config`` gives the whole configuration a run is built from. Two configurations are
the **same run** when their :func:`run_identity` is equal: the resolution without

* the keys that only say where things are written or how they are shown (:data:`NEVER_COMPUTES`: the loggers, the
  progress bar, the data-fingerprint switch, ``ckpt_path``, ``config``, the ``prediction`` output options);
* the ``LearningRateMonitor`` callbacks (they log, nothing reads them);

and with the ``ModelCheckpoint`` callbacks moved behind the others, in their order (Lightning runs checkpoint
callbacks last whatever their place in the list: ``_CallbackConnector._reorder_callbacks``). This is why a composed
config (``-c configs/data/D.yaml -c configs/method/M.yaml``, whose method callbacks come after the CLI's default
checkpoint) is the same run as the single file it replaced.

Uses: the resolved-config invariant of the shipped configs (``tests/resolved_configs.py``), the study's cache keys
(a unit's folder is named by :func:`run_key`, so moving a config between files never invalidates finished runs) and
adopting an existing fit (:mod:`lt_lightning.study.adopt`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
import json
import threading
import warnings
from collections.abc import Sequence
from typing import Any

#: dotted keys that never change what a run computes
NEVER_COMPUTES: tuple[str, ...] = (
    "trainer.logger",
    "trainer.enable_progress_bar",
    "data_fingerprint",
    "ckpt_path",
    "config",
    "prediction",  # what ``lt-lightning predict`` writes, and where
)
LOGGING_ONLY_CALLBACKS: tuple[str, ...] = ("lightning.pytorch.callbacks.LearningRateMonitor",)
CHECKPOINT_CALLBACKS: tuple[str, ...] = ("lightning.pytorch.callbacks.ModelCheckpoint",)


def _class_path(entry: Any) -> str | None:
    return entry.get("class_path") if isinstance(entry, dict) else None


def _drop(config: dict[str, Any], dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if head not in config:
        return
    if not rest:
        del config[head]
    elif isinstance(config[head], dict):
        _drop(config[head], rest)


def run_identity(resolved: dict[str, Any]) -> dict[str, Any]:
    """``resolved`` (a printed configuration as a mapping) as the run it computes: see the module docstring."""
    identity = copy.deepcopy(resolved)
    for dotted in NEVER_COMPUTES:
        _drop(identity, dotted)
    trainer = identity.get("trainer")
    if isinstance(trainer, dict) and isinstance(trainer.get("callbacks"), list):
        kept = [c for c in trainer["callbacks"] if _class_path(c) not in LOGGING_ONLY_CALLBACKS]
        checkpoints = [c for c in kept if _class_path(c) in CHECKPOINT_CALLBACKS]
        trainer["callbacks"] = [c for c in kept if _class_path(c) not in CHECKPOINT_CALLBACKS] + checkpoints
    return identity


def digest(value: Any) -> str:
    """SHA-256 (hex) of ``value`` as canonical JSON (keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def run_key(resolved: dict[str, Any]) -> str:
    """12 hex digits naming the run of ``resolved``: equal for the same run (:func:`run_identity`)."""
    return digest(run_identity(resolved))[:12]


#: ``resolve`` swaps the process's stdout and stderr while the parser prints: one thread at a time
RESOLVE_LOCK = threading.Lock()


class _ParserBuilt(Exception):
    def __init__(self, parser: Any) -> None:
        super().__init__("parser built")
        self.parser = parser


@functools.cache
def _parser() -> Any:
    """The CLI's whole parser (every subcommand), built once per process: :func:`resolve` parses with it exactly as
    ``LightningCLI.parse_arguments`` does (``--print_config`` prints during the parse), without building the parser
    again for every call (most of a call's cost)."""
    from lt_lightning.cli import LongTailCLI  # local: the CLI imports Lightning

    class _ParserOnly(LongTailCLI):
        def parse_arguments(self, parser: Any, args: Any) -> None:
            raise _ParserBuilt(parser)

    try:
        _ParserOnly(args=["fit"])
    except _ParserBuilt as built:
        return built.parser
    raise AssertionError("LightningCLI no longer parses after building its parser")  # pragma: no cover


def resolve(args: Sequence[str], subcommand: str = "fit") -> dict[str, Any]:
    """``lt-lightning SUBCOMMAND ARGS --print_config``, run in this process, as a mapping (one thread at a time:
    :data:`RESOLVE_LOCK`; another thread's prints during it land in its buffer, so callers that print from threads
    take the lock for their prints too).

    Raises:
        ValueError: the arguments do not parse (with jsonargparse's last error line).
    """
    import yaml

    stdout, stderr = io.StringIO(), io.StringIO()
    code: Any = 0
    with (
        RESOLVE_LOCK,
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # "LightningCLI's args parameter ...": the caller's own argv
        try:
            _parser().parse_args([subcommand, *map(str, args), "--print_config"])
        except SystemExit as exit_:  # jsonargparse exits after printing (0) or on bad arguments (2)
            code = exit_.code or 0
    if code != 0:
        lines = stderr.getvalue().strip().splitlines() or [""]
        raise ValueError(f"{' '.join(map(str, args))}: --print_config failed: {lines[-1]}")
    return yaml.safe_load(stdout.getvalue()) or {}
