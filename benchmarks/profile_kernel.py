"""Where the kernel's time goes: builds it with -DSPECTF_PROFILE (stages as separate symbols) and
runs it under `perf record` on random spectra, one thread.

    .venv/bin/python benchmarks/profile_kernel.py [--degree 5] [--pixels 4096] [--variant f32-avx2]

--variant names the kernel variant to profile (l2b_mask/kernels/variants.py; e.g. mixed-bf16pv for
the bfloat16 precision on AVX-512 VNNI/BF16 CPUs).

Needs `perf` (linux-perf) and a C++ compiler; prints perf's per-symbol table for the kernel.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(lib_path: Path, degree: int, pixels: int, variant: str) -> None:
    import torch

    from l2b_mask import kernels
    from l2b_mask.algorithm.model import kernel_weights, load_model
    from l2b_mask.spec import ModelSpec

    model = load_model(ModelSpec.load())
    kernel = kernels.open_library(lib_path, variant)
    g = torch.Generator().manual_seed(0)
    rho = torch.rand(pixels, 268, generator=g) * 0.8
    band = torch.linspace(-1.7, 1.7, 268)
    params = kernels.pack_parameters(kernel_weights(model), band.numpy())
    kernel.forward(params, rho[:32], 1, degree)
    t0 = time.perf_counter()
    kernel.forward(params, rho, 1, degree)
    print(f"{variant}, exp2 degree {degree}: {pixels / (time.perf_counter() - t0):.0f} px/s on one thread")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--degree", type=int, default=5)
    ap.add_argument("--pixels", type=int, default=4096)
    ap.add_argument("--variant", default="f32-avx2", help="the kernel variant (l2b_mask/kernels/variants.py)")
    ap.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.run:
        run(a.run, a.degree, a.pixels, a.variant)
        return 0
    from l2b_mask import kernels

    with tempfile.TemporaryDirectory() as tmp:
        so = Path(tmp) / "spectf_profile.so"
        flags = kernels.VARIANTS[a.variant].compile_flags
        subprocess.run([kernels.compiler() or "c++", *flags, "-g", "-DSPECTF_PROFILE",
                        str(kernels.SOURCE), "-o", str(so)], check=True)
        data = Path(tmp) / "perf.data"
        subprocess.run(["perf", "record", "-q", "-o", str(data), sys.executable, __file__, "--run", str(so),
                        "--degree", str(a.degree), "--pixels", str(a.pixels), "--variant", a.variant],
                       check=True)
        report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--dsos", so.name,
                                 "--percentage", "relative"], capture_output=True, text=True).stdout
        print("\n".join(line for line in report.splitlines() if line.strip() and not line.startswith("#")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
