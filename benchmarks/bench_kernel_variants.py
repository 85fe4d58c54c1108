"""Compare the kernel variants (and versions of the kernel source) on the same realistic pixels:
one thread, CPU time of that thread, best of several interleaved repetitions (robust to other
load on the machine), all in one run.

    .venv/bin/python benchmarks/bench_kernel_variants.py                  # every variant this CPU runs
    .venv/bin/python benchmarks/bench_kernel_variants.py --variants f32-avx2,f32-avx512
    .venv/bin/python benchmarks/bench_kernel_variants.py try.cpp:mixed-i16pv try2.cpp:f32-avx512:-DX=1

Positional arguments are other kernel sources (same C ABI as l2b_mask/kernels/spectf.cpp, in the
same folder if they include its headers), each built with the flags of the variant named after the
colon and any extra flags after further colons. Prints px/CPU-s per exp2 degree (5, the faithful
one, the degree of each precision the variant serves, `kernels.EXP_DEGREE`, and those of
`--degrees`) and the max |dP| against f32-avx2 at degree 5.

    .venv/bin/python benchmarks/bench_kernel_variants.py --variants f32-avx2,mixed-i16-avx2 --degrees 2

This is how the kernel schedules in docs/performance.md were compared; the variants that lost were not kept.
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
from l2b_mask.algorithm.model import kernel_weights, load_model
from l2b_mask.spec import ModelSpec

sys.path.insert(0, str(Path(__file__).parent))
from bench_inference import prepare  # noqa: E402  (the same realistic pixels as that benchmark)


def _extra(spec: str, folder: Path, i: int) -> tuple[str, kernels.Kernel]:
    src, variant, *flags = spec.split(":")
    so = folder / f"extra{i}.so"  # distinct names: dlopen of one path loads it once
    subprocess.run([kernels.compiler() or "c++", *kernels.VARIANTS[variant].compile_flags, *flags, src,
                    "-o", str(so)], check=True)
    return spec, kernels.open_library(so, variant)


def _degrees(precisions: tuple[str, ...], extra: set[int]) -> list[int]:
    """5 (faithful), the exp2 degree of each precision served and `extra`, highest first."""
    return sorted({5} | extra | {kernels.EXP_DEGREE[p] for p in precisions}, reverse=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="*", help="SOURCE.cpp:VARIANT[:extra flags...]")
    ap.add_argument("--variants", help="comma-separated (default: every variant this CPU can run)")
    ap.add_argument("--pixels", type=int, default=800)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--degrees", default="", help="comma-separated exp2 degrees (2-5) to time too")
    a = ap.parse_args(argv)
    names = a.variants.split(",") if a.variants else list(kernels.VARIANTS)
    extra = {int(d) for d in a.degrees.split(",") if d}
    for name in [n for n in names if kernels.variant_reason(n) is not None]:
        print(f"# skipped {name}: not on this CPU ({kernels.variant_reason(name)})")
        names.remove(name)
    model = load_model(ModelSpec.load())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prepare(folder, 16, 256)
        rho = torch.from_numpy(np.load(folder / "rho.npy")[: a.pixels].copy())
        params = kernels.pack_parameters(kernel_weights(model), np.load(folder / "band.npy"))
        runs = [(n, kernels.load_variant(n)) for n in names]
        runs += [_extra(spec, folder, i) for i, spec in enumerate(a.sources)]
        reference = kernels.load_variant("f32-avx2").forward(params, rho, 1, 5).numpy()
        best: dict[tuple[str, int], float] = {}
        err: dict[tuple[str, int], float] = {}
        for _ in range(a.repeats):
            for name, kernel in runs:
                for degree in _degrees(kernel.variant.precisions, extra):
                    t0 = time.thread_time()
                    p = kernel.forward(params, rho, 1, degree).numpy()
                    rate = len(rho) / (time.thread_time() - t0)
                    best[name, degree] = max(best.get((name, degree), 0.0), rate)
                    err[name, degree] = float(np.abs(p - reference).max())
    for (name, degree), rate in best.items():
        serves = [p for p in dict(runs)[name].variant.precisions if kernels.EXP_DEGREE[p] == degree]
        print(f"{name:40s} degree {degree}: {rate:6.0f} px/CPU-s (best of {a.repeats}), "
              f"max |dP| vs f32-avx2 at degree 5 {err[name, degree]:.1e}"
              f"{' (' + ', '.join(serves) + ')' if serves else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
