"""The machine's own vector arithmetic peak, one core: what the kernel's efficiency is measured
against (`docs/performance.md`). Compiles a tiny C++ loop of 10 independent accumulator chains
and prints instructions per second for float32 FMA (8 lanes) and, where the CPU has
AVX512-BF16, the bfloat16 dot product (`vdpbf16ps`, 8 lanes x 2 products).

    .venv/bin/python benchmarks/cpu_peak.py

Needs a C++ compiler. Not the kernel's code: a ceiling for it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = r"""
#include <chrono>
#include <cstdio>
#include <immintrin.h>
// Ten named accumulators (an array would be kept in memory and time the store forwarding).
#define TEN(S) S(0) S(1) S(2) S(3) S(4) S(5) S(6) S(7) S(8) S(9)
#define DECL(i) __m256 a##i = _mm256_set1_ps(1.0f);
#define STEP(i) a##i = OP(a##i);
#define SUM(i) + ((float*)&a##i)[0]
#define RATE(name, n)                                                                   \
    static double name() {                                                              \
        TEN(DECL)                                                                       \
        auto t0 = std::chrono::steady_clock::now();                                     \
        for (long i = 0; i < n; ++i) { TEN(STEP) }                                      \
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); \
        volatile float sink = 0.0f TEN(SUM);                                            \
        (void)sink;                                                                     \
        return 10.0 * n / s;                                                            \
    }
static const __m256 M = _mm256_set1_ps(0.5f);
#define OP(x) _mm256_fmadd_ps(x, M, M)
RATE(fma_rate, 300000000L)
#undef OP
#ifdef WITH_BF16
static const __m256bh P = (__m256bh)_mm256_set1_epi32(0x3f003f00);
#define OP(x) _mm256_dpbf16_ps(x, P, P)
RATE(dot_rate, 300000000L)
#endif
int main() {
    double fma = fma_rate();
    std::printf("float32 FMA (ymm, 8 MAC): %.2f G instr/s = %.1f GMAC/s per core\n",
                fma / 1e9, 8 * fma / 1e9);
#ifdef WITH_BF16
    double dp = dot_rate();
    std::printf("bf16 dot (ymm, 16 MAC): %.2f G instr/s = %.1f GMAC/s per core (%.2fx float32)\n",
                dp / 1e9, 16 * dp / 1e9, 16 * dp / (8 * fma));
#endif
}
"""


def main() -> int:
    cpuinfo = Path("/proc/cpuinfo")
    bf16 = cpuinfo.exists() and "avx512_bf16" in cpuinfo.read_text()
    flags = ["-O2", "-mavx2", "-mfma"]
    if bf16:
        flags += ["-mavx512f", "-mavx512vl", "-mavx512bf16", "-DWITH_BF16"]
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "peak.cpp", Path(tmp) / "peak"
        src.write_text(SOURCE)
        subprocess.run(["c++", *flags, str(src), "-o", str(exe)], check=True)
        return subprocess.run([str(exe)], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
