"""The science library stands alone: no module of `l2b_mask` imports the PGE wrapper or the
campaign (the wrapper holds no science, the library knows nothing of the SDS)."""

from __future__ import annotations

import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "l2b_mask"


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_library_imports_neither_pge_nor_campaign():
    offenders = {str(p.relative_to(LIBRARY)): sorted(_imported(p) & {"pge", "campaign"})
                 for p in LIBRARY.rglob("*.py") if _imported(p) & {"pge", "campaign"}}
    assert offenders == {}
