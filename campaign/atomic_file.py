"""Replace a file under the output root whole, safely in a folder others may write.

The temporary file is made by `tempfile.mkstemp` in the target's folder: an unpredictable
name, created with O_CREAT|O_EXCL|O_NOFOLLOW, so a link planted under a guessed name is never
followed and never written through. It is then renamed over the target; the rename replaces
a link at the target's name rather than following it. A reader sees the old file or the new
one, never a half-written one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def replace_file(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """Write `data` to `path` through a private temporary file in the same folder."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # mkstemp makes it 0600: the report is for operators
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
