"""``lt-lightning study -c STUDY.yaml``: run the survey's empirical study over a grid of methods and write its report.

    lt-lightning study -c configs/study/digits_lt.yaml                    # run (or resume) everything, then report
    lt-lightning study -c configs/study/digits_lt.yaml --list             # show the grid and what is cached
    lt-lightning study -c configs/study/digits_lt.yaml --extra trainer.max_epochs=2 --runs-dir /tmp/quick
    lt-lightning study -c configs/study/cifar10_lt.yaml --shard 3/8       # one job of a cluster array
    lt-lightning study -c configs/study/cifar10_lt.yaml --report-only     # after all shards: the report
    lt-lightning study -c configs/study/cifar10_lt.yaml --adopt-fits runs/cifar10_lt  # reuse fits from elsewhere
    lt-lightning study -c configs/study/digits_lt.yaml --report-only --publish  # the report into its report_dir
    lt-lightning study -c configs/study/cifar10_lt_200ep.yaml --parallel 12 --overlay configs/trainer/fast_bf16.yaml \\
        --extra trainer.accelerator=gpu trainer.devices=1 data.init_args.train_set_on_device=true   # one GPU

The report goes to ``<runs_dir>/report`` unless ``--report-dir DIR`` names another folder or ``--publish`` writes it
to the study's ``report_dir`` (the committed ``docs/study/<name>``): a partial or shortened try never overwrites the
published report by default.

``--extra`` takes the overrides of every fit and test up to the next option of this command, in either spelling:
``--extra trainer.max_epochs=2 trainer.accelerator=gpu --report-dir X`` or
``--extra --trainer.max_epochs 2 --trainer.accelerator gpu --report-dir X`` (a value that starts with ``-`` needs
the ``KEY=VALUE`` form). It may be given more than once.

Method configs and budget files named by relative paths are found from the study file (its folder, else the nearest
folder above it that holds them; :func:`lt_lightning.study.config.resolve_config_path`), so the command runs from
any directory; ``runs_dir`` and ``report_dir`` are relative to the current directory.

Every (method, training set, seed) is one run of the ordinary ``lt-lightning fit`` / ``test`` (see
:mod:`lt_lightning.study.grid`), cached in the runs folder: a second call skips what is finished, a killed study
resumes. A run that fails is reported (its error line and log) and the rest of the grid goes on; the exit status is
1 when some run of this call failed.

SLURM array (each task one shard; each run can itself use several GPUs through ``--extra``)::

    #!/bin/bash
    #SBATCH --array=1-8
    #SBATCH --gpus=1 --cpus-per-task=8 --time=24:00:00
    lt-lightning study -c configs/study/cifar10_lt.yaml --shard ${SLURM_ARRAY_TASK_ID}/8 \\
        --extra trainer.accelerator=gpu trainer.devices=1 --no-report

    # then, once the array is done (e.g. sbatch --dependency=afterany:<array job id>):
    lt-lightning study -c configs/study/cifar10_lt.yaml --report-only

Every shard must be given the same ``--extra`` (it is part of the runs' cache keys) and see the same runs folder
(a shared file system).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from lt_lightning.study.adopt import adopt_fit
from lt_lightning.study.config import StudyConfig, load_study, normalise_cli_args
from lt_lightning.study.grid import build_units, parse_shard, run_grid, shard_units
from lt_lightning.study.launch import LAUNCHERS, Launch
from lt_lightning.study.report import write_report

_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`(~?)([^`<]*?)\s*(?:<([^>]*)>)?`")


def plain_text(rst: str) -> str:
    """A docstring's reStructuredText markup as plain text for ``--help``.

    Double back-quoted code loses its back-quotes, a role such as ``:mod:`a.b``` becomes ``a.b`` (``~a.B``: ``B``;
    ``text <target>``: ``text``), and a paragraph's closing ``::`` becomes ``:``.
    """

    def role(match: re.Match[str]) -> str:
        tilde, text, target = match.groups()
        if target is not None:
            return text
        return text.rsplit(".", 1)[-1] if tilde else text

    text = _ROLE.sub(role, rst)
    text = re.sub(r"``(.+?)``", r"\1", text)
    return re.sub(r"(\S)::$", r"\1:", text, flags=re.MULTILINE)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lt-lightning study",
        description=plain_text(__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-c", "--config", required=True, help="the study YAML (lt_lightning.study.config)")
    parser.add_argument("--shard", default=None, help="K/N: run only shard K of N (1 <= K <= N) of the grid")
    parser.add_argument("--methods", nargs="+", default=None, help="run only these methods (names in the study)")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="run only these of the study's seeds (e.g. one seed of every row first)",
    )
    parser.add_argument("--runs-dir", default=None, help="override the study's runs_dir")
    parser.add_argument(
        "--report-dir", default=None, help="write the report here (default: <runs_dir>/report; see --publish)"
    )
    parser.add_argument(
        "--publish", action="store_true", help="write the report to the study's report_dir (e.g. docs/study/<name>)"
    )
    parser.add_argument("--stage2-epochs", type=int, default=None, help="override the study's stage2_epochs")
    parser.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="subprocess",
        help="subprocess: a fresh process per command (default; any Lightning strategy); inprocess: faster start, "
        "for small CPU studies",
    )
    parser.add_argument(
        "--launch-prefix",
        default="",
        help="command put before each `python -m lt_lightning ...` of the subprocess launcher, e.g. "
        "'srun --ntasks-per-node=4' for runs over several devices or nodes under SLURM",
    )
    parser.add_argument(
        "--adopt-fits",
        default=None,
        metavar="DIR",
        help="before running, copy fits from DIR/<config stem>/fit (finished: tested; unfinished: resumed), or a "
        "study's runs folder (after a code change gave the runs new keys), into the units whose resolved config they "
        "match (lt_lightning.study.adopt)",
    )
    parser.add_argument(
        "--overlay",
        action="append",
        default=[],
        metavar="FILE",
        help="a config file given after every run's budget files (-c; part of the runs' cache keys), e.g. "
        "configs/trainer/fast_bf16.yaml; may be given more than once",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="N",
        help="run N units at once, each in its own subprocesses (several small fits side by side on one GPU; "
        "OMP_NUM_THREADS = cores / N unless set)",
    )
    parser.add_argument("--list", action="store_true", help="print the grid and its cache state, run nothing")
    parser.add_argument("--report-only", action="store_true", help="write the report from the cache, run nothing")
    parser.add_argument("--no-report", action="store_true", help="run the grid without writing the report")
    parser.add_argument(
        "--extra",
        nargs="*",
        default=[],
        help="further CLI arguments for every fit and test, up to the next option of this command: "
        "--extra trainer.max_epochs=2 or --extra --trainer.max_epochs 2",
    )
    return parser


def split_extra(argv: Sequence[str], options: set[str]) -> tuple[list[str], list[str]]:
    """``argv`` without its ``--extra`` groups, and those groups' overrides as ``--KEY=VALUE`` / ``--KEY`` items.

    A group runs from ``--extra`` to the next token that is one of this command's ``options`` (or ``--option=...``).
    Inside it, ``KEY=VALUE`` and ``--KEY=VALUE`` stand alone and ``--KEY VALUE`` is joined into ``--KEY=VALUE``.

    Raises:
        ValueError: a bare ``KEY`` without a value (``--extra trainer.max_epochs 2``), naming both spellings.
    """
    rest: list[str] = []
    extra: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] != "--extra":
            rest.append(argv[i])
            i += 1
            continue
        j = i + 1
        while j < len(argv) and argv[j] not in options and argv[j].split("=", 1)[0] not in options:
            j += 1
        group = list(argv[i + 1 : j])
        k = 0
        while k < len(group):
            token = group[k]
            if token.startswith("-"):
                joins = "=" not in token and k + 1 < len(group) and not group[k + 1].startswith("-")
                extra.append(f"{token}={group[k + 1]}" if joins else token)
                k += 2 if joins else 1
            elif "=" in token:
                extra.append(f"--{token}")
                k += 1
            else:
                raise ValueError(
                    f"--extra: {token!r} has no value: write {token}=VALUE or --{token} VALUE (a value starting "
                    "with '-' needs the KEY=VALUE form)"
                )
        i = j
    return rest, extra


def only_seeds(study: StudyConfig, seeds: Sequence[int]) -> StudyConfig:
    """``study`` with every method's seeds (and the study's) cut to ``seeds``; a method left without one is dropped.

    Raises:
        ValueError: a seed no method runs with, or the baseline left without a seed.
    """
    unknown = sorted(set(seeds) - set(study.all_seeds()))
    if unknown:
        raise ValueError(f"--seeds {unknown} are not seeds of study {study.name!r} ({list(study.all_seeds())})")
    keep = set(seeds)
    methods = []
    for m in study.methods:
        own = None if m.seeds is None else tuple(s for s in m.seeds if s in keep)
        if own == () or (m.seeds is None and not m.derived and not keep & set(study.seeds)):
            continue
        methods.append(replace(m, seeds=own))
    names = {m.name for m in methods}
    methods = [m for m in methods if m.source is None or m.source in names]
    if study.baseline not in names:
        raise ValueError(f"--seeds {sorted(keep)} leave the baseline {study.baseline!r} without a seed")
    return study.with_overrides(
        seeds=tuple(s for s in study.seeds if s in keep) or tuple(sorted(keep)), methods=tuple(methods)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study command; return the exit status (0, or 1 when a run failed)."""
    from rich.console import Console

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        rest, extra_args = split_extra(argv, set(parser._option_string_actions) - {"--extra"})
    except ValueError as err:
        parser.error(str(err))
    args = parser.parse_args(rest)
    args.extra = extra_args
    try:
        study = load_study(args.config)
        if args.stage2_epochs is not None and args.stage2_epochs < 1:
            raise ValueError(f"--stage2-epochs must be >= 1, got {args.stage2_epochs}")
        if args.publish and args.report_dir:
            raise ValueError("give --publish (the study's report_dir) or --report-dir DIR, not both")
        study = study.with_overrides(runs_dir=args.runs_dir, stage2_epochs=args.stage2_epochs)
        if args.seeds is not None:
            study = only_seeds(study, args.seeds)
        if args.overlay:
            missing = [f for f in args.overlay if not Path(f).is_file()]
            if missing:
                raise FileNotFoundError(f"--overlay file(s) not found: {missing}")
            study = study.with_overrides(budget=(*study.budget, *args.overlay))
        if args.parallel < 1 or (args.parallel > 1 and args.launcher != "subprocess"):
            raise ValueError(f"--parallel must be >= 1 and needs the subprocess launcher above 1, got {args.parallel}")
        if not args.publish:  # never the committed report_dir unless asked
            study = study.with_overrides(report_dir=args.report_dir or str(Path(study.runs_dir) / "report"))
        shard = None if args.shard is None else parse_shard(args.shard)
        extra = normalise_cli_args(args.extra)
        launch = Launch(args.launcher, tuple(shlex.split(args.launch_prefix)))
        units = shard_units(build_units(study, extra, args.methods), shard)
        if args.methods:  # the report shows the chosen methods (and the baseline, whose balanced run is A_v)
            chosen = set(args.methods) | {study.baseline}
            chosen |= {study.method(n).source for n in args.methods if study.method(n).derived}
            study = study.with_overrides(methods=tuple(m for m in study.methods if m.name in chosen))
        all_units = build_units(study, extra)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    console = Console()
    command = "lt-lightning study " + " ".join(shlex.quote(a) for a in argv)
    if args.list:
        for i, unit in enumerate(units, 1):
            state = "done" if unit.done() else ("failed" if (unit.directory / "failed.json").is_file() else "to run")
            stages = f" + {', '.join(unit.stages)}" if unit.stages else ""
            console.print(
                f"{i:3d}. {unit.label}{stages}: {state} ({unit.directory})",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        return 0
    status = 0
    if args.adopt_fits and not args.report_only:
        for unit in units:
            if not unit.done():
                adopted, why = adopt_fit(unit, Path(args.adopt_fits))
                console.print(f"{unit.label}: {why}", markup=False, highlight=False, soft_wrap=True)
    if not args.report_only:
        title = f"study {study.name}" + (f" shard {args.shard}" if shard else "")
        if args.parallel > 1 and "OMP_NUM_THREADS" not in os.environ:  # the runs' processes share the cores
            os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.parallel))
        start = time.time()
        outcomes = run_grid(units, launch, console, title, args.parallel)
        failed = [o for o in outcomes if o.status == "failed"]
        done = sum(o.status == "done" for o in outcomes)
        cached = sum(o.status == "cached" for o in outcomes)
        summary = f"{len(units)} runs: {done} run now, {cached} cached, {len(failed)} failed"
        summary += f" ({time.time() - start:.0f} s in all, {args.parallel} at a time)"
        console.print(summary, highlight=False, soft_wrap=True)
        status = 1 if failed else 0
    if not args.no_report:
        write_report(study, all_units, command, extra)
        console.print(f"report: {study.report_dir}/report.md", highlight=False, soft_wrap=True)
    return status


__all__ = ["build_parser", "main", "plain_text"]
