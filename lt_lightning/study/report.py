"""The study's report: the survey's Tables 5, 6 and 7 as Markdown, a JSON of every number, and the figures.

Written into ``report_dir`` from the cached runs (whatever is finished; missing cells are "–" and the runs not
finished or failed are listed):

* ``report.md``: the results table (top-1, gain over the baseline, many / medium / few, seeds, fit wall time, and
  the papers' numbers and gains beside ours when the study names a ``reported`` JSON), Table 5 (Acc, UA, RA per
  method; Zhang et al., TPAMI 2023; studies with the balanced reference set), Table 6 (many / medium / few-shot
  accuracy of the long-tailed runs), Table 7 (joint / NCM / cRT / LWS for the methods with decoupled ``stages``),
  the test-agnostic table (``test_distributions``), the figures, the failed and pending runs, and how the numbers
  were produced;
* ``study.json``: every number per method and seed, each run's arguments, config hashes and commit, the study
  config, the current commit and library versions;
* ``fig4_accuracy_vs_relative_accuracy.png`` and ``per_class_accuracy.png`` (:mod:`lt_lightning.study.figures`).

Numbers are top-1 accuracy (%) on the balanced test set at the last epoch, mean ± sample standard deviation over
seeds; UA and RA are computed per seed (:mod:`lt_lightning.study.metrics`) and then averaged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lt_lightning.study.config import STAGES, StudyConfig, file_sha256
from lt_lightning.study.figures import plot_per_class, plot_relative_accuracy
from lt_lightning.study.grid import Unit, distribution_stage
from lt_lightning.study.metrics import format_mean_std, mean_std, relative_accuracy, upper_reference_accuracy
from lt_lightning.study.provenance import git_commit, machine, versions

FAMILY_TITLES = {
    "baseline": "Baseline",
    "re-balancing": "Class re-balancing",
    "augmentation": "Information augmentation",
    "module": "Module improvement",
}
STAGE_TITLES = {"joint": "joint", "ncm": "NCM", "crt": "cRT", "lws": "LWS"}
FIG4 = "fig4_accuracy_vs_relative_accuracy.png"
PER_CLASS = "per_class_accuracy.png"


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _acc(result: dict[str, Any] | None, key: str = "acc") -> float | None:
    return None if result is None else result.get(key)


def collect(study: StudyConfig, units: Sequence[Unit]) -> dict[str, Any]:
    """Every number of the study from the cached runs of ``units`` (the whole grid, not one shard).

    Returns:
        ``{"methods": {name: {...per seed and summary...}}, "runs": [...], "failed": [...], "pending": [...]}``.
    """
    by_key = {(u.method.name, u.train_set, u.seed): u for u in units}

    def joint(name: str, train_set: str, seed: int) -> dict[str, Any] | None:
        unit = by_key.get((name, train_set, seed))
        return None if unit is None else _load(unit.directory / "result.json")

    def stage(name: str, train_set: str, seed: int, which: str) -> dict[str, Any] | None:
        unit = by_key.get((name, train_set, seed))
        return None if unit is None else _load(unit.stage_file(which))

    def result_of(method_name: str, train_set: str, seed: int) -> dict[str, Any] | None:
        method = study.method(method_name)
        if method.derived:
            return stage(method.source, train_set, seed, method.stage_name)  # type: ignore[arg-type]
        return joint(method_name, train_set, seed)

    methods: dict[str, Any] = {}
    for method in study.methods:
        seeds: dict[str, Any] = {}
        for seed in study.seeds_of(method):
            lt, bal = result_of(method.name, "lt", seed), result_of(method.name, "balanced", seed)
            a_v = _acc(result_of(study.baseline, "balanced", seed))
            a_t, a_b = _acc(lt), _acc(bal)
            ua = ra = None
            if a_v is not None and a_b is not None:
                ua = upper_reference_accuracy(a_v, a_b)
                ra = relative_accuracy(a_t, a_v, a_b) if a_t is not None and ua > 0 else None
            entry = {"A_t": a_t, "A_v": a_v, "A_b": a_b, "UA": ua, "RA": ra}
            entry |= {g: _acc(lt, g) for g in ("many", "medium", "few")}
            entry["per_class"] = None if lt is None else lt.get("per_class")
            entry["fit_wall_s"] = None if lt is None else lt.get("fit_wall_s")
            entry["note"] = _note(lt)
            if study.test_distributions and not method.derived:
                entry["distributions"] = {
                    distribution_stage(d, r): _acc(stage(method.name, "lt", seed, distribution_stage(d, r)))
                    for d, r in study.test_distributions
                }
            if method.stages:
                entry["stages"] = {"joint": a_t} | {s: _acc(stage(method.name, "lt", seed, s)) for s in method.stages}
            seeds[str(seed)] = entry
        summary = {}
        for key in ("A_t", "A_v", "A_b", "UA", "RA", "many", "medium", "few", "fit_wall_s"):
            mean, std, n = mean_std([seeds[str(s)][key] for s in study.seeds_of(method)])
            summary[key] = {"mean": mean, "std": std, "n": n}
        methods[method.name] = {
            "family": method.family,
            "config": method.config,
            "config_sha256": None if method.config is None else file_sha256(method.config),
            "from": method.source,
            "stage": method.stage,
            "stages": list(method.stages),
            "seeds": seeds,
            "summary": summary,
        }
    runs, failed, pending = [], [], []
    for unit in units:
        entry = {"method": unit.method.name, "train_set": unit.train_set, "seed": unit.seed, "dir": str(unit.directory)}
        result = _load(unit.directory / "result.json")
        runs.append(entry | {"result": result, "stages": {s: _load(unit.stage_file(s)) for s in unit.stages}})
        if unit.done():
            continue
        failure = _load(unit.directory / "failed.json")
        (failed if failure else pending).append(entry | ({"errors": failure["errors"]} if failure else {}))
    return {"methods": methods, "runs": runs, "failed": failed, "pending": pending}


def _note(result: dict[str, Any] | None) -> str | None:
    if result is None:
        return None
    notes = []
    if result.get("fit_adopted_from"):
        notes.append("fit adopted")
    if result.get("fit_resumed_from"):
        notes.append("fit resumed (wall time of the resumed part)")
    if result.get("kind"):
        notes.append(result["kind"] + " on the source's fit")
    if result.get("chosen_tau") is not None:
        notes.append(f"tau = {result['chosen_tau']} (validation sweep)")
    return "; ".join(notes) or None


def _cell(collected: dict[str, Any], method: str, key: str) -> str:
    values = [collected["methods"][method]["seeds"][s][key] for s in collected["methods"][method]["seeds"]]
    return format_mean_std(values)


def _method_table(study: StudyConfig, collected: dict[str, Any], columns: dict[str, str]) -> list[str]:
    """One row per method: type, name, then ``mean ± std`` of each key of ``columns`` (key -> column title)."""
    lines = ["| type | method | " + " | ".join(columns.values()) + " |", "|---|---|" + "---|" * len(columns)]
    for m in study.methods:
        cells = [_cell(collected, m.name, k) for k in columns]
        lines.append(f"| {FAMILY_TITLES[m.family]} | {m.name} | " + " | ".join(cells) + " |")
    return lines


def _gain(value: float | None, base: float | None, scale: float) -> str:
    return "–" if value is None or base is None else f"{scale * (value - base):+.2f}"


def results_table(study: StudyConfig, collected: dict[str, Any], reported: dict[str, Any]) -> list[str]:
    """One row per method: its config, seeds, top-1 and gain over the baseline, many / medium / few, mean fit wall
    time, notes; with ``reported`` (``{method: [top-1 %, source]}``) the paper's top-1 and its gain over the paper's
    baseline beside ours (a derived method quotes the entry of its own name)."""
    base = study.baseline
    columns = f"| method | config | seeds | top-1 | gain over {base} | many | medium | few | fit wall time (s) | note |"
    rule = "|---|---|---|---|---|---|---|---|---|---|"
    if reported:
        columns += f" reported top-1 (source) | reported gain over {base} |"
        rule += "---|---|"
    ours_base = collected["methods"][base]["summary"]["A_t"]["mean"]
    paper_base = (reported.get(base) or [None])[0]
    lines = [columns, rule]
    for m in study.methods:
        entry = collected["methods"][m.name]
        seeds = entry["seeds"]
        acc = entry["summary"]["A_t"]["mean"]
        config = f"`{m.config}`" + (f" on {m.source}" if m.source else "")
        if m.stage is not None:
            config = f"{m.stage} stage on {m.source}"
        wall = entry["summary"]["fit_wall_s"]["mean"]
        notes = "; ".join(dict.fromkeys(s["note"] for s in seeds.values() if s.get("note")))
        cells = [
            m.name,
            config,
            ", ".join(seeds),
            _cell(collected, m.name, "A_t"),
            _gain(acc, ours_base, 100),
            *(_cell(collected, m.name, g) for g in ("many", "medium", "few")),
            "–" if wall is None else f"{wall:.0f}",
            notes,
        ]
        if reported:
            paper = reported.get(m.name)
            cells += [
                "–" if not paper else f"{paper[0]} ({paper[1]})",
                _gain(None if not paper else paper[0], paper_base, 1),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def test_agnostic_table(study: StudyConfig, collected: dict[str, Any]) -> list[str]:
    """Top-1 of each config method's long-tailed runs on each test distribution (empty list when none is asked)."""
    if not study.test_distributions:
        return []
    names = ["uniform" if d == "uniform" else f"{d}-{r:g}" for d, r in study.test_distributions]
    lines = ["| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for m in study.methods:
        if m.derived:
            continue
        seeds = collected["methods"][m.name]["seeds"].values()
        keys = [distribution_stage(d, r) for d, r in study.test_distributions]
        lines.append(
            f"| {m.name} | "
            + " | ".join(format_mean_std([s["distributions"].get(k) for s in seeds]) for k in keys)
            + " |"
        )
    return lines


def table5(study: StudyConfig, collected: dict[str, Any]) -> list[str]:
    return _method_table(study, collected, {"A_t": "Acc", "UA": "UA", "RA": "RA", "A_b": "A_b"})


def table6(study: StudyConfig, collected: dict[str, Any]) -> list[str]:
    return _method_table(study, collected, {"many": "many", "medium": "medium", "few": "few", "A_t": "all"})


def table7(study: StudyConfig, collected: dict[str, Any]) -> list[str]:
    """Joint / NCM / cRT / LWS top-1 of the methods with decoupled ``stages`` (empty list when none has any)."""
    rows = [m for m in study.methods if m.stages]
    if not rows:
        return []
    columns = ("joint", *STAGES)
    lines = ["| loss | " + " | ".join(STAGE_TITLES[c] for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for m in rows:
        seeds = collected["methods"][m.name]["seeds"].values()
        cells = [format_mean_std([s["stages"].get(c) for s in seeds]) for c in columns]
        lines.append(f"| {m.name} | " + " | ".join(cells) + " |")
    return lines


def _figures(study: StudyConfig, collected: dict[str, Any], out: Path) -> dict[str, str | None]:
    written: dict[str, str | None] = {"fig4": None, "per_class": None}
    points = []
    for m in study.methods:
        summary = collected["methods"][m.name]["summary"]
        if summary["A_t"]["mean"] is not None and summary["RA"]["mean"] is not None:
            points.append(
                {"name": m.name, "family": m.family, "acc": summary["A_t"]["mean"], "ra": summary["RA"]["mean"]}
            )
    if points:
        plot_relative_accuracy(points, out / FIG4)
        written["fig4"] = FIG4
    counts, names, curves = None, None, {}
    for run in collected["runs"]:
        result = run["result"]
        if run["train_set"] == "lt" and result and result.get("train_counts") and counts is None:
            counts, names = result["train_counts"], result.get("class_names")
    if counts is not None:
        for m in study.methods:
            per_seed = [s["per_class"] for s in collected["methods"][m.name]["seeds"].values() if s["per_class"]]
            if per_seed and all(len(p) == len(counts) for p in per_seed):
                curves[m.name] = (m.family, [mean_std([p[c] for p in per_seed])[0] for c in range(len(counts))])
    if curves:
        plot_per_class(curves, counts, names, out / PER_CLASS)  # type: ignore[arg-type]
        written["per_class"] = PER_CLASS
    return written


def _run_list(entries: list[dict[str, Any]], with_errors: bool) -> list[str]:
    lines = []
    for e in entries:
        line = f"- {e['method']} [{e['train_set']}, seed {e['seed']}] (`{e['dir']}`)"
        if with_errors:
            line += ": " + "; ".join(f"{x['step']}: {x['error']}" for x in e.get("errors", []))
        lines.append(line)
    return lines


def write_report(
    study: StudyConfig, units: Sequence[Unit], command: str, extra: Sequence[str] = (), out: Path | None = None
) -> dict[str, Any]:
    """Write ``report.md``, ``study.json`` and the figures into ``out`` (default ``study.report_dir``).

    Returns:
        The JSON written to ``study.json``.
    """
    out = Path(study.report_dir) if out is None else out
    out.mkdir(parents=True, exist_ok=True)
    collected = collect(study, units)
    figures = _figures(study, collected, out)
    commit = git_commit(exclude=(out,))
    baseline = collected["methods"][study.baseline]["seeds"]
    a_v = format_mean_std([s["A_b"] for s in baseline.values()])
    reported = json.loads(Path(study.reported).read_text()) if study.reported else {}
    dirty = " (with uncommitted changes)" if commit.get("dirty") else ""
    budget = ", ".join(f"`{b}`" for b in study.budget) or "the method configs as they are"
    all_extra = [*study.extra, *extra]
    host, libs = machine(), versions()
    on = f"torch {libs.get('torch')}, lightning {libs.get('lightning')}, {host['cpu']} ({host['cores']} cores)"
    on += f", GPU {host['gpu']}" if host["gpu"] else ""
    lines = [
        f"# Study `{study.name}`: accuracy, upper reference accuracy and relative accuracy",
        "",
        "Generated by:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Commit `{commit.get('commit') or 'unknown'}`{dirty}, {time.strftime('%Y-%m-%d %H:%M %Z')}. "
        f"Seeds {list(study.seeds)} (per method: the seeds column); budget {budget}"
        + (f"; extra arguments `{' '.join(all_extra)}`" if all_extra else "")
        + f"; decoupled second stages (cRT, LWS): {study.stage2_epochs} epoch(s). Report written on {on} (each "
        "run's own machine is not recorded: a study's runs may come from several).",
        "",
        "Top-1 accuracy (%) on the balanced test set at the last epoch, mean ± sample standard deviation (n - 1) "
        "over the seeds listed (one seed: no ±).",
        "",
        "## Results",
        "",
        *(
            [
                f"Reported numbers are the papers' (`{study.reported}`), quoted beside ours, not ours: absolute "
                "numbers differ between the papers' data and code and ours, so what should match is each method's gain "
                "over "
                f"{study.baseline} (ours: on our data; reported: the paper's number minus the reported "
                f"{study.baseline}).",
                "",
            ]
            if reported
            else []
        ),
        *results_table(study, collected, reported),
    ]
    if study.balanced:
        lines += [
            "",
            "## Table 5: accuracy (Acc), upper reference accuracy (UA), relative accuracy (RA)",
            "",
            "Following the survey (Zhang et al., TPAMI 2023, Sec. 4): A_t is the method trained on the long-tailed "
            "set (Acc), A_b the method trained on the balanced reference set (a class-balanced training set of the "
            "same total size from the same source), A_v plain cross-entropy trained on the balanced reference set "
            f"(`{study.baseline}`: {a_v}), UA = max(A_v, A_b), RA = A_t / UA, computed per seed.",
            "",
            *table5(study, collected),
        ]
    lines += [
        "",
        "## Table 6: many / medium / few-shot accuracy of the long-tailed runs",
        "",
        "Classes grouped by training images of the long-tailed set: many > 100, medium 20-100, few < 20 (a group "
        "without classes is –).",
        "",
        *table6(study, collected),
    ]
    t7 = table7(study, collected)
    if t7:
        lines += [
            "",
            "## Table 7: decoupled training (joint / NCM / cRT / LWS) of each loss",
            "",
            f"Second stages on the joint run's last checkpoint: NCM at test time; cRT and LWS {study.stage2_epochs} "
            "epoch(s) with the backbone frozen and class-balanced sampling.",
            "",
            *t7,
        ]
    agnostic = test_agnostic_table(study, collected)
    if agnostic:
        lines += [
            "",
            "## Test-agnostic evaluation",
            "",
            "Top-1 of the long-tailed runs on the test set resampled to forward-LT, uniform and backward-LT "
            "distributions (the imbalance ratio after the name; Zhang et al., NeurIPS 2022, Table 3 protocol), "
            "the configs' test-time callbacks included (on the unlabeled test images only).",
            "",
            *agnostic,
        ]
    lines += ["", "## Figures", ""]
    if figures["fig4"]:
        lines += [f"![accuracy vs relative accuracy]({FIG4})", ""]
    if figures["per_class"]:
        lines += [f"![per-class accuracy]({PER_CLASS})", ""]
    if not any(figures.values()):
        lines += ["(no finished run to plot yet)", ""]
    if collected["failed"]:
        lines += ["## Failed runs", "", *_run_list(collected["failed"], True), ""]
    if collected["pending"]:
        lines += ["## Runs not finished yet", "", *_run_list(collected["pending"], False), ""]
    data = {
        "study": study.name,
        "study_config": {"path": study.path, "sha256": file_sha256(study.path) if study.path else None},
        "config": dict(study.raw),
        "command": command,
        "extra": list(extra),
        **commit,
        "versions": libs,
        "machine": host,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "baseline": study.baseline,
        "figures": figures,
        **collected,
    }
    _write_text(out / "report.md", "\n".join(lines).rstrip("\n") + "\n")
    _write_text(out / "study.json", json.dumps(data, indent=1, allow_nan=False))
    return data


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # shards finishing together never leave a half-written report


__all__ = ["collect", "results_table", "table5", "table6", "table7", "test_agnostic_table", "write_report"]
