"""The campaign loop on Dask: check each acquisition's product, run the PGE where needed,
retry by the policy, report. The scheduling is Dask's (`distributed`); this module only keeps
a bounded window of tasks in flight and decides what to submit next.

Per acquisition: a `check` task (is the product there and valid? did this very run already
fail for good?) and, unless it is, `run` tasks (one PGE attempt each). Both kinds go through
one `as_completed` window never larger than the cluster's worker threads, so nothing waits in
worker memory and every worker thread runs one PGE at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shlex
import signal
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from campaign import inventory as inv
from campaign import plan as planning
from campaign import policy, products
from campaign.errors import CampaignExit, EngineError, UsageProblem
from campaign.report import DONE, FAILED, PENDING, SKIPPED, Entry, Progress, Report
from campaign.template import Template, describe, load_template
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
from l2b_mask.errors import ExitCode
from pge import logging as pge_logging
from pge.provenance import package_version

LOCK_NAME = ".campaign.lock"


_HOST_PORT_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")


def check_scheduler_address(address: str) -> None:
    """A malformed `--scheduler` is a usage error (exit 2) found before anything starts;
    distributed would raise a bare ValueError from deep inside `Client`."""
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import backends

    def bad(problem: str) -> UsageProblem:
        return UsageProblem(f"--scheduler {address!r}: {problem} (expected tcp://HOST:PORT, "
                            f"e.g. tcp://10.0.0.5:8786)")

    if not address.strip():
        raise bad("empty address")
    try:
        scheme, location = parse_address(address)
    except ValueError as exc:
        raise bad(str(exc)) from None
    if scheme not in backends:
        raise bad(f"unknown scheme {scheme!r} (known: {', '.join(sorted(backends))})")
    if scheme not in _HOST_PORT_SCHEMES:
        return
    try:
        host, port = parse_host_port(location)
    except ValueError as exc:
        raise bad(str(exc).replace("invalid literal for int() with base 10", "port not a "
                                   "number")) from None
    if not host:
        raise bad("no host")
    if not 0 < port < 65536:
        raise bad(f"port {port} out of range")


def check_dashboard_address(address: str) -> None:
    """`--dashboard [HOST]:PORT` (or a bare host or port): a port that is not a number is a
    usage error rather than a local cluster that fails to start."""
    port = address.rpartition(":")[2] if ":" in address else ""
    if port and not port.isdigit():
        raise UsageProblem(f"--dashboard {address!r}: port {port!r} is not a number "
                           f"(expected [HOST]:PORT, e.g. :8787)")


class Interrupted(BaseException):  # noqa: N818 - mirrors KeyboardInterrupt
    """SIGTERM or SIGINT: stop submitting, stop the running PGEs, write the report."""


@dataclass
class Settings:
    inventory: Path
    template: Path
    output_root: Path
    scheduler: str | None = None  # None: an embedded LocalCluster
    workers: int | None = None
    threads_per_pge: int | None = None
    gpus: list[str] | None = None  # None: detect; []: none (CPU only)
    memory_per_pge: int | None = planning.DEFAULT_MEMORY_PER_PGE
    retries: int = 2
    retry_delay_s: float = 5.0
    limit: int | None = None
    force: bool = False  # remake valid products, rerun remembered failures
    retry_failed: bool = False  # rerun remembered failures (exit 2-5 with unchanged inputs)
    timeout_s: float | None = None
    dashboard: str | None = None
    local_processes: bool = False
    connect_timeout_s: float = 60.0
    log_level: str = "info"
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    command: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    exit_code: int
    report: Report
    interrupted: bool = False


@dataclass
class _State:
    """What the loop knows about one acquisition beyond its report entry."""

    job: Job
    entry: Entry
    retries_used: int = 0


# ---------------------------------------------------------------------------------------------
# Set-up


@contextlib.contextmanager
def _lock(root: Path) -> Any:
    """One campaign per output root: two would remake each other's products."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageProblem(f"{root}: another campaign is running on this output root "
                               f"({path} is locked)") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()} {datetime.now(UTC).isoformat()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _quiet_dask_logs() -> None:
    """Dask's own log records join the campaign's structured log (stdout), at warning and
    above, instead of going to stderr: stderr stays silent unless the campaign fails."""
    for name in ("distributed", "dask", "tornado", "bokeh"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        lg.setLevel(logging.WARNING)


def _jobs(settings: Settings, template: Template, acquisitions: list[inv.Acquisition],
          threads: int | None, env_by_worker: dict[str, dict[str, str]], report: Report,
          ) -> list[_State]:
    root = settings.output_root
    version = template.product_version
    product_keys = tuple(template.config.output.product_keys())
    base_fingerprint = products.fingerprint(template.config, template.ancillary_sha256)
    states = []
    for acq in acquisitions:
        stem = acq.product_stem(version)
        product_dir = root / "products" / acq.acquisition_id(version)
        runconfig_path = root / "runconfigs" / f"{stem}.json"
        paired = not acq.problem
        entry = Entry(acquisition=acq.acquisition_id(version), product_stem=stem,
                      radiance=str(acq.radiance),
                      observation=str(acq.observation) if acq.observation else None,
                      location=str(acq.location) if acq.location else None,
                      glt=str(acq.glt) if acq.glt else None,
                      runconfig=str(runconfig_path) if paired else None,
                      product_dir=str(product_dir))
        report.add(entry)
        if not paired:
            report.set_status(entry, FAILED)
            entry.exit_code = int(ExitCode.INPUT)
            entry.error = f"input product invalid: {acq.radiance}: {acq.problem}"
            continue
        inputs = {k: (Path(v).name if v else None) for k, v in acq.inputs().items()}
        job = Job(stem=stem, product_dir=str(product_dir),
                  runconfig_path=str(runconfig_path),
                  runconfig=template.runconfig(acq, product_dir, threads=threads),
                  product_keys=product_keys, fingerprint={**base_fingerprint, "inputs": inputs},
                  log_dir=str(root / "logs"), failure_record=str(root / "failed" / f"{stem}.json"),
                  env_by_worker=env_by_worker, threads=threads, timeout_s=settings.timeout_s)
        states.append(_State(job, entry))
    return states


def _write_runconfigs(states: list[_State]) -> None:
    """One run configuration per paired acquisition, before anything runs, so the report's
    `runconfig` never names a missing file. An existing one is left alone: it is the record
    of the PGE run that made (or failed) that product, and a PGE run rewrites it anyway."""
    for s in states:
        try:
            write_runconfig(s.job, only_if_absent=True)
        except OSError as exc:
            raise UsageProblem(f"{s.job.runconfig_path}: cannot write the run configuration "
                               f"({exc.strerror or exc}); output root unusable") from None


def _local_only_given(settings: Settings) -> list[str]:
    """Local-cluster settings given with a scheduler, where the remote workers decide."""
    if settings.scheduler is None:
        return []
    given = {"workers": settings.workers is not None, "gpus": settings.gpus is not None,
             "local_processes": settings.local_processes, "dashboard": bool(settings.dashboard)}
    return [name for name, set_ in given.items() if set_]


def _local_plan(settings: Settings, template: Template) -> planning.Plan:
    gpus = planning.detect_gpus() if settings.gpus is None else settings.gpus
    return planning.plan_local(
        template.device, planning.usable_cores(), gpus, memory_bytes=planning.total_memory(),
        workers=settings.workers, threads_per_pge=settings.threads_per_pge or template.threads,
        memory_per_pge=settings.memory_per_pge, hide_gpus=settings.gpus == [])


# ---------------------------------------------------------------------------------------------
# The run


def run_campaign(settings: Settings) -> Outcome:
    """Run a whole campaign; raises TemplateError, InventoryError, UsageProblem or EngineError
    before any acquisition is touched, and reports everything after that."""
    root = settings.output_root.absolute()
    settings.output_root = root
    if settings.scheduler is not None:
        check_scheduler_address(settings.scheduler)
    if settings.dashboard:
        check_dashboard_address(settings.dashboard)
    template = load_template(settings.template)
    acquisitions = inv.load(settings.inventory)
    dupes = inv.duplicates(acquisitions, template.product_version)
    if dupes:
        raise inv.InventoryError(settings.inventory, dupes)
    with _lock(root):
        return _run_locked(settings, template, acquisitions)


def _configure_logging(settings: Settings, root: Path) -> bool:
    tty = bool(getattr(settings.stdout, "isatty", lambda: False)())
    pge_logging.configure(settings.log_level, console=None if tty else settings.stdout,
                          human=False)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    pge_logging.open_file(root / "logs" / f"campaign-{stamp}.log")
    return tty


def _run_locked(settings: Settings, template: Template,
                acquisitions: list[inv.Acquisition]) -> Outcome:
    root = settings.output_root
    tty = _configure_logging(settings, root)
    log = pge_logging.get_logger("l2b-mask-campaign")
    plan = None if settings.scheduler else _local_plan(settings, template)
    threads = plan.threads_per_pge if plan else (settings.threads_per_pge or template.threads)
    engine: dict[str, Any] = (
        {"scheduler": settings.scheduler} if plan is None else
        {"scheduler": "local", "workers": plan.workers, "threads_per_pge": plan.threads_per_pge,
         "mode": plan.mode, "gpus": list(plan.gpus), "processes": settings.local_processes,
         "notes": plan.notes})
    report = Report(root, {
        "command": shlex.join(settings.command) if settings.command else None,
        "started_utc": datetime.now(UTC).isoformat(), "finished_utc": None,
        "software_version": package_version(), "inventory": str(Path(settings.inventory).absolute()),
        "template": describe(template), "output_root": str(root), "engine": engine,
        "retries": settings.retries, "retry_delay_s": settings.retry_delay_s,
        "limit": settings.limit, "force": settings.force, "retry_failed": settings.retry_failed,
        "pge_timeout_s": settings.timeout_s, "interrupted": False})
    states = _jobs(settings, template, acquisitions, threads,
                   plan.env_by_worker() if plan else {}, report)
    log.info("campaign_started", acquisitions=len(report.entries), to_check=len(states),
             unpaired=len(report.entries) - len(states), output_root=str(root), engine=engine)
    ignored = _local_only_given(settings)
    if ignored:  # the command line refuses these (exit 2); a caller of this API is told here
        log.warning("local_options_ignored", options=ignored, scheduler=settings.scheduler)
    for entry in report.entries.values():
        if entry.status == FAILED:
            log.error("acquisition_failed", acquisition=entry.product_stem,
                      exit_code=entry.exit_code, error=entry.error, attempts=0)
    progress = Progress(settings.stdout, len(report.entries)) if tty else None
    interrupted = False
    signals = _Signals()
    try:
        try:
            _write_runconfigs(states)
            client, cluster = _connect(settings, plan, log)
        except (EngineError, UsageProblem) as exc:
            log.error("engine_failed" if isinstance(exc, EngineError) else "usage_error",
                      error=str(exc))
            pge_logging.close_file()
            raise
        report.write()
        try:
            loop = _Loop(settings, client, plan, states, report, log, progress, signals)
            try:
                loop.run()
            except (Interrupted, KeyboardInterrupt):
                interrupted = True
                loop.stop()
        finally:
            with contextlib.suppress(Exception):
                client.close()
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.close()
    except (Interrupted, KeyboardInterrupt):
        interrupted = True
        terminate_running()
    finally:
        signals.restore()
        if progress is not None:
            progress.close()
    for entry in report.entries.values():
        if entry.status == PENDING and not (entry.reason or "").startswith("not run"):
            entry.reason = "not run: campaign interrupted" if interrupted else "not run"
    report.campaign["finished_utc"] = datetime.now(UTC).isoformat()
    report.campaign["interrupted"] = interrupted
    report.write()
    totals = report.totals()
    code = (CampaignExit.INTERRUPTED if interrupted else
            CampaignExit.SOME_FAILED if totals[FAILED] else CampaignExit.SUCCESS)
    log.info("campaign_finished", exit_code=code, totals=totals, report_json=str(report.json_path),
             report_csv=str(report.csv_path))
    pge_logging.close_file()
    return Outcome(code, report, interrupted)


class _Signals:
    """SIGTERM (a batch scheduler's stop) and SIGINT raise `Interrupted` in the main thread,
    but not while the loop is recording a result (`guard`): there the stop waits until the
    books are straight, so no finished attempt is lost. A second signal does not cut the
    stop short."""

    def __init__(self) -> None:
        self.guarded = False
        self.deferred: int | None = None
        self.raised = False
        self.previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[signum] = signal.signal(signum, self.handler)
            except ValueError:  # not the main thread: leave signals alone
                break

    def handler(self, signum: int, frame: object) -> None:
        if self.raised:
            return
        if self.guarded:
            self.deferred = signum
            return
        self.raised = True
        raise Interrupted(signum)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        self.guarded = True
        try:
            yield
        finally:
            self.guarded = False
        if self.deferred is not None and not self.raised:
            self.raised = True
            raise Interrupted(self.deferred)

    def restore(self) -> None:
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)


def _connect(settings: Settings, plan: planning.Plan | None, log: Any) -> tuple[Any, Any]:
    _quiet_dask_logs()
    if plan is None:
        return _connect_remote(settings, log), None
    return _start_local(settings, plan, log)


def _connect_remote(settings: Settings, log: Any) -> Any:
    from distributed import Client

    try:
        client = Client(settings.scheduler, timeout=settings.connect_timeout_s)
    except (OSError, TimeoutError) as exc:
        raise EngineError(f"cannot reach the Dask scheduler at {settings.scheduler} "
                          f"({exc})") from None
    except (ValueError, TypeError) as exc:  # an address that got past check_scheduler_address
        raise UsageProblem(f"--scheduler {settings.scheduler!r}: {exc}") from None
    try:
        client.wait_for_workers(1, timeout=settings.connect_timeout_s)
    except TimeoutError:
        client.close()
        raise EngineError(f"no Dask worker joined {settings.scheduler} within "
                          f"{settings.connect_timeout_s:g} s") from None
    _quiet_dask_logs()
    log.info("cluster_ready", scheduler=settings.scheduler, worker_threads=client.nthreads())
    return client


def _start_local(settings: Settings, plan: planning.Plan, log: Any) -> tuple[Any, Any]:
    """The embedded cluster; one that cannot start (a port taken, a dashboard host that does
    not resolve) is an engine failure (exit 6) with Dask's reason, not a traceback."""
    from distributed import Client, LocalCluster

    cluster = None
    try:
        cluster = LocalCluster(n_workers=plan.workers, threads_per_worker=1,
                               processes=settings.local_processes,
                               dashboard_address=settings.dashboard,
                               silence_logs=logging.WARNING)
        _quiet_dask_logs()
        client = Client(cluster)
    except Exception as exc:  # noqa: BLE001 - any start-up failure ends the campaign cleanly
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()
        where = f" (--dashboard {settings.dashboard})" if settings.dashboard else ""
        raise EngineError(f"cannot start the local Dask cluster{where}: "
                          f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
    log.info("cluster_ready", scheduler="local", address=cluster.scheduler_address,
             workers=plan.workers, threads_per_pge=plan.threads_per_pge, gpus=list(plan.gpus),
             dashboard=client.dashboard_link if settings.dashboard else None)
    return client, cluster


class _Loop:
    """The bounded submission loop over `as_completed`."""

    def __init__(self, settings: Settings, client: Any, plan: planning.Plan | None,
                 states: list[_State], report: Report, log: Any, progress: Progress | None,
                 signals: _Signals) -> None:
        self.settings, self.client, self.plan, self.signals = settings, client, plan, signals
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
        self.slots = plan.workers if plan is not None else 1  # PGEs at once (window())
        self.ac: Any = None
        self.host_threads: dict[str, int] = {}
        # Task keys unique to this campaign run: a scheduler shared with an earlier campaign
        # (whose client died) may still know that one's keys.
        self.token = uuid.uuid4().hex[:8]

    # -- window ------------------------------------------------------------------------------

    def window(self) -> int:
        """Tasks in flight: the cluster's worker threads (a remote cluster may grow or shrink).

        For a remote cluster this also refreshes the worker threads per host, from which each
        PGE's CPU threads are derived (cores of its machine / worker threads on that machine).
        """
        if self.plan is not None:
            return self.plan.workers
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
                attempt = state.entry.attempts + 1
                future = self.client.submit(run_attempt, state.job, attempt, self.token, delay,
                                            self.host_threads,
                                            key=f"pge-{stem}-{attempt}-{self.token}",
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
        if self.plan is None or self.settings.local_processes:  # workers in other processes
            with contextlib.suppress(Exception):
                self.client.run(terminate_running, self.token)
        terminate_running(self.token)  # worker threads of this process (the default)
        with contextlib.suppress(Exception):
            from distributed import wait

            wait(runs, timeout=TERMINATE_GRACE_S + 15)
        for future in runs:
            _, stem = self.in_flight.pop(future)
            state = self.states[stem]
            if future.status != "finished":
                continue
            result = future.result()
            if not result.ran:
                continue
            self.record(state, result)
            if (result.exit_code == 0 and not result.timed_out) or self.valid_now(state):
                self.done(state, result)
            else:
                state.entry.reason = (f"not run: campaign interrupted (attempt {result.attempt} "
                                      f"stopped, exit {result.exit_code})")
        with contextlib.suppress(Exception):
            self.client.cancel(list(self.in_flight) + runs)

    # -- outcomes ----------------------------------------------------------------------------

    def on_check(self, state: _State, result: CheckResult | BaseException) -> None:
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

    def record(self, state: _State, result: AttemptResult) -> None:
        entry = state.entry
        entry.attempts += 1
        entry.duration_s = round(entry.duration_s + result.duration_s, 3)
        if result.ran and result.exit_code is not None:  # a PGE ran (not a lost task)
            self.pge_runs += 1
            self.pge_seconds += result.duration_s
        entry.history.append({
            "attempt": result.attempt, "exit_code": result.exit_code, "error": result.error,
            "duration_s": result.duration_s, "started_utc": result.started_utc,
            "timed_out": result.timed_out, "worker": result.worker, "gpu": result.gpu,
            "log": result.log})
        entry.exit_code, entry.error = result.exit_code, result.error
        if result.log:
            entry.failure_log = result.log

    def valid_now(self, state: _State) -> bool:
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

    def done(self, state: _State, result: AttemptResult) -> None:
        entry = state.entry
        if result.summary is not None:
            entry.cloud_fraction_percent = result.summary.get("cloud_fraction_percent")
            entry.products = dict(result.summary.get("products") or {})
        entry.error = None
        self.finish(state, DONE, exit_code=result.exit_code)  # 0, or how a stopped PGE ended

    def on_run(self, state: _State, result: AttemptResult | BaseException) -> None:
        entry = state.entry
        if isinstance(result, BaseException):
            result = AttemptResult(
                stem=entry.product_stem, attempt=entry.attempts + 1, exit_code=None,
                error=f"task failed: {type(result).__name__}: {result}", summary=None,
                duration_s=0.0, started_utc=datetime.now(UTC).isoformat())
        self.record(state, result)
        action = policy.decide(result.exit_code, result.timed_out, state.retries_used,
                               self.settings.retries)
        silent = result.timed_out or result.exit_code is None or result.exit_code < 0
        if action == policy.Action.DONE or (silent and self.valid_now(state)):
            self.done(state, result)
            return
        self.log.warning("attempt_failed", acquisition=entry.product_stem, attempt=result.attempt,
                         exit_code=result.exit_code, error=result.error, action=str(action),
                         worker=result.worker, log=result.log)
        if action == policy.Action.RETRY:
            state.retries_used += 1
            entry.retries = state.retries_used
            self.to_run.append((entry.product_stem, self.settings.retry_delay_s))
        else:
            self.finish(state, FAILED, exit_code=result.exit_code)

    def finish(self, state: _State, status: str, *, exit_code: int | None,
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
