"""Writing outputs whole or not at all: a temporary name in the target folder, then a rename.

The temporary name is unpredictable and created exclusively (never through a link planted in a
shared output folder), and written through its open descriptor.

A reader (an operator, the release command, a scheduler restarting a job) then sees either the
previous file or the complete new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

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
    """`write(f)` into a new hidden file of unpredictable name beside `path` (created with
    O_EXCL, never through a link: `tempfile.mkstemp`), then rename it to `path`. `write` gets
    the open binary file, so nothing reopens the name."""
    p = Path(path)
    try:
        fd, name = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(p, f"cannot write ({exc.strerror or exc})") from None
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide it from its readers
            write(f)
        tmp.replace(p)
    except OSError as exc:
        raise OutputError(p, f"cannot write ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return p


def write_json(path: Path | str, doc: Any) -> Path:
    return write_text(path, json.dumps(doc, indent=2) + "\n")


def write_text(path: Path | str, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")))
