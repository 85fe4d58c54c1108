"""The tasks that run on Dask workers: check a product, and run one PGE attempt.

A PGE attempt is a subprocess, `[sys.executable, "-m", "pge.cli", RUNCONFIG]`, so a crash,
a hang or the OOM killer takes out that PGE only; the worker thread just waits on it, which
keeps a worker's memory that of one PGE. The last stdout line (the PGE's JSON summary) and
the stderr line are captured; a failed attempt's whole output is kept under `<root>/logs/`,
because the PGE removes its scratch (and with it its log) when it fails. On Linux the PGE
gets SIGTERM when its worker goes (parent-death signal, `_die_with_parent`), so a SIGKILLed
campaign does not leave PGEs running on.

A failure that would repeat (exit 2-5: bad inputs or run configuration, `policy.REMEMBERED`)
is remembered in `<root>/failed/<stem>.json` with a signature of what the PGE was given (its
run configuration, and the size and modification time of every input): the next campaign run
reports it again without starting the PGE, unless that signature changed (an input was fixed).

Everything here runs where the worker runs, so paths must be the same on the client and the
workers (a shared file system), and this package must be installed there.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from campaign import journal, policy, products
from campaign.files import real_folder, write_atomically
from pge.errors import ExitCode, signal_name

TERMINATE_GRACE_S = 30.0
LINE_MAX = 500
RUNCONFIG_FIELD = "{runconfig}"  # in a --pge-command template
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _load_prctl() -> Any:
    """libc's prctl, resolved once here: the child must not load libraries between fork and
    exec. None off Linux (no parent-death signal there)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()

# The PGEs this process runs, by campaign token, and the campaigns told to stop: a stop only
# touches its own campaign's PGEs (a remote cluster may serve several), and an attempt still
# waiting out its retry delay when its campaign stops never starts its PGE.
_running: dict[subprocess.Popen[str], str] = {}
_stopped: set[str] = set()
_running_lock = threading.Lock()


@dataclass(frozen=True)
class Job:
    """One acquisition, as the workers need it (plain data: it travels to remote workers)."""

    stem: str
    product_dir: str
    runconfig_path: str
    runconfig: dict[str, Any]  # complete; processing.threads is set per attempt when None
    product_keys: tuple[str, ...]  # the files it writes (Output.product_keys())
    fingerprint: dict[str, Any]  # what a valid product must have been made with
    log_dir: str
    failure_record: str  # where a failure that would repeat is remembered
    journal: str  # its attempt journal (`campaign.journal`)
    env_by_worker: dict[str, dict[str, str]] = field(default_factory=dict)
    threads: int | None = None  # None: cores of the worker's machine / threads of the worker
    timeout_s: float | None = None
    retries: int = 2  # the campaign's --retries: bounds Dask's own reruns of a lost attempt
    pge_command: tuple[str, ...] | None = None  # a template with {runconfig}; None: this PGE


@dataclass(frozen=True)
class CheckResult:
    state: products.ProductState
    failure: dict[str, Any] | None = None  # a remembered failure whose signature still holds


@dataclass(frozen=True)
class AttemptResult:
    stem: str
    attempt: int  # its number among the acquisition's attempts of this campaign run
    exit_code: int | None  # the PGE's; < 0 killed by that signal; None: the task failed
    error: str | None
    summary: dict[str, Any] | None
    duration_s: float
    started_utc: str
    timed_out: bool = False
    worker: str | None = None
    gpu: str | None = None
    log: str | None = None
    ran: bool = True  # False: no PGE was started (campaign stopped, or `refused`)
    attempt_id: str | None = None  # its id in the attempt journal
    cause: str | None = None  # why it ended other than by the PGE's own decision
    lost: bool = False  # ended by its surroundings (job cancelled, worker gone): retried once
    refused: bool = False  # a rerun by Dask after lost attempts beyond the retry policy
    slurm_job_id: str | None = None  # the batch job its worker ran in


def _worker() -> Any:
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def check(job: Job) -> CheckResult:
    """Is the product valid, and if not, did the same PGE run already fail for good?"""
    state = products.product_state(job.stem, job.product_dir, job.product_keys, job.fingerprint)
    failure = None
    if state.status != products.VALID:
        try:
            record = json.loads(Path(job.failure_record).read_text())
            if record.get("signature") == _signature(job):
                failure = record
        except (OSError, ValueError, AttributeError):
            pass
    return CheckResult(state, failure)


def _signature(job: Job) -> dict[str, Any]:
    """What a PGE run of `job` is given: its run configuration (but threads, which change no
    outcome, and the output folder, so that a moved output root keeps its record) and each
    input's size and modification time (a fixed input changes them)."""
    config = json.loads(json.dumps(job.runconfig))
    config["processing"].pop("threads", None)
    config["output"].pop("directory", None)
    stats: dict[str, list[int] | None] = {}
    for key, path in config["input_files"].items():
        try:
            st = Path(path).stat()
            stats[key] = [st.st_size, st.st_mtime_ns]
        except OSError:
            stats[key] = None
    return {"runconfig": config, "inputs": stats}


def _environment(job: Job, worker: Any, host_threads: dict[str, int] | None = None
                 ) -> tuple[dict[str, str], int | None]:
    env = dict(os.environ)
    extra = job.env_by_worker.get(str(worker.name)) if worker is not None else None
    threads = job.threads
    if extra:
        env.update(extra)
    else:  # a worker of a cluster we did not size: size the PGE to the worker's share
        if threads is None:
            try:
                cores = len(os.sched_getaffinity(0))
            except (AttributeError, OSError):
                cores = os.cpu_count() or 1
            sharing = 1
            if worker is not None:  # every worker thread on this machine runs a PGE
                sharing = (host_threads or {}).get(worker.ip) or worker.state.nthreads
            threads = max(1, cores // max(1, sharing))
        env.setdefault("OMP_NUM_THREADS", str(threads))
        visible = env.get("CUDA_VISIBLE_DEVICES", "")
        if "," in visible:  # dask-cuda rotates the list so that the worker's own GPU is first
            env["CUDA_VISIBLE_DEVICES"] = visible.split(",")[0].strip()
    # The PGE must import the same code as this worker, installed or not.
    root = str(Path(products.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env, threads


def _write_json(path: Path, data: dict[str, Any]) -> None:
    real_folder(path.parent)
    write_atomically(path, json.dumps(data, indent=2) + "\n")


def write_runconfig(job: Job, *, only_if_absent: bool) -> bool:
    """Write `job`'s run configuration as planned (threads as the campaign knows them) unless
    the file is there (`only_if_absent`) or already says the same; whether it was written."""
    path = Path(job.runconfig_path)
    if path.exists():
        if only_if_absent:
            return False
        try:
            if json.loads(path.read_text()) == job.runconfig:
                return False
        except (OSError, ValueError):
            pass
    _write_json(path, job.runconfig)
    return True


def _last_line(text: str) -> str | None:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    line = lines[-1]
    return line if len(line) <= LINE_MAX else line[: LINE_MAX - 3] + "..."


def _summary(stdout: str) -> dict[str, Any] | None:
    """The PGE's JSON summary: its last stdout line (None when it died before writing it)."""
    lines = stdout.rstrip().splitlines()
    if not lines:
        return None
    try:
        data = json.loads(lines[-1])
    except ValueError:
        return None
    return data if isinstance(data, dict) and "exit_code" in data else None


def pge_command(template: tuple[str, ...] | None, runconfig: Path) -> list[str]:
    """The command of one attempt: the template with `{runconfig}` filled in (a container,
    `podman run ... l2b-mask-pge {runconfig}`), or this environment's PGE."""
    if template is None:
        return [sys.executable, "-m", "pge.cli", str(runconfig)]
    return [part.replace(RUNCONFIG_FIELD, str(runconfig)) for part in template]


def _rerun_refused(job: Job, prior: list[journal.Attempt], submission: int) -> str | None:
    """Dask reruns a task whose worker died, unasked and as often as its own limit allows:
    the retry policy is applied here too, from the journal, so that a worker killed at every
    PGE start does not start the PGE more often than the policy says. None: go ahead."""
    if not any(a.start.get("submission") == submission for a in prior):
        return None  # the driver submitted this attempt: it has decided already
    last = prior[-1]
    code = None if last.end is None else last.end.get("exit_code")
    timed_out = bool(last.end and last.end.get("timed_out"))
    lost = last.end is None or bool(last.end.get("cause"))
    allowed = policy.retries_allowed(None if lost else code, timed_out, job.retries)
    if len(prior) <= allowed:
        return None
    return (f"not started: {len(prior)} attempt(s) already lost or failed and the retry policy "
            f"allows {allowed} retr{'y' if allowed == 1 else 'ies'}")


def _prepare(job: Job, worker: Any, host_threads: dict[str, int] | None
             ) -> tuple[dict[str, str], Path]:
    """The PGE's environment, and its run configuration written with the threads it gets."""
    env, threads = _environment(job, worker, host_threads)
    config = json.loads(json.dumps(job.runconfig))
    if threads is not None and config["processing"].get("threads") is None:
        config["processing"]["threads"] = int(threads)
    runconfig = Path(job.runconfig_path)
    _write_json(runconfig, config)
    Path(job.failure_record).unlink(missing_ok=True)
    return env, runconfig


@dataclass
class _Started:
    """One PGE subprocess under way."""

    proc: subprocess.Popen[str]
    command: list[str]
    attempt: int
    attempt_id: str
    started_utc: str
    t0: float


def _start(job: Job, run_id: str, submission: int, attempt: int, command: list[str],
           env: dict[str, str], worker: Any) -> _Started | None:
    """Journal the start and start the PGE; None when the campaign is stopping."""
    attempt_id = journal.new_attempt_id()
    started = datetime.now(UTC).isoformat()
    with _running_lock:
        if run_id in _stopped:
            return None
        journal.write_start(Path(job.journal), attempt_id, run_id, submission, started,
                            str(worker.name) if worker is not None else None, command)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=Path(job.runconfig_path).parent,
                                stdin=subprocess.DEVNULL, preexec_fn=_child_setup())
        _running[proc] = run_id
    return _Started(proc, command, attempt, attempt_id, started, time.perf_counter())


def _wait(started: _Started, timeout_s: float | None) -> tuple[str, str, bool]:
    """stdout, stderr, and whether the PGE was stopped for running past `timeout_s`."""
    proc, timed_out = started.proc, False
    try:
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            stdout, stderr = _stop(proc)
    finally:
        with _running_lock:
            _running.pop(proc, None)
    return stdout, stderr, timed_out


def _outcome(job: Job, run_id: str, code: int | None, stdout: str, stderr: str,
             timed_out: bool) -> tuple[int | None, str | None, str | None]:
    """Exit code, error and cause of an ended attempt. A PGE that exits 8 (SIGTERM) without
    its campaign stopping it was stopped by its surroundings: its Slurm job cancelled or out
    of walltime, its worker gone (the parent-death signal): a `cause`, and the policy treats
    it as lost rather than as an operator's stop."""
    summary = _summary(stdout)
    error = (summary or {}).get("error") or _last_line(stderr)
    cause = None
    job_id = os.environ.get("SLURM_JOB_ID")
    if timed_out:
        error = f"timed out after {job.timeout_s:g} s and stopped" + (f" ({error})" if error else "")
    elif code is not None and code < 0:
        error = error or f"killed by {signal_name(-code)}"
        cause = f"PGE killed by {signal_name(-code)}" + (f" (in Slurm job {job_id})"
                                                          if job_id else "")
    elif code == ExitCode.INTERRUPTED and run_id not in _stopped:
        cause = ("PGE stopped by SIGTERM from outside the campaign (" +
                 (f"Slurm job {job_id} ending: scancel, walltime or node drain)" if job_id else
                  "its worker ending, or an operator)"))
    if code == 0 and not timed_out:  # "done" must mean that the next campaign run skips it
        state = products.product_state(job.stem, job.product_dir, job.product_keys,
                                       job.fingerprint)
        if state.status != products.VALID:
            code, error = 7, f"product does not validate after a successful run: {state.reason}"
    return code, error, cause


def _keep_log(job: Job, started: _Started, stdout: str, stderr: str, duration: float) -> str:
    """A failed attempt's whole output (the PGE removed its scratch, and its log with it)."""
    log = Path(job.log_dir) / f"{job.stem}.attempt{started.attempt}.log"
    real_folder(log.parent)
    write_atomically(log, f"# command: {shlex.join(started.command)}\n"
                          f"# exit: {started.proc.returncode}\n# started: {started.started_utc}\n"
                          f"# duration_s: {duration}\n--- stdout\n{stdout}--- stderr\n{stderr}")
    return str(log)


def run_attempt(job: Job, submission: int, run_id: str, delay_s: float = 0.0,
                host_threads: dict[str, int] | None = None) -> AttemptResult:
    """Write the run configuration and run the PGE once, journaled; never raises for a PGE
    failure. `submission`: the driver's count of attempts it submitted for this acquisition
    (Dask may run one submission several times); `run_id`: the campaign run's (see
    `terminate_running`); `host_threads`: worker threads per machine of a cluster the
    campaign did not size, so that a PGE gets its machine's cores divided among its PGEs."""
    if delay_s > 0:
        time.sleep(delay_s)
    worker = _worker()
    prior = journal.read(Path(job.journal), run_id)
    refused = _rerun_refused(job, prior, submission)
    if refused is not None:
        return AttemptResult(stem=job.stem, attempt=len(prior), exit_code=None, error=refused,
                             summary=None, duration_s=0.0, ran=False, refused=True,
                             started_utc=datetime.now(UTC).isoformat())
    env, runconfig = _prepare(job, worker, host_threads)
    started = _start(job, run_id, submission, len(prior) + 1,
                     pge_command(job.pge_command, runconfig), env, worker)
    if started is None:
        return AttemptResult(stem=job.stem, attempt=len(prior) + 1,
                             exit_code=ExitCode.INTERRUPTED, summary=None, duration_s=0.0,
                             error="not started: campaign interrupted", ran=False,
                             started_utc=datetime.now(UTC).isoformat())
    stdout, stderr, timed_out = _wait(started, job.timeout_s)
    duration = round(time.perf_counter() - started.t0, 3)
    code, error, cause = _outcome(job, run_id, started.proc.returncode, stdout, stderr,
                                  timed_out)
    log = _keep_log(job, started, stdout, stderr, duration) if code != 0 or timed_out else None
    if code in policy.REMEMBERED and not timed_out:
        _write_json(Path(job.failure_record), {
            "exit_code": code, "error": error, "started_utc": started.started_utc, "log": log,
            "signature": _signature(job)})
    journal.write_end(Path(job.journal), started.attempt_id, code, error, duration, timed_out,
                      cause, log)
    visible = env.get("CUDA_VISIBLE_DEVICES")
    return AttemptResult(
        stem=job.stem, attempt=started.attempt, exit_code=code, error=error,
        summary=_summary(stdout), duration_s=duration, started_utc=started.started_utc,
        timed_out=timed_out, worker=str(worker.name) if worker is not None else None,
        gpu=visible if visible else None, log=log, attempt_id=started.attempt_id, cause=cause,
        lost=cause is not None, slurm_job_id=os.environ.get("SLURM_JOB_ID"))


def _die_with_parent(parent: int) -> None:
    """In the PGE's process, between fork and exec: SIGTERM when the thread that started it
    ends, so that a SIGKILLed campaign (or worker) does not leave its PGEs running on; the PGE
    then cleans up as on any SIGTERM. That thread is the worker thread blocked in
    `communicate` for the PGE's whole life, so it only ends with its process. A parent gone
    before the prctl took effect would not signal: then exit at once."""
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(int(ExitCode.INTERRUPTED))


def _child_setup() -> Any:
    """The `preexec_fn` of a PGE subprocess (None where there is no prctl)."""
    return None if _PRCTL is None else functools.partial(_die_with_parent, os.getpid())


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM (the PGE cleans up and exits 8), then SIGKILL after the grace period."""
    proc.terminate()
    try:
        return proc.communicate(timeout=TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()



def terminate_running(token: str | None = None, grace_s: float = TERMINATE_GRACE_S) -> int:
    """Stop campaign `token` (None: every campaign) in this process: no attempt of it starts
    a PGE any more, and its running PGEs get SIGTERM (they remove their partial outputs and
    exit 8), SIGKILL if still there after `grace_s`. Returns how many were running."""
    with _running_lock:
        if token is not None:
            _stopped.add(token)
        procs = [p for p, t in _running.items() if token in (None, t) and p.poll() is None]
    for p in procs:
        p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
    return len(procs)


atexit.register(terminate_running)
