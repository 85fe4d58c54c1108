"""The campaign report (JSON and CSV under the output root) and the live progress display.

`campaign_report.json` holds the campaign's settings, the totals and one record per
acquisition with every attempt; `campaign_report.csv` has one row per acquisition for
spreadsheets and `grep`, and nothing else: a table, so no totals row (the totals are the
JSON's `totals` and the command's summary line). Both are rewritten atomically while the
campaign runs (at most every `REWRITE_EVERY_S`) and at its end, so an interrupted campaign
still leaves a current report.

Statuses: `done` (made by this campaign run), `skipped` (a valid product was already there),
`failed` (the PGE failed and the retry policy gave up, the same run failed for good in an
earlier campaign run, or the inventory could not pair the radiance), `pending` (not run:
`--limit` reached, or the campaign was interrupted).
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from campaign.files import write_atomically
from campaign.html_report import write_views
from campaign.stac import FootprintReader
from pge.sds.files import FILE_KEYS

DONE, SKIPPED, FAILED, PENDING = "done", "skipped", "failed", "pending"
STATUSES = (DONE, SKIPPED, FAILED, PENDING)
REPORT_JSON = "campaign_report.json"
REPORT_CSV = "campaign_report.csv"
REWRITE_EVERY_S = 15.0
PRODUCT_KEYS = FILE_KEYS  # every file a PGE may write
CSV_COLUMNS = (
    "acquisition", "product_stem", "status", "exit_code", "error", "attempts", "duration_s",
    "cloud_fraction_percent", "reason", "radiance", "observation", "location", "glt",
    "runconfig", "product_dir", *(f"product_{k}" for k in PRODUCT_KEYS), "failure_log",
)


@dataclass
class Entry:
    """One acquisition's line of the report."""

    acquisition: str
    product_stem: str
    radiance: str
    observation: str | None
    location: str | None
    glt: str | None
    runconfig: str | None  # None: no run configuration can be made (radiance not paired)
    product_dir: str
    status: str = PENDING
    exit_code: int | None = None
    error: str | None = None
    attempts: int = 0  # PGE subprocesses started for it in this campaign run
    retries: int = 0  # of those, reruns after a retryable failure
    duration_s: float = 0.0  # their wall time, summed
    cloud_fraction_percent: float | None = None
    reason: str | None = None  # why skipped, remade, not rerun, or pending
    products: dict[str, str] = field(default_factory=dict)
    failure_log: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def csv_row(self) -> dict[str, Any]:
        row = {k: getattr(self, k) for k in CSV_COLUMNS if hasattr(self, k)}
        row.update({f"product_{k}": self.products.get(k) for k in PRODUCT_KEYS})
        return {k: ("" if v is None else v) for k, v in row.items()}


class Report:
    def __init__(self, root: Path, campaign: dict[str, Any]) -> None:
        self.root = root
        self.campaign = campaign
        self.entries: dict[str, Entry] = {}
        self._counts: Counter[str] = Counter()  # by status, kept by add/set_status
        self.started = time.time()
        self._last_write = 0.0
        self._write_s = 0.0
        self._footprints = FootprintReader()  # records read once per version
        self.writers: list[Callable[[Report], None]] = []  # called by write(), after the files

    @property
    def json_path(self) -> Path:
        return self.root / REPORT_JSON

    @property
    def csv_path(self) -> Path:
        return self.root / REPORT_CSV

    def add(self, entry: Entry) -> None:
        old = self.entries.get(entry.product_stem)
        if old is not None:
            self._counts[old.status] -= 1
        self.entries[entry.product_stem] = entry
        self._counts[entry.status] += 1

    def set_status(self, entry: Entry, status: str) -> None:
        """Change an entry's status through here, so that `counts` stays O(1) per
        acquisition finished instead of a walk over the whole archive."""
        self._counts[entry.status] -= 1
        entry.status = status
        self._counts[status] += 1

    def counts(self) -> Counter[str]:
        return +self._counts  # a copy, without the zero counts

    def totals(self) -> dict[str, Any]:
        counts = self.counts()
        elapsed = time.time() - self.started
        return {
            "acquisitions": len(self.entries),
            **{s: counts.get(s, 0) for s in STATUSES},
            "pge_runs": sum(e.attempts for e in self.entries.values()),
            "retries": sum(e.retries for e in self.entries.values()),
            "failed_by_exit_code": dict(sorted(Counter(
                str(e.exit_code) for e in self.entries.values() if e.status == FAILED).items())),
            "pge_seconds": round(sum(e.duration_s for e in self.entries.values()), 3),
            "elapsed_s": round(elapsed, 3),
            "done_per_minute": round(counts.get(DONE, 0) / elapsed * 60.0, 3) if elapsed else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "totals": self.totals(),
                "acquisitions": [asdict(e) for e in self.entries.values()]}

    def csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for e in self.entries.values():
            writer.writerow(e.csv_row())
        return out.getvalue()

    def write(self, *, force: bool = True) -> None:
        """Rewrite the report files; unless `force`, only when `REWRITE_EVERY_S` have passed
        and at most 5 % of the time (a report of a whole archive takes a while to write).
        Each file is replaced atomically, never written through a link (`campaign.files`);
        `writers` (more views of the report: a page, a catalogue) run after the two files."""
        now = time.monotonic()
        if not force and now - self._last_write < max(REWRITE_EVERY_S, 20 * self._write_s):
            return
        self._last_write = now
        self.root.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2, default=str) + "\n"
        write_atomically(self.json_path, text)
        write_atomically(self.csv_path, self.csv_text())
        write_views(self.root, json.loads(text), self._footprints)  # HTML page, STAC collection
        for writer in self.writers:
            writer(self)
        self._write_s = time.monotonic() - now


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """A one-line progress bar, redrawn in place, for a terminal (the JSON log events carry the
    same counts, one line per update, when stdout is not a terminal).

    Redraws are throttled to one per `INTERVAL_S`; an update that falls inside the interval is
    kept and drawn by a ticker thread at the end of it, so the last state of a burst always
    shows, however long the campaign then waits on its PGEs. The ticker also redraws every
    `REFRESH_S` while nothing happens, the ETA counting down."""

    WIDTH = 28
    INTERVAL_S = 0.2
    REFRESH_S = 1.0

    def __init__(self, stream: IO[str], total: int) -> None:
        self.stream = stream
        self.total = total
        self._last = 0.0
        self._drawn = False
        self._state: tuple[Any, ...] | None = None  # the latest update's figures
        self._eta_at = 0.0  # when the latest ETA was estimated
        self._dirty = False  # an update not drawn yet
        self._lock = threading.Lock()  # the ticker and the campaign's thread share the stream
        self._closed = threading.Event()
        self._ticker: threading.Thread | None = None

    def update(self, finished: int, counts: Counter[str], running: int,
               rate_per_min: float | None, eta_s: float | None, *, force: bool = False) -> None:
        with self._lock:
            self._state = (finished, +counts, running, rate_per_min, eta_s)
            self._eta_at = time.monotonic()
            self._dirty = True
            if force or time.monotonic() - self._last >= self.INTERVAL_S:
                self._draw()
        self._start_ticker()

    def _start_ticker(self) -> None:
        if self._ticker is None and not self._closed.is_set():
            self._ticker = threading.Thread(target=self._tick, name="campaign-progress",
                                            daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._closed.wait(self.INTERVAL_S / 2):
            with self._lock:
                since = time.monotonic() - self._last
                if self._state is not None and not self._closed.is_set() and (
                        (self._dirty and since >= self.INTERVAL_S) or since >= self.REFRESH_S):
                    self._draw()

    def _draw(self) -> None:
        """Write the bar from the latest figures; the caller holds the lock."""
        assert self._state is not None
        finished, counts, running, rate_per_min, eta_s = self._state
        if eta_s is not None:
            eta_s = max(0.0, eta_s - (time.monotonic() - self._eta_at))
        filled = int(self.WIDTH * finished / self.total) if self.total else self.WIDTH
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        rate = f"{rate_per_min:.1f}/min" if rate_per_min else "--/min"
        line = (f"[{bar}] {finished}/{self.total}  done {counts.get(DONE, 0)}  skipped "
                f"{counts.get(SKIPPED, 0)}  failed {counts.get(FAILED, 0)}  pending "
                f"{counts.get(PENDING, 0) - (self.total - finished)}  running {running}  "
                f"{rate}  ETA {format_seconds(eta_s)}")
        self.stream.write("\r\x1b[2K" + line)
        self.stream.flush()
        self._last = time.monotonic()
        self._dirty = False
        self._drawn = True

    def message(self, text: str) -> None:
        """A line above the bar (a failure worth seeing at once); the bar follows at once."""
        with self._lock:
            self.stream.write("\r\x1b[2K" + text + "\n")
            self.stream.flush()
            self._dirty = self._state is not None
            if self._dirty:
                self._draw()

    def close(self) -> None:
        """Stop the ticker, draw the final figures if they are not on screen, end the line."""
        self._closed.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            if self._dirty and self._state is not None:
                self._draw()
            if self._drawn:
                self.stream.write("\n")
                self.stream.flush()
