"""One campaign from settings to report: the output root locked, the template and inventory
read, a job per acquisition, the cluster connected (`cluster`), the loop run (`loop`), signals
turned into a clean stop, the report written.

Per acquisition: a `check` task (is the product there and valid? did this very run already
fail for good?) and, unless it is, `run` tasks (one PGE attempt each). Both kinds go through
one `as_completed` window never larger than the cluster's worker threads, so nothing waits in
worker memory and every worker thread runs one PGE at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from campaign import inventory as inv
from campaign import plan as planning
from campaign import products
from campaign.cluster import check_dashboard_address, check_scheduler_address, connect
from campaign.errors import CampaignExit, EngineError, UsageProblem
from campaign.loop import Loop, State
from campaign.report import FAILED, PENDING, Entry, Progress, Report
from campaign.template import Template, describe, load_template
from campaign.worker import (
    Job,
    terminate_running,
    write_runconfig,
)
from l2b_mask.errors import ExitCode
from pge import logging as pge_logging
from pge.errors import InterruptedRun
from pge.provenance import package_version

LOCK_NAME = ".campaign.lock"


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


def _jobs(settings: Settings, template: Template, acquisitions: list[inv.Acquisition],
          threads: int | None, env_by_worker: dict[str, dict[str, str]], report: Report,
          ) -> list[State]:
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
        states.append(State(job, entry))
    return states


def _write_runconfigs(states: list[State]) -> None:
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
    signals = Signals()
    try:
        try:
            _write_runconfigs(states)
            client, cluster = connect(settings, plan, log)
        except (EngineError, UsageProblem) as exc:
            log.error("engine_failed" if isinstance(exc, EngineError) else "usage_error",
                      error=str(exc))
            pge_logging.close_file()
            raise
        report.write()
        try:
            loop = Loop(settings, client, plan, states, report, log, progress, signals)
            try:
                loop.run()
            except (InterruptedRun, KeyboardInterrupt):
                interrupted = True
                loop.stop()
        finally:
            with contextlib.suppress(Exception):
                client.close()
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.close()
    except (InterruptedRun, KeyboardInterrupt):
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


class Signals:
    """SIGTERM (a batch scheduler's stop) and SIGINT raise `InterruptedRun` (the PGE's) in the main thread,
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
        raise InterruptedRun(signum)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        self.guarded = True
        try:
            yield
        finally:
            self.guarded = False
        if self.deferred is not None and not self.raised:
            self.raised = True
            raise InterruptedRun(self.deferred)

    def restore(self) -> None:
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
