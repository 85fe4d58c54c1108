"""Exclusive ownership of one acquisition's product in one output folder, and of scratch folders.

A run holds `<output>/.<stem>.lock` (an `fcntl.flock`, released by the kernel when the process
dies, however it dies) from before it looks at the output folder until after it has published
or cleaned up. A second run on the same acquisition and output folder fails at once with exit 7
("another run holds the lock on ..."); it does not wait, so the orchestration's retry policy
stays in charge and a stuck run cannot pile up waiters.

Each scratch folder holds `owner.lock`, flocked by the run that made it, so a later run can tell
the scratch of a live run (skip it) from the leftovers of a killed one (recover, then remove).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from pge.errors import OutputProductError

OWNER_LOCK = "owner.lock"


def lock_path(out: Path, stem: str) -> Path:
    return out / f".{stem}.lock"


class FileLock:
    """A non-blocking exclusive flock on `path`, created if absent; `remove` deletes it on release.

    Deleting a lock file is safe only because `acquire` checks, once it holds the lock, that the
    path still names the inode it locked (a run that opened the file just before its holder
    removed it would otherwise hold a lock on a file nobody else can see).
    """

    def __init__(self, path: Path, *, remove: bool = True) -> None:
        self.path = path
        self.remove = remove
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """True when acquired; False when another process holds it."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise
            try:
                same = os.fstat(fd).st_ino == self.path.stat().st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                try:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                except OSError:
                    pass  # the pid is a courtesy for operators; the flock is the lock
                return True
            os.close(fd)  # removed or replaced under us: lock the file that is there now

    def holder(self) -> str:
        """The pid written by the holder, for messages ('' when unknown)."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if self.remove:
                self.path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None


def acquire_acquisition_lock(out: Path, stem: str) -> FileLock:
    """Hold the acquisition's lock in `out`, or fail with exit 7 naming the holder."""
    lock = FileLock(lock_path(out, stem))
    try:
        acquired = lock.try_acquire()
    except OSError as exc:
        raise OutputProductError(lock.path, f"cannot create lock file ({exc.strerror})") from None
    if not acquired:
        pid = lock.holder()
        raise OutputProductError(
            out / stem, f"another run{f' (pid {pid})' if pid.isdigit() else ''} holds the lock "
                        f"on {lock.path}; not starting a second run on the same acquisition "
                        "and output folder")
    return lock


def scratch_is_live(scratch: Path) -> bool:
    """Whether a live process owns `scratch` (holds its owner lock).

    A scratch without an owner lock was made by a run killed before it could create one (a
    window of one system call), or by an older PGE: it is treated as dead.
    """
    path = scratch / OWNER_LOCK
    if not path.is_file():
        return False
    probe = FileLock(path, remove=False)
    try:
        if probe.try_acquire():
            probe.release()
            return False
    except OSError:
        return True  # cannot tell: leave it alone
    return True
