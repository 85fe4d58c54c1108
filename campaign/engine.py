"""One campaign from settings to report: the output root locked, the template and inventory
read, a job per acquisition, the cluster connected (`cluster`), the loop run (`loop`), signals
turned into a clean stop (`pge.signals`), the report written.

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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from campaign import inventory as inv
from campaign import jobqueue, products, recovery
from campaign import plan as planning
from campaign.cluster import check_dashboard_address, check_scheduler_address, connect
from campaign.errors import CampaignExit, EngineError, UsageProblem
from campaign.files import open_lock, real_folder, refuse_links
from campaign.html_report import PAGE_HTML
from campaign.journal import FOLDER as JOURNAL_FOLDER
from campaign.journal import journal_path
from campaign.loop import Loop, State
from campaign.report import FAILED, PENDING, REPORT_CSV, REPORT_JSON, Entry, Progress, Report
from campaign.settings import JobQueue, Settings
from campaign.stac import COLLECTION_JSON
from campaign.template import Template, describe, load_template
from campaign.worker import RUNCONFIG_FIELD, Job, terminate_running, write_runconfig
from l2b_mask.errors import ExitCode
from pge import logging as pge_logging
from pge.errors import InterruptedRun
from pge.provenance import package_version
from pge.signals import StopSignals

__all__ = ["JobQueue", "Outcome", "Settings", "run_campaign"]

LOCK_NAME = ".campaign.lock"
FOLDERS = ("runconfigs", "products", "failed", "logs", JOURNAL_FOLDER)  # made by the campaign
FILES = (LOCK_NAME, REPORT_JSON, REPORT_CSV, PAGE_HTML, COLLECTION_JSON)


@dataclass
class Outcome:
    exit_code: int
    report: Report
    interrupted: bool = False


@dataclass
class Engine:
    """How this campaign run gets its PGEs run: a local plan, batch jobs, or a scheduler."""

    plan: planning.Plan | None = None  # the embedded local cluster
    shape: jobqueue.JobShape | None = None  # batch jobs (dask-jobqueue)
    threads: int | None = None  # processing.threads of each PGE (None: the worker decides)
    capacity: int | None = None  # PGEs at once, when the campaign sizes the cluster
    description: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Set-up


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    """One campaign per output root: two would remake each other's products. The lock file
    and the campaign's folders are never followed through links (`campaign.files`)."""
    root.mkdir(parents=True, exist_ok=True)
    refuse_links(root, FILES + FOLDERS)
    path = root / LOCK_NAME
    fd = open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageProblem(f"{root}: another campaign is running on this output root "
                               f"({path} is locked)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {datetime.now(UTC).isoformat()}\n".encode(), 0)
        for name in FOLDERS:
            real_folder(root / name)
        yield
    finally:
        os.close(fd)  # releases the flock


def _jobs(settings: Settings, template: Template, acquisitions: list[inv.Acquisition],
          engine: Engine, env_by_worker: dict[str, dict[str, str]], report: Report,
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
                  runconfig=template.runconfig(acq, product_dir, threads=engine.threads),
                  product_keys=product_keys, fingerprint={**base_fingerprint, "inputs": inputs},
                  log_dir=str(root / "logs"), failure_record=str(root / "failed" / f"{stem}.json"),
                  journal=str(journal_path(root, stem)), env_by_worker=env_by_worker,
                  threads=engine.threads, timeout_s=settings.timeout_s, retries=settings.retries,
                  pge_command=settings.pge_command)
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


def _engine(settings: Settings, template: Template) -> Engine:
    """Size the PGEs: a local plan, the batch jobs' shape, or the remote workers' say."""
    if settings.on_jobqueue:
        threads = settings.threads_per_pge or template.threads or planning.DEFAULT_CPU_THREADS
        shape = jobqueue.job_shape(settings.cluster, settings.jobqueue, threads)
        jq = settings.jobqueue
        return Engine(shape=shape, threads=shape.threads_per_pge,
                      capacity=shape.pges * jq.max_jobs, description={
                          "scheduler": settings.cluster, "queue": jq.queue, "account": jq.account,
                          "walltime": jq.walltime, "min_jobs": jq.min_jobs,
                          "max_jobs": jq.max_jobs, "job_cores": shape.cores,
                          "job_memory": shape.memory, "pges_per_job": shape.pges,
                          "threads_per_pge": shape.threads_per_pge})
    if settings.scheduler is not None:
        return Engine(threads=settings.threads_per_pge or template.threads,
                      description={"scheduler": settings.scheduler})
    plan = _local_plan(settings, template)
    return Engine(plan=plan, threads=plan.threads_per_pge, capacity=plan.workers, description={
        "scheduler": "local", "workers": plan.workers, "threads_per_pge": plan.threads_per_pge,
        "mode": plan.mode, "gpus": list(plan.gpus), "processes": settings.local_processes,
        "notes": plan.notes})


def check_settings(settings: Settings) -> None:
    """What the command line also refuses (exit 2), for callers of `run_campaign`."""
    if settings.scheduler is not None:
        check_scheduler_address(settings.scheduler)
        if settings.on_jobqueue or settings.cluster != "local":
            raise UsageProblem(f"--cluster {settings.cluster} and --scheduler: choose one")
    if settings.dashboard:
        check_dashboard_address(settings.dashboard)
    command = settings.pge_command
    if command is not None and not any(RUNCONFIG_FIELD in part for part in command):
        raise UsageProblem(f"--pge-command {shlex.join(command)!r}: no {RUNCONFIG_FIELD} in it "
                           f"(where the run configuration's path goes)")


# ---------------------------------------------------------------------------------------------
# The run


def run_campaign(settings: Settings) -> Outcome:
    """Run a whole campaign; raises TemplateError, InventoryError, UsageProblem or EngineError
    before any acquisition is touched, and reports everything after that."""
    root = settings.output_root.absolute()
    settings.output_root = root
    check_settings(settings)
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


def _new_report(settings: Settings, template: Template, engine: Engine, run_id: str,
                previous: dict[str, Any] | None) -> Report:
    root = settings.output_root
    return Report(root, {
        "run_id": run_id,
        "command": shlex.join(settings.command) if settings.command else None,
        "started_utc": datetime.now(UTC).isoformat(), "finished_utc": None,
        "software_version": package_version(), "inventory": str(Path(settings.inventory).absolute()),
        "template": describe(template), "output_root": str(root),
        "engine": engine.description,
        "pge_command": shlex.join(settings.pge_command) if settings.pge_command else None,
        "retries": settings.retries, "retry_delay_s": settings.retry_delay_s,
        "limit": settings.limit, "force": settings.force, "retry_failed": settings.retry_failed,
        "pge_timeout_s": settings.timeout_s, "interrupted": False, "previous_run": previous})


def _run_locked(settings: Settings, template: Template,
                acquisitions: list[inv.Acquisition]) -> Outcome:
    root = settings.output_root
    tty = _configure_logging(settings, root)
    log = pge_logging.get_logger("l2b-mask-campaign")
    try:
        previous = recovery.reconcile_previous(root)
        if previous is not None:
            log.warning("previous_campaign_reconciled", **previous)
        engine = _engine(settings, template)
    except UsageProblem as exc:
        log.error("usage_error", error=str(exc))
        pge_logging.close_file()
        raise
    run_id = uuid.uuid4().hex[:12]
    report = _new_report(settings, template, engine, run_id, previous)
    states = _jobs(settings, template, acquisitions, engine,
                   engine.plan.env_by_worker() if engine.plan else {}, report)
    _log_start(settings, report, states, engine, log)
    progress = Progress(settings.stdout, len(report.entries)) if tty else None
    interrupted = _run(settings, engine, states, report, log, progress, run_id)
    return _finish(report, log, interrupted)


def _log_start(settings: Settings, report: Report, states: list[State], engine: Engine,
               log: Any) -> None:
    log.info("campaign_started", acquisitions=len(report.entries), to_check=len(states),
             unpaired=len(report.entries) - len(states), output_root=str(settings.output_root),
             engine=engine.description, run_id=report.campaign["run_id"])
    ignored = _local_only_given(settings)
    if ignored:  # the command line refuses these (exit 2); a caller of this API is told here
        log.warning("local_options_ignored", options=ignored, scheduler=settings.scheduler)
    for entry in report.entries.values():
        if entry.status == FAILED:
            log.error("acquisition_failed", acquisition=entry.product_stem,
                      exit_code=entry.exit_code, error=entry.error, attempts=0)


def _run(settings: Settings, engine: Engine, states: list[State], report: Report, log: Any,
         progress: Progress | None, run_id: str) -> bool:
    """Connect, run the loop, close the cluster; whether the campaign was interrupted."""
    interrupted = False
    signals = StopSignals().install()
    try:
        try:
            _write_runconfigs(states)
            client, cluster = connect(settings, engine.plan, engine.shape, log)
        except (EngineError, UsageProblem) as exc:
            log.error("engine_failed" if isinstance(exc, EngineError) else "usage_error",
                      error=str(exc))
            pge_logging.close_file()
            raise
        report.write()
        try:
            loop = Loop(settings, client, engine.capacity, states, report, log, progress,
                        signals, run_id)
            try:
                loop.run()
            except (InterruptedRun, KeyboardInterrupt):
                interrupted = True
                loop.stop()
        finally:
            _close(client, cluster)
    except (InterruptedRun, KeyboardInterrupt):
        interrupted = True
        terminate_running()
    finally:
        signals.restore()
        if progress is not None:
            progress.close()
    return interrupted


def _close(client: Any, cluster: Any) -> None:
    with contextlib.suppress(Exception):
        client.close()
    if cluster is not None:
        with contextlib.suppress(Exception):
            cluster.close()


def _finish(report: Report, log: Any, interrupted: bool) -> Outcome:
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
