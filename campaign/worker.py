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
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from campaign import policy, products
from pge.errors import ExitCode, signal_name

TERMINATE_GRACE_S = 30.0
LINE_MAX = 500
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
    env_by_worker: dict[str, dict[str, str]] = field(default_factory=dict)
    threads: int | None = None  # None: cores of the worker's machine / threads of the worker
    timeout_s: float | None = None


@dataclass(frozen=True)
class CheckResult:
    state: products.ProductState
    failure: dict[str, Any] | None = None  # a remembered failure whose signature still holds


@dataclass(frozen=True)
class AttemptResult:
    stem: str
    attempt: int
    exit_code: int | None  # the PGE's; < 0 killed by that signal; None: the task failed
    error: str | None
    summary: dict[str, Any] | None
    duration_s: float
    started_utc: str
    timed_out: bool = False
    worker: str | None = None
    gpu: str | None = None
    log: str | None = None
    ran: bool = True  # False: the campaign stopped before this attempt started its PGE


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


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


def run_attempt(job: Job, attempt: int, token: str, delay_s: float = 0.0,
                host_threads: dict[str, int] | None = None) -> AttemptResult:
    """Write the run configuration and run the PGE once; never raises for a PGE failure.

    `token`: the campaign run's (see `terminate_running`); `host_threads`: worker threads per
    machine of a cluster the campaign did not size, so that a PGE gets its machine's cores
    divided among the PGEs that run there.
    """
    if delay_s > 0:
        time.sleep(delay_s)
    worker = _worker()
    env, threads = _environment(job, worker, host_threads)
    config = json.loads(json.dumps(job.runconfig))
    if threads is not None and config["processing"].get("threads") is None:
        config["processing"]["threads"] = int(threads)
    runconfig = Path(job.runconfig_path)
    _write_json(runconfig, config)
    Path(job.failure_record).unlink(missing_ok=True)
    command = [sys.executable, "-m", "pge.cli", str(runconfig)]
    started = datetime.now(UTC).isoformat()
    t0 = time.perf_counter()
    timed_out = False
    with _running_lock:
        if token in _stopped:
            return AttemptResult(stem=job.stem, attempt=attempt, exit_code=ExitCode.INTERRUPTED,
                                 error="not started: campaign interrupted", summary=None,
                                 duration_s=0.0, started_utc=started, ran=False)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=runconfig.parent,
                                stdin=subprocess.DEVNULL, preexec_fn=_child_setup())
        _running[proc] = token
    try:
        try:
            stdout, stderr = proc.communicate(timeout=job.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            stdout, stderr = _stop(proc)
    finally:
        with _running_lock:
            _running.pop(proc, None)
    duration = round(time.perf_counter() - t0, 3)
    code: int | None = proc.returncode
    summary = _summary(stdout)
    stderr_line = _last_line(stderr)
    error = (summary or {}).get("error") or stderr_line
    if timed_out:
        error = f"timed out after {job.timeout_s:g} s and stopped" + (f" ({error})" if error else "")
    elif code is not None and code < 0:
        error = error or f"killed by {signal_name(-code)}"
    if code == 0 and not timed_out:  # "done" must mean that the next campaign run skips it
        state = products.product_state(job.stem, job.product_dir, job.product_keys,
                                       job.fingerprint)
        if state.status != products.VALID:
            code, error = 7, f"product does not validate after a successful run: {state.reason}"
    log = None
    if code != 0 or timed_out:
        log = str(Path(job.log_dir) / f"{job.stem}.attempt{attempt}.log")
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        Path(log).write_text(f"# command: {' '.join(command)}\n# exit: {proc.returncode}\n"
                             f"# started: {started}\n# duration_s: {duration}\n"
                             f"--- stdout\n{stdout}--- stderr\n{stderr}")
    if code in policy.REMEMBERED and not timed_out:
        _write_json(Path(job.failure_record), {
            "exit_code": code, "error": error, "started_utc": started, "log": log,
            "signature": _signature(job)})
    visible = env.get("CUDA_VISIBLE_DEVICES")
    return AttemptResult(
        stem=job.stem, attempt=attempt, exit_code=code, error=error,
        summary=summary, duration_s=duration, started_utc=started, timed_out=timed_out,
        worker=str(worker.name) if worker is not None else None,
        gpu=visible if visible else None, log=log)


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
