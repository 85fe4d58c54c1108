"""The Dask cluster a campaign runs on: an existing scheduler, batch jobs (`jobqueue`), or an
embedded local cluster sized by the plan; addresses checked before anything starts, Dask's
logs kept off stderr."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from campaign import jobqueue
from campaign import plan as planning
from campaign.errors import EngineError, UsageProblem
from campaign.settings import Settings

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


def _quiet_dask_logs() -> None:
    """Dask's own log records join the campaign's structured log (stdout), at warning and
    above, instead of going to stderr: stderr stays silent unless the campaign fails."""
    for name in ("distributed", "dask", "tornado", "bokeh"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        lg.setLevel(logging.WARNING)


def connect(settings: Settings, plan: planning.Plan | None, shape: jobqueue.JobShape | None,
            log: Any) -> tuple[Any, Any]:
    """A client and the cluster the campaign started (None for an existing scheduler)."""
    _quiet_dask_logs()
    if shape is not None:
        jobqueue.quiet()
        return jobqueue.start(settings.cluster, settings.jobqueue, shape, settings.dashboard,
                              settings.connect_timeout_s, log)
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
