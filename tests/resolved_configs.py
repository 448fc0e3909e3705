"""The resolved-configuration invariant (issue 19): every config resolves to what it resolved to before a refactor.

Each stand-alone config under ``configs/`` (``quickstart.yaml``, ``experiments/**``, ``pretext/*``) is resolved by
the real parser (``lt-lightning fit -c CONFIG --print_config``); the baseline ``tests/resolved_configs.json`` holds,
per config, a SHA-256 of each top-level section of that resolution (``model``, ``data``, ``trainer``, the rest), and
the versions of lightning and jsonargparse it was made with. ``tests/test_configs.py::test_config_resolves_as_its
_baseline`` compares them: ``model`` and ``data`` always (our classes: a changed default or a renamed argument
changes what runs compute), ``trainer`` and the rest only under the baseline's library versions (a new Lightning
adds Trainer arguments). A change of a recipe on purpose rewrites the baseline, in the same commit, with the reason
in its message::

    python tests/resolved_configs.py --write          # rewrite the baseline from this checkout
    python tests/resolved_configs.py --show CONFIG    # the resolved config, to diff against another checkout
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import sys
import warnings
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
BASELINE = Path(__file__).resolve().parent / "resolved_configs.json"
SECTIONS = ("model", "data", "trainer", "rest")


def standalone_configs() -> list[Path]:
    """The configs that run on their own (fragments are checked through the experiments made of them)."""
    return sorted(
        [CONFIGS / "quickstart.yaml", *(CONFIGS / "experiments").rglob("*.yaml"), *(CONFIGS / "pretext").glob("*.yaml")]
    )


def resolve(config: Path) -> str:
    """``lt-lightning fit -c CONFIG --print_config``, in process."""
    from lt_lightning.cli import run

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "LightningCLI's args parameter ...": the script's own argv
        run(["fit", "-c", str(config), "--print_config"])
    return out.getvalue()


def section_hashes(printed: str) -> dict[str, str]:
    """SHA-256 of each section of a printed config (canonical JSON, keys sorted)."""
    resolved = yaml.safe_load(printed) or {}
    parts = {key: resolved.pop(key, None) for key in ("model", "data", "trainer")}
    parts["rest"] = resolved

    def digest(value: object) -> str:
        return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]

    return {key: digest(parts[key]) for key in SECTIONS}


def versions() -> dict[str, str]:
    import jsonargparse
    import lightning

    return {"lightning": lightning.__version__, "jsonargparse": jsonargparse.__version__}


def config_key(config: Path) -> str:
    return config.relative_to(CONFIGS).as_posix()


def write_baseline() -> None:
    configs = {config_key(c): section_hashes(resolve(c)) for c in standalone_configs()}
    BASELINE.write_text(json.dumps({"versions": versions(), "configs": configs}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {BASELINE} ({len(configs)} configs)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="rewrite the baseline from this checkout")
    group.add_argument("--show", metavar="CONFIG", help="print the resolved config (a path under configs/)")
    args = parser.parse_args(argv)
    if args.write:
        write_baseline()
    else:
        sys.stdout.write(resolve(CONFIGS / args.show))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
