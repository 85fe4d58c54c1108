"""Sizing the embedded local cluster to the machine: one PGE per GPU, or cores / threads on CPU.

Each Dask worker has one thread and runs one PGE subprocess at a time, so the number of
workers is the number of PGEs in flight and a worker's memory is that of one PGE.

- GPUs present and `processing.device` "auto" or "cuda": one worker per GPU; each PGE is
  pinned to its worker's GPU with CUDA_VISIBLE_DEVICES (it then sees that one device as
  cuda:0) and gets cores / GPUs CPU threads for reading, reflectance and writing.
- `processing.device` "cuda:N": the template pins the device itself; one worker, no pinning.
- Otherwise (CPU): workers = cores // threads per PGE, `processing.threads` set to that many
  threads, and no more workers than the memory holds at `memory_per_pge` each.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

DEFAULT_CPU_THREADS = 2
DEFAULT_MEMORY_PER_PGE = 4 << 30  # bytes: a full EMIT scene (1280 x 1242) on CPU, with margin
MEMORY_USABLE = 0.9


@dataclass(frozen=True)
class Plan:
    workers: int
    threads_per_pge: int
    gpus: tuple[str, ...] = ()  # device ids, assigned to workers round robin; () on CPU
    hide_gpus: bool = False  # CUDA_VISIBLE_DEVICES="" for every PGE (CPU forced by --gpus none)
    notes: list[str] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return "gpu" if self.gpus else "cpu"

    def env_by_worker(self) -> dict[str, dict[str, str]]:
        """Extra environment of the PGEs started by each worker (keyed by worker name)."""
        out = {}
        for i in range(self.workers):
            env = {"OMP_NUM_THREADS": str(self.threads_per_pge),
                   "MKL_NUM_THREADS": str(self.threads_per_pge)}
            if self.gpus:
                env["CUDA_VISIBLE_DEVICES"] = self.gpus[i % len(self.gpus)]
            elif self.hide_gpus:
                env["CUDA_VISIBLE_DEVICES"] = ""
            out[str(i)] = env
        return out


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def total_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def detect_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else nvidia-smi's list.

    torch is not imported here: initialising CUDA in the campaign's own process is not needed
    and would hold memory on every device.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()]


def plan_local(device: str, cores: int, gpus: list[str] | tuple[str, ...], *,
               memory_bytes: int | None = None, workers: int | None = None,
               threads_per_pge: int | None = None,
               memory_per_pge: int | None = DEFAULT_MEMORY_PER_PGE,
               hide_gpus: bool = False) -> Plan:
    """The local cluster for this machine; explicit `workers`/`threads_per_pge` win."""
    notes: list[str] = []
    cores = max(1, cores)
    if gpus and device in ("auto", "cuda"):
        n = workers or len(gpus)
        threads = threads_per_pge or max(1, cores // n)
        notes.append(f"{len(gpus)} GPU(s): one PGE per GPU, pinned with CUDA_VISIBLE_DEVICES")
        return Plan(n, threads, tuple(gpus), False, notes)
    if device.startswith("cuda:"):
        n = workers or 1
        notes.append(f"processing.device {device} pins every PGE to one device: no pinning, "
                     f"{n} worker(s)")
        return Plan(n, threads_per_pge or max(1, cores // n), (), False, notes)
    threads = min(threads_per_pge or DEFAULT_CPU_THREADS, cores)
    n = workers or max(1, cores // threads)
    if workers is None and memory_bytes and memory_per_pge:
        fit = max(1, int(memory_bytes * MEMORY_USABLE // memory_per_pge))
        if fit < n:
            notes.append(f"memory holds {fit} PGE(s) at {memory_per_pge / 2**30:.1f} GiB each")
            n = fit
    notes.append(f"CPU: {n} worker(s) x {threads} thread(s) on {cores} core(s)")
    return Plan(n, threads, (), hide_gpus, notes)
