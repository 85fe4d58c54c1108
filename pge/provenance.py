"""The provenance record: what went in, what came out, with what software, where, how long.

Checksums are computed from the files as they stand, never passed in, so a record cannot
claim a file that is not there (an empty or stale checksum is the classic failure).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from l2b_mask.spec import sha256_of

PACKAGE = "l2b-mask-pge"


def file_record(path: Path | str) -> dict[str, Any]:
    p = Path(path)
    return {"path": str(p.resolve()), "size_bytes": p.stat().st_size, "sha256": sha256_of(p)}


def package_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def software_versions() -> dict[str, str]:
    versions = {PACKAGE: package_version(), "python": platform.python_version()}
    for dist in ("torch", "numpy", "netCDF4", "GDAL", "spectral", "pydantic", "structlog"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    try:
        from osgeo import gdal

        versions["libgdal"] = gdal.__version__
    except ImportError:
        pass
    return versions


def git_commit() -> str | None:
    """The commit this code was built from: baked into images as L2B_MASK_GIT_COMMIT,
    else read from the source checkout when there is one."""
    if commit := os.environ.get("L2B_MASK_GIT_COMMIT"):
        return commit
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def host_info() -> dict[str, Any]:
    return {"hostname": socket.gethostname(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "python_executable": sys.executable}


def build_record(*, runconfig_path: Path, runconfig_bytes: bytes, run_command: str,
                 inputs: Mapping[str, Path], ancillary: Mapping[str, Path],
                 outputs: Mapping[str, Path], processing: Mapping[str, Any],
                 timings_s: Mapping[str, float], started: str, finished: str) -> dict[str, Any]:
    return {
        "product_generation": {"pge": PACKAGE, "version": package_version(),
                               "git_commit": git_commit(), "run_command": run_command,
                               "started_utc": started, "finished_utc": finished},
        "run_configuration": {"path": str(runconfig_path.resolve()),
                              "sha256": hashlib.sha256(runconfig_bytes).hexdigest(),
                              "text": runconfig_bytes.decode("utf-8-sig")},
        "inputs": {k: file_record(v) for k, v in inputs.items()},
        "ancillary": {k: file_record(v) for k, v in ancillary.items()},
        "outputs": {k: file_record(v) for k, v in outputs.items()},
        "processing": dict(processing),
        "timings_s": {k: round(v, 3) for k, v in timings_s.items()},
        "software": software_versions(),
        "host": host_info(),
    }
