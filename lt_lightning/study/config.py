"""The study YAML: which dataset, which methods (with their survey family), which seeds, at which budget.

Example (``configs/study/digits_lt.yaml``)::

    name: digits_lt                      # a label for titles and default folders
    data_config: configs/data/digits_lt.yaml  # the dataset and its recipe, the first -c of every run
    data: {}                             # extra data arguments for every run: --data.init_args.<key>=<value>
    seeds: [0]                           # every (method, training set) runs once per seed
    budget: []                           # config files given after each method config (-c), e.g. a shorter schedule
    extra: []                            # further CLI arguments for every fit and test, e.g. --trainer.accelerator=gpu
    baseline: ce                         # the plain cross-entropy method whose balanced run gives A_v
    stage2_epochs: 10                    # epochs of the decoupled cRT / LWS second stages
    runs_dir: runs/study/digits_lt       # cached runs
    report_dir: docs/study/digits_lt     # tables, JSON, figures
    train_sets: [lt, balanced]           # [lt]: no balanced reference runs (a results table: no UA / RA)
    reported: null                       # JSON {method: [top-1 %, source]}: the papers' numbers beside ours
    test_distributions: []               # e.g. [[forward, 50], [uniform, 1], [backward, 50]]: test-agnostic table
    methods:
      - {name: ce, config: configs/method/ce.yaml, family: baseline, stages: [ncm, crt, lws], seeds: [0, 1, 2]}
      - {name: focal, config: configs/method/focal.yaml, family: re-balancing}
      - {name: crt_ce, from: ce, stage: crt, family: module}
      - {name: tau_norm, from: ce, config: configs/method/tau_norm.yaml, family: module}

A method is either a **config** (a method YAML: ``lt-lightning fit -c DATA_CONFIG -c CONFIG``, or a stand-alone one
when the study has no ``data_config``), run as it is on the long-tailed training
set and on its balanced reference set, or **derived**: ``from`` another method and ``stage`` one of its decoupled
second stages (``ncm``, ``crt``, ``lws``), whose numbers are that stage run after the other method's fit, on each
training set (how a two-stage method is measured at a budget too short for its own one-fit config); or derived
``from`` another method with a ``config`` of its own, applied on that method's fit: a test-time rule (τ-norm, NCM,
post-hoc logit adjustment) tests its checkpoint, a classifier stage (cRT, LWS, ...) is trained alone as a second fit
from it (the survey's decoupled rows, as a results table measures them). A config method's ``seeds`` replace the
study's for it (and for the methods derived from it). ``stages``
lists decoupled stages to measure on a config method's long-tailed runs for Table 7 (joint / NCM / cRT / LWS).
``family`` is the survey's taxonomy: ``baseline`` (softmax), ``re-balancing`` (class re-balancing),
``augmentation`` (information augmentation), ``module`` (module improvement).

Relative paths of method configs and budget files are found from the study file (:func:`resolve_config_path`): in
the study file's folder, else in the nearest folder above it that holds them (the repository root for the shipped
``configs/study/*.yaml``, whose paths read ``configs/...``), else in the current directory; so a study
runs from any directory. ``runs_dir`` and ``report_dir`` are outputs, relative to the current directory (like
Lightning's ``logs/``; ``--runs-dir`` / ``--report-dir`` choose others).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from lt_lightning._checks import check_int

FAMILIES: tuple[str, ...] = ("baseline", "re-balancing", "augmentation", "module")
"""The survey's method families (Zhang et al., TPAMI 2023, Fig. 2), plus the softmax baseline."""

STAGES: tuple[str, ...] = ("ncm", "crt", "lws")
"""Decoupled second stages (Kang et al., ICLR 2020) after a joint fit: NCM (test time), cRT and LWS (a second fit)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_KEYS = {
    "name",
    "data_config",
    "data",
    "seeds",
    "budget",
    "extra",
    "baseline",
    "stage2_epochs",
    "runs_dir",
    "report_dir",
    "methods",
    "train_sets",
    "reported",
    "test_distributions",
}
_METHOD_KEYS = {"name", "config", "family", "stages", "from", "stage", "extra", "seeds"}
TRAIN_SETS: tuple[str, ...] = ("lt", "balanced")
"""The training sets of a unit: the long-tailed set and its balanced reference set."""
TEST_DISTRIBUTIONS: tuple[str, ...] = ("forward", "uniform", "backward")
"""Test-set distributions of the test-agnostic protocol (Zhang et al., NeurIPS 2022): the datamodules'
``test_distribution``."""


@dataclass(frozen=True)
class MethodSpec:
    """One method of the study (see the module docstring).

    Attributes:
        name: unique name (letters, digits, ``_ . + -``), used in tables and run folders.
        family: one of :data:`FAMILIES`.
        config: the method's ``lt-lightning fit`` YAML; ``None`` for a derived method.
        stages: decoupled stages measured on the long-tailed runs (Table 7).
        source: for a derived method, the config method it is a stage of.
        stage: for a derived method, which of :data:`STAGES`; ``None`` for one given by ``from`` + ``config``
            (the config's test-time rule or classifier stage on the source's fit).
        extra: further CLI arguments for this method's runs.
        seeds: this method's seeds (``None``: the study's); a derived method has its source's.
    """

    name: str
    family: str
    config: str | None = None
    stages: tuple[str, ...] = ()
    source: str | None = None
    stage: str | None = None
    extra: tuple[str, ...] = ()
    seeds: tuple[int, ...] | None = None

    @property
    def derived(self) -> bool:
        return self.source is not None

    @property
    def stage_name(self) -> str | None:
        """A derived method's stage on its source's runs: a built-in one of :data:`STAGES`, or (``from`` +
        ``config``) ``"@<name>"``; ``None`` for a config method."""
        if self.source is None:
            return None
        return self.stage if self.stage is not None else f"@{self.name}"


@dataclass(frozen=True)
class StudyConfig:
    """A parsed study YAML (see the module docstring); :func:`load_study` builds and checks it."""

    name: str
    methods: tuple[MethodSpec, ...]
    seeds: tuple[int, ...] = (0,)
    data: Mapping[str, Any] = field(default_factory=dict)
    data_config: str | None = None
    budget: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    baseline: str = "ce"
    stage2_epochs: int = 10
    runs_dir: str = "runs/study"
    report_dir: str = "reports/study"
    train_sets: tuple[str, ...] = TRAIN_SETS
    reported: str | None = None
    test_distributions: tuple[tuple[str, float], ...] = ()
    path: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        """Whether methods train on the balanced reference set too (A_b, UA, RA)."""
        return "balanced" in self.train_sets

    def seeds_of(self, method: MethodSpec | str) -> tuple[int, ...]:
        """The seeds ``method`` runs with: its own, its source's (derived), else the study's."""
        spec = self.method(method) if isinstance(method, str) else method
        if spec.source is not None:
            spec = self.method(spec.source)
        return spec.seeds if spec.seeds is not None else self.seeds

    def all_seeds(self) -> tuple[int, ...]:
        """Every seed some method runs with, the study's first, then the others in order of appearance."""
        return tuple(dict.fromkeys([*self.seeds, *(s for m in self.methods for s in self.seeds_of(m))]))

    def method(self, name: str) -> MethodSpec:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(name)

    def stages_needed(self, method: MethodSpec, balanced: bool) -> tuple[str, ...]:
        """Decoupled stages to run after ``method``'s fit on one training set, in :data:`STAGES` order.

        On the long-tailed set: its own ``stages`` and those of the methods derived from it; on the balanced set:
        those of the derived methods only (their ``A_b``).
        """
        wanted = set() if balanced else set(method.stages)
        wanted |= {m.stage for m in self.methods if m.source == method.name and m.stage is not None}
        own = [m.stage_name for m in self.methods if m.source == method.name and m.stage is None]
        return (*(s for s in STAGES if s in wanted), *own)  # type: ignore[misc]

    def stage_config(self, stage: str) -> str:
        """The config of a ``from`` + ``config`` stage ``"@<name>"``."""
        config = self.method(stage[1:]).config
        assert config is not None
        return config

    def with_overrides(self, **changes: Any) -> StudyConfig:
        """A copy with some fields replaced (``None`` values are ignored)."""
        values = {k: v for k, v in changes.items() if v is not None}
        return StudyConfig(**{**self.__dict__, **values})


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings, got {value!r}")
    return tuple(value)


def _data_config(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(
            f"data_config must be a path (the dataset's recipe, e.g. configs/data/digits_lt.yaml), got {value!r}"
        )
    return value


def normalise_cli_args(args: Sequence[str]) -> tuple[str, ...]:
    """``trainer.max_epochs=2`` -> ``--trainer.max_epochs=2`` (arguments already starting with ``-`` are kept)."""
    return tuple(a if a.startswith("-") else f"--{a}" for a in args)


def _method(entry: Any, index: int) -> MethodSpec:
    where = f"methods[{index}]"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where} must be a mapping with name, config (or from + stage) and family, got {entry!r}")
    unknown = sorted(set(entry) - _METHOD_KEYS)
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown} (allowed: {sorted(_METHOD_KEYS)})")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{where}.name must be a name of letters, digits, '_', '.', '+', '-', got {name!r}")
    where = f"method {name!r}"
    family = entry.get("family")
    if family not in FAMILIES:
        raise ValueError(f"{where}: family must be one of {FAMILIES}, got {family!r}")
    stages = _str_list(entry.get("stages"), f"{where}: stages")
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"{where}: stages must be among {STAGES}, got {bad}")
    config, source, stage = entry.get("config"), entry.get("from"), entry.get("stage")
    if config is None and source is None:
        raise ValueError(
            f"{where}: give config (a fit YAML), from + stage (a built-in stage of another method) or from + config "
            "(the config's test-time rule or classifier stage on another method's fit)"
        )
    if config is not None and (not isinstance(config, str) or not config):
        raise ValueError(f"{where}: config must be a path, got {config!r}")
    if source is not None:
        if (stage is None) == (config is None):
            raise ValueError(f"{where}: a method given by 'from' needs either stage (one of {STAGES}) or config")
        if stage is not None and stage not in STAGES:
            raise ValueError(f"{where}: a method given by 'from' needs stage in {STAGES}, got {stage!r}")
        if stages:
            raise ValueError(f"{where}: a method given by 'from' cannot have stages of its own")
        if "seeds" in entry:
            raise ValueError(f"{where}: a method given by 'from' runs with its source's seeds; give seeds there")
    elif stage is not None:
        raise ValueError(f"{where}: 'stage' goes with 'from' (a stage of another method), not with config")
    extra = normalise_cli_args(_str_list(entry.get("extra"), f"{where}: extra"))
    seeds = None if entry.get("seeds") is None else _seeds(entry["seeds"], f"{where}: seeds")
    return MethodSpec(name, family, config, tuple(dict.fromkeys(stages)), source, stage, extra, seeds)


def _seeds(value: Any, what: str) -> tuple[int, ...]:
    if (
        isinstance(value, (str, bool))
        or not isinstance(value, Sequence)
        or not value
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in value)
        or len(set(value)) != len(value)
    ):
        raise ValueError(f"{what} must be a non-empty list of distinct integers, got {value!r}")
    return tuple(value)


def _train_sets(value: Any) -> tuple[str, ...]:
    sets = _str_list(value, "train_sets")
    if not sets or "lt" not in sets or any(s not in TRAIN_SETS for s in sets) or len(set(sets)) != len(sets):
        raise ValueError(f"train_sets must be [lt] or [lt, balanced], got {value!r}")
    return tuple(s for s in TRAIN_SETS if s in sets)


def _test_distributions(value: Any) -> tuple[tuple[str, float], ...]:
    """``[[forward, 50], [uniform, 1], [backward, 50]]`` -> ``(("forward", 50.0), ...)``."""
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"test_distributions must be a list of [distribution, imbalance ratio], got {value!r}")
    out = []
    for item in value:
        ok = isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2
        ok = ok and item[0] in TEST_DISTRIBUTIONS
        ok = ok and isinstance(item[1], (int, float)) and not isinstance(item[1], bool)
        if not ok or item[1] < 1 or (item[0] == "uniform") != (item[1] == 1):
            raise ValueError(
                f"test_distributions: each item is [distribution, imbalance ratio] with distribution in "
                f"{TEST_DISTRIBUTIONS}, ratio >= 1 (uniform: exactly 1), got {item!r}"
            )
        out.append((str(item[0]), float(item[1])))
    if len(set(out)) != len(out):
        raise ValueError(f"test_distributions must be distinct, got {value!r}")
    return tuple(out)


def parse_study(raw: Mapping[str, Any], path: str | None = None) -> StudyConfig:
    """Check a study mapping and build its :class:`StudyConfig`.

    Raises:
        ValueError: naming the key and the value (unknown key, bad family or stage, duplicate method name, a
            ``from`` that names no config method, a missing baseline, bad seeds ...).
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"a study config must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ValueError(f"unknown study keys {unknown} (allowed: {sorted(_KEYS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"name must be a name of letters, digits, '_', '.', '+', '-', got {name!r}")
    entries = raw.get("methods")
    if not isinstance(entries, Sequence) or isinstance(entries, str) or not entries:
        raise ValueError(f"methods must be a non-empty list, got {entries!r}")
    methods = tuple(_method(e, i) for i, e in enumerate(entries))
    names = [m.name for m in methods]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"method names must be unique, repeated: {dupes}")
    by_name = {m.name: m for m in methods}
    for m in methods:
        if m.source is not None and (m.source not in by_name or by_name[m.source].derived):
            raise ValueError(f"method {m.name!r}: from={m.source!r} must name a method with a config")
    baseline = raw.get("baseline")
    if baseline is None:
        plain = [m.name for m in methods if m.family == "baseline"]
        if len(plain) != 1:
            raise ValueError(f"give baseline: the method whose balanced run is A_v (family baseline: {plain})")
        baseline = plain[0]
    if baseline not in by_name:
        raise ValueError(f"baseline {baseline!r} is not one of the methods {names}")
    if by_name[baseline].derived:
        raise ValueError(f"baseline {baseline!r} must be a method with a config (plain cross-entropy), not a stage")
    reported = raw.get("reported")
    if reported is not None and (not isinstance(reported, str) or not reported):
        raise ValueError(f"reported must be the path of a JSON file {{method: [top-1, source]}}, got {reported!r}")
    seeds = _seeds(raw.get("seeds", [0]), "seeds")
    data = raw.get("data") or {}
    if not isinstance(data, Mapping) or not all(isinstance(k, str) for k in data):
        raise ValueError(f"data must be a mapping of datamodule arguments, got {data!r}")
    if "balanced_reference" in data or "seed" in data:
        raise ValueError("data must not set balanced_reference or seed: the study sets them per run")
    stage2 = raw.get("stage2_epochs", 10)
    check_int("stage2_epochs", stage2, minimum=1)
    dirs = {}
    for key in ("runs_dir", "report_dir"):
        value = raw.get(key, f"{'runs' if key == 'runs_dir' else 'reports'}/study/{name}")
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key} must be a path, got {value!r}")
        dirs[key] = value
    return StudyConfig(
        name=name,
        methods=methods,
        seeds=seeds,
        data=dict(data),
        data_config=_data_config(raw.get("data_config")),
        budget=_str_list(raw.get("budget"), "budget"),
        extra=normalise_cli_args(_str_list(raw.get("extra"), "extra")),
        baseline=baseline,
        stage2_epochs=stage2,
        train_sets=_train_sets(raw.get("train_sets", list(TRAIN_SETS))),
        reported=reported,
        test_distributions=_test_distributions(raw.get("test_distributions")),
        path=path,
        raw=dict(raw),
        **dirs,
    )


def resolve_config_path(path: str, study_dir: Path) -> str:
    """Where a method config or budget file named ``path`` in a study file of folder ``study_dir`` is.

    An absolute ``path`` is itself. A relative one is looked for in ``study_dir``, then in each folder above it (the
    first that holds it wins: the shipped studies name ``configs/...`` from the repository root), then
    left relative to the current directory (where :func:`missing_files` reports it when it is not there either).

    Returns:
        The path found, relative to the current directory when it lies below it (so a study run from the repository
        root names its configs as before), else absolute; ``path`` itself when it is found nowhere.
    """
    if Path(path).is_absolute():
        return path
    base = study_dir.resolve()
    for folder in (base, *base.parents):
        candidate = folder / path
        if candidate.is_file():
            try:
                return str(candidate.relative_to(Path.cwd().resolve()))
            except ValueError:
                return str(candidate)
    return path


def load_study(path: str | Path) -> StudyConfig:
    """Read and check a study YAML (:func:`parse_study`); method configs and budget files are found from the study
    file (:func:`resolve_config_path`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the YAML is not a valid study (the message names the key).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"study config {str(file)!r} not found")
    try:
        raw = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"study config {str(file)!r} is not valid YAML: {err}") from err
    try:
        study = parse_study(raw, str(file))
    except ValueError as err:
        raise ValueError(f"study config {str(file)!r}: {err}") from err
    methods = tuple(
        m if m.config is None else replace(m, config=resolve_config_path(m.config, file.parent)) for m in study.methods
    )
    data_config = None if study.data_config is None else resolve_config_path(study.data_config, file.parent)
    reported = None if study.reported is None else resolve_config_path(study.reported, file.parent)
    return study.with_overrides(
        methods=methods,
        data_config=data_config,
        reported=reported,
        budget=tuple(resolve_config_path(b, file.parent) for b in study.budget),
    )


def missing_files(study: StudyConfig) -> list[str]:
    """The data config, method configs and budget files of ``study`` that do not exist (paths as written)."""
    paths = [study.data_config] if study.data_config is not None else []
    paths += [m.config for m in study.methods if m.config is not None] + list(study.budget)
    return [p for p in paths if not Path(p).is_file()]


def file_sha256(path: str | Path) -> str | None:
    """SHA-256 of a file's bytes, ``None`` when it does not exist."""
    file = Path(path)
    return hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else None


__all__ = [
    "FAMILIES",
    "STAGES",
    "TEST_DISTRIBUTIONS",
    "TRAIN_SETS",
    "MethodSpec",
    "StudyConfig",
    "file_sha256",
    "load_study",
    "missing_files",
    "normalise_cli_args",
    "parse_study",
    "resolve_config_path",
]
