#!/usr/bin/env bash
# One command that sets up a fresh Debian machine (Python 3.11) for development and tests:
# system GDAL, Slurm and munge (the campaign's --cluster slurm tests start a one-node Slurm
# of their own), shellcheck, a virtual environment in .venv with every dependency, the package
# itself, and the ancillary files copied (after their sha256 is checked) into ancillary/.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

if ! command -v gdal-config >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libgdal-dev gdal-bin >/dev/null
  else
    echo "setup: gdal-config not found; install Debian's libgdal-dev and gdal-bin (as root)" >&2
    exit 1
  fi
fi

# Slurm (slurmctld, slurmd, sbatch ...) and munge for tests/campaign/test_slurm.py, which
# starts and stops its own one-node cluster (no system service is enabled or started here).
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
  else
    echo "setup: Slurm not installed and not root (or not Debian): the --cluster slurm tests will be skipped" >&2
  fi
fi

# The shell-script lint of tests/pge/test_docker.py needs Debian's shellcheck.
if ! command -v shellcheck >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
  else
    echo "setup: shellcheck not installed and not root (or not Debian): the shell lint tests will be skipped" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip "setuptools>=77" wheel
# torch first and pinned: an unpinned torch pulls the CUDA build and gigabytes of NVIDIA
# packages; on these machines 2.13.0 resolves to the local CPU wheel.
pip install -q "torch==${TORCH_VERSION:-2.13.0}"
pip install -q numpy
# GDAL's bindings must be built against the system library, with numpy already present and
# no build isolation, or gdal_array is silently left out.
pip install -q --no-build-isolation "gdal[numpy]==$(gdal-config --version)"
pip install -q -e ".[dev]"
# The SpecTf kernel variants (C++, built once into the venv's cache) and the calibration that
# times them on this CPU and caches the fastest per precision; the torch path is the fallback.
"$VENV/bin/python" -m l2b_mask.kernels.build || echo "setup: kernel not built; the torch path will be used"
"$VENV/bin/python" -c "from osgeo import gdal_array, gdal; import torch, netCDF4, spectral, structlog, pydantic"

"$VENV/bin/python" -m l2b_mask.ancillary_install "${ANCILLARY_SOURCE:-../shared/ancillary}" ancillary
echo "setup: done ($VENV)"
