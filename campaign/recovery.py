"""A campaign driver killed outright (kill -9, its node lost) leaves its report as last
written: acquisitions published since then still `pending`, attempts missing. The next
campaign run on the output root (it holds the lock, so that driver is gone) reconciles that
report with the attempt journal and the published products before it starts, and keeps it
as `logs/campaign_report-<run id>.json` (and, until its own first write, as the report).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from campaign import journal, products
from campaign.files import real_folder, write_atomically
from campaign.report import DONE, PENDING, REPORT_JSON, STATUSES

DRIVER_DIED = "the campaign driver died while it ran"


def _record(attempt: journal.Attempt, number: int) -> dict[str, Any]:
    start, end = attempt.start, attempt.end or {}
    if attempt.end is None:
        cause: str | None = journal.lost_cause(attempt, DRIVER_DIED)
    else:  # ended by its surroundings (its job ended with the driver's scheduler), or not
        cause = f"{end['cause']} ({DRIVER_DIED})" if end.get("cause") else None
    return {"attempt": number, "attempt_id": attempt.id, "started_utc": start.get("started_utc"),
            "worker": start.get("worker"), "host": start.get("host"),
            "slurm_job_id": start.get("slurm_job_id"), "exit_code": end.get("exit_code"),
            "error": end.get("error") if attempt.end else cause, "cause": cause,
            "lost": cause is not None, "duration_s": end.get("duration_s") or 0.0,
            "timed_out": bool(end.get("timed_out")), "log": end.get("log"), "gpu": None}


def _reconcile_entry(root: Path, entry: dict[str, Any], run_id: str | None) -> int:
    """Bring one acquisition's record up to date; returns the attempts added."""
    known = {h.get("attempt_id") for h in entry.get("history") or []}
    added = [a for a in (journal.read(journal.journal_path(root, entry["product_stem"]), run_id)
                         if run_id else []) if a.id not in known]
    history = entry.setdefault("history", [])
    for attempt in added:
        history.append(_record(attempt, len(history) + 1))
        entry["duration_s"] = round((entry.get("duration_s") or 0.0)
                                    + history[-1]["duration_s"], 3)
    entry["attempts"] = len(history)
    entry["retries"] = max(0, len(history) - 1)
    if history and added:
        entry["exit_code"], entry["error"] = history[-1]["exit_code"], history[-1]["error"]
    if entry.get("status") == PENDING and entry.get("runconfig"):
        state = products.product_state(entry["product_stem"], entry["product_dir"], ())
        if state.status == products.VALID:
            entry.update(status=DONE, error=None, products=state.files,
                         cloud_fraction_percent=state.cloud_fraction_percent,
                         reason=f"published; {DRIVER_DIED} and did not record it")
        elif history and added:
            entry["reason"] = f"not finished: {DRIVER_DIED}"
    return len(added)


def reconcile_previous(root: Path) -> dict[str, Any] | None:
    """Reconcile the report of a driver that died (`finished_utc` still null); what was done,
    or None when there is no such report."""
    path = root / REPORT_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        campaign, entries = data["campaign"], data["acquisitions"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if campaign.get("finished_utc") is not None:
        return None
    run_id = campaign.get("run_id")
    pending_before = sum(1 for e in entries if e.get("status") == PENDING)
    attempts_added = sum(_reconcile_entry(root, e, run_id) for e in entries)
    counts = Counter(e.get("status") for e in entries)
    data["totals"].update({s: counts.get(s, 0) for s in STATUSES})
    data["totals"]["pge_runs"] = sum(e.get("attempts", 0) for e in entries)
    data["totals"]["retries"] = sum(e.get("retries", 0) for e in entries)
    campaign.update(interrupted=True, driver_died=True,
                    reconciled_utc=datetime.now(UTC).isoformat())
    stamp = run_id or str(campaign.get("started_utc", "unknown")).replace(":", "")
    kept = real_folder(root / "logs") / f"campaign_report-{stamp}.json"
    text = json.dumps(data, indent=2, default=str) + "\n"
    write_atomically(kept, text)
    write_atomically(path, text)
    return {"run_id": run_id, "report": str(kept), "attempts_added": attempts_added,
            "published_since_last_write": pending_before - counts.get(PENDING, 0)}
