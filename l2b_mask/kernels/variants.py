"""The kernel variants: one build of the kernel source each, the precisions it runs, the compiler
flags it is built with and the CPU flags (as /proc/cpuinfo names them) it needs.

Which variant runs a precision is measured, not guessed (`l2b_mask.kernels.calibrate`): the fastest
faithful kernel is a property of the machine (Zen 4 runs 512-bit FMAs at the 256-bit rate and
`vdpbf16ps` as fast as `vpdpwssd`; Sapphire Rapids has twice the FMA width and a slow `vdpbf16ps`).
A variant whose CPU flags are missing is never a candidate.

On CPUs without AVX-512 the 16-bit build is `mixed-i16-avx2` (the arithmetic of `mixed-i16pv` with
256-bit registers and AVX2's `vpmaddwd`), or `mixed-i16-avxvnni` where the CPU has AVX-VNNI (the
same source, the fused `vpdpwssd`).

Not written, for want of a machine to measure them on: AMX tiles (AMX-BF16 / AMX-INT8, Sapphire
Rapids and later) for the projections and feed-forward, which also need Linux's
`arch_prctl(ARCH_REQ_XCOMP_PERM)` permission for the tile state (docs/performance.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

#: every precision with a kernel, and the exp2 polynomial degree of its softmax: 5 is faithful
#: (1.5e-7 relative), 3 the fast one. `bfloat16` takes 4 (2.6e-6 relative): 1/23 of the int16
#: probabilities' rounding step at their largest (1/16383) and 1/1500 of bfloat16's, so the
#: builds' documented roundings stay their only approximations that matter; 4% faster than 5 in
#: `mixed-i16-avx2` (degree 2 would gain as much for +4.6e-3 in P: docs/performance.md)
EXP_DEGREE = {"float32": 5, "float32-fastexp": 3, "bfloat16": 4}

#: the float32 builds also serve `bfloat16`: they are inside its bound (more faithful than it needs),
#: so that the calibration can pick them where no 16-bit build is faster, and `bfloat16` is never
#: slower than `float32` nor left to the torch path on a CPU that runs a kernel
_FLOAT32 = ("float32", "float32-fastexp", "bfloat16")
_BASE = ("-O3", "-std=c++17", "-mavx2", "-mfma", "-fno-math-errno", "-fPIC", "-shared", "-pthread")
_AVX512 = ("-mavx512f", "-mavx512vl", "-mavx512bw")
_CPU_AVX2 = ("avx2", "fma")
_CPU_AVX512 = (*_CPU_AVX2, "avx512f", "avx512vl", "avx512bw")


@dataclass(frozen=True)
class Variant:
    """One build of the kernel source."""

    name: str                        # also what the build's spectf_build() returns
    precisions: tuple[str, ...]      # the precisions it computes
    compile_flags: tuple[str, ...]
    cpu_flags: tuple[str, ...]       # /proc/cpuinfo flags its instructions need
    description: str                 # for logs and the provenance record

    def missing(self, flags: frozenset[str]) -> tuple[str, ...]:
        """The CPU flags of this variant that `flags` lacks."""
        return tuple(f for f in self.cpu_flags if f not in flags)


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("f32-avx2", _FLOAT32, _BASE, _CPU_AVX2, "float32, 256-bit registers"),
    Variant("f32-avx512", _FLOAT32, (*_BASE, *_AVX512, "-DSPECTF_WIDE"), _CPU_AVX512,
            "float32, 512-bit registers"),
    Variant("mixed-bf16pv", ("bfloat16",),
            (*_BASE, *_AVX512, "-mavx512vnni", "-mavx512bf16", "-DSPECTF_MIXED"),
            (*_CPU_AVX512, "avx512_vnni", "avx512_bf16"), "int16 projections and Q.K^T, bfloat16 P.V"),
    Variant("mixed-i16pv", ("bfloat16",),
            (*_BASE, *_AVX512, "-mavx512vnni", "-DSPECTF_MIXED", "-DSPECTF_PV_I16"),
            (*_CPU_AVX512, "avx512_vnni"), "int16 projections, Q.K^T and P.V"),
    Variant("mixed-i16-avx2", ("bfloat16",), (*_BASE, "-DSPECTF_MIXED", "-DSPECTF_YMM"), _CPU_AVX2,
            "the arithmetic of mixed-i16pv, 256-bit registers, vpmaddwd"),
    Variant("mixed-i16-avxvnni", ("bfloat16",), (*_BASE, "-mavxvnni", "-DSPECTF_MIXED", "-DSPECTF_YMM",
                                                 "-DSPECTF_AVX_VNNI"), (*_CPU_AVX2, "avx_vnni"),
            "the arithmetic of mixed-i16pv, 256-bit registers, AVX-VNNI vpdpwssd"),
)}

#: the kernel's source files (one translation unit and the headers it includes)
SOURCE = Path(__file__).with_name("spectf.cpp")
SOURCES = tuple(sorted(Path(__file__).parent.glob("spectf*.[ch]*")))


def source_hash() -> str:
    """sha256 of every kernel source file: a change to any of them is a new kernel."""
    h = hashlib.sha256()
    for path in SOURCES:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def serving(precision: str) -> list[Variant]:
    """The variants that compute `precision`, whatever the CPU."""
    return [v for v in VARIANTS.values() if precision in v.precisions]


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """This CPU's feature flags (empty when /proc/cpuinfo cannot be read: then no variant runs)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name as /proc/cpuinfo gives it ("unknown" when it does not)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return "unknown"
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"
