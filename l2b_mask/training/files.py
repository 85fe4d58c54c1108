"""Writing outputs whole or not at all: a temporary name in the target folder, then a rename.

A reader (an operator, the release command, a scheduler restarting a job) then sees either the
previous file or the complete new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def write_atomic(path: Path | str, write: Callable[[Path], None]) -> Path:
    """`write(tmp)` to a hidden temporary file beside `path`, then rename it to `path`."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(p)
    except OSError as exc:
        raise OutputError(p, f"cannot write ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return p


def write_json(path: Path | str, doc: Any) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=2) + "\n"))


def write_text(path: Path | str, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))
