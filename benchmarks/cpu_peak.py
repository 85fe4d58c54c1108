"""The machine's own vector arithmetic peak, one core: what the kernel's efficiency is measured
against (`docs/performance.md`). Compiles a tiny C++ loop of 12 independent accumulator chains
per instruction and prints instructions and multiply-adds per second: float32 FMA (256 and 512
bits) and, where the CPU has them (AVX-512 VNNI / BF16), the int16 and bfloat16 dot products
the mixed-precision kernel uses.

    .venv/bin/python benchmarks/cpu_peak.py

Needs a C++ compiler. Not the kernel's code: a ceiling for it. Each chain starts from a different
value: identical chains let the compiler merge them into one (an earlier version of this script
measured one latency-bound chain and reported it as 10).
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
#define CHAINS(S) S(0) S(1) S(2) S(3) S(4) S(5) S(6) S(7) S(8) S(9) S(10) S(11)
#define STEP(i) a##i = OP(a##i);
#define KEEP(i) sink = a##i;
// instructions per second of OP over 12 chains of type V, chain i starting from INIT(i)
#define RATE(name, V, INIT, n)                                                          \
    static double name() {                                                              \
        CHAINS(DECL)                                                                    \
        auto t0 = std::chrono::steady_clock::now();                                     \
        for (long i = 0; i < n; ++i) { CHAINS(STEP) }                                   \
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); \
        volatile V sink; CHAINS(KEEP) (void)sink;                                       \
        return 12.0 * n / s;                                                            \
    }
#define DECL(i) __m256 a##i = _mm256_set1_ps(1.0f + 0.01f * i);
#define OP(x) _mm256_fmadd_ps(x, _mm256_set1_ps(0.5f), _mm256_set1_ps(0.5f))
RATE(fma256, __m256, 0, 200000000L)
#undef OP
#undef DECL
#ifdef WITH_AVX512
#define DECL(i) __m512 a##i = _mm512_set1_ps(1.0f + 0.01f * i);
#define OP(x) _mm512_fmadd_ps(x, _mm512_set1_ps(0.5f), _mm512_set1_ps(0.5f))
RATE(fma512, __m512, 0, 100000000L)
#undef OP
#define OP(x) _mm512_dpbf16_ps(x, (__m512bh)_mm512_set1_epi32(0x3f003f00), (__m512bh)_mm512_set1_epi32(0x3f003f00))
RATE(bf16_512, __m512, 0, 100000000L)
#undef OP
#undef DECL
#define DECL(i) __m512i a##i = _mm512_set1_epi32(1 + i);
#define OP(x) _mm512_dpwssd_epi32(x, _mm512_set1_epi32(0x00010001), _mm512_set1_epi32(0x00010001))
RATE(i16_512, __m512i, 0, 100000000L)
#undef OP
#undef DECL
#endif
int main() {
    const double f = fma256();
    auto row = [f](const char* what, double rate, int macs) {
        std::printf("%-40s %6.2f G instr/s  %6.1f GMAC/s  %.2fx float32 FMA (256-bit)\n", what, rate / 1e9,
                    macs * rate / 1e9, macs * rate / (8 * f));
    };
    row("float32 FMA, 256-bit (8 MAC)", f, 8);
#ifdef WITH_AVX512
    row("float32 FMA, 512-bit (16 MAC)", fma512(), 16);
    row("int16 dot vpdpwssd, 512-bit (32 MAC)", i16_512(), 32);
    row("bfloat16 dot vdpbf16ps, 512-bit (32 MAC)", bf16_512(), 32);
#endif
}
"""


def main() -> int:
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    cflags = ["-O2", "-mavx2", "-mfma"]
    if {"avx512f", "avx512_vnni", "avx512_bf16"} <= flags:
        cflags += ["-mavx512f", "-mavx512vl", "-mavx512vnni", "-mavx512bf16", "-DWITH_AVX512"]
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "peak.cpp", Path(tmp) / "peak"
        src.write_text(SOURCE)
        subprocess.run(["c++", *cflags, str(src), "-o", str(exe)], check=True)
        return subprocess.run([str(exe)], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
