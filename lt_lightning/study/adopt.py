"""Adopt finished fits from another runs folder into the study's cache (``lt-lightning study --adopt-fits DIR``).

A study's long-tailed units are often fits that already exist: a table script or an earlier study trained the same
method configs at the same budget into ``<runs>/<dataset>/<config stem>/fit``, or the study itself did before a code
change gave every run a new cache key (a new option at its default is part of the resolved config, so of the key):
``--adopt-fits <runs_dir>`` then finds its finished fits by method, training set and seed (:func:`candidate_fits`).
Training them again costs hours on a CPU. A unit adopts such a fit only when the fit is **the same run**: the
``config.yaml`` that Lightning saved with it must equal the unit's own resolved config (``lt-lightning fit <unit
args> --print_config``) key by key, except

* keys that never change the numbers (:data:`IGNORED`: the logger, the progress bar, how often the non-finite-loss
  check syncs, the data-fingerprint switch, ``ckpt_path``), and the order of the callbacks where Lightning runs them
  the same (both sides are compared as their :func:`~lt_lightning.run_identity.run_identity`: learning-rate monitors
  left out, checkpoint callbacks last; :func:`fit_differences`);
* options the source's code did not have yet: a key only in the unit's config is accepted when its value is the
  default of that parameter in the class that takes it (``class_path`` beside the ``init_args``), the value under
  which the option's addition left behaviour unchanged.

Anything else (another value, a key the source has and the unit lacks) keeps the unit to be trained, and the study
prints the first differences. An adopted fit is copied (never linked: the study's cache must not change when the
source folder does) to ``<unit>/fit``. A finished one (:func:`~lt_lightning.study.grid.check_fit_finished`) gets the
marker ``fit.done.json`` with ``adopted_from`` and the source's fit wall time; the unit's test and stages then run
as usual on the adopted checkpoint, with the current code. An unfinished one (a fit killed before its last epoch,
e.g. a long run moved into a study) gets no marker: the study resumes it from that checkpoint (renamed
``adopted-last.ckpt``) exactly as it resumes its own killed fits (stop the process that trained it first: two
processes must never train one run). The code version that trained an adopted fit is not known
to the study (the source folder does not record it); ``result.json`` says the fit was adopted.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from lt_lightning.class_path import import_class_path
from lt_lightning.run_identity import resolve, run_identity
from lt_lightning.study.grid import Unit, check_fit_finished, write_json
from lt_lightning.study.launch import RunFailed, find_checkpoint, logger_args

IGNORED: tuple[str, ...] = (
    r"trainer\.logger(\..*)?",
    r"trainer\.enable_progress_bar",
    r"model\.init_args\.finite_check_every_n_steps",
    r"data_fingerprint(\..*)?",
    r"ckpt_path",
    r"config",
)
_IGNORED = re.compile("|".join(f"(?:{p})" for p in IGNORED))


def _param_default(class_path: str | None, name: str) -> Any:
    """The default of parameter ``name`` of ``class_path``'s ``__init__`` (searched along the MRO, as jsonargparse
    follows ``**kwargs`` to the parent), or ``inspect.Parameter.empty``."""
    cls = import_class_path(class_path)
    for klass in inspect.getmro(cls) if inspect.isclass(cls) else ():
        try:
            parameter = inspect.signature(klass.__init__).parameters.get(name)
        except (TypeError, ValueError):
            continue
        if parameter is not None and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            return parameter.default
    return inspect.Parameter.empty


def _same_class(saved: Any, resolved: Any) -> bool:
    """Two ``class_path`` spellings of one class (``heads.MultiExpertHead``, ``heads.multi_expert.MultiExpertHead``)."""
    obj = import_class_path(saved)
    return obj is not None and obj is import_class_path(resolved)


def config_differences(saved: Any, resolved: Any, path: str = "", owner: str | None = None) -> list[str]:
    """Where ``resolved`` (the unit's config) differs from ``saved`` (the source fit's), one line per key.

    ``owner`` is the ``class_path`` whose ``init_args`` are being compared (for the defaults of new options).
    """
    if isinstance(saved, dict) and isinstance(resolved, dict):
        diffs = []
        for key in sorted(set(saved) | set(resolved), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if _IGNORED.fullmatch(sub):
                continue
            if key not in resolved:
                diffs.append(f"{sub}: {saved[key]!r} in the source fit, absent here")
            elif key not in saved:
                default = _param_default(owner, key)
                if default is inspect.Parameter.empty or default != resolved[key]:
                    diffs.append(f"{sub}: {resolved[key]!r} here, absent in the source fit (not the default)")
            else:
                inner = resolved.get("class_path") if key == "init_args" else None
                diffs += config_differences(saved[key], resolved[key], sub, inner)
        return diffs
    if isinstance(saved, list) and isinstance(resolved, list) and len(saved) == len(resolved):
        return [
            d
            for i, (a, b) in enumerate(zip(saved, resolved, strict=True))
            for d in config_differences(a, b, f"{path}[{i}]")
        ]
    if saved == resolved or (path.endswith("class_path") and _same_class(saved, resolved)):
        return []
    return [f"{path}: {saved!r} in the source fit, {resolved!r} here"]


def resolved_config(args: list[str], out: Path, version: str = "fit") -> dict[str, Any]:
    """``lt-lightning fit *args --print_config`` (with the study's logger arguments), run in this process, as a
    mapping (:func:`lt_lightning.run_identity.resolve`).

    Raises:
        RunFailed: the arguments do not parse.
    """
    try:
        return resolve([*args, *logger_args(out, version)])
    except ValueError as err:
        raise RunFailed(str(err)) from err


def fit_differences(saved: dict[str, Any], resolved: dict[str, Any]) -> list[str]:
    """:func:`config_differences` of the two configs' runs (:func:`~lt_lightning.run_identity.run_identity`): a fit
    saved before the configs were composed lists its method callbacks before the checkpoint and the LR monitor, a
    composed unit after them; Lightning runs them the same, so only what computes is compared."""
    return config_differences(run_identity(saved), run_identity(resolved))


def source_fit(source: Path, config: str) -> Path:
    """Where a fit of ``config`` lives in ``source``: ``<source>/<config stem>/fit`` (one folder per method config)."""
    return source / Path(config).stem / "fit"


def candidate_fits(unit: Unit, source: Path) -> list[Path]:
    """The fits in ``source`` that may be ``unit``'s run: ``<source>/<config stem>/fit``, then the fits of the same
    method, training set and seed in a study's layout (``<source>/<method>/<train set>-seed<S>-<key>/fit``, e.g. the
    study's own runs folder after a change of the code gave every run a new key: an option added with its default),
    finished ones first, newest first (an unfinished one is resumed)."""
    found = [source_fit(source, unit.method.config or unit.method.name)]
    own = unit.directory.resolve()
    pattern = f"{unit.method.name}/{unit.train_set}-seed{unit.seed}-*/fit/config.yaml"
    studied = [c.parent for c in source.glob(pattern) if c.parent.parent.resolve() != own]
    studied.sort(key=lambda f: ((f.parent / "fit.done.json").is_file(), f.stat().st_mtime), reverse=True)
    return found + studied


def adopt_fit(unit: Unit, source: Path) -> tuple[bool, str]:
    """Copy the fit of ``unit``'s method config from ``source`` into the unit when it is the same run.

    Returns ``(adopted, why)``: ``why`` names the source, or why nothing was adopted.
    """
    marker = unit.directory / "fit.done.json"
    if marker.is_file() or (unit.directory / "result.json").is_file():
        return False, "already finished"
    candidates = [f for f in candidate_fits(unit, source) if (f / "config.yaml").is_file() and find_checkpoint(f)]
    if not candidates:
        return False, f"no finished fit at {source_fit(source, unit.method.config or unit.method.name)}"
    why = ""
    for fit in candidates:
        adopted, why = _adopt_from(unit, fit)
        if adopted:
            return True, why
    return False, why


def _adopt_from(unit: Unit, fit: Path) -> tuple[bool, str]:
    import yaml

    marker = unit.directory / "fit.done.json"
    config_file = fit / "config.yaml"
    try:
        check_fit_finished(fit)
        finished = True
    except RunFailed:
        finished = False  # a killed fit: copied, then resumed by the study
    try:
        diffs = fit_differences(
            yaml.safe_load(config_file.read_text()), resolved_config(list(unit.args), unit.directory)
        )
    except RunFailed as err:
        return False, str(err)
    if diffs:
        shown = "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
        return False, f"{fit} is another run: {shown}"
    target = unit.directory / "fit"
    shutil.rmtree(target, ignore_errors=True)
    unit.directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(fit, target)
    if not finished:
        # Lightning's ModelCheckpoint reloads its last_model_path only in the folder it saved it in: resumed here from
        # a last.ckpt it does not know, it would save the new last epochs as last-v1.ckpt beside the stale one. The
        # adopted checkpoint is renamed (and made the newest, so the study resumes from it) to keep last.ckpt free.
        last = find_checkpoint(target)
        if last is not None:
            renamed = last.rename(last.with_name("adopted-last.ckpt"))
            os.utime(renamed)
        return True, f"adopted the unfinished fit {fit}: the study resumes it from its last checkpoint"
    source_result = fit.parent / "result.json"
    wall = json.loads(source_result.read_text()).get("fit_wall_s", 0.0) if source_result.is_file() else 0.0
    write_json(marker, {"wall_s": wall, "resumed_from": None, "adopted_from": str(fit)})
    return True, f"adopted {fit}"


__all__ = [
    "IGNORED",
    "adopt_fit",
    "candidate_fits",
    "config_differences",
    "fit_differences",
    "resolved_config",
    "source_fit",
]
