"""The resolved-configuration invariant (issue 19): every shipped run resolves to what it resolved to before a refactor.

Each shipped experiment (``lt-lightning fit -c configs/data/D.yaml -c <method config>``, every pair of
:func:`lt_lightning.experiments.shipped`) and each stand-alone config (``quickstart.yaml``, ``pretext/*``) is resolved
by the real parser (``--print_config``) and reduced to the run it computes (:func:`lt_lightning.run_identity.
run_identity`: no loggers or learning-rate monitors, checkpoint callbacks last); the baseline
``tests/resolved_configs.json`` holds, per experiment (``D/M``) or config, a SHA-256 of each top-level section of
that identity (``model``, ``data``, ``trainer``, the rest), and the versions of lightning and jsonargparse it was made
with. ``tests/test_configs.py::test_config_resolves_as_its_baseline`` compares them: ``model`` and ``data`` always
(our classes: a changed default or a renamed argument changes what runs compute), ``trainer`` and the rest only
under the baseline's library versions (a new Lightning adds Trainer arguments). A change of a recipe on purpose
rewrites the baseline, in the same commit, with the reason in its message::

    python tests/resolved_configs.py --write          # rewrite the baseline from this checkout
    python tests/resolved_configs.py --show D/M       # the resolved config, to diff against another checkout

Intentional changes when the experiments became compositions (configs/experiments/D/M.yaml -> -c data -c method):
``distill``'s ``teacher_config`` names the teacher's composed files instead of the old experiment file (the same
teacher run); Digits-LT runs gained the default learning-rate monitor (logging only, outside the identity).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
BASELINE = Path(__file__).resolve().parent / "resolved_configs.json"
SECTIONS = ("model", "data", "trainer", "rest")


def shipped_runs() -> dict[str, list[str]]:
    """Every shipped run as ``name -> CLI arguments``: ``D/M`` experiments, then the stand-alone configs."""
    from lt_lightning.experiments import experiment_args, shipped

    runs = {f"{d}/{m}": experiment_args(d, m) for d, m in shipped()}
    for config in [CONFIGS / "quickstart.yaml", *sorted((CONFIGS / "pretext").glob("*.yaml"))]:
        runs[config.relative_to(CONFIGS).as_posix()] = ["-c", str(config)]
    return runs


def resolve(args: list[str]) -> dict:
    """``lt-lightning fit ARGS --print_config``, in process, as a mapping."""
    from lt_lightning.run_identity import resolve as resolve_args

    return resolve_args(args)


def section_hashes(resolved: dict) -> dict[str, str]:
    """SHA-256 (16 hex digits) of each section of the run identity of a resolved config."""
    from lt_lightning.run_identity import digest, run_identity

    identity = run_identity(resolved)
    parts = {key: identity.pop(key, None) for key in ("model", "data", "trainer")}
    parts["rest"] = identity
    return {key: digest(parts[key])[:16] for key in SECTIONS}


def versions() -> dict[str, str]:
    import jsonargparse
    import lightning

    return {"lightning": lightning.__version__, "jsonargparse": jsonargparse.__version__}


def write_baseline() -> None:
    configs = {name: section_hashes(resolve(args)) for name, args in shipped_runs().items()}
    BASELINE.write_text(json.dumps({"versions": versions(), "configs": configs}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {BASELINE} ({len(configs)} runs)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="rewrite the baseline from this checkout")
    group.add_argument("--show", metavar="CONFIG", help="print the resolved config of a run (D/M, or configs/ path)")
    args = parser.parse_args(argv)
    if args.write:
        write_baseline()
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump(resolve(shipped_runs()[args.show]), sort_keys=False))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
