"""A campaign's Dask workers as batch jobs (dask-jobqueue): Slurm, and PBS, SGE, LSF alike.

Each batch job runs one Dask worker whose threads are the PGEs it runs at once: the job asks
for `job_cores` CPUs and the worker gets `job_cores // threads_per_pge` threads, each PGE
`threads_per_pge` of the cores. Everything else (account, walltime, job directives, the
environment set-up lines, the network interface, local and log folders, the Python on the
compute nodes) comes from dask-jobqueue's own configuration, `jobqueue.<scheduler>` in Dask's
configuration files (`~/.config/dask/jobqueue.yaml`, or `DASK_CONFIG`), which the command
line's few options override. The number of jobs scales with the work between `min_jobs` and
`max_jobs` (Dask's adaptive scaling). Only Slurm is tested (a real one-node Slurm, in
`tests/campaign/test_slurm.py`); PBS, SGE and LSF take the same path untested.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from campaign.errors import EngineError, UsageProblem
from campaign.settings import JobQueue

CLASSES = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster",
           "lsf": "LSFCluster"}


@dataclass(frozen=True)
class JobShape:
    """What one batch job holds."""

    cores: int  # CPUs the job asks for
    memory: str
    pges: int  # worker threads: PGEs at once in the job
    threads_per_pge: int


def job_shape(kind: str, options: JobQueue, threads_per_pge: int) -> JobShape:
    """Cores and memory from the options, else from `jobqueue.<kind>` (cores, memory)."""
    import dask
    import dask_jobqueue  # noqa: F401 - its defaults (jobqueue.*) join Dask's config

    config = dask.config.get(f"jobqueue.{kind}", default={}) or {}
    cores = options.job_cores or config.get("job-cpu") or config.get("cores")
    memory = options.job_memory or config.get("memory")
    missing = [flag for flag, value in (("--job-cores", cores), ("--job-memory", memory))
               if not value]
    if missing:
        raise UsageProblem(f"--cluster {kind}: {' and '.join(missing)} not given and not in "
                           f"Dask's configuration (jobqueue.{kind}.cores / .memory)")
    threads = min(threads_per_pge, int(cores))
    return JobShape(int(cores), str(memory), max(1, int(cores) // threads), threads)


def _cluster_kwargs(kind: str, options: JobQueue, shape: JobShape,
                    dashboard: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"cores": shape.pges, "processes": 1, "memory": shape.memory,
                              "queue": options.queue, "account": options.account,
                              "walltime": options.walltime}
    if kind == "slurm":
        kwargs["job_cpu"] = shape.cores
    elif kind == "lsf":
        kwargs["ncpus"] = shape.cores
    elif kind == "pbs":
        from dask.utils import parse_bytes
        from dask_jobqueue.pbs import pbs_format_bytes_ceil

        kwargs["resource_spec"] = (f"select=1:ncpus={shape.cores}:mem="
                                   f"{pbs_format_bytes_ceil(parse_bytes(shape.memory))}")
    if dashboard:
        kwargs["scheduler_options"] = {"dashboard_address": dashboard}
    return {k: v for k, v in kwargs.items() if v is not None}


def start(kind: str, options: JobQueue, shape: JobShape, dashboard: str | None,
          connect_timeout_s: float, log: Any) -> tuple[Any, Any]:
    """The client and the cluster; the first job's worker is waited for (up to
    `connect_timeout_s`, 0: not at all) so that a batch system that refuses the jobs ends the
    campaign (exit 6) instead of leaving it waiting."""
    import dask_jobqueue
    from distributed import Client

    cluster = None
    try:
        cluster = getattr(dask_jobqueue, CLASSES[kind])(
            **_cluster_kwargs(kind, options, shape, dashboard))
        client = Client(cluster)
    except Exception as exc:  # noqa: BLE001 - any start-up failure ends the campaign cleanly
        _close(cluster)
        raise EngineError(f"cannot start the {kind} cluster: "
                          f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
    log.info("cluster_ready", scheduler=kind, address=cluster.scheduler_address,
             job_cores=shape.cores, job_memory=shape.memory, pges_per_job=shape.pges,
             threads_per_pge=shape.threads_per_pge, min_jobs=options.min_jobs,
             max_jobs=options.max_jobs, dashboard=client.dashboard_link if dashboard else None,
             job_script=cluster.job_script())
    if connect_timeout_s > 0:
        cluster.scale(jobs=max(1, options.min_jobs))
        try:
            client.wait_for_workers(1, timeout=connect_timeout_s)
        except TimeoutError:
            client.close()
            _close(cluster)
            raise EngineError(f"no {kind} job started a Dask worker within "
                              f"{connect_timeout_s:g} s (see the queue, e.g. squeue, and the "
                              f"job logs; --connect-timeout to wait longer)") from None
    cluster.adapt(minimum_jobs=options.min_jobs, maximum_jobs=options.max_jobs)
    return client, cluster


def _close(cluster: Any) -> None:
    if cluster is not None:
        with contextlib.suppress(Exception):
            cluster.close()


def quiet() -> None:
    """dask-jobqueue's records join the campaign's log at warning and above."""
    lg = logging.getLogger("dask_jobqueue")
    lg.handlers.clear()
    lg.propagate = True
    lg.setLevel(logging.WARNING)
