"""The shape of the survey's Table 7: cost-sensitive losses (rows) under joint training and three decoupled second
stages (columns: joint, NCM, cRT, LWS), on one dataset at one budget.

For each loss ``-c configs/data/<dataset>.yaml -c <loss's method config>`` (plus the optional ``--budget``):

* **joint**: ``fit`` then ``test`` on the last checkpoint (the run is shared with ``benchmarks/results_table.py``:
  same ``<runs>/<dataset>/<loss>/`` folder and cache);
* **NCM**: ``test`` of that checkpoint with the ``NearestClassMean`` callback (no training);
* **cRT**, **LWS**: a second ``fit`` of ``--stage2-epochs`` epochs from that checkpoint
  (``ClassifierRetraining`` with ``init_from``: frozen backbone, class-balanced sampling, cross-entropy, cosine LR),
  then ``test`` of its last checkpoint.

Finished parts are cached as JSON under ``<runs>``, so a killed table resumes. The table (top-1, and
many/medium/few) replaces the section ``<!-- table:<dataset> -->`` of ``--out`` (the file is created if needed), with
the exact command beside it::

    python benchmarks/decoupled_table.py --dataset digits_lt --out docs/results/decoupled.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_table import lt_cli, read_report, run_method, write_section  # noqa: E402

from lt_lightning.experiments import experiment_args  # noqa: E402

STAGES = ("joint", "ncm", "crt", "lws")
TITLES = {"joint": "joint", "ncm": "NCM", "crt": "cRT", "lws": "LWS"}
RETRAINING = "lt_lightning.callbacks.classifier_retraining.ClassifierRetraining"
NCM = "lt_lightning.callbacks.nearest_class_mean.NearestClassMean"


def _configs(args: argparse.Namespace, loss: str) -> list[str]:
    return experiment_args(args.dataset, loss) + (["-c", str(args.budget)] if args.budget else [])


def run_stage(args: argparse.Namespace, loss: str, stage: str) -> dict:
    """Numbers of one (loss, stage) cell, computed once and cached in ``<runs>/<dataset>/<loss>/<stage>.json``."""
    out = Path(args.runs) / args.dataset / loss
    if stage == "joint":
        return run_method(args, loss)
    cache = out / f"{stage}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    stage1 = out / "fit" / "checkpoints" / "last.ckpt"
    if not stage1.is_file():  # a cached joint result whose checkpoint is gone: train stage 1 again
        (out / "result.json").unlink(missing_ok=True)
    run_method(args, loss)
    configs = _configs(args, loss)
    result: dict = {"loss": loss, "stage": stage}
    if stage == "ncm":
        lt_cli("test", configs, out, "ncm", args.root, [f"--ckpt_path={stage1}", f"--trainer.callbacks+={NCM}"])
        result |= read_report(out / "ncm")
    else:
        retrain = [
            f"--trainer.max_epochs={args.stage2_epochs}",
            f"--trainer.callbacks+={RETRAINING}",
            f"--trainer.callbacks.method={stage}",
            f"--trainer.callbacks.init_from={stage1}",
        ]
        result["fit_wall_s"] = round(lt_cli("fit", configs, out, f"{stage}_fit", args.root, retrain), 1)
        ckpt = out / f"{stage}_fit" / "checkpoints" / "last.ckpt"
        lt_cli("test", configs, out, f"{stage}_test", args.root, [f"--ckpt_path={ckpt}"])
        result |= read_report(out / f"{stage}_test")
    cache.write_text(json.dumps(result, indent=1))
    return result


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def table(args: argparse.Namespace, command: str, cells: dict[tuple[str, str], dict]) -> list[str]:
    heads = " | ".join(TITLES[s] for s in STAGES)
    lines = [
        f"<!-- table:{args.dataset} -->",
        f"### {args.dataset}: top-1 (%), budget `{args.budget or 'the configs as they are'}`, "
        f"second stage {args.stage2_epochs} epochs",
        "",
        "```bash",
        command,
        "```",
        "",
        f"| loss | {heads} |",
        "|---|" + "---|" * len(STAGES),
    ]
    for loss in args.losses:
        lines.append(f"| {loss} | " + " | ".join(_pct(cells[loss, s]["acc"]) for s in STAGES) + " |")
    lines += ["", "Many / medium / few-shot (%) of each cell:", "", f"| loss | {heads} |", "|---|" + "---|" * 4]
    for loss in args.losses:
        shots = [cells[loss, s] for s in STAGES]
        lines.append(
            f"| {loss} | "
            + " | ".join(f"{_pct(c['many'])} / {_pct(c['medium'])} / {_pct(c['few'])}" for c in shots)
            + " |"
        )
    lines.append(f"<!-- /table:{args.dataset} -->")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a dataset with a recipe in configs/data, e.g. digits_lt")
    parser.add_argument(
        "--losses", nargs="+", default=["ce", "focal", "equalization", "balanced_softmax"], help="config names"
    )
    parser.add_argument("--budget", default=None, help="a budget config for stage 1, e.g. configs/budget/...")
    parser.add_argument("--stage2-epochs", type=int, default=10, help="epochs of cRT / LWS (10 in Kang et al.)")
    parser.add_argument("--root", default=None, help="data root passed as --data.init_args.root")
    parser.add_argument("--runs", default="runs", help="where runs and cached results go")
    parser.add_argument("--out", required=True, help="the Markdown file whose section for this dataset is written")
    args = parser.parse_args(argv)
    args.extra = []
    if args.stage2_epochs < 1:
        parser.error(f"--stage2-epochs must be >= 1, got {args.stage2_epochs}")
    cells = {(loss, stage): run_stage(args, loss, stage) for loss in args.losses for stage in STAGES}
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/decoupled_table.py", *(argv or sys.argv[1:])])
    lines = table(args, command, cells)
    write_section(Path(args.out), args.dataset, lines, "# Decoupled training: joint / NCM / cRT / LWS")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
