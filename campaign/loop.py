"""The bounded submission loop over Dask's `as_completed`: checks and PGE runs in one window
never larger than the cluster's worker threads, retries by the policy, the report kept as
results arrive."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from campaign import journal, policy, products
from campaign.report import DONE, FAILED, PENDING, SKIPPED, Entry, Progress, Report
from campaign.settings import Settings
from campaign.worker import (
    TERMINATE_GRACE_S,
    AttemptResult,
    CheckResult,
    Job,
    check,
    run_attempt,
    terminate_running,
    write_runconfig,
)
from pge.signals import StopSignals


@dataclass
class State:
    """What the loop knows about one acquisition beyond its report entry."""

    job: Job
    entry: Entry
    submissions: int = 0  # run tasks submitted (Dask may run one several times: the journal)


class Loop:
    """The bounded submission loop over `as_completed`."""

    def __init__(self, settings: Settings, client: Any, capacity: int | None,
                 states: list[State], report: Report, log: Any, progress: Progress | None,
                 signals: StopSignals, run_id: str) -> None:
        """`capacity`: PGEs at once on a cluster the campaign sized (None: ask the scheduler,
        which may grow or shrink); `run_id`: this campaign run's, in task keys (a scheduler
        shared with an earlier campaign whose client died may still know that one's keys)
        and in the attempt journal."""
        self.settings, self.client, self.capacity, self.signals = (settings, client, capacity,
                                                                   signals)
        self.states = {s.job.stem: s for s in states}
        self.report, self.log, self.progress = report, log, progress
        self.to_check: deque[str] = deque(s.job.stem for s in states)
        self.to_run: deque[tuple[str, float]] = deque()  # stem, delay before the attempt
        self.in_flight: dict[Any, tuple[str, str]] = {}  # future -> (kind, stem)
        self.runs_started = 0  # acquisitions given a first PGE run (what --limit counts)
        self.finished = len(report.entries) - len(states)  # unpaired radiances: failed already
        self.t0 = time.monotonic()
        self.pge_runs = 0  # PGE attempts recorded, and their wall time: what the ETA is from
        self.pge_seconds = 0.0
        self.slots = capacity or 1  # PGEs at once (window())
        self.ac: Any = None
        self.host_threads: dict[str, int] = {}
        self.token = run_id

    # -- window ------------------------------------------------------------------------------

    def window(self) -> int:
        """Tasks in flight: the cluster's worker threads (a remote cluster may grow or shrink),
        or the capacity of a cluster the campaign sized (batch jobs: tasks beyond the workers
        there now wait on the scheduler, where adaptive scaling sees them and starts jobs).

        For a remote cluster this also refreshes the worker threads per host, from which each
        PGE's CPU threads are derived (cores of its machine / worker threads on that machine).
        """
        if self.capacity is not None:
            return self.capacity
        with contextlib.suppress(Exception):
            per_worker = self.client.nthreads()
            hosts: dict[str, int] = {}
            for address, n in per_worker.items():
                host = urlparse(address).hostname or address
                hosts[host] = hosts.get(host, 0) + n
            self.host_threads = hosts
            self.slots = max(1, sum(per_worker.values()))
            return self.slots
        return 1

    def fill(self) -> None:
        """Submit retries first, then checks, until the window is full. Runs have priority
        on the scheduler too, so a worker freed by a check picks up a PGE before more checks."""
        limit = self.window()
        while len(self.in_flight) < limit and (self.to_run or self.to_check):
            if self.to_run:
                stem, delay = self.to_run.popleft()
                state = self.states[stem]
                state.submissions += 1
                future = self.client.submit(run_attempt, state.job, state.submissions,
                                            self.token, delay, self.host_threads,
                                            key=f"pge-{stem}-{state.submissions}-{self.token}",
                                            pure=False, priority=1)
                self.in_flight[future] = ("run", stem)
            else:
                stem = self.to_check.popleft()
                future = self.client.submit(check, self.states[stem].job, pure=False,
                                            key=f"check-{stem}-{self.token}")
                self.in_flight[future] = ("check", stem)
            self.ac.add(future)

    def run(self) -> None:
        from distributed import as_completed

        self.ac = as_completed()
        with self.signals.guard():
            self.fill()
        for future in self.ac:  # a stop signal lands here, while waiting
            with self.signals.guard():
                try:
                    result = future.result()
                except Exception as exc:  # the task failed (worker lost, file system error)
                    result = exc
                kind, stem = self.in_flight.pop(future)
                if kind == "check":
                    self.on_check(self.states[stem], result)
                else:
                    self.on_run(self.states[stem], result)
                self.fill()
                self.show()  # the running count changed with fill()
                self.report.write(force=False)

    def stop(self) -> None:
        """Interrupted: submit nothing more, stop the running PGEs (SIGTERM: they remove their
        partial outputs and exit 8; one that has already committed its product finishes), and
        record what those attempts ended with. Acquisitions not finished stay pending."""
        self.log.warning("campaign_interrupted", in_flight=len(self.in_flight))
        self.to_run.clear()
        self.to_check.clear()
        runs = [f for f, (kind, _) in self.in_flight.items() if kind == "run"]
        with contextlib.suppress(Exception):
            self.client.cancel([f for f in self.in_flight if f not in runs])
        with contextlib.suppress(Exception):  # workers in other processes (remote, jobs)
            self.client.run(terminate_running, self.token)
        terminate_running(self.token)  # worker threads of this process (the default)
        with contextlib.suppress(Exception):
            from distributed import wait

            wait(runs, timeout=TERMINATE_GRACE_S + 15)
        for future in runs:
            _, stem = self.in_flight.pop(future)
            state = self.states[stem]
            result = future.result() if future.status == "finished" else None
            last = self.record_attempts(state, result, None,
                                        "the campaign was interrupted while it ran")
            if last is None:
                continue
            if (last["exit_code"] == 0 and not last["timed_out"]) or self.valid_now(state):
                self.done(state, result)
            else:
                state.entry.reason = (f"not run: campaign interrupted (attempt {last['attempt']} "
                                      f"stopped, exit {last['exit_code']})")
        with contextlib.suppress(Exception):
            self.client.cancel(list(self.in_flight) + runs)

    def on_check(self, state: State, result: CheckResult | BaseException) -> None:
        entry = state.entry
        if isinstance(result, BaseException):
            self.finish(state, FAILED, exit_code=None,
                        error=f"product check failed: {type(result).__name__}: {result}")
            return
        product = result.state
        if self.settings.force:
            entry.reason = "remade (--force)"
        elif product.status == products.VALID:
            entry.products, entry.cloud_fraction_percent = product.files, product.cloud_fraction_percent
            entry.reason = "valid product already there"
            self.finish(state, SKIPPED, exit_code=None)
            return
        elif result.failure is not None and not self.settings.retry_failed:
            entry.failure_log = result.failure.get("log")
            entry.reason = (f"not rerun: failed with exit {result.failure.get('exit_code')} on "
                            f"{result.failure.get('started_utc')} with the same run configuration "
                            f"and inputs (--retry-failed to run it again)")
            self.finish(state, FAILED, exit_code=result.failure.get("exit_code"),
                        error=result.failure.get("error"))
            return
        elif product.status == products.INVALID:
            entry.reason = f"remade: {product.reason}"
            self.log.info("product_remade", acquisition=entry.product_stem, reason=entry.reason)
        if self.settings.limit is not None and self.runs_started >= self.settings.limit:
            entry.reason = f"not run: --limit {self.settings.limit} reached"
            self.finish(state, PENDING, exit_code=None)
            return
        self.runs_started += 1
        self.to_run.append((entry.product_stem, 0.0))

    def record_attempts(self, state: State, result: AttemptResult | None,
                        failure: str | None, lost_why: str | None = None
                        ) -> dict[str, Any] | None:
        """Record every attempt of `state` that the journal holds and the report does not yet:
        the one `result` reports, those Dask ran again after their worker died (no end in the
        journal: lost, `lost_why` or `failure` their cause), and those whose result was lost
        with their worker. `failure`: why the task failed, if it did (recorded as an attempt
        of its own when no PGE was started). Returns the last new record, if any."""
        entry = state.entry
        before = len(entry.history)
        known = {h.get("attempt_id") for h in entry.history}
        for attempt in journal.read(Path(state.job.journal), self.token):
            if attempt.id in known:
                continue
            if result is not None and attempt.id == result.attempt_id:
                self._append(entry, _from_result(result))
            else:
                self._append(entry, _from_journal(attempt, lost_why or failure))
        if result is not None and result.ran and result.attempt_id not in {
                h.get("attempt_id") for h in entry.history}:
            self._append(entry, _from_result(result))  # its journal could not be read
        if failure is not None and len(entry.history) == before:  # no PGE was started
            self._append(entry, {"attempt_id": None, "exit_code": None, "error": failure,
                                 "cause": failure, "lost": True, "duration_s": 0.0,
                                 "timed_out": False, "log": None,
                                 "started_utc": datetime.now(UTC).isoformat()})
        return entry.history[-1] if len(entry.history) > before else None

    def _append(self, entry: Entry, record: dict[str, Any]) -> None:
        record["attempt"] = len(entry.history) + 1
        job = record.get("slurm_job_id")
        if record.get("lost") and job and f"Slurm job {job} " not in (record.get("cause") or ""):
            state = journal.slurm_job_state(job)  # what became of the job, as Slurm says
            if state:
                record["cause"] = f"{record.get('cause')} [Slurm job {job} {state}]"
        entry.history.append(record)
        entry.attempts = len(entry.history)
        entry.retries = max(0, entry.attempts - 1)
        entry.duration_s = round(entry.duration_s + (record.get("duration_s") or 0.0), 3)
        if record.get("exit_code") is not None:  # a PGE ran and ended: what the ETA is from
            self.pge_runs += 1
            self.pge_seconds += record.get("duration_s") or 0.0
        entry.exit_code, entry.error = record.get("exit_code"), record.get("error")
        if record.get("log"):
            entry.failure_log = record["log"]

    def valid_now(self, state: State) -> bool:
        """Whether a PGE that ended without saying so (killed, timed out, stopped) completed its
        product anyway: it may be stopped after publishing, and then the product counts."""
        job = state.job
        product = products.product_state(job.stem, job.product_dir, job.product_keys,
                                         job.fingerprint)
        if product.status != products.VALID:
            return False
        state.entry.products = product.files
        state.entry.cloud_fraction_percent = product.cloud_fraction_percent
        state.entry.reason = "the PGE was stopped after it had published a valid product"
        return True

    def done(self, state: State, result: AttemptResult | None) -> None:
        entry = state.entry
        if result is not None and result.summary is not None:
            entry.cloud_fraction_percent = result.summary.get("cloud_fraction_percent")
            entry.products = dict(result.summary.get("products") or {})
        entry.error = None
        self.finish(state, DONE, exit_code=entry.exit_code)  # 0, or how a stopped PGE ended

    def on_run(self, state: State, result: AttemptResult | BaseException) -> None:
        entry = state.entry
        failure = None
        if isinstance(result, BaseException):  # the task failed: its worker(s) died, mostly
            failure = f"task failed: {type(result).__name__}: {' '.join(str(result).split())}"
            result = None
        last = self.record_attempts(state, result, failure) or entry.history[-1]
        code, stopped = last["exit_code"], bool(last["timed_out"] or last.get("lost"))
        action = policy.decide(code, stopped, entry.attempts - 1, self.settings.retries)
        if result is not None and result.refused:
            action = policy.Action.GIVE_UP
        silent = stopped or code is None or code < 0
        if action == policy.Action.DONE or (silent and self.valid_now(state)):
            self.done(state, result)
            return
        self.log.warning("attempt_failed", acquisition=entry.product_stem,
                         attempt=last["attempt"], exit_code=code, error=last["error"],
                         cause=last.get("cause"), action=str(action), worker=last.get("worker"),
                         log=last.get("log"))
        if action == policy.Action.RETRY:
            self.to_run.append((entry.product_stem, self.settings.retry_delay_s))
        else:
            self.finish(state, FAILED, exit_code=code)

    def finish(self, state: State, status: str, *, exit_code: int | None,
               error: str | None = None) -> None:
        """Close an acquisition: its status, a log event with the counts and ETA, the bar."""
        entry = state.entry
        self.report.set_status(entry, status)
        entry.exit_code = exit_code
        if error is not None:
            entry.error = error
        self.finished += 1
        if status == PENDING:  # --limit: its file shows what the next campaign run will run
            with contextlib.suppress(OSError):  # the report says pending either way
                write_runconfig(state.job, only_if_absent=False)
        counts = self.report.counts()
        total = len(self.report.entries)
        eta = self.eta()
        fields = {"acquisition": entry.product_stem, "status": status, "exit_code": exit_code,
                  "attempts": entry.attempts, "duration_s": entry.duration_s,
                  "progress": f"{self.finished}/{total}",
                  "done": counts.get(DONE, 0), "skipped": counts.get(SKIPPED, 0),
                  "failed": counts.get(FAILED, 0), "running": len(self.in_flight),
                  "eta_s": None if eta is None else round(eta, 1)}
        if status == FAILED:
            self.log.error("acquisition_failed", error=entry.error, reason=entry.reason,
                           log=entry.failure_log, **fields)
            if self.progress is not None:
                self.progress.message(f"FAILED {entry.product_stem}: exit {exit_code}: {entry.error}")
        elif status == DONE:
            self.log.info("acquisition_done", cloud_fraction_percent=entry.cloud_fraction_percent,
                          reason=entry.reason, **fields)
        else:
            self.log.info(f"acquisition_{status}", reason=entry.reason, **fields)
        self.show(force=status == FAILED or self.finished == total)

    def show(self, *, force: bool = False) -> None:
        """Update the bar (throttled by `Progress`, which still draws the last update)."""
        if self.progress is None:
            return
        elapsed = time.monotonic() - self.t0
        counts = self.report.counts()
        rate = counts.get(DONE, 0) / elapsed * 60.0 if elapsed > 0 else None
        self.progress.update(self.finished, counts, len(self.in_flight), rate, self.eta(),
                             force=force)

    def remaining_runs(self) -> int:
        """PGE runs still to come: the acquisitions past their check and not finished, and, as
        far as --limit allows, each one not checked yet (it may turn out valid: an upper
        bound, and a resume's valid products are mostly checked first)."""
        checking = sum(1 for kind, _ in self.in_flight.values() if kind == "check")
        unchecked = len(self.to_check) + checking
        decided = len(self.report.entries) - self.finished - unchecked
        if self.settings.limit is not None:
            unchecked = min(unchecked, max(0, self.settings.limit - self.runs_started))
        return decided + unchecked

    def eta(self) -> float | None:
        return eta_seconds(self.remaining_runs(), self.pge_seconds, self.pge_runs, self.slots)


def eta_seconds(remaining_runs: int, pge_seconds: float, pge_runs: int,
                slots: int) -> float | None:
    """Time left: the mean wall time of the PGE runs so far times the runs still to come,
    over the PGEs that run at once. Skipped acquisitions take no PGE and are left out, or a
    resume that skips half the archive in seconds would promise the rest in seconds too.
    None until a PGE has finished (nothing to go by), unless nothing is left to run."""
    if remaining_runs <= 0:
        return 0.0
    if pge_runs <= 0:
        return None
    return remaining_runs * (pge_seconds / pge_runs) / max(1, slots)


def _from_result(result: AttemptResult) -> dict[str, Any]:
    return {"attempt_id": result.attempt_id, "exit_code": result.exit_code,
            "error": result.error, "cause": result.cause, "lost": result.lost,
            "duration_s": result.duration_s, "started_utc": result.started_utc,
            "timed_out": result.timed_out, "worker": result.worker, "gpu": result.gpu,
            "log": result.log, "slurm_job_id": result.slurm_job_id}


def _from_journal(attempt: journal.Attempt, failure: str | None) -> dict[str, Any]:
    """An attempt known only from the journal: ended, but its result lost with its worker;
    or never ended (its worker died with it)."""
    start, end = attempt.start, attempt.end
    record = {"attempt_id": attempt.id, "started_utc": start.get("started_utc"),
              "worker": start.get("worker"), "host": start.get("host"),
              "slurm_job_id": start.get("slurm_job_id"), "gpu": None, "lost": True}
    if end is not None:
        return {**record, "exit_code": end.get("exit_code"), "error": end.get("error"),
                "cause": end.get("cause") or "its result was lost with its worker",
                "duration_s": end.get("duration_s") or 0.0,
                "timed_out": bool(end.get("timed_out")), "log": end.get("log")}
    cause = journal.lost_cause(attempt, failure or "its worker ended while the PGE ran and "
                                                   "Dask ran the task again")
    return {**record, "exit_code": None, "error": cause, "cause": cause, "duration_s": 0.0,
            "timed_out": False, "log": None}
