"""Why a write failed: a full disk, no inodes, or a file size limit, as far as the system says.

Libraries word their own write failures (netCDF's bare 'HDF error'); an operator needs the
cause. `output_failure` is the one place where a step's write failure gets it.
"""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from l2b_mask.errors import OutputError

# A full disk (ENOSPC), a file-size limit (EFBIG, once SIGXFSZ is ignored) or a quota (EDQUOT):
# wherever the write happens (product, metadata, the log file), it is an output failure.
DISK_FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
# Less free space than this after a failed write, with no errno to say so: the disk is the cause.
LOW_SPACE_BYTES = 64 * 2**20


@contextmanager
def output_failure(where: Path | None, largest_file: int, *, writes: bool) -> Iterator[None]:
    """An OSError of a full disk or a file size limit becomes an output failure (exit 7); an
    output failure of a step that `writes` is completed with the cause the system can tell.

    `where` is the folder written to when the error names none; `largest_file` a bound on the
    size of any file the run writes (a size limit below it is a cause)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        place = exc.filename or where
        cause = write_failure_cause(place, largest_file, exc.errno)
        raise OutputError(place, f"cannot write ({exc.strerror}): " + (
            cause or "output disk full or file size limit reached")) from None
    except OutputError as exc:
        if not writes:
            raise
        cause = write_failure_cause(exc.path or where, largest_file)
        if cause is None or cause in exc.problem:
            raise
        raise OutputError(exc.path, f"{exc.problem} ({cause})") from None


def write_failure_cause(where: Path | str | None, largest_file: int,
                        err: int | None = None) -> str | None:
    """Why writing under `where` failed, as far as the system says, or None.

    `err` is the errno when known. Without one (a library that words its own failure), a file
    size limit counts when it is set and below `largest_file`, and the filesystem when under
    `LOW_SPACE_BYTES` is free (the failed file is already removed, so 'full' cannot mean zero
    bytes).
    """
    causes = []
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    limited = soft != resource.RLIM_INFINITY
    if limited and (err == errno.EFBIG or err is None and soft < largest_file):
        causes.append(f"file size limit {soft} bytes reached")
    folder = existing_folder(where)
    if folder is not None and err != errno.EFBIG:
        try:
            stat = os.statvfs(folder)
        except OSError:
            stat = None
        if stat is not None:
            free = stat.f_bavail * stat.f_frsize
            if stat.f_files > 0 and stat.f_favail == 0 and err in (None, errno.ENOSPC):
                causes.append(f"no free inodes left on {mount_point(folder)}")
            elif err == errno.ENOSPC or (err is None and free < LOW_SPACE_BYTES):
                causes.append(f"no space left: {human_bytes(free)} free on {mount_point(folder)}")
    return "; ".join(causes) or None


def largest_file_bound(pixels: int | None) -> int:
    """A bound on the size of any file a run writes: a few dozen bytes per pixel (flag,
    probability, location, GLT), plus headers and attributes."""
    return 64 * (pixels if pixels is not None else 2_000_000) + 2**20


def existing_folder(where: Path | str | None) -> Path | None:
    if where is None:
        return None
    path = Path(where)
    while not path.is_dir():
        if path.parent == path:
            return None
        path = path.parent
    return path


def mount_point(folder: Path) -> Path:
    path = folder.absolute()
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return path


def human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 2**20:
        return f"{n // 1024} KiB"
    return f"{n / 2**20:.1f} MiB"
