"""Compare versions of the kernel source on the same realistic pixels: one thread, CPU time of
that thread, best of several repetitions (robust to other load on the machine).

    .venv/bin/python benchmarks/bench_kernel_variants.py                    # the shipped kernel
    .venv/bin/python benchmarks/bench_kernel_variants.py a.cpp b.cpp:-march=x86-64-v4
    .venv/bin/python benchmarks/bench_kernel_variants.py --mixed a.cpp b.cpp   # the bfloat16 path

Each argument is a kernel source file (same C ABI as l2b_mask/kernels/spectf_avx2.cpp), with
extra compiler flags after colons. Prints px/CPU-s per exp2 degree (5: float32, 3: fastexp)
and the max |dP| against the first variant at degree 5. With --mixed, the sources are built
as the mixed-precision library and its entry point is timed (degrees 5 and 2). This is how the
kernel schedules in docs/performance.md were compared; the variants that lost were not kept.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from l2b_mask import kernels
from l2b_mask.model import load_model
from l2b_mask.spec import ModelSpec

sys.path.insert(0, str(Path(__file__).parent))
from bench_inference import prepare  # noqa: E402  (the same realistic pixels as that benchmark)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="*", default=[str(kernels.SOURCE)])
    ap.add_argument("--pixels", type=int, default=800)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--mixed", action="store_true", help="time the mixed-precision (bfloat16) entry point")
    a = ap.parse_args(argv)
    model = load_model(ModelSpec.load())
    degrees = (5, 2) if a.mixed else (5, 3)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prepare(folder, 16, 256)
        rho = torch.from_numpy(np.load(folder / "rho.npy")[: a.pixels].copy())
        params = kernels.pack_parameters(model, torch.from_numpy(np.load(folder / "band.npy")))
        libs = []
        for i, spec in enumerate(a.variants):
            src, *flags = spec.split(":")
            so = folder / f"variant{i}.so"  # distinct names: dlopen of one path loads it once
            base = kernels.MIXED_FLAGS if a.mixed else kernels.FLAGS
            subprocess.run([kernels.compiler() or "c++", *base, *flags, src, "-o", str(so)],
                           check=True)
            libs.append((spec, kernels._open(so)))
        best: dict[tuple[str, int], float] = {}
        err: dict[tuple[str, int], float] = {}
        reference = None
        for _ in range(a.repeats):
            for name, lib in libs:
                for degree in degrees:
                    t0 = time.thread_time()
                    p = np.asarray(kernels.forward(lib, params, rho, 1, degree, a.mixed))
                    rate = len(rho) / (time.thread_time() - t0)
                    best[name, degree] = max(best.get((name, degree), 0.0), rate)
                    if reference is None:
                        reference = p
                    err[name, degree] = float(np.abs(p - reference).max())
    for name, _ in libs:
        for degree in degrees:
            print(f"{name:50s} degree {degree}: {best[name, degree]:6.0f} px/CPU-s (best of "
                  f"{a.repeats}), max |dP| vs the first at degree 5 {err[name, degree]:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
