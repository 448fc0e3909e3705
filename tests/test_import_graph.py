"""The import graph of the package, read with ``ast``: the data layer imports one way, with no function-level import.

A function-level import of a sibling module is how an import cycle is hidden (``transforms`` <-> ``views``, ``base``
<-> ``folder`` / ``predict_source`` did that); the tests below refuse both the hidden form and a module-level cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "lt_lightning"

#: the modules whose imports must form a DAG with no function-level import of a package module
LAYERED = ("lt_lightning.data", "lt_lightning.checkpointing", "lt_lightning.checkpoint_io", "lt_lightning._checks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The package modules an import statement loads (``from a import b`` loads ``a.b`` when that is a module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        names = [origin] + [f"{origin}.{alias.name}" for alias in node.names]
    found = set()
    for name in names:
        while name and name not in known:  # ``import a.b.c`` loads ``a.b.c``; a class name is not a module
            name = name.rpartition(".")[0]
        if name.startswith("lt_lightning"):
            found.add(name)
    return found


def _imports(module: str, path: Path, known: set[str]) -> tuple[set[str], list[tuple[int, str]]]:
    """``(module-level imports, [(line, target)] of imports inside functions)`` of one module's package imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    top: set[str] = set()
    nested: list[tuple[int, str]] = []

    def visit(nodes: list[ast.stmt], in_function: bool) -> None:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets = _targets(node, module, is_package, known) - {module}
                if in_function:
                    nested.extend((node.lineno, t) for t in sorted(targets))
                else:
                    top.update(targets)
            elif isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse, in_function)  # the TYPE_CHECKING branch never runs
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(node.body, True)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    children = getattr(node, field, None)
                    if isinstance(children, list):
                        visit([c for c in children if isinstance(c, ast.AST)], in_function)  # type: ignore[misc]

    visit(tree.body, False)
    return top, nested


def _graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[int, str]]]]:
    modules = _modules()
    known = set(modules)
    graph, nested = {}, {}
    for name, path in modules.items():
        graph[name], nested[name] = _imports(name, path, known)
    return graph, nested


def _layered(name: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in LAYERED)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def test_the_graph_reader_sees_cycles_and_function_level_imports(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nimport lt_lightning.x\nif TYPE_CHECKING:\n    import lt_lightning.y\n"
        "def f():\n    from lt_lightning.z import w\n"
    )
    top, nested = _imports(
        "lt_lightning.m", source, {"lt_lightning", "lt_lightning.x", "lt_lightning.y", "lt_lightning.z"}
    )
    assert top == {"lt_lightning.x"}
    assert nested == [(6, "lt_lightning.z")]


def test_data_and_checkpoint_modules_import_one_way() -> None:
    graph, _ = _graph()
    cycles = [c for c in _cycles(graph) if any(_layered(m) for m in c)]
    assert cycles == [], f"import cycles through the data / checkpoint layer: {cycles}"


@pytest.mark.parametrize("module", sorted(m for m in _modules() if _layered(m)))
def test_no_function_level_import_of_a_package_module(module: str) -> None:
    _, nested = _graph()
    assert nested[module] == [], (
        f"{module} imports package modules inside functions (a hidden cycle?): {nested[module]}"
    )
