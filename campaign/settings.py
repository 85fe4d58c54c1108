"""What one campaign run is asked to do: the command line's choices as one value, read by the
engine, the cluster and the loop (its own module so that none of them imports another for it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from campaign.plan import DEFAULT_MEMORY_PER_PGE

CLUSTERS = ("local", "slurm", "pbs", "sge", "lsf")  # "local" unless --scheduler is given
JOBQUEUE_CLUSTERS = CLUSTERS[1:]


@dataclass
class JobQueue:
    """A batch-scheduler cluster (dask-jobqueue): every None falls to dask-jobqueue's own
    configuration (`jobqueue.<cluster>` in Dask's config files), then to its defaults."""

    queue: str | None = None  # Slurm partition, PBS/SGE/LSF queue
    account: str | None = None
    walltime: str | None = None
    max_jobs: int = 1  # adaptive scaling between min_jobs and max_jobs batch jobs
    min_jobs: int = 0
    job_cores: int | None = None  # cores per job; PGEs per job = job_cores // threads per PGE
    job_memory: str | None = None  # memory per job, e.g. "16GiB"


@dataclass
class Settings:
    inventory: Path
    template: Path
    output_root: Path
    scheduler: str | None = None  # None: an embedded LocalCluster (or `cluster`'s jobs)
    cluster: str = "local"  # or a batch scheduler of JOBQUEUE_CLUSTERS
    jobqueue: JobQueue = field(default_factory=JobQueue)
    workers: int | None = None
    threads_per_pge: int | None = None
    gpus: list[str] | None = None  # None: detect; []: none (CPU only)
    memory_per_pge: int | None = DEFAULT_MEMORY_PER_PGE
    retries: int = 2
    retry_delay_s: float = 5.0
    limit: int | None = None
    force: bool = False  # remake valid products, rerun remembered failures
    retry_failed: bool = False  # rerun remembered failures (exit 2-5 with unchanged inputs)
    timeout_s: float | None = None
    pge_command: tuple[str, ...] | None = None  # template with {runconfig}; None: this PGE
    dashboard: str | None = None
    local_processes: bool = False
    connect_timeout_s: float = 60.0
    log_level: str = "info"
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    command: list[str] = field(default_factory=list)

    @property
    def on_jobqueue(self) -> bool:
        return self.scheduler is None and self.cluster in JOBQUEUE_CLUSTERS
