"""SADE's test-agnostic table: trained checkpoints tested on the test set resampled to forward-LT, uniform and
backward-LT distributions (Zhang et al., NeurIPS 2022, Table 3 protocol).

Each method is a run of ``benchmarks/results_table.py`` (same ``<runs>/<dataset>/<method>/`` folder; trained there if
missing). Its last checkpoint is tested once per distribution with the datamodules' ``test_distribution`` /
``test_imbalance_ratio`` options; a method whose config has test-time callbacks (SADE's ``TestTimeAggregation``)
runs them on each test set -- on the unlabeled test images only. Results are cached per distribution; the table
replaces the section ``<!-- table:test_agnostic:<dataset> -->`` of ``--out``::

    python benchmarks/test_agnostic_table.py --dataset cifar10_lt --methods ce sade \\
        --budget configs/budget/ldam_drw_10ep.yaml --root data --out docs/results/ensembles.md
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

#: (distribution, imbalance ratio) columns: forward 50 ... uniform ... backward 50, as in SADE's tables
GRID: tuple[tuple[str, float], ...] = (
    *(("forward", r) for r in (50.0, 25.0, 10.0, 5.0, 2.0)),
    ("uniform", 1.0),
    *(("backward", r) for r in (2.0, 5.0, 10.0, 25.0, 50.0)),
)


def _name(distribution: str, ratio: float) -> str:
    return "uniform" if distribution == "uniform" else f"{distribution}-{ratio:g}"


def run_distribution(args: argparse.Namespace, method: str, distribution: str, ratio: float) -> dict:
    out = Path(args.runs) / args.dataset / method
    version = f"agnostic_{_name(distribution, ratio)}"
    cache = out / f"{version}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    run_method(args, method)
    configs = experiment_args(args.dataset, method) + (["-c", str(args.budget)] if args.budget else [])
    extra = [
        f"--ckpt_path={out / 'fit' / 'checkpoints' / 'last.ckpt'}",
        f"--data.init_args.test_distribution={distribution}",
        f"--data.init_args.test_imbalance_ratio={ratio}",
    ]
    lt_cli("test", configs, out, version, args.root, extra)
    result = {"method": method, "distribution": distribution, "imbalance_ratio": ratio, **read_report(out / version)}
    cache.write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--methods", nargs="+", required=True, help="config names, e.g. ce sade")
    parser.add_argument("--budget", default=None)
    parser.add_argument("--root", default=None)
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    args.extra = []
    cells = {(m, d, r): run_distribution(args, m, d, r) for m in args.methods for d, r in GRID}
    command = "python " + " ".join(
        shlex.quote(a) for a in ["benchmarks/test_agnostic_table.py", *(argv or sys.argv[1:])]
    )
    heads = " | ".join(_name(d, r) for d, r in GRID)
    lines = [
        f"<!-- table:test_agnostic:{args.dataset} -->",
        f"### {args.dataset}: test-agnostic top-1 (%), budget `{args.budget or 'the configs as they are'}`",
        "",
        "```bash",
        command,
        "```",
        "",
        f"| method | {heads} |",
        "|---|" + "---|" * len(GRID),
    ]
    for m in args.methods:
        lines.append(f"| {m} | " + " | ".join(f"{100 * cells[m, d, r]['acc']:.1f}" for d, r in GRID) + " |")
    lines.append(f"<!-- /table:test_agnostic:{args.dataset} -->")
    write_section(Path(args.out), f"test_agnostic:{args.dataset}", lines, "# Ensembles: BBN, RIDE, SADE")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
