"""The publish journal: what a run is swapping into its output folder, so that the swap can be
undone after any interruption, by the run itself or by the next run after a kill.

A journal is followed only when everything about it says this PGE wrote it for this product:
its folder is a private folder of the PGE's own user (`tempfile.mkdtemp`, mode 0700, not a
link), the journal a regular file of that user, its output folder and stem this run's, every
name it lists a file name of this product (`pge.sds.files`), and a file it would remove the very
inode its run moved in. A folder of another user is not ours: it is left alone, never followed
and never removed. One of ours whose journal fails a check is refused (exit 7, named), not
followed: someone with the PGE's own rights made it, and the operator must look.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pge.sds.files import ProductFiles

JOURNAL = "publish_journal.json"
BACKUP = "backup"
VERSION = 2
STATES = ("swapping", "committed")


class JournalRefused(Exception):
    """A journal that cannot be this PGE's record of this product's publication."""


@dataclass(frozen=True)
class Journal:
    """One publication: the names it touches, which were there before (moved to backup/), and
    the inode of each new file the run moved in (the only files a roll-back may remove)."""

    output: str
    stem: str
    names: tuple[str, ...]
    old: frozenset[str]
    staged: dict[str, int]
    state: str = "swapping"

    def record(self) -> dict[str, Any]:
        return {"version": VERSION, "output": self.output, "stem": self.stem,
                "names": list(self.names), "old": sorted(self.old), "staged": self.staged,
                "state": self.state}

    @property
    def committed(self) -> bool:
        return self.state == "committed"


def is_private_folder(folder: Path) -> bool:
    """A real folder (not a link) of this process's user that nobody else may enter or write:
    what `tempfile.mkdtemp` makes, and what nobody without the PGE's rights can plant."""
    try:
        info = os.lstat(folder)
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
            and info.st_mode & 0o077 == 0)


def write_journal(folder: Path, journal: Journal) -> None:
    """Atomically (a new file, never through a link, then a rename) in the run's own folder."""
    tmp, final = folder / (JOURNAL + ".tmp"), folder / JOURNAL
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(journal.record(), f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(final)
    fsync_dir(folder)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on folders; the renames are still atomic
    finally:
        os.close(fd)


def read_journal(folder: Path, stem: str, final: ProductFiles) -> Journal | None:
    """The journal in `folder` for the product `final`; None when there is none.
    JournalRefused when one is there that is not this PGE's record of this product."""
    path = folder / JOURNAL
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise JournalRefused(f"cannot be opened as a plain file ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise JournalRefused("is not a regular file of the PGE's user")
        try:
            record = json.loads(f.read(1 << 20).decode("utf-8"))
        except (OSError, ValueError) as exc:
            raise JournalRefused(f"is unreadable ({type(exc).__name__})") from None
    return parse_journal(record, stem, final)


def parse_journal(record: Any, stem: str, final: ProductFiles) -> Journal:
    """Every field checked against the product this run makes; JournalRefused naming the
    first that is wrong."""
    if not isinstance(record, dict) or record.get("version") != VERSION:
        raise JournalRefused(f"is not a version {VERSION} publish journal")
    if record.get("output") != str(final.folder) or record.get("stem") != stem:
        raise JournalRefused(f"belongs to another product ({record.get('output')!r}, "
                             f"{record.get('stem')!r})")
    allowed = {p.name for p in final.all()}
    names, old, staged = record.get("names"), record.get("old"), record.get("staged")
    if not (isinstance(names, list) and isinstance(old, list) and isinstance(staged, dict)):
        raise JournalRefused("lacks its names, old or staged lists")
    if (not all(isinstance(n, str) and n in allowed for n in names)
            or len(set(names)) != len(names)):
        raise JournalRefused("names files that are not this product's")
    if not set(old) <= set(names) or not set(staged) <= set(names):
        raise JournalRefused("lists old or staged files outside its names")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in staged.values()):
        raise JournalRefused("staged inodes are not integers")
    if record.get("state") not in STATES:
        raise JournalRefused(f"state {record.get('state')!r} is not one of {STATES}")
    return Journal(str(final.folder), stem, tuple(names), frozenset(old), dict(staged),
                   record["state"])


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def roll_back(pub: Path, final: ProductFiles, journal: Journal) -> None:
    """Put the output folder back as the journal found it, from the filesystem's state alone
    (so it works in-process after any interruption, and in a later run after a kill).

    Every old file moved into backup/ before any new file moved in, so: an old name whose
    backup is there is restored over whatever is in its place; an old name without a backup
    never moved; a new name is removed only when the file there is the one the run moved in
    (its recorded inode): a file of anybody else stays.
    """
    out = final.folder
    for name in journal.names:
        saved, target = pub / BACKUP / name, out / name
        if name in journal.old:
            info = _lstat(saved)
            if info is not None and stat.S_ISREG(info.st_mode):
                saved.replace(target)
            continue
        info = _lstat(target)
        if (info is not None and stat.S_ISREG(info.st_mode)
                and info.st_ino == journal.staged.get(name)):
            target.unlink()
