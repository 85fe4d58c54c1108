"""No function of the project's packages is longer than 60 lines (the developers' guide): a
long function is split into named steps, or its data (metadata templates, attribute tables)
is taken out of it as a value."""

from __future__ import annotations

import ast
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PACKAGES = ("l2b_mask", "pge", "campaign")  # every package of the project whose functions are checked
MAX_LINES = 60
# Functions allowed to be longer, each with why. Only test and demo data generators: they are
# long lists of physical constants and surface recipes, read top to bottom, never by the PGE.
ALLOWED = {
    "l2b_mask/synthetic/": "test and demo data generators (lists of recipes, not PGE logic)",
}


def _long_functions() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((PROJECT / package).rglob("*.py")):
            rel = path.relative_to(PROJECT).as_posix()
            if any(rel.startswith(prefix) for prefix in ALLOWED):
                continue
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_LINES:
                        found.append(f"{rel}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_longer_than_60_lines():
    assert _long_functions() == []


def test_the_allow_list_names_existing_folders():
    for prefix in ALLOWED:
        assert (PROJECT / prefix).is_dir(), prefix
