"""Files the campaign creates in its output root, made without following links.

The campaign often runs as root (in a container, or a batch job of a service account) on an
output root that others can write, so every file it makes there is created with
`O_NOFOLLOW` and, where it is new, `O_EXCL`; a file rewritten in place is written to a
private temporary file (`tempfile.mkstemp`: an unpredictable name, created `O_EXCL`) and
renamed over it (`l2b_mask.atomic_file`), and a rename replaces a link at the target instead of
writing through it.
The folders it writes into (`FOLDERS`) must be real folders, not links; a link planted at
one of the campaign's names is refused before anything runs (`refuse_links`, exit 2).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from campaign.errors import UsageProblem
from l2b_mask.atomic_file import replace_file

NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC


class LinkRefused(UsageProblem):
    """A name the campaign writes is a symbolic link (or not what it must be)."""


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` by `text` through a private temporary file in the same folder
    (`l2b_mask.atomic_file.replace_file`): a reader sees the old or the new file, a link at
    `path` is replaced, never followed."""
    replace_file(path, text.encode("utf-8"))


def create_new(path: Path, text: str) -> None:
    """Create `path`, which must not exist (`FileExistsError` otherwise, a link included)."""
    fd = os.open(path, NEW_FILE, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def append_line(path: Path, line: str) -> None:
    """Append one line in one `write` (O_APPEND: lines of concurrent writers do not mix on a
    local file system); a link at `path` fails with ELOOP instead of being followed."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, APPEND, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file")
        os.write(fd, data)
    finally:
        os.close(fd)


def real_folder(path: Path) -> Path:
    """`path` as a folder of its own: created if absent; a link or a file there raises."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(parents=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"
        raise LinkRefused(f"{path}: {kind}; the campaign writes only into folders of its own "
                          f"output root (remove it)")
    return path


def refuse_links(root: Path, names: Iterable[str]) -> None:
    """Exit 2 (one line naming it) for the first of `names` in `root` that is a link."""
    for name in names:
        path = root / name
        if path.is_symlink():
            raise LinkRefused(f"{path}: a symbolic link (to {path.readlink()}); the campaign "
                              f"does not write through links in its output root (remove it)")


def open_lock(path: Path) -> int:
    """The lock file's descriptor (created if absent), never through a link."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     0o644)
    except OSError as exc:
        if path.is_symlink():
            raise LinkRefused(f"{path}: a symbolic link (to {path.readlink()}); refusing to "
                              f"lock through it (remove it)") from None
        raise UsageProblem(f"{path}: cannot open the campaign lock ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LinkRefused(f"{path}: not a regular file; refusing to use it as the campaign "
                          f"lock (remove it)")
    return fd
