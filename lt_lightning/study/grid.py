"""The study's grid: every (method, training set, seed) as one cached, resumable run.

A **unit** is one config method trained on one training set (``lt``: the long-tailed set; ``balanced``: its
balanced reference set, ``--data.init_args.balanced_reference=true``) with one seed (``--seed_everything`` and the
sampler's ``--data.init_args.seed``): ``lt-lightning fit`` then ``lt-lightning test`` on the last checkpoint (last
epoch: nothing selects on the test set), then the decoupled stages it needs (:meth:`StudyConfig.stages_needed`):

* ``ncm``: ``test`` of the fit's checkpoint with the ``NearestClassMean`` callback, as the reference runs it
  (facebookresearch/classifier-balancing ``main.py --knn`` defaults: mean-centred features, squared L2:
  :data:`STAGE_ARGS`);
* ``crt`` / ``lws``: a second ``fit`` of ``stage2_epochs`` epochs from the checkpoint (``ClassifierRetraining``
  with the backbone's BatchNorm in train mode, as the reference's ``run_networks.py``
  with ``init_from``: frozen backbone, class-balanced sampling), then its ``test``;
* ``@<name>``: a method given by ``from`` + ``config`` (e.g. ``tau_norm`` on ``ce``'s fit): when the config trains a
  classifier stage (a ``ClassifierRetraining`` callback), that stage alone as a second fit from the checkpoint
  (the config's callbacks restated with ``init_from``, ``trainer.max_epochs`` = the stage's length in the config's
  run), then its ``test``; otherwise (a test-time rule: τ-norm, NCM, post-hoc logit adjustment) the ``test`` of the
  checkpoint with the config's files;
* ``dist:<distribution>:<ratio>``: the ``test`` of the checkpoint on the test set resampled to a forward-LT,
  uniform or backward-LT distribution (the study's ``test_distributions``; the test-agnostic protocol of Zhang et
  al., NeurIPS 2022), the config's test-time callbacks included.

Cache: a unit lives in ``<runs_dir>/<method>/<lt|balanced>-seed<S>-<key>/``, ``key`` a hash of the run its config and
budget files resolve to (:func:`lt_lightning.run_identity.run_identity`: what the CLI builds from them, without
loggers and other keys that never change the numbers) and of every argument, so a changed recipe or budget is a new
run and never mixes with old numbers, while moving a config between files (``-c DATA -c METHOD``), a comment or a
logger does not discard finished runs. Files that do not resolve are keyed by their contents (the run then reports
the parse error). Finished steps leave JSON files there (``result.json`` for the fit + test, ``stage-<name>.json`` for a
stage); running the study again skips them. A fit killed after some epochs resumes from its ``last.ckpt``.

Failures: a failing step (a config that does not parse, a dataset too small for its balanced reference set, a crash)
is written to ``failed.json`` in the unit with the command's error line and log path, and the grid goes on; the next
run of the study tries it again.

Sharding: ``--shard K/N`` runs the units ``K-1, K-1+N, ...`` of the grid's fixed order (``1 <= K <= N``), so N
jobs of a cluster array cover the grid once; afterwards ``--report-only`` writes the report from the cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lt_lightning._checks import check_int
from lt_lightning.run_identity import RESOLVE_LOCK
from lt_lightning.study.config import STAGES, TRAIN_SETS, MethodSpec, StudyConfig, file_sha256
from lt_lightning.study.launch import Launch, RunFailed, find_checkpoint, lt_cli, read_report
from lt_lightning.study.provenance import git_commit

NCM_CALLBACK = "lt_lightning.callbacks.nearest_class_mean.NearestClassMean"
RETRAINING_CALLBACK = "lt_lightning.callbacks.classifier_retraining.ClassifierRetraining"
#: the reference settings of each stage's callback (the defaults of configs/method/{ncm,crt,lws}.yaml); their
#: hash names the stage's files, so a change of settings is a new stage, never a stale cached one
STAGE_ARGS: dict[str, tuple[str, ...]] = {
    "ncm": ("--trainer.callbacks.metric=squared_euclidean", "--trainer.callbacks.center=true"),
    "crt": ("--trainer.callbacks.backbone_mode=train",),
    "lws": ("--trainer.callbacks.backbone_mode=train",),
}


def _stage_tag(stage: str) -> str:
    return hashlib.sha256("\0".join(STAGE_ARGS[stage]).encode()).hexdigest()[:6]


def distribution_stage(distribution: str, ratio: float) -> str:
    """The stage name of a test on a resampled test set: ``dist:<distribution>:<ratio>``."""
    return f"dist:{distribution}:{ratio:g}"


@dataclass(frozen=True)
class Unit:
    """One (config method, training set, seed) of the grid, with the stages to run after its fit."""

    method: MethodSpec
    train_set: str
    seed: int
    stages: tuple[str, ...]
    args: tuple[str, ...]
    files: tuple[str, ...]
    key: str
    directory: Path
    stage2_epochs: int
    #: the CLI arguments of each ``@<name>`` stage (a derived method's config in place of the unit's)
    stage_args: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def label(self) -> str:
        return f"{self.method.name} [{self.train_set}, seed {self.seed}]"

    @property
    def balanced(self) -> bool:
        return self.train_set == "balanced"

    def stage_file(self, stage: str) -> Path:
        return self.directory / f"stage-{self.stage_version(stage)}.json"

    def stage_version(self, stage: str) -> str:
        """The folder / file name of a stage: changes whenever what the stage computes changes."""
        if stage.startswith("@"):
            args = self.args_of(stage)
            files = _config_files(args)
            return f"{stage[1:]}-{unit_key(files, [a for a in args if a not in files and a != '-c'])}"
        if stage.startswith("dist:"):
            _, distribution, ratio = stage.split(":")
            return f"test-{distribution}{'' if distribution == 'uniform' else ratio}"
        epochs = "" if stage == "ncm" else f"-e{self.stage2_epochs}"
        return f"{stage}{epochs}-{_stage_tag(stage)}"

    def args_of(self, stage: str) -> tuple[str, ...]:
        """The CLI arguments of an ``@<name>`` stage."""
        return dict(self.stage_args)[stage]

    def done(self) -> bool:
        """Whether the fit, the test and every needed stage have their result files."""
        return (self.directory / "result.json").is_file() and all(self.stage_file(s).is_file() for s in self.stages)


def _cli_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)  # JSON is YAML: true/false, numbers, lists, mappings


def unit_args(
    study: StudyConfig, method: MethodSpec, balanced: bool, seed: int, extra: Sequence[str] = ()
) -> list[str]:
    """The CLI arguments of a unit's ``fit`` and ``test`` (without logger and checkpoint arguments)."""
    if method.config is None:
        raise ValueError(f"method {method.name!r} is derived (from {method.source!r}): it has no runs of its own")
    args = [] if study.data_config is None else ["-c", study.data_config]
    args += ["-c", method.config]
    for budget in study.budget:
        args += ["-c", budget]
    args += [f"--data.init_args.{k}={_cli_value(v)}" for k, v in study.data.items()]
    args += [f"--seed_everything={seed}", f"--data.init_args.seed={seed}"]
    if balanced:
        args.append("--data.init_args.balanced_reference=true")
    return [*args, *study.extra, *method.extra, *extra]


def unit_key(files: Sequence[str], args: Sequence[str]) -> str:
    """12 hex digits of SHA-256 over the run the files resolve to (:func:`files_identity`) and the arguments."""
    payload = {"run": files_identity(tuple(files)), "args": list(args)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def files_identity(files: tuple[str, ...]) -> str:
    """SHA-256 of :func:`~lt_lightning.run_identity.run_identity` of ``lt-lightning fit -c F1 -c F2 ...``; files
    that do not resolve (a missing file, a parse error): ``files:`` and the SHA-256 of their contents instead."""
    return _files_identity(files, tuple(file_sha256(f) for f in files))


@functools.lru_cache(maxsize=256)
def _files_identity(files: tuple[str, ...], contents: tuple[str | None, ...]) -> str:
    from lt_lightning.run_identity import digest, resolve, run_identity  # local: resolving imports Lightning

    try:
        return digest(run_identity(resolve([arg for f in files for arg in ("-c", f)])))
    except Exception:  # noqa: BLE001 - such a unit is keyed by its files and reports the error when it runs
        return "files:" + digest(list(contents))


def build_units(study: StudyConfig, extra: Sequence[str] = (), methods: Sequence[str] | None = None) -> list[Unit]:
    """The grid in its fixed order: seeds, then config methods (study order; those that run with the seed, see
    :meth:`StudyConfig.seeds_of`), then the study's training sets (``lt`` before ``balanced``).

    Args:
        study: the study.
        extra: further CLI arguments for every run (part of the cache key).
        methods: only the units of these methods, of the sources of derived ones among them and of the baseline
            (whose balanced run is every method's ``A_v``).

    Raises:
        ValueError: ``methods`` names a method that is not in the study.
    """
    wanted = None
    if methods is not None:
        names = {m.name for m in study.methods}
        unknown = sorted(set(methods) - names)
        if unknown:
            raise ValueError(f"--methods {unknown} are not methods of study {study.name!r} ({sorted(names)})")
        wanted = {study.method(n).source or n for n in methods} | {study.baseline}
    units = []
    for seed in study.all_seeds():
        for method in study.methods:
            if method.derived or (wanted is not None and method.name not in wanted):
                continue
            if seed not in study.seeds_of(method):
                continue
            for train_set in study.train_sets:
                balanced = train_set == "balanced"
                args = unit_args(study, method, balanced, seed, extra)
                files = _config_files(args)
                key = unit_key(files, [a for a in args if a not in files and a != "-c"])
                directory = Path(study.runs_dir) / method.name / f"{train_set}-seed{seed}-{key}"
                stages = study.stages_needed(method, balanced)
                if not balanced:
                    stages += tuple(distribution_stage(d, r) for d, r in study.test_distributions)
                stage_args = tuple(
                    (s, tuple(unit_args(study, study.method(s[1:]), balanced, seed, extra)))
                    for s in stages
                    if s.startswith("@")
                )
                units.append(
                    Unit(
                        method,
                        train_set,
                        seed,
                        stages,
                        tuple(args),
                        tuple(files),
                        key,
                        directory,
                        study.stage2_epochs,
                        stage_args,
                    )
                )
    return units


def _config_files(args: Sequence[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-c"]


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``1 <= K <= N``.

    Raises:
        ValueError: not of the form ``K/N`` or out of range.
    """
    parts = text.split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--shard must be K/N (e.g. 2/8), got {text!r}")
    k, n = int(parts[0]), int(parts[1])
    if not 1 <= k <= n:
        raise ValueError(f"--shard K/N needs 1 <= K <= N, got {text!r}")
    return k, n


def shard_units(units: Sequence[Unit], shard: tuple[int, int] | None) -> list[Unit]:
    """The units of shard ``(K, N)``: positions ``K-1, K-1+N, ...`` of the grid (all of them for ``None``)."""
    if shard is None:
        return list(units)
    k, n = shard
    return list(units[k - 1 :: n])


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` as JSON atomically (temporary file, then rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)  # atomic: a killed study never leaves half a result


def check_fit_finished(fit_dir: Path) -> None:
    """Raise :class:`RunFailed` unless the fit in ``fit_dir`` trained all its epochs: the epoch of its last
    checkpoint against the ``trainer.max_epochs`` of the ``config.yaml`` the CLI saved there (a fit that stopped early
    without an error exit must never be cached as finished)."""
    import yaml

    from lt_lightning.checkpoint_reader import read_checkpoint  # local: the grid is imported by the CLI; keep it cheap

    checkpoint, config = find_checkpoint(fit_dir), fit_dir / "config.yaml"
    if checkpoint is None or not config.is_file():
        return  # nothing to compare (the test stage reports a missing checkpoint)
    max_epochs = (yaml.safe_load(config.read_text()).get("trainer") or {}).get("max_epochs")
    saved = read_checkpoint(checkpoint, purpose="study: the finished fit", mmap=True, require_state_dict=False)
    epoch = saved.get("epoch") if isinstance(saved, dict) else None
    if isinstance(max_epochs, int) and max_epochs > 0 and isinstance(epoch, int) and epoch + 1 < max_epochs:
        raise RunFailed(
            f"the fit stopped after epoch {epoch + 1} of {max_epochs} without an error ({checkpoint}): not cached as "
            "finished; run the study again to resume it"
        )


def _fit(unit: Unit, launch: Launch | None) -> float:
    """The unit's fit, resumed from ``last.ckpt`` when an earlier attempt was killed; returns its wall time."""
    marker = unit.directory / "fit.done.json"
    if marker.is_file():
        return float(json.loads(marker.read_text())["wall_s"])
    fit_dir = unit.directory / "fit"
    resume = find_checkpoint(fit_dir)
    wall = None
    if resume is not None:
        try:
            wall = lt_cli("fit", [*unit.args, f"--ckpt_path={resume}"], unit.directory, "fit", launch)
        except RunFailed:  # e.g. a checkpoint cut short by the kill: train from scratch
            shutil.rmtree(fit_dir, ignore_errors=True)
    if wall is None:
        shutil.rmtree(fit_dir, ignore_errors=True)
        wall = lt_cli("fit", list(unit.args), unit.directory, "fit", launch)
    check_fit_finished(fit_dir)
    write_json(marker, {"wall_s": round(wall, 1), "resumed_from": None if resume is None else str(resume)})
    return wall


def _stage1_checkpoint(unit: Unit) -> Path:
    ckpt = find_checkpoint(unit.directory / "fit")
    if ckpt is None:
        raise RunFailed(
            f"the fit wrote no checkpoint under {unit.directory / 'fit' / 'checkpoints'} (the method config needs a "
            "ModelCheckpoint, e.g. save_last: true)"
        )
    return ckpt


def _joint(unit: Unit, launch: Launch | None, commit: dict[str, Any]) -> dict[str, Any]:
    result_file = unit.directory / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    missing = [f for f in unit.files if not Path(f).is_file()]
    if missing:
        raise RunFailed(f"config file(s) not found: {missing}")
    fit_wall = _fit(unit, launch)
    marker = json.loads((unit.directory / "fit.done.json").read_text())
    ckpt = _stage1_checkpoint(unit)
    test_wall = lt_cli("test", [*unit.args, f"--ckpt_path={ckpt}"], unit.directory, "test", launch)
    result = {
        "method": unit.method.name,
        "train_set": unit.train_set,
        "seed": unit.seed,
        "key": unit.key,
        **read_report(unit.directory / "test"),
        "fit_wall_s": round(fit_wall, 1),
        "test_wall_s": round(test_wall, 1),
        **{f"fit_{k}": marker.get(k) for k in ("adopted_from", "resumed_from")},
        "args": list(unit.args),
        "config_sha256": {f: file_sha256(f) for f in unit.files},
        **commit,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(result_file, result)
    return result


def _second_fit_then_test(
    unit: Unit, fit_args: list[str], test_args: list[str], version: str, stage: str, launch: Launch | None
) -> tuple[float, Path]:
    """A stage trained as a second fit (``<version>_fit``, from scratch each time) then tested on its checkpoint
    (``<version>_test``); returns the fit's wall time and the test's folder."""
    fit_version = f"{version}_fit"
    shutil.rmtree(unit.directory / fit_version, ignore_errors=True)
    wall = lt_cli("fit", fit_args, unit.directory, fit_version, launch)
    stage_ckpt = find_checkpoint(unit.directory / fit_version)
    if stage_ckpt is None:
        raise RunFailed(f"the {stage} stage wrote no checkpoint under {unit.directory / fit_version}")
    test_version = f"{version}_test"
    lt_cli("test", [*test_args, f"--ckpt_path={stage_ckpt}"], unit.directory, test_version, launch)
    return wall, unit.directory / test_version


def _stage(unit: Unit, stage: str, launch: Launch | None, commit: dict[str, Any]) -> dict[str, Any]:
    path = unit.stage_file(stage)
    if path.is_file():
        return json.loads(path.read_text())
    ckpt = _stage1_checkpoint(unit)
    version = unit.stage_version(stage)
    result: dict[str, Any] = {"method": unit.method.name, "train_set": unit.train_set, "seed": unit.seed}
    result |= {"stage": stage, "key": unit.key}
    if stage.startswith("@"):
        result |= _config_stage(unit, stage, ckpt, version, launch)
    elif stage.startswith("dist:"):
        _, distribution, ratio = stage.split(":")
        extra = [
            f"--ckpt_path={ckpt}",
            f"--data.init_args.test_distribution={distribution}",
            f"--data.init_args.test_imbalance_ratio={ratio}",
        ]
        result["test_wall_s"] = round(lt_cli("test", [*unit.args, *extra], unit.directory, version, launch), 1)
        result |= {"distribution": distribution, "imbalance_ratio": float(ratio)}
        result |= read_report(unit.directory / version)
    elif stage == "ncm":
        extra = [f"--ckpt_path={ckpt}", f"--trainer.callbacks+={NCM_CALLBACK}", *STAGE_ARGS["ncm"]]
        result["test_wall_s"] = round(lt_cli("test", [*unit.args, *extra], unit.directory, version, launch), 1)
        result |= read_report(unit.directory / version)
    else:
        retrain = [
            f"--trainer.max_epochs={unit.stage2_epochs}",
            f"--trainer.callbacks+={RETRAINING_CALLBACK}",
            f"--trainer.callbacks.method={stage}",
            f"--trainer.callbacks.init_from={ckpt}",
            *STAGE_ARGS[stage],
        ]
        wall, tested = _second_fit_then_test(unit, [*unit.args, *retrain], list(unit.args), version, stage, launch)
        result |= {"stage2_epochs": unit.stage2_epochs, "fit_wall_s": round(wall, 1)} | read_report(tested)
    result |= commit
    write_json(path, result)
    return result


def classifier_stage_overlay(args: Sequence[str], checkpoint: Path, out: Path) -> Path | None:
    """For a config that trains a classifier stage (one ``ClassifierRetraining`` callback): write
    ``<out>/stage_overlay.yaml``, the config's callbacks with ``init_from: checkpoint`` on the stage callback and
    ``trainer.max_epochs`` = the stage's length in the config's run, so that the stage runs alone as a second fit;
    ``None`` for a config without one (a test-time rule). Derived from the resolved config (the callback list is
    replaced as a whole by a later ``-c``, so it is restated, never written by hand).

    Raises:
        RunFailed: the arguments do not parse, or the config has several classifier stages.
    """
    import yaml

    from lt_lightning.run_identity import resolve  # local: resolving imports Lightning
    from lt_lightning.schedule import resolve_length

    try:
        raw = resolve(list(args))
    except ValueError as err:
        raise RunFailed(str(err)) from err
    callbacks = raw["trainer"].get("callbacks") or []
    stages = [c for c in callbacks if c.get("class_path") == RETRAINING_CALLBACK]
    if not stages:
        return None
    if len(stages) > 1:
        raise RunFailed(f"{len(stages)} classifier-stage callbacks in {_config_files(args)}; a stage needs one")
    init = stages[0].setdefault("init_args", {})
    length = resolve_length(init.pop("epochs", 10), raw["trainer"]["max_epochs"], "epochs", "the stage")
    init.pop("start_epoch", None)
    init["init_from"] = str(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    overlay = out / "stage_overlay.yaml"
    overlay.write_text(yaml.safe_dump({"trainer": {"max_epochs": length, "callbacks": callbacks}}, sort_keys=False))
    return overlay


def _config_stage(unit: Unit, stage: str, ckpt: Path, version: str, launch: Launch | None) -> dict[str, Any]:
    """An ``@<name>`` stage: the derived config's classifier stage (a second fit) or test-time rule on ``ckpt``."""
    args = list(unit.args_of(stage))
    overlay = classifier_stage_overlay(args, ckpt.resolve(), unit.directory / version)
    if overlay is None:
        wall = lt_cli("test", [*args, f"--ckpt_path={ckpt}"], unit.directory, version, launch)
        result = {"kind": "test-time rule", "test_wall_s": round(wall, 1)} | read_report(unit.directory / version)
    else:
        args += ["-c", str(overlay)]
        wall, tested = _second_fit_then_test(unit, args, args, version, stage, launch)
        result = {"kind": "classifier stage", "fit_wall_s": round(wall, 1)} | read_report(tested)
    sweep = unit.directory / (version if overlay is None else f"{version}_test") / "posthoc_tau_sweep.json"
    if sweep.is_file():
        result["chosen_tau"] = json.loads(sweep.read_text()).get("chosen_tau")
    return result


@dataclass
class Outcome:
    """What running a unit did: ``status`` is ``"cached"``, ``"done"`` or ``"failed"``."""

    unit: Unit
    status: str
    acc: float | None = None
    errors: list[dict[str, str]] | None = None
    wall_s: float = 0.0


def run_unit(
    unit: Unit,
    launch: Launch | None = None,
    on_step: Callable[[str], None] | None = None,
    commit: dict[str, Any] | None = None,
) -> Outcome:
    """Run what is missing of ``unit`` (fit + test, then its stages); record failures instead of raising them."""
    if unit.done():
        result = json.loads((unit.directory / "result.json").read_text())
        return Outcome(unit, "cached", result.get("acc"))
    start = time.time()
    unit.directory.mkdir(parents=True, exist_ok=True)
    failed_file = unit.directory / "failed.json"
    failed_file.unlink(missing_ok=True)
    commit = git_commit() if commit is None else commit
    errors: list[dict[str, str]] = []
    acc = None
    step = on_step or (lambda _: None)
    try:
        step("fit + test")
        acc = _joint(unit, launch, commit)["acc"]
    except (RunFailed, OSError, ValueError) as err:
        errors.append({"step": "fit + test", "error": str(err)})
    if not errors:
        for stage in unit.stages:
            step(stage)
            try:
                _stage(unit, stage, launch, commit)
            except (RunFailed, OSError, ValueError) as err:
                errors.append({"step": stage, "error": str(err)})
    if errors:
        write_json(failed_file, {"unit": unit.label, "errors": errors})
        return Outcome(unit, "failed", acc, errors, time.time() - start)
    return Outcome(unit, "done", acc, None, time.time() - start)


def run_grid(
    units: Sequence[Unit],
    launch: Launch | None = None,
    console: Any = None,
    title: str = "study",
    parallel: int = 1,
) -> list[Outcome]:
    """Run ``units`` with a rich progress bar; one line per unit (cached, done with its accuracy, failed).

    ``parallel > 1`` runs that many units at once, each in its own subprocesses (a small model leaves a large GPU
    mostly idle: several ordinary fits side by side fill it); the outcomes come back in the grid's order. The lines
    are then printed without a live progress bar and under :data:`~lt_lightning.run_identity.RESOLVE_LOCK`: a unit's
    thread may be resolving a config (a classifier stage's overlay), which captures the process's stdout meanwhile.

    Raises:
        ValueError: ``parallel < 1``, or ``parallel > 1`` with the in-process launcher.
    """
    from concurrent.futures import ThreadPoolExecutor

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    check_int("parallel", parallel, minimum=1)
    if parallel > 1 and launch is not None and launch.kind != "subprocess":
        raise ValueError(f"parallel={parallel} needs the subprocess launcher, not {launch.kind!r}")
    console = console or Console()
    commit = git_commit()

    def line(outcome: Outcome) -> str:
        acc = "" if outcome.acc is None else f" top-1 {100 * outcome.acc:.2f}%"
        if outcome.status == "failed":
            details = "; ".join(f"{e['step']}: {e['error']}" for e in outcome.errors or [])
            return f"[red]failed[/red] {escape(outcome.unit.label)}{acc}: {escape(details)}"
        wall = f" ({outcome.wall_s:.0f} s)" if outcome.status == "done" else ""
        return f"{outcome.status} {escape(outcome.unit.label)}{acc}{wall}"

    if parallel > 1:
        done = [0]

        def run_parallel(unit: Unit) -> Outcome:
            outcome = run_unit(unit, launch, None, commit)
            with RESOLVE_LOCK:
                done[0] += 1
                console.print(f"[{done[0]}/{len(units)}] {line(outcome)}", soft_wrap=True)
            return outcome

        console.print(f"{title}: {len(units)} runs, {parallel} at a time", soft_wrap=True)
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            return list(pool.map(run_parallel, units))

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    outcomes = []
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(title, total=len(units))
        for unit in units:

            def step(what: str, unit: Unit = unit) -> None:
                progress.update(task, description=escape(f"{title}: {unit.label} {what}"))

            outcome = run_unit(unit, launch, step, commit)
            progress.console.print(line(outcome), soft_wrap=True)
            outcomes.append(outcome)
            progress.advance(task)
    return outcomes


__all__ = [
    "NCM_CALLBACK",
    "RETRAINING_CALLBACK",
    "STAGES",
    "TRAIN_SETS",
    "Outcome",
    "classifier_stage_overlay",
    "distribution_stage",
    "Unit",
    "build_units",
    "parse_shard",
    "run_grid",
    "run_unit",
    "shard_units",
    "unit_args",
    "unit_key",
]
