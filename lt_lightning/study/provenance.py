"""Where the study's numbers come from: the git commit of the working tree and the library versions."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def git_commit(
    cwd: str | os.PathLike[str] | None = None, exclude: tuple[str | os.PathLike[str], ...] = ()
) -> dict[str, Any]:
    """``{"commit": HEAD, "dirty": bool}`` of the git tree at ``cwd``; ``{"commit": None}`` outside git.

    Read-only: ``git rev-parse HEAD`` and ``git status --porcelain`` with ``GIT_OPTIONAL_LOCKS=0`` (no index write).
    ``dirty`` is whether tracked files differ from ``HEAD`` (the numbers may come from uncommitted code), not counting
    the paths in ``exclude`` (the report's own folder: a ``--publish`` that rewrites a committed report is not
    uncommitted code).
    """
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD", "--show-toplevel"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if head.returncode != 0:
            return {"commit": None}
        commit, top = (head.stdout.splitlines() + ["", ""])[:2]
        inside = [os.path.abspath(p) for p in exclude]
        inside = [p for p in inside if top and os.path.commonpath([p, os.path.abspath(top)]) == os.path.abspath(top)]
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *(f":(exclude){p}" for p in inside)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return {"commit": commit.strip(), "dirty": dirty}


def versions() -> dict[str, str | None]:
    """Python and the versions of the libraries that decide the numbers."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("lt-lightning", "lightning", "torch", "torchvision", "torchmetrics", "timm"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    """The machine the numbers come from (they shift with the CPU and the GPU): CPU model, logical cores, GPU name."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu}


__all__ = ["cpu_model", "git_commit", "machine", "versions"]
