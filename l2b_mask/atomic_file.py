"""Replace a file whole, safely in a folder others may write (the PGE and its tools run as root).

The temporary file is made by `tempfile.mkstemp` in the target's folder: an unpredictable name,
created with O_CREAT|O_EXCL|O_NOFOLLOW, so a link planted under a guessed name is never followed
and never written through. It is flushed to disk, then renamed over the target; the rename
replaces a link at the target's name rather than following it. A reader sees the old file or
the new one, never a half-written one. The training commands and the campaign write through it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def replace_file(path: Path, write: Callable[[BinaryIO], object] | bytes, mode: int = 0o644) -> Path:
    """`write(f)` (or the bytes given) into a private temporary file beside `path`, then renamed
    to `path`. An `OSError` leaves the target as it was and no temporary file behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # mkstemp makes it 0600: the file is for its readers
            if isinstance(write, bytes):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
