"""Where a product is made and how it reaches the output folder: the output folder checked and
locked, leftovers of killed runs recovered, a scratch folder, and the swap that publishes the
validated product so a reader sees the old product or the new one, never a mix.

`Workspace` holds what must be undone whatever happens (locks, scratch, an unfinished swap):
`Workspace.close` undoes it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2b_mask.errors import OutputError
from pge import logging as pge_logging
from pge.locking import OWNER_LOCK, FileLock, acquire_acquisition_lock, scratch_is_live
from pge.manifest import product_problem
from pge.sds.files import TRAILING, ProductFiles, product_files

JOURNAL = "publish_journal.json"
BACKUP = "backup"


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
                journal = read_journal(pub)
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
    resolved = {p.resolve() for p in inputs}
    clash = [p for p in final.all() if p.resolve() in resolved]
    if clash:
        raise OutputError(clash[0], "product name collides with an input file")
    lock = acquire_acquisition_lock(out, stem)
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
        lock.release()
        raise
    return Workspace(stem, final, scratch, product_files(stem, scratch), locks=[lock, owner])


def _nothing_in_the_way(final: ProductFiles, overwrite: bool) -> None:
    existing = [p for p in final.all() if p.exists()]
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

    Called with the acquisition lock held. A scratch folder `.<stem>.*.scratch` whose owner
    lock is free belongs to a dead run: if it holds a publish journal, the publication is
    rolled back (old product restored) or, when it was committed, left as it is; then the
    folder is removed. Live scratch folders (another output folder sharing the scratch
    directory) are left alone.
    """
    log = pge_logging.get_logger()
    for scratch in sorted(folder.glob(f".{glob_escape(stem)}.*.scratch")):
        if not scratch.is_dir() or scratch_is_live(scratch):
            continue
        journal = read_journal(scratch)
        if journal is not None and Path(journal.get("output", "")) == final.folder:
            committed = journal.get("state") == "committed"
            if not committed:
                try:
                    roll_back(scratch, final, journal)
                except OSError as exc:
                    raise OutputError(
                        scratch, f"cannot restore the product of a killed run ({exc.strerror}); "
                                 "its backup is kept there") from None
            log.warning("recovered_killed_run", scratch=str(scratch),
                        action="kept the committed product" if committed else
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
    stale = [p.name for p in final.all() if p.name not in names and p.exists()]
    old = [name for name in names if (out / name).exists()] + stale
    journal = {"output": str(out), "stem": ws.stem, "names": names + stale, "old": old}
    write_journal(pub, {**journal, "state": "swapping"})
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
    write_journal(pub, {**journal, "state": "committed"})
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
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    try:
        fsync(path)
    except OSError:
        pass  # some filesystems refuse fsync on folders; the renames are still atomic


def write_journal(folder: Path, record: dict[str, Any]) -> None:
    tmp = folder / (JOURNAL + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(folder / JOURNAL)
    fsync_dir(folder)


def read_journal(folder: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / JOURNAL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def roll_back(pub: Path, final: ProductFiles, journal: dict[str, Any]) -> None:
    """Put the output folder back as the journal found it, from the filesystem's state alone
    (so it works in-process after any interruption, and in a later run after a kill).

    Every old file moved into backup/ before any new file moved in, so: a name in backup/ is
    restored over whatever is in its place; a name that was not there before and is there now
    is a new file and is removed; an old name not in backup/ never moved.
    """
    out = final.folder
    old = set(journal.get("old", []))
    for name in journal.get("names", []):
        name = Path(str(name)).name
        saved, target = pub / BACKUP / name, out / name
        if saved.exists():
            saved.replace(target)
        elif name not in old:
            target.unlink(missing_ok=True)
