"""The study report's provenance line: the commit and whether tracked files differ from it, the report's own folder
excepted (a ``--publish`` that rewrites a committed report is not uncommitted code)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lt_lightning.study.provenance import git_commit


def _git(*args: str, cwd: Path) -> str:
    command = ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args]
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_dirty_ignores_the_excluded_report_folder_only(tmp_path: Path, monkeypatch) -> None:
    _git("init", "-q", ".", cwd=tmp_path)
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "report.md").write_text("old\n")
    _git("add", ".", cwd=tmp_path)
    _git("commit", "-qm", "x", cwd=tmp_path)
    head = _git("rev-parse", "HEAD", cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    assert git_commit() == {"commit": head, "dirty": False}

    (tmp_path / "docs" / "report.md").write_text("new\n")  # the report rewritten in place
    assert git_commit()["dirty"] is True
    assert git_commit(exclude=("docs",)) == {"commit": head, "dirty": False}
    assert git_commit(exclude=(tmp_path / "docs",))["dirty"] is False
    assert git_commit(exclude=("/outside/the/repository",))["dirty"] is True

    (tmp_path / "code.py").write_text("a = 2\n")  # code changed: dirty whatever is excluded
    assert git_commit(exclude=("docs",))["dirty"] is True


def test_outside_git_there_is_no_commit(tmp_path: Path) -> None:
    assert git_commit(cwd=tmp_path) == {"commit": None}
