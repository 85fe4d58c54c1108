"""Exclusive ownership of one acquisition's product in one output folder, and of scratch folders.

A run holds `<output>/.<stem>.lock` (an `fcntl.flock`, released by the kernel when the process
dies, however it dies) from before it looks at the output folder until after it has published
or cleaned up. A second run on the same acquisition and output folder fails at once with exit 7
("another run holds the lock on ..."); it does not wait, so the orchestration's retry policy
stays in charge and a stuck run cannot pile up waiters.

Each scratch folder holds `owner.lock`, flocked by the run that made it, so a later run can tell
the scratch of a live run (skip it) from the leftovers of a killed one (recover, then remove).

The PGE runs as root in a folder others may write: a lock file is opened without following a
link (`O_NOFOLLOW`; a dangling link is not created through either) and must be a regular file
with one name. Anything else where the lock goes is refused with exit 7 naming it, and nothing
is written. A lock file left by a killed run is reused: the flock, not the file, is the lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from pge.errors import OutputProductError

OWNER_LOCK = "owner.lock"
# O_NONBLOCK: a FIFO planted where the lock goes must not block the open
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeLockFile(OSError):
    """What sits where the lock file goes is not a plain file of ours (a link, a FIFO, a file
    with other names): it is not opened for writing."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(errno.ELOOP, what, str(path))
        self.path, self.what = path, what


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

    def _open(self) -> int:
        """A descriptor of the regular, singly linked file at `path`, created if absent; never
        through a link. UnsafeLockFile for anything else."""
        try:
            fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP or self.path.is_symlink():
                raise UnsafeLockFile(self.path, "is a symbolic link") from None
            raise
        info = os.fstat(fd)
        what = ("is not a regular file" if not stat.S_ISREG(info.st_mode) else
                f"has {info.st_nlink} hard links" if info.st_nlink != 1 else None)
        if what is not None:
            os.close(fd)
            raise UnsafeLockFile(self.path, what)
        return fd

    def try_acquire(self) -> bool:
        """True when acquired; False when another process holds it. UnsafeLockFile when the
        path is a link or not a plain file."""
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise
            try:
                same = os.fstat(fd).st_ino == os.lstat(self.path).st_ino
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
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return ""
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return ""
            return os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        except OSError:
            return ""
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            # only the file this run locked: a name replaced meanwhile is not ours to remove
            if self.remove and os.lstat(self.path).st_ino == os.fstat(self._fd).st_ino:
                self.path.unlink()
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
    except UnsafeLockFile as exc:
        raise OutputProductError(lock.path, f"lock file {exc.what}; the PGE does not write "
                                            "through it (remove it if no run holds it)") from None
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
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return True  # not a lock this PGE made: cannot tell, leave it alone
    except FileNotFoundError:
        return False
    except OSError:
        return True
    probe = FileLock(path, remove=False)
    try:
        if probe.try_acquire():
            probe.release()
            return False
    except OSError:
        return True  # cannot tell: leave it alone
    return True
