"""The worked-example notebooks run top to bottom (nbclient, the current interpreter's kernel)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


#: notebooks of the lean suite; the others run in the slow tier (tests/conftest.py)
LEAN = {"01_subclass_module.ipynb"}


@pytest.mark.parametrize(
    "path", [pytest.param(p, id=p.name, marks=() if p.name in LEAN else pytest.mark.slow) for p in NOTEBOOKS]
)
def test_notebook_executes(path: Path, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "test/acc" in outputs
