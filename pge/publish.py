"""Where a product is made and how it reaches the output folder: the output folder checked and
locked, leftovers of killed runs recovered, a scratch folder, and the swap that publishes the
validated product so a reader sees the old product or the new one, never a mix.

`Workspace` holds what must be undone whatever happens (locks, scratch, an unfinished swap):
`Workspace.close` undoes it.

The output folder may be writable by others: the PGE creates there only its lock file (never
through a link, `pge.locking`) and private folders (`tempfile.mkdtemp`: unpredictable names,
mode 0700) in which everything else is made; it refuses a link or other non-file where a
product file goes; and it deletes only what its own runs made (`pge.journal`).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from l2b_mask.errors import OutputError
from pge import logging as pge_logging
from pge.journal import (
    BACKUP,
    JOURNAL,
    Journal,
    JournalRefused,
    fsync_dir,
    is_private_folder,
    read_journal,
    roll_back,
    write_journal,
)
from pge.locking import OWNER_LOCK, FileLock, acquire_acquisition_lock, scratch_is_live
from pge.manifest import product_problem
from pge.sds.files import TRAILING, ProductFiles, product_files

__all__ = ["BACKUP", "JOURNAL", "Workspace", "open_workspace", "publish", "recover_leftovers",
           "verify_staged"]


@dataclass
class Workspace:
    """One run's claim on an output folder: the lock, the scratch folder, the publication."""

    stem: str
    final: ProductFiles
    scratch: Path
    staged: ProductFiles
    locks: list[FileLock] = field(default_factory=list)
    publish_dir: Path | None = None
    committed: bool = False
    # False from the commit of the publication on: a signal then no longer stops the run
    interruptible: bool = True

    @property
    def out(self) -> Path:
        return self.final.folder

    def close(self) -> None:
        """Whatever happened: undo an unfinished publication, remove scratch and the publish
        folder, release the locks. Each part runs even if another fails."""
        pub, keep = self.publish_dir, None
        try:
            if pub is not None and not self.committed:
                journal = read_journal(pub, self.stem, self.final)
                if journal is not None:
                    roll_back(pub, self.final, journal)
        except Exception as exc:  # noqa: BLE001 - keep the backup; the next run rolls back again
            keep = pub
            try:
                pge_logging.get_logger().error("rollback_failed", publish_folder=str(pub),
                                               error=str(exc))
            except Exception:  # noqa: BLE001 - logging must not mask the run's own failure
                pass
        finally:
            for folder in dict.fromkeys(f for f in (self.publish_dir, self.scratch) if f):
                if folder != keep and folder.exists():
                    shutil.rmtree(folder, ignore_errors=True)
            for lock in reversed(self.locks):
                lock.release()


def check_output_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(out, f"cannot create output folder ({exc.strerror})") from None
    if not out.is_dir():
        raise OutputError(out, "output folder is not a folder")
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(out, "output folder is not writable")


def open_workspace(stem: str, out: Path, scratch_parent: Path | None, *, overwrite: bool,
                   inputs: list[Path]) -> Workspace:
    """Output folder usable, the acquisition locked, leftovers of killed runs recovered, no
    product in the way (unless `overwrite`), scratch ready."""
    check_output_folder(out)
    final = product_files(stem, out)
    refuse_foreign_entries(final)
    resolved = {p.resolve() for p in inputs}
    clash = [p for p in final.all() if p.resolve() in resolved]
    if clash:
        raise OutputError(clash[0], "product name collides with an input file")
    lock = acquire_acquisition_lock(out, stem)
    scratch: Path | None = None
    try:
        parent = scratch_parent or out
        for folder in dict.fromkeys((out, parent)):
            recover_leftovers(stem, final, folder)
        _nothing_in_the_way(final, overwrite)
        try:
            parent.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".scratch", dir=parent))
            owner = FileLock(scratch / OWNER_LOCK, remove=False)
            owner.try_acquire()
        except OSError as exc:
            raise OutputError(parent, f"cannot create scratch folder ({exc.strerror})") from None
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        lock.release()
        raise
    return Workspace(stem, final, scratch, product_files(stem, scratch), locks=[lock, owner])


def refuse_foreign_entries(final: ProductFiles) -> None:
    """Where a product file goes there is nothing, or a regular file: a link (to anywhere) or
    a folder, FIFO or device is not something this PGE made; it is neither followed (for a
    checksum, a provenance record) nor replaced, whatever `overwrite` says."""
    for path in final.all():
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise OutputError(path, f"cannot inspect ({exc.strerror})") from None
        if stat.S_ISLNK(info.st_mode):
            raise OutputError(path, "is a symbolic link where a product file goes; the PGE "
                                    "neither follows nor replaces a link (remove it)")
        if not stat.S_ISREG(info.st_mode):
            raise OutputError(path, "is not a regular file where a product file goes; the PGE "
                                    "does not replace it (remove it)")


def _nothing_in_the_way(final: ProductFiles, overwrite: bool) -> None:
    existing = [p for p in final.all() if os.path.lexists(p)]
    if not existing or overwrite:
        return
    problem = product_problem(final)
    if problem is None:
        raise OutputError(existing[0], "product already exists; set output.overwrite to true to "
                                       "replace it")
    raise OutputError(existing[0], f"an incomplete product is in the way ({problem}); set "
                                   "output.overwrite to true to replace it")


def recover_leftovers(stem: str, final: ProductFiles, folder: Path) -> None:
    """Finish what killed runs of this acquisition left in `folder`.

    Called with the acquisition lock held. A scratch folder `.<stem>.*.scratch` is considered
    only when it is a private folder of the PGE's user (`pge.journal.is_private_folder`): any
    other is not ours, and is left alone. One whose owner lock is free belongs to a dead run:
    if it holds a publish journal, the publication is rolled back (old product restored) or,
    when it was committed, left as it is; then the folder is removed. A journal that is not
    this PGE's record of this product is refused (exit 7), and nothing is touched. Live scratch
    folders (another output folder sharing the scratch directory) are left alone.
    """
    log = pge_logging.get_logger()
    for scratch in sorted(folder.glob(f".{glob_escape(stem)}.*.scratch")):
        if not is_private_folder(scratch):
            log.warning("foreign_scratch_left_alone", folder=str(scratch),
                        detail="not a private folder of the PGE's user: not made by this PGE")
            continue
        if scratch_is_live(scratch):
            continue
        try:
            journal = read_journal(scratch, stem, final)
        except JournalRefused as exc:
            raise OutputError(scratch / JOURNAL, f"journal of a killed run {exc}; not followed, "
                                                 "nothing changed (inspect and remove "
                                                 f"{scratch.name})") from None
        if journal is not None:
            if not journal.committed:
                try:
                    roll_back(scratch, final, journal)
                except OSError as exc:
                    raise OutputError(
                        scratch, f"cannot restore the product of a killed run ({exc.strerror}); "
                                 "its backup is kept there") from None
            log.warning("recovered_killed_run", scratch=str(scratch),
                        action="kept the committed product" if journal.committed else
                        "rolled back the interrupted publication")
        else:
            log.warning("removed_killed_run_scratch", scratch=str(scratch))
        shutil.rmtree(scratch, ignore_errors=True)


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def verify_staged(ws: Workspace) -> None:
    """The staged files match the checksums their provenance records, before anything moves."""
    problem = product_problem(ws.staged)
    if problem is not None:
        raise OutputError(ws.staged.provenance, f"staged product fails its provenance check "
                                                f"({problem}); nothing was published")


def publish(ws: Workspace, keys: list[str]) -> list[Path]:
    """Swap the validated product (files `keys`, then provenance and log) into the output
    folder; returns the published paths.

    1. The staged files reach a publish folder inside the output folder (the scratch itself when
       it lives there; a copy, re-verified, when the scratch is elsewhere).
    2. A journal listing the product files already in place is written atomically.
    3. Those old files move into `backup/` of the publish folder.
    4. The new files move in, provenance and log last, and are verified against the provenance.
    5. The journal is marked committed (from then on a signal no longer stops the run); the
       publish folder, backup included, is removed by `Workspace.close`.
    A failure or signal in 2-4 restores the old product (`roll_back`); a kill in 2-4 leaves the
    journal, and the next run on the acquisition rolls back the same way (`recover_leftovers`).
    """
    out, final = ws.out, ws.final
    order = [*keys, *TRAILING]
    names = [final[k].name for k in order]
    if ws.scratch.parent.resolve() == out.resolve():
        ws.publish_dir = ws.scratch
    else:
        ws.publish_dir = Path(tempfile.mkdtemp(prefix=f".{ws.stem}.", suffix=".scratch", dir=out))
        lock = FileLock(ws.publish_dir / OWNER_LOCK, remove=False)
        lock.try_acquire()
        ws.locks.append(lock)
        for key in order:
            move(ws.staged[key], ws.publish_dir / ws.staged[key].name)
        problem = product_problem(product_files(ws.stem, ws.publish_dir))
        if problem is not None:
            raise OutputError(ws.publish_dir, f"copy for publication is damaged ({problem})")
    pub = ws.publish_dir
    for name in names:
        fsync(pub / name)
    # Files of an earlier product that this run does not write (an optional product switched
    # off) leave with the old product, or they would sit beside it unaccounted for.
    stale = [p.name for p in final.all() if p.name not in names and os.path.lexists(p)]
    old = [name for name in names if os.path.lexists(out / name)] + stale
    staged = {name: os.lstat(pub / name).st_ino for name in names}
    journal = Journal(str(out), ws.stem, (*names, *stale), frozenset(old), staged)
    write_journal(pub, journal)
    (pub / BACKUP).mkdir(exist_ok=True)
    for name in old:
        rename(out / name, pub / BACKUP / name)
    for name in names:
        rename(pub / name, out / name)
    fsync_dir(out)
    problem = product_problem(final)
    if problem is not None:
        raise OutputError(out, f"published product fails its provenance check ({problem})")
    ws.interruptible = False
    write_journal(pub, dataclasses.replace(journal, state="committed"))
    ws.committed = True
    return [final[k] for k in order]


def rename(src: Path, dst: Path) -> None:
    try:
        src.replace(dst)
    except OSError as exc:
        raise OutputError(dst, f"cannot move product file into place ({exc.strerror})") from None


def move(src: Path, dst: Path) -> None:
    """Atomic within a filesystem; across filesystems, copy beside the target then rename."""
    try:
        src.replace(dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise OutputError(dst, f"cannot move product into place ({exc.strerror})") from None
        tmp = dst.with_name(f".{dst.name}.part")
        try:
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
        except OSError as exc2:
            tmp.unlink(missing_ok=True)
            raise OutputError(dst, f"cannot copy product into place ({exc2.strerror})") from None


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
