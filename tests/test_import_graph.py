"""The import graph of each package is a tree (a DAG): no module imports, directly or through
others, a module that imports it back.

Every import counts as an edge, wherever it stands: at module level, under `TYPE_CHECKING`,
or inside a function (an import moved into a function to dodge a circle is still a circle).
Only the imports a module writes count; Python's implicit import of a parent package's
`__init__` does not (so a package root may re-export its parts).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("l2b_mask", "pge", "campaign")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: str) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def _base(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an `from ... import` names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `module` imports anywhere in its text."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, path, node)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # a submodule by name
    return {name for name in found if name in known and name != module}


def import_graph(package: str) -> dict[str, set[str]]:
    modules = _modules(package)
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None: a depth-first search for a back edge."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


@pytest.mark.parametrize("package", PACKAGES)
def test_import_graph_has_no_cycle(package):
    graph = import_graph(package)
    assert len(graph) > 5, f"{package}: too few modules found, the walk is broken"
    cycle = find_cycle(graph)
    assert cycle is None, f"{package} import cycle: {' -> '.join(cycle or [])}"


def test_the_cycle_finder_finds_one():
    """The search itself: a circle three modules long is found and printed whole, a diamond is
    not a circle."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None


def test_function_level_and_type_checking_imports_are_edges(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import p.a\n"
                      "def f():\n    from p import b\n    from .c import x\n")
    assert imports_of("p.m", source, {"p.a", "p.b", "p.c", "p.m"}) == {"p.a", "p.b", "p.c"}
