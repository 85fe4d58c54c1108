"""The attempt journal: every PGE attempt, as its worker saw it, in the output root.

Dask reruns a task whose worker died (a Slurm job cancelled or out of walltime, a node lost,
a worker process killed) without telling the client, and a result can be lost with its
worker: the driver alone cannot count attempts. So the task journals each attempt itself, in
`<root>/attempts/<product stem>.jsonl`: a `start` line before the PGE starts (campaign run,
submission, host, worker, Slurm job) and an `end` line when it ends (exit code, error). An
attempt with a start and no end was lost with its worker. The driver reads the journal when
a result (or a task failure) arrives and records every attempt of that acquisition
(`Loop.record_attempts`); a driver started after a killed one reconciles that one's report
with it (`campaign.recovery`). Lines are appended in one `write`, never through a link
(`campaign.files.append_line`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from campaign.files import append_line, real_folder

FOLDER = "attempts"


def journal_path(root: Path | str, stem: str) -> Path:
    return Path(root) / FOLDER / f"{stem}.jsonl"


def new_attempt_id() -> str:
    return uuid.uuid4().hex[:16]


def write_start(path: Path, attempt_id: str, run_id: str, submission: int, started_utc: str,
                worker: str | None, command: list[str]) -> None:
    real_folder(path.parent)
    append_line(path, json.dumps({
        "event": "start", "id": attempt_id, "run_id": run_id, "submission": submission,
        "started_utc": started_utc, "host": socket.gethostname(), "pid": os.getpid(),
        "worker": worker, "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "command": command}))


def write_end(path: Path, attempt_id: str, exit_code: int | None, error: str | None,
              duration_s: float, timed_out: bool, cause: str | None, log: str | None) -> None:
    append_line(path, json.dumps({
        "event": "end", "id": attempt_id, "exit_code": exit_code, "error": error,
        "duration_s": duration_s, "timed_out": timed_out, "cause": cause, "log": log}))


@dataclass
class Attempt:
    """One journaled attempt: its start, and its end if it was written."""

    start: dict[str, Any]
    end: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.start["id"])

    @property
    def lost(self) -> bool:
        return self.end is None


def read(path: Path, run_id: str | None = None) -> list[Attempt]:
    """The attempts journaled in `path` (of campaign run `run_id`, or all), by start order.
    A line cut short by a crash mid-write is skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    attempts: dict[str, Attempt] = {}
    for line in text.splitlines():
        try:
            event = json.loads(line)
            kind, attempt_id = event["event"], str(event["id"])
        except (ValueError, KeyError, TypeError):
            continue
        if kind == "start" and (run_id is None or event.get("run_id") == run_id):
            attempts.setdefault(attempt_id, Attempt(event))
        elif kind == "end" and attempt_id in attempts:
            attempts[attempt_id].end = event
    return list(attempts.values())


def slurm_job_state(job_id: str | None) -> str | None:
    """`JobState` (and `Reason`) of a Slurm job as `scontrol` still knows it (for
    `MinJobAge` after its end), e.g. "CANCELLED" or "TIMEOUT"; None without Slurm."""
    if not job_id or shutil.which("scontrol") is None:
        return None
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True,
                             text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    fields = dict(part.split("=", 1) for part in out.split() if "=" in part)
    state = fields.get("JobState")
    if not state:
        return None
    reason = fields.get("Reason")
    return state if reason in (None, "None") else f"{state} ({reason})"


def lost_cause(attempt: Attempt, why: str) -> str:
    """Why an attempt has no end: where it ran and, on Slurm, what became of its job."""
    start = attempt.start
    where = f"worker {start.get('worker') or '?'} on {start.get('host') or '?'}"
    job = start.get("slurm_job_id")
    if job:
        state = slurm_job_state(job)
        where += f", Slurm job {job}" + (f" {state}" if state else "")
    return f"lost: no end recorded ({where}); {why}"
