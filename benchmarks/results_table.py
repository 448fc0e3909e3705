"""Train and test several method configs at one budget and write a Markdown table of their test accuracies.

Each method is ``configs/experiments/<dataset>/<method>.yaml`` (plus the optional ``--budget`` config), run with
the ordinary ``lt-lightning fit`` then ``lt-lightning test`` on the last checkpoint (last-epoch reporting: nothing
selects on the test set). Every schedule of a recipe is a fraction of the run (classifier stages, pre-stages and
teachers included), so the budget file only sets ``trainer.max_epochs``. Runs go to
``<runs>/<dataset>/<method>/``; a method whose test report exists is not run again and a fit killed before its
end resumes from its ``last.ckpt`` (its wall time then counts the resumed part only, marked "resumed"), so a killed
table resumes. The table lists overall (top-1 on the balanced test set) and many/medium/few-shot accuracy and the
wall time of each fit, and is written to ``--out`` with the exact command that produced it.

    python benchmarks/results_table.py --dataset cifar10_lt --methods ce focal ldam_drw \\
        --budget configs/budget/ldam_drw_10ep.yaml --root data --out docs/results/cifar10_lt.md
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's lt_lightning when run as a script

from lt_lightning.study.launch import lt_cli as study_cli  # noqa: E402
from lt_lightning.study.launch import read_report as study_report  # noqa: E402


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


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


def run_method(args: argparse.Namespace, method: str) -> dict:
    """Fit and test one method (or read its cached report); return its numbers."""
    config = REPO / "configs" / "experiments" / args.dataset / f"{method}.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"no config {config} (methods are file names under configs/experiments/{args.dataset})")
    out = Path(args.runs) / args.dataset / method
    result_file = out / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    configs = ["-c", str(config)]
    for budget in budget_configs(args.budget):
        configs += ["-c", budget]
    ckpt = out / "fit" / "checkpoints" / "last.ckpt"
    resume = [f"--ckpt_path={ckpt}"] if ckpt.is_file() else []  # a fit killed earlier resumes from its last epoch
    fit_wall = lt_cli("fit", configs, out, "fit", args.root, [*args.extra, *resume])
    lt_cli("test", configs, out, "test", args.root, [f"--ckpt_path={ckpt}"])
    result = {
        "method": method,
        **read_report(out / "test"),
        "fit_wall_s": round(fit_wall, 1),
        "config": str(config.relative_to(REPO)),
        "budget": budget_configs(args.budget),
    }
    notes = ["resumed"] if resume else []
    sweep = out / "test" / "posthoc_tau_sweep.json"
    if sweep.is_file():
        notes.append(f"tau = {json.loads(sweep.read_text())['chosen_tau']} (validation sweep)")
    if notes:
        result["note"] = "; ".join(notes)
    result_file.write_text(json.dumps(result, indent=1))
    return result


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
    parser.add_argument("--dataset", required=True, help="folder under configs/experiments, e.g. cifar10_lt")
    parser.add_argument("--methods", nargs="+", required=True, help="config names, e.g. ce focal ldam_drw")
    parser.add_argument("--budget", default=None, help="a budget config, e.g. configs/budget/ldam_drw_10ep.yaml")
    parser.add_argument("--root", default=None, help="data root passed as --data.init_args.root")
    parser.add_argument("--runs", default="runs", help="where runs and cached results go")
    parser.add_argument("--out", required=True, help="the Markdown file to write")
    parser.add_argument("--reported", default=None, help="JSON {method: [top-1, source]} of published numbers to quote")
    parser.add_argument(
        "--section",
        default=None,
        help="write the table as the section <!-- table:SECTION --> of --out (other sections kept) instead of the file",
    )
    parser.add_argument("--title", default=None, help="first line of --out when --section creates it")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further CLI arguments for fit")
    args = parser.parse_args(argv)
    rows = [run_method(args, m) for m in args.methods]
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
        "Reported numbers are the papers' (200 epochs, original CIFAR; REFERENCE.md), quoted beside ours, not ours.",
        "",
        "| method | config | top-1 | many | medium | few | fit wall time (s) | note | reported top-1 (source) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    reported = json.loads(Path(args.reported).read_text()) if args.reported else {}
    for r in rows:
        lines.append(
            f"| {r['method']} | `{r['config']}` | {_fmt(r['acc'])} | {_fmt(r['many'])} | {_fmt(r['medium'])} | "
            f"{_fmt(r['few'])} | {r['fit_wall_s']} | {r.get('note', '')} | "
            + (f"{reported[r['method']][0]} ({reported[r['method']][1]}) |" if r["method"] in reported else "– |")
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
