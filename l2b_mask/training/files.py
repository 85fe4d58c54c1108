"""Writing outputs whole or not at all: a temporary name in the target folder, then a rename.

The temporary name is unpredictable and created exclusively (never through a link planted in a
shared output folder), and written through its open descriptor.

A reader (an operator, the release command, a scheduler restarting a job) then sees either the
previous file or the complete new one, never a half-written one.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from l2b_mask.atomic_file import replace_file
from l2b_mask.errors import OutputError


def ensure_folder(path: Path | str) -> Path:
    """Create the folder (and parents) and prove it writable, or raise OutputError."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise OutputError(p, f"output folder not writable ({exc.strerror or exc})") from None
    return p


def write_atomic(path: Path | str, write: Callable[[BinaryIO], None]) -> Path:
    """`write(f)` into a new hidden file of unpredictable name beside `path`, then renamed to
    `path` (`l2b_mask.atomic_file.replace_file`: never through a link); `write` gets the open
    binary file, so nothing reopens the name. An OutputError when it cannot be written."""
    p = Path(path)
    try:
        return replace_file(p, write)
    except OSError as exc:
        raise OutputError(p, f"cannot write ({exc.strerror or exc})") from None


def write_json(path: Path | str, doc: Any) -> Path:
    return write_text(path, json.dumps(doc, indent=2) + "\n")


def write_text(path: Path | str, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")))
