"""Train and test several method configs at one budget and write a Markdown table of their test accuracies.

Each method is ``-c configs/data/<dataset>.yaml -c <method config>`` (:func:`lt_lightning.experiments.
experiment_configs`; plus the optional ``--budget`` config), run with
the ordinary ``lt-lightning fit`` then ``lt-lightning test`` on the last checkpoint (last-epoch reporting: nothing
selects on the test set). Every schedule of a recipe is a fraction of the run (classifier stages, pre-stages and
teachers included), so the budget file only sets ``trainer.max_epochs``. A row ``METHOD@BASE`` evaluates METHOD on
BASE's fit instead of fitting it again, as the survey's decoupled rows are measured: a test-time method (τ-norm,
NCM, post-hoc logit adjustment) tests BASE's checkpoint with METHOD's config; a method with a classifier stage (cRT,
LWS) trains that stage alone as a second fit from BASE's checkpoint (``init_from``), for the stage's own length.
Runs go to
``<runs>/<dataset>/<method>/``; a method whose test report exists is not run again and a fit killed before its
end resumes from its ``last.ckpt`` (its wall time then counts the resumed part only, marked "resumed"), so a killed
table resumes. ``--seeds 0 1 2`` runs every row (``--seeded ce balanced_softmax``: those rows) with each seed
(``--seed_everything`` and the datamodule's ``seed``; the config's own seed is its plain folder, another seed
``<method>-seed<S>``; a ``METHOD@BASE`` row uses BASE's run of the same seed) and reports mean ± std. The table lists
overall (top-1 on the balanced test set) and many/medium/few-shot accuracy and the
wall time of each fit, and is written to ``--out`` with the exact command that produced it.

    python benchmarks/results_table.py --dataset cifar10_lt --methods ce focal ldam_drw \\
        --budget configs/budget/ldam_drw_10ep.yaml --root data --out docs/results/cifar10_lt.md
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's lt_lightning when run as a script

from lt_lightning.experiments import experiment_configs  # noqa: E402
from lt_lightning.run_identity import resolve  # noqa: E402
from lt_lightning.study.launch import lt_cli as study_cli  # noqa: E402
from lt_lightning.study.launch import read_report as study_report  # noqa: E402
from lt_lightning.study.metrics import mean_std  # noqa: E402


def _fmt(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def _fmt_gain(value: float | None, scale: float) -> str:
    return "–" if value is None else f"{scale * value:+.2f}"


def lt_cli(stage: str, configs: list[str], out: Path, version: str, root: str | None, extra: list[str]) -> float:
    """``lt-lightning <stage>`` logging to ``<out>/<version>/`` (its output in ``<out>/<version>.log``) with the data
    root; returns its wall time in seconds. The study's launcher (:func:`lt_lightning.study.launch.lt_cli`): a failed
    command raises ``RunFailed`` with its error line and log."""
    data = [f"--data.init_args.root={root}"] if root else []
    return study_cli(stage, [*configs, *data, *extra], out, version)


def read_report(directory: Path) -> dict:
    """Top-1 and many/medium/few accuracy of the test run in ``directory`` (its ``per_class_accuracy.json``)."""
    report = study_report(directory)
    return {key: report[key] for key in ("acc", "many", "medium", "few")}


def budget_configs(budget: str | None) -> list[str]:
    """The budget file as a list (every schedule is a fraction of the run, so one file serves every method)."""
    return [str(budget)] if budget else []


STAGE_CALLBACKS = ("ClassifierRetraining",)
"""Callbacks whose config trains a second stage on a frozen stage-1 model (a ``METHOD@BASE`` row fits it alone)."""


def row_dir(runs: str | Path, dataset: str, row: str, seed: int | None = None) -> Path:
    """The cache folder of a table row: ``<runs>/<dataset>/<method>`` (``METHOD@BASE``: ``METHOD_on_BASE``), with
    ``-seed<S>`` for a run with an explicit seed other than the config's own."""
    name = row.replace("@", "_on_")
    return Path(runs) / dataset / (name if seed is None else f"{name}-seed{seed}")


def seed_args(seed: int | None) -> list[str]:
    """``--seed_everything`` and the datamodule's ``seed`` (sampler, augmentation) for an explicit seed."""
    return [] if seed is None else [f"--seed_everything={seed}", f"--data.init_args.seed={seed}"]


def _config_args(configs: list[Path]) -> list[str]:
    return [arg for config in configs for arg in ("-c", str(config))]


def config_seed(configs: list[Path]) -> int | None:
    """The seed a plain run of ``configs`` uses (its ``seed_everything``, when the datamodule's ``seed`` is unset or
    the same), i.e. the explicit seed whose run is the plain run's folder; ``None`` if the two differ. Resolved once
    per set of files in a process (every row and seed of a table asks again)."""
    return _config_seed(tuple(configs))


@functools.cache
def _config_seed(configs: tuple[Path, ...]) -> int | None:
    resolved = resolve(_config_args(list(configs)))
    seed = resolved.get("seed_everything")
    data_seed = ((resolved.get("data") or {}).get("init_args") or {}).get("seed", 0)
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and data_seed == seed else None


def run_seed(configs: list[Path], seed: int | None) -> int | None:
    """``seed`` as a run folder sees it: ``None`` (the plain run) when it is the config's own seed."""
    return None if seed is not None and seed == config_seed(configs) else seed


def method_config(dataset: str, method: str) -> list[Path]:
    """The config files of ``method`` on ``dataset``: ``[configs/data/<dataset>.yaml, <method config>]``."""
    return experiment_configs(dataset, method)


def stage_overlay(configs: list[Path], budget: str | None, checkpoint: Path, out: Path) -> Path:
    """Write ``<out>/stage_overlay.yaml``: the run's callbacks with ``init_from: checkpoint`` on its stage callback
    and ``trainer.max_epochs`` = the stage's length in the run (after the budget), so that the stage runs alone as a
    second fit. Derived from the resolved configs each time (the callback list is replaced as a whole by a later
    ``-c``, so it is restated here, never written by hand)."""
    import yaml

    from lt_lightning.schedule import resolve_length

    raw = resolve(_config_args([*configs, *map(Path, budget_configs(budget))]))
    run_epochs = raw["trainer"]["max_epochs"]
    callbacks = raw["trainer"]["callbacks"]
    stages = [c for c in callbacks if c["class_path"].rsplit(".", 1)[-1] in STAGE_CALLBACKS]
    if len(stages) != 1:
        raise ValueError(f"{configs[-1]} has {len(stages)} classifier-stage callbacks; a METHOD@BASE row needs one")
    init = stages[0].setdefault("init_args", {})
    length = resolve_length(init.pop("epochs", 10), run_epochs, "epochs", str(configs[-1]))
    init.pop("start_epoch", None)
    init["init_from"] = str(checkpoint)
    overlay = out / "stage_overlay.yaml"
    out.mkdir(parents=True, exist_ok=True)
    overlay.write_text(yaml.safe_dump({"trainer": {"max_epochs": length, "callbacks": callbacks}}, sort_keys=False))
    return overlay


def run_on_base(args: argparse.Namespace, row: str, method: str, base: str, seed: int | None = None) -> dict:
    """A ``METHOD@BASE`` row: METHOD's test-time rule or classifier stage on BASE's fit of the same seed (cached in
    its folder)."""
    configs = method_config(args.dataset, method)
    seed = run_seed(configs, seed)
    out = row_dir(args.runs, args.dataset, row, seed)
    result_file = out / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    run_method(args, base, seed)
    base_seed = run_seed(method_config(args.dataset, base), seed)
    base_ckpt = row_dir(args.runs, args.dataset, base, base_seed) / "fit" / "checkpoints" / "last.ckpt"
    config_args = [*_config_args(configs), *(a for b in budget_configs(args.budget) for a in ("-c", b))]
    staged = any(f".{name}" in c.read_text() for c in configs for name in STAGE_CALLBACKS)
    fit_wall = 0.0
    if staged:
        config_args += ["-c", str(stage_overlay(configs, args.budget, base_ckpt.resolve(), out))]
        ckpt = out / "fit" / "checkpoints" / "last.ckpt"
        resume = [f"--ckpt_path={ckpt}"] if ckpt.is_file() else []
        fit_wall = lt_cli("fit", config_args, out, "fit", args.root, [*args.extra, *seed_args(seed), *resume])
    else:
        ckpt = base_ckpt
    lt_cli("test", config_args, out, "test", args.root, [*seed_args(seed), f"--ckpt_path={ckpt}"])
    note = f"{'classifier stage trained' if staged else 'test-time rule applied'} on the {base} fit"
    return write_result(args, row, configs, out, fit_wall, [note], seed)


def write_result(
    args: argparse.Namespace,
    row: str,
    configs: list[Path],
    out: Path,
    fit_wall: float,
    notes: list[str],
    seed: int | None,
) -> dict:
    """The row's numbers (from its test report in ``<out>/test``), cached in ``<out>/result.json``."""
    sweep = out / "test" / "posthoc_tau_sweep.json"
    if sweep.is_file():
        notes = [*notes, f"tau = {json.loads(sweep.read_text())['chosen_tau']} (validation sweep)"]
    result = {
        "method": row,
        "seed": config_seed(configs) if seed is None else seed,
        **read_report(out / "test"),
        "fit_wall_s": round(fit_wall, 1),
        "config": " + ".join(str(c.relative_to(REPO)) for c in configs),
        "budget": budget_configs(args.budget),
    }
    if notes:
        result["note"] = "; ".join(notes)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return result


def run_method(args: argparse.Namespace, method: str, seed: int | None = None) -> dict:
    """Fit and test one method with ``seed`` (``None``: the config's own) or read its cached report; return its
    numbers. ``METHOD@BASE``: see the module docstring (:func:`run_on_base`)."""
    if "@" in method:
        name, base = method.split("@", 1)
        return run_on_base(args, method, name, base, seed)
    configs = method_config(args.dataset, method)
    seed = run_seed(configs, seed)
    out = row_dir(args.runs, args.dataset, method, seed)
    result_file = out / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    config_args = _config_args(configs)
    for budget in budget_configs(args.budget):
        config_args += ["-c", budget]
    ckpt = out / "fit" / "checkpoints" / "last.ckpt"
    resume = [f"--ckpt_path={ckpt}"] if ckpt.is_file() else []  # a fit killed earlier resumes from its last epoch
    fit_wall = lt_cli("fit", config_args, out, "fit", args.root, [*args.extra, *seed_args(seed), *resume])
    lt_cli("test", config_args, out, "test", args.root, [*seed_args(seed), f"--ckpt_path={ckpt}"])
    return write_result(args, method, configs, out, fit_wall, ["resumed"] if resume else [], seed)


KEYS = ("acc", "many", "medium", "few")


def summarize(runs: list[dict]) -> dict:
    """One table row from a row's runs (one per seed): each key's mean, its sample standard deviation (``n - 1``;
    ``None`` for one run), the seeds, the mean fit wall time and the notes."""
    row: dict = {"method": runs[0]["method"], "config": runs[0]["config"], "seeds": [r.get("seed") for r in runs]}
    for key in KEYS:
        row[key], row[f"{key}_std"], _ = mean_std([r.get(key) for r in runs])
    row["fit_wall_s"] = round(mean_std([r["fit_wall_s"] for r in runs])[0], 1)
    row["note"] = "; ".join(dict.fromkeys(r["note"] for r in runs if r.get("note")))
    return row


def run_row(args: argparse.Namespace, row: str) -> dict:
    """A table row: its runs for every seed of ``--seeds`` (rows of ``--seeded`` only, when given), else one run with
    the config's seed."""
    seeded = args.seeds and (args.seeded is None or row in args.seeded)
    return summarize([run_method(args, row, seed) for seed in (args.seeds if seeded else [None])])


def write_section(path: Path, dataset: str, lines: list[str], title: str) -> None:
    """Replace (or append) the ``<!-- table:<dataset> -->`` section of ``path`` (created with ``title``)."""
    text = path.read_text() if path.is_file() else title + "\n"
    section = "\n".join(lines)
    pattern = re.compile(rf"<!-- table:{re.escape(dataset)} -->.*?<!-- /table:{re.escape(dataset)} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a dataset with a recipe in configs/data, e.g. cifar10_lt")
    parser.add_argument(
        "--methods", nargs="+", required=True, help="method names (configs/method), e.g. ce focal ldam_drw"
    )
    parser.add_argument("--budget", default=None, help="a budget config, e.g. configs/budget/ldam_drw_10ep.yaml")
    parser.add_argument("--root", default=None, help="data root passed as --data.init_args.root")
    parser.add_argument("--runs", default="runs", help="where runs and cached results go")
    parser.add_argument("--out", required=True, help="the Markdown file to write")
    parser.add_argument("--reported", default=None, help="JSON {method: [top-1, source]} of published numbers to quote")
    parser.add_argument("--baseline", default="ce", help="the row whose top-1 the gains are measured from")
    parser.add_argument(
        "--section",
        default=None,
        help="write the table as the section <!-- table:SECTION --> of --out (other sections kept) instead of the file",
    )
    parser.add_argument("--title", default=None, help="first line of --out when --section creates it")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="seeds of every row (mean ± std); default: the config's seed"
    )
    parser.add_argument("--seeded", nargs="+", default=None, help="with --seeds: only these rows get every seed")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further CLI arguments for fit")
    args = parser.parse_args(argv)
    if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}")
    if args.seeded is not None and not args.seeds:
        parser.error("--seeded needs --seeds")
    unknown = sorted(set(args.seeded or ()) - set(args.methods))
    if unknown:
        parser.error(f"--seeded rows {unknown} are not in --methods")
    rows = [run_row(args, m) for m in args.methods]
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/results_table.py", *(argv or sys.argv[1:])])
    lines = [
        f"# {args.dataset}: test accuracy (%) at one budget",
        "",
        f"Budget: `{args.budget or 'the configs as they are'}`; last epoch, balanced test set. Generated by:",
        "",
        "```bash",
        command,
        "```",
        "",
        "Reported numbers are the papers' (200 epochs, original CIFAR; REFERENCE.md), quoted beside ours, not ours. "
        f"Absolute numbers differ between the original CIFAR and our copy; what should match is each method's gain "
        f"over {args.baseline} (ours: on our data; reported: the paper's number minus the reported {args.baseline}).",
        "",
        "Rows with several seeds give mean ± sample standard deviation (n - 1) over the seeds listed; the others one "
        "run with the config's seed.",
        "",
        f"| method | config | seeds | top-1 | gain over {args.baseline} | many | medium | few | fit wall time (s) | "
        f"note | reported top-1 (source) | reported gain over {args.baseline} |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    reported = json.loads(Path(args.reported).read_text()) if args.reported else {}
    ours_base = next((r["acc"] for r in rows if r["method"] == args.baseline), None)
    paper_base = reported.get(args.baseline, [None])[0]
    for r in rows:
        paper = reported.get(r["method"].split("@")[0])  # a row on another fit quotes the method's own number
        gain = None if ours_base is None or r["acc"] is None else r["acc"] - ours_base
        paper_gain = None if paper is None or paper_base is None else paper[0] - paper_base
        seeds = ", ".join(str(seed) for seed in r["seeds"])
        lines.append(
            f"| {r['method']} | `{r['config']}` | {seeds} | {_fmt(r['acc'], r['acc_std'])} | {_fmt_gain(gain, 100)} | "
            + " | ".join(_fmt(r[key], r[f"{key}_std"]) for key in ("many", "medium", "few"))
            + f" | {r['fit_wall_s']} | {r.get('note', '')} | "
            + (f"{paper[0]} ({paper[1]}) | " if paper else "– | ")
            + f"{_fmt_gain(paper_gain, 1)} |"
        )
    if args.section:
        lines[0] = "##" + lines[0]  # a sub-heading inside the file
        lines = [f"<!-- table:{args.section} -->", *lines, f"<!-- /table:{args.section} -->"]
        write_section(Path(args.out), args.section, lines, args.title or f"# {args.dataset}")
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
