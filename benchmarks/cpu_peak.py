"""The machine's own vector and matrix arithmetic peak, one core: what the kernel's efficiency is
measured against (`docs/performance.md`). Compiles a tiny C++ loop of 12 independent accumulator
chains per instruction and prints instructions and multiply-adds per second: float32 FMA (256
bits; 512 with AVX-512F), the AVX2 int16 multiply-add `vpmaddwd` (alone: the 16-bit limit of an
AVX2 CPU; and with the `vpaddd` that accumulates), and where the CPU has them the int16 (AVX-VNNI
256-bit, AVX-512 VNNI) and bfloat16
(AVX512-BF16) dot products the mixed-precision kernels use, and the AMX tile products (AMX-BF16
`tdpbf16ps`, AMX-INT8 `tdpbssd`: 4 independent 16 x 16 accumulator tiles; Linux grants the tile
state after `arch_prctl(ARCH_REQ_XCOMP_PERM)`). A CPU without AMX prints "no AMX" and why.

    .venv/bin/python benchmarks/cpu_peak.py

Needs a C++ compiler. Not the kernel's code: a ceiling for it. Timed in the thread's CPU time, so
that other processes sharing the core do not lower the figure. Each chain starts from a different
value: identical chains let the compiler merge them into one (an earlier version of this script
measured one latency-bound chain and reported it as 10).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = r"""
#include <cstdio>
#include <ctime>
#include <immintrin.h>
// this thread's CPU time: time the scheduler gave other processes on a shared machine is not counted
static double cpu_s() {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}
#define CHAINS(S) S(0) S(1) S(2) S(3) S(4) S(5) S(6) S(7) S(8) S(9) S(10) S(11)
#define STEP(i) a##i = OP(a##i);
#define KEEP(i) sink = a##i;
// instructions per second of OP over 12 chains of type V, chain i starting from INIT(i)
#define RATE(name, V, INIT, n)                                                          \
    static double name() {                                                              \
        CHAINS(DECL)                                                                    \
        double t0 = cpu_s();                                                            \
        for (long i = 0; i < n; ++i) { CHAINS(STEP) }                                   \
        double s = cpu_s() - t0;                                                        \
        volatile V sink; CHAINS(KEEP) (void)sink;                                       \
        return 12.0 * n / s;                                                            \
    }
#define DECL(i) __m256 a##i = _mm256_set1_ps(1.0f + 0.01f * i);
#define OP(x) _mm256_fmadd_ps(x, _mm256_set1_ps(0.5f), _mm256_set1_ps(0.5f))
RATE(fma256, __m256, 0, 200000000L)
#undef OP
#undef DECL
// AVX2 int16, in assembly (a chain through vpmaddwd's own input, as above, runs at a fraction of its
// rate on Zen 3): 8 vpmaddwd of the same two registers into 8 others, no dependency between them;
// then the same with a vpaddd that accumulates each product (what the mixed-i16-avx2 kernel issues).
#define MADD(d) "vpmaddwd %%ymm14, %%ymm15, %%ymm" #d "\n"
#define MADD_ADD(d, a) MADD(d) "vpaddd %%ymm" #d ", %%ymm" #a ", %%ymm" #a "\n"
static double madd256() {
    const long n = 100000000L;
    double t0 = cpu_s();
    for (long i = 0; i < n; ++i)
        asm volatile(MADD(0) MADD(1) MADD(2) MADD(3) MADD(4) MADD(5) MADD(6) MADD(7)
                     ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7");
    return 8.0 * n / (cpu_s() - t0);
}
static double madd_add256() {
    const long n = 100000000L;
    double t0 = cpu_s();
    for (long i = 0; i < n; ++i)
        asm volatile(MADD_ADD(0, 8) MADD_ADD(1, 9) MADD_ADD(2, 10) MADD_ADD(3, 11)
                     MADD_ADD(4, 12) MADD_ADD(5, 13) MADD_ADD(6, 8) MADD_ADD(7, 9)
                     ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
                         "xmm10", "xmm11", "xmm12", "xmm13");
    return 8.0 * n / (cpu_s() - t0);
}
#ifdef WITH_AVX_VNNI
#define DECL(i) __m256i a##i = _mm256_set1_epi32(1 + i);
#define OP(x) _mm256_dpwssd_avx_epi32(x, _mm256_set1_epi32(0x00010001), _mm256_set1_epi32(0x00010001))
RATE(vnni256, __m256i, 0, 200000000L)
#undef OP
#undef DECL
#endif
#ifdef WITH_AVX512
#define DECL(i) __m512 a##i = _mm512_set1_ps(1.0f + 0.01f * i);
#define OP(x) _mm512_fmadd_ps(x, _mm512_set1_ps(0.5f), _mm512_set1_ps(0.5f))
RATE(fma512, __m512, 0, 100000000L)
#undef OP
#ifdef WITH_BF16
#define HALF (__m512bh)_mm512_set1_epi32(0x3f003f00)
#define OP(x) _mm512_dpbf16_ps(x, HALF, HALF)
RATE(bf16_512, __m512, 0, 100000000L)
#undef OP
#endif
#undef DECL
#ifdef WITH_VNNI
#define DECL(i) __m512i a##i = _mm512_set1_epi32(1 + i);
#define OP(x) _mm512_dpwssd_epi32(x, _mm512_set1_epi32(0x00010001), _mm512_set1_epi32(0x00010001))
RATE(i16_512, __m512i, 0, 100000000L)
#undef OP
#undef DECL
#endif
#endif
#ifdef WITH_AMX
#include <cstdint>
#include <sys/syscall.h>
#include <unistd.h>
struct TileConfig {
    uint8_t palette = 1, start_row = 0, reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
};
// tile instructions per second: tiles 0-3 accumulate (16 x 16 x 32-bit), 4-5 hold A, 6-7 hold B
// (16 rows x 64 bytes); DOT(c, a, b) is _tile_dpbf16ps or _tile_dpbssd.
#define AMX_RATE(name, DOT, n)                                                           \
    static double name() {                                                              \
        alignas(64) static uint8_t in[16 * 64];                                          \
        alignas(64) static int32_t acc[16 * 16];                                         \
        for (int i = 0; i < 16 * 64; ++i) in[i] = 0x3c;                                  \
        TileConfig cfg;                                                                  \
        for (int t = 0; t < 8; ++t) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }             \
        _tile_loadconfig(&cfg);                                                          \
        _tile_loadd(4, in, 64); _tile_loadd(5, in, 64);                                  \
        _tile_loadd(6, in, 64); _tile_loadd(7, in, 64);                                  \
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);                      \
        double t0 = cpu_s();                                                             \
        for (long i = 0; i < n; ++i) { DOT(0, 4, 6); DOT(1, 4, 7); DOT(2, 5, 6); DOT(3, 5, 7); } \
        double s = cpu_s() - t0;                                                        \
        _tile_stored(0, acc, 64); _tile_stored(1, acc, 64);                              \
        _tile_stored(2, acc, 64); _tile_stored(3, acc, 64);                              \
        _tile_release();                                                                 \
        volatile int32_t sink = acc[0]; (void)sink;                                      \
        return 4.0 * n / s;                                                              \
    }
AMX_RATE(amx_bf16, _tile_dpbf16ps, 20000000L)
AMX_RATE(amx_int8, _tile_dpbssd, 20000000L)
static bool amx_permitted() {  // ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18)
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}
#endif
int main() {
    const double f = fma256();
    auto row = [f](const char* what, double rate, int macs) {
        std::printf("%-40s %6.2f G instr/s  %6.1f GMAC/s  %.2fx float32 FMA (256-bit)\n", what, rate / 1e9,
                    macs * rate / 1e9, macs * rate / (8 * f));
    };
    row("float32 FMA, 256-bit (8 MAC)", f, 8);
    row("int16 vpmaddwd, 256-bit (16 MAC)", madd256(), 16);
    row("int16 vpmaddwd + vpaddd, 256-bit (16 MAC)", madd_add256(), 16);
#ifdef WITH_AVX_VNNI
    row("int16 dot vpdpwssd (AVX-VNNI), 256-bit (16 MAC)", vnni256(), 16);
#endif
#ifdef WITH_AVX512
    row("float32 FMA, 512-bit (16 MAC)", fma512(), 16);
#endif
#ifdef WITH_VNNI
    row("int16 dot vpdpwssd, 512-bit (32 MAC)", i16_512(), 32);
#endif
#ifdef WITH_BF16
    row("bfloat16 dot vdpbf16ps, 512-bit (32 MAC)", bf16_512(), 32);
#endif
#ifdef WITH_AMX
    if (!amx_permitted()) {
        std::printf("AMX: the kernel refused the tile state (arch_prctl ARCH_REQ_XCOMP_PERM failed)\n");
        return 0;
    }
    row("AMX bf16 tile tdpbf16ps 16x16x32 (8192 MAC)", amx_bf16(), 8192);
    row("AMX int8 tile tdpbssd 16x16x64 (16384 MAC)", amx_int8(), 16384);
#endif
}
"""


def compile_flags(flags: set[str]) -> tuple[list[str], list[str]]:
    """The compiler flags for what this CPU has, and a line for each thing it lacks."""
    cflags, missing = ["-O2", "-mavx2", "-mfma"], []
    if "avx_vnni" in flags:
        cflags += ["-mavxvnni", "-DWITH_AVX_VNNI"]
    else:
        missing.append("no AVX-VNNI (avx_vnni): 256-bit vpdpwssd not measured")
    if "avx512f" in flags:
        cflags += ["-mavx512f", "-mavx512vl", "-DWITH_AVX512"]
        if "avx512_vnni" in flags:
            cflags += ["-mavx512vnni", "-DWITH_VNNI"]
        if "avx512_bf16" in flags:
            cflags += ["-mavx512bf16", "-DWITH_BF16"]
    else:
        missing.append("no AVX-512: 512-bit FMA and 16-bit dot products not measured")
    if {"amx_tile", "amx_bf16", "amx_int8"} <= flags:
        cflags += ["-mamx-tile", "-mamx-bf16", "-mamx-int8", "-DWITH_AMX"]
    else:
        missing.append("no AMX on this CPU (no amx_tile/amx_bf16/amx_int8 in /proc/cpuinfo): "
                       "tile rate not measured")
    return cflags, missing


def _run() -> tuple[str, list[str]]:
    """The measuring program's output, and the lines for what this CPU lacks."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    cflags, missing = compile_flags(flags)
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "peak.cpp", Path(tmp) / "peak"
        src.write_text(SOURCE)
        subprocess.run(["c++", *cflags, str(src), "-o", str(exe)], check=True)
        out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return out, missing


def peaks() -> dict[str, float]:
    """GMAC/s of one core: "float32" (256-bit FMA; 512-bit where faster) and "int16" (the best
    16-bit multiply-add: vpmaddwd, AVX-VNNI or AVX-512 VNNI/BF16): the limits the benchmarks
    state the kernels' fractions of."""
    out, _ = _run()
    rates: dict[str, float] = {}
    for line in out.splitlines():
        name, _, rest = line.partition("  ")
        if "GMAC/s" not in rest or name.startswith("AMX"):
            continue
        gmac = float(rest.split("G instr/s")[1].split("GMAC/s")[0])
        kind = "float32" if name.startswith("float32") else "int16"
        rates[kind] = max(rates.get(kind, 0.0), gmac)
    return rates


def main() -> int:
    out, missing = _run()
    print(out, end="")
    for line in missing:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
