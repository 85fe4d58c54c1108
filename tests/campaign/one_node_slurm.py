"""A one-node Slurm of its own, for tests and the campaign benchmark: munged, slurmctld and
slurmd on this host, every file under one folder (configuration, munge key and socket, state,
spool, logs), ports picked free, every daemon stopped by its PID at the end.

    with OneNodeSlurm(folder) as slurm:      # SLURM_CONF points at it while inside
        subprocess.run(["sbatch", ...], env=slurm.env)

Needs Debian's `slurm-wlm` and `munge` (scripts/setup.sh installs them as root) and root (the
daemons run as root here; jobs run as the caller). `unavailable()` says why it cannot run.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo")


def unavailable() -> str | None:
    """Why a one-node Slurm cannot start here, or None."""
    missing = [c for c in (*DAEMONS, *COMMANDS) if shutil.which(c) is None
               and not Path("/usr/sbin", c).exists()]
    if missing:
        return (f"Slurm not installed ({', '.join(missing)} missing; scripts/setup.sh installs "
                f"Debian's slurm-wlm and munge as root)")
    if os.geteuid() != 0:
        return "the one-node Slurm's daemons need root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _daemon(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _memory_mb() -> int:
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20)


class OneNodeSlurm:
    """A Slurm cluster of this host alone: one partition with its cores and most of its
    memory, ProctrackType=proctrack/linuxproc, TaskPlugin=task/none, select/cons_tres."""

    PARTITION = "campaign"

    def __init__(self, folder: Path, *, cpus: int | None = None,
                 memory_mb: int | None = None) -> None:
        self.folder = Path(folder)
        self.cpus = cpus or os.cpu_count() or 1
        self.memory_mb = memory_mb or int(_memory_mb() * 0.8)
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.folder / "slurm.conf"
        self.pid_files = {"munged": self.folder / "munge" / "munged.pid",
                          "slurmctld": self.folder / "run" / "slurmctld.pid",
                          "slurmd": self.folder / "run" / "slurmd.pid"}
        self.pids: dict[str, int] = {}

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_files(self) -> None:
        f = self.folder
        for sub in ("munge", "state", "spool", "log", "run"):
            (f / sub).mkdir(parents=True, exist_ok=True)
        (f / "munge").chmod(0o711)
        key = f / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o600)
        self.conf.write_text("\n".join([
            "ClusterName=l2bcampaign", f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={f / 'munge' / 'munge.sock'}",
            f"StateSaveLocation={f / 'state'}", f"SlurmdSpoolDir={f / 'spool'}",
            f"SlurmctldPidFile={self.pid_files['slurmctld']}",
            f"SlurmdPidFile={self.pid_files['slurmd']}",
            f"SlurmctldLogFile={f / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={f / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "MpiDefault=none",
            "ReturnToService=2", "SchedulerType=sched/backfill", "KillWait=5",
            "MinJobAge=600", "InactiveLimit=0", "SlurmctldTimeout=30", "SlurmdTimeout=60",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={self.memory_mb} State=UNKNOWN",
            f"PartitionName={self.PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE "
            f"State=UP", ""]))

    def start(self, timeout_s: float = 30.0) -> OneNodeSlurm:
        """Start the daemons and wait until the node takes jobs; on failure stop what was
        started."""
        try:
            return self._start(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout_s: float) -> OneNodeSlurm:
        self._write_files()
        m = self.folder / "munge"
        subprocess.run([_daemon("munged"), "--force", f"--socket={m / 'munge.sock'}",
                        f"--key-file={m / 'munge.key'}", f"--log-file={m / 'munged.log'}",
                        f"--pid-file={self.pid_files['munged']}",
                        f"--seed-file={m / 'munged.seed'}"], check=True, capture_output=True)
        self._record_pid("munged")
        subprocess.run([_daemon("slurmctld"), "-c", "-f", str(self.conf)], check=True,
                       capture_output=True, env=self.env)
        self._record_pid("slurmctld")
        subprocess.run([_daemon("slurmd"), "-f", str(self.conf)], check=True,
                       capture_output=True, env=self.env)
        self._record_pid("slurmd")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                                 env=self.env).stdout.split()
            if out and all(s in ("idle", "mixed", "allocated") for s in out):
                return self
            time.sleep(0.2)
        raise RuntimeError(f"one-node Slurm not ready in {timeout_s:g} s (logs in "
                           f"{self.folder / 'log'})")

    def _record_pid(self, name: str) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.pids[name] = int(self.pid_files[name].read_text().split()[0])
                return
            time.sleep(0.05)
        raise RuntimeError(f"{name} wrote no PID file ({self.pid_files[name]})")

    def jobs(self) -> list[tuple[str, str]]:
        """(job id, state) of every job in the queue."""
        out = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True,
                             env=self.env).stdout
        return [tuple(line.split()[:2]) for line in out.splitlines() if line.strip()]

    def stop(self) -> None:
        """Cancel every job, then stop each daemon this object started, by its PID."""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["scancel", "-u", pwd.getpwuid(os.geteuid()).pw_name], env=self.env,
                           capture_output=True, timeout=10)
            deadline = time.monotonic() + 10
            while self.jobs() and time.monotonic() < deadline:
                time.sleep(0.2)
        for name in reversed(DAEMONS):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> OneNodeSlurm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:  # a zombie is gone for our purpose (its parent may not reap it at once)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
