"""Is a product in place complete? Its provenance lists every output with size and sha256.

Used by the PGE before publishing and after, and by the campaign to skip finished products;
imports no torch, so the campaign's own process stays light.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from l2b_mask.spec import sha256_of
from pge.sds.files import ProductFiles


def product_problem(files: ProductFiles) -> str | None:
    """None when the product in place is complete: its provenance exists and every output it
    lists is there with the recorded size and sha256. Otherwise what is wrong, in words.
    A symbolic link is never one of our files: it is not followed, and the product is not
    complete (the PGE refuses to write over it, so the campaign must not count it as done)."""
    if files.provenance.is_symlink():
        return f"{files.provenance.name} is a symbolic link"
    try:
        record = json.loads(files.provenance.read_text(encoding="utf-8"))
        outputs = record["outputs"]
    except FileNotFoundError:
        return f"{files.provenance.name} is missing"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{files.provenance.name} is unreadable ({type(exc).__name__})"
    return checksum_problem(outputs, files.provenance.parent)


def checksum_problem(outputs: Any, folder: Path) -> str | None:
    """What is wrong with the files a provenance's `outputs` lists, looked up in `folder`."""
    if not isinstance(outputs, dict) or not outputs:
        return "the provenance lists no outputs"
    for key, entry in outputs.items():
        if not isinstance(entry, dict) or "sha256" not in entry:
            continue  # the log: written after the record, so it has no checksum
        path = folder / Path(str(entry.get("path", ""))).name
        if path.is_symlink():
            return f"{path.name} ({key}) is a symbolic link"
        if not path.is_file():
            return f"{path.name} ({key}) is missing"
        if path.stat().st_size != entry.get("size_bytes") or sha256_of(path) != entry["sha256"]:
            return f"{path.name} ({key}) does not match its checksum in the provenance"
    return None
