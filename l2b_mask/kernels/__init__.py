"""Compiled CPU kernels for the SpecTf forward pass, chosen by measurement, with a clean fallback.

The kernel source (`spectf.cpp` and the headers it includes; plain C ABI, no torch headers)
computes the whole forward pass of one pixel in the core's cache: embedding, layer norms,
projections, attention with a fused softmax and value product, feed-forward, max over tokens and
head. It is built once per variant (`variants.VARIANTS`: float32 with 256- or 512-bit registers,
mixed precision with bfloat16 or int16 P.V on AVX-512, int16 on AVX2 or AVX-VNNI) with the system
C++ compiler into a cache folder keyed by the sources and the flags, and loaded with ctypes; the
call releases the GIL and is reentrant (no global state), so several threads may run it at once.

`selection.for_precision(p)` is the kernel for precision `p`: the variant `calibrate.choose` picked
for this CPU (timed once, cached), or None when no variant can run here (no compiler and no library
built before, not x86-64, a CPU without the instructions, `L2B_MASK_KERNEL=off`); the reason is
logged once and the model uses the pure-torch path. Pre-build and calibrate at set-up time with
`python -m l2b_mask.kernels.build`.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from l2b_mask.kernels import variants
from l2b_mask.kernels.params import KernelWeights, pack_parameters
from l2b_mask.kernels.variants import EXP_DEGREE, SOURCE, VARIANTS, Variant, source_hash
from l2b_mask.spec import ModelSpec

__all__ = ["EXP_DEGREE", "VARIANTS", "Kernel", "KernelWeights", "Variant", "build_library", "cache_dir",
           "compiler", "disabled", "forced_fallback", "library_path", "load_variant", "open_library",
           "pack_parameters", "supports", "variant_reason", "variant_unavailable"]

log = logging.getLogger(__name__)

ABI_VERSION = 2

_lock = threading.Lock()
_forced_off = 0


@dataclass(frozen=True)
class Kernel:
    """One loaded variant."""

    variant: Variant
    lib: ctypes.CDLL

    def forward(self, params: np.ndarray, reflectance: torch.Tensor, threads: int,
                exp_degree: int) -> torch.Tensor:
        """P(cloud) (N,) float32 for (N, T) float32 CPU reflectance with packed `params`."""
        x = reflectance.detach().to(torch.float32).contiguous()
        n, t = x.shape
        out = torch.empty(n, dtype=torch.float32)
        if n == 0:
            return out
        rc = self.lib.spectf_forward(x.data_ptr(), n, t, params.ctypes.data, out.data_ptr(), max(1, threads),
                                     exp_degree)
        if rc != 0:
            raise RuntimeError(f"spectf_forward ({self.variant.name}) failed ({rc})")
        return out


class _Loaded:
    """One variant's kernel, loaded at most once per process; the reason when it cannot be."""

    def __init__(self) -> None:
        self.kernel: Kernel | None = None
        self.reason: str | None = None
        self.tried = False


_loaded = {name: _Loaded() for name in VARIANTS}


def compiler() -> str | None:
    """The C++ compiler to use: $CXX, else c++ or g++ on the PATH."""
    for name in (os.environ.get("CXX"), "c++", "g++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def cache_dir() -> Path:
    """$L2B_MASK_KERNEL_CACHE, else <venv>/var/cache/l2b_mask when writable, else ~/.cache/l2b_mask."""
    env = os.environ.get("L2B_MASK_KERNEL_CACHE")
    if env:
        return Path(env)
    venv = Path(sys.prefix) / "var" / "cache" / "l2b_mask"
    if sys.prefix != sys.base_prefix:
        with contextlib.suppress(OSError):
            venv.mkdir(parents=True, exist_ok=True)
            if os.access(venv, os.W_OK):
                return venv
    return Path.home() / ".cache" / "l2b_mask"


def library_path(variant: str = "f32-avx2") -> Path:
    """Where the library for these sources and this variant's flags lives in the cache.

    The key leaves the compiler out on purpose: a container builds the kernel in a stage that has
    g++ and runs it in one that has none, and must still find it.
    """
    h = hashlib.sha256(source_hash().encode())
    for part in (*VARIANTS[variant].compile_flags, platform.machine(), str(ABI_VERSION)):
        h.update(part.encode())
    return cache_dir() / f"spectf_{variant}-{h.hexdigest()[:16]}.so"


def variant_unavailable(variant: str, flags: frozenset[str] | None = None) -> str | None:
    """None when this CPU (or one with `flags`) has what `variant` needs, else why not."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"not an x86-64 CPU ({platform.machine()})"
    missing = VARIANTS[variant].missing(variants.cpu_flags() if flags is None else flags)
    return f"CPU lacks {', '.join(missing)}" if missing else None


def build_library(force: bool = False, variant: str = "f32-avx2") -> Path:
    """Compile one variant into the cache (once; safe across processes and threads); its path.

    Not named `build`: that is the command module `l2b_mask.kernels.build`, which importing would
    bind to the same package attribute."""
    target = library_path(variant)
    if target.is_file() and not force:
        return target
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX or install g++)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)           # another process may be building the same file
        if target.is_file() and not force:
            return target
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            proc = subprocess.run([cxx, *VARIANTS[variant].compile_flags, str(SOURCE), "-o", tmp],
                                  capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                detail = proc.stderr.strip()[-2000:]
                raise RuntimeError(f"compiling {SOURCE.name} ({variant}) failed: {detail}")
            Path(tmp).chmod(0o755)  # mkstemp makes it 0600: other users of the venv must load it
            Path(tmp).replace(target)                 # atomic: readers never see a partial file
        finally:
            Path(tmp).unlink(missing_ok=True)
    log.info("built SpecTf kernel %s", target)
    return target


def open_library(path: Path, variant: str) -> Kernel:
    """Load a built library and check it is the ABI and the variant it should be."""
    lib = ctypes.CDLL(str(path))
    if lib.spectf_abi_version() != ABI_VERSION:
        raise RuntimeError(f"{path} has ABI {lib.spectf_abi_version()}, expected {ABI_VERSION}")
    lib.spectf_build.restype = ctypes.c_char_p
    built = lib.spectf_build().decode()
    if built != variant:
        raise RuntimeError(f"{path} is the {built} build, expected {variant}")
    lib.spectf_forward.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p,
                                   ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.spectf_forward.restype = ctypes.c_int
    return Kernel(VARIANTS[variant], lib)


def disabled() -> bool:
    """Kernels switched off: inside `forced_fallback`, or by `L2B_MASK_KERNEL=off`."""
    return bool(_forced_off) or os.environ.get("L2B_MASK_KERNEL", "").lower() in ("0", "off", "no", "false")


def load_variant(variant: str) -> Kernel | None:
    """One variant's kernel, building it if needed; None (reason logged once) if unavailable here."""
    state = _loaded[variant]
    if disabled():
        return None
    if state.tried:
        return state.kernel
    with _lock:
        if not state.tried:
            try:
                why = variant_unavailable(variant)
                if why:
                    raise RuntimeError(why)
                state.kernel = open_library(build_library(variant=variant), variant)
            except Exception as exc:  # noqa: BLE001 - any failure means: another variant or the torch path
                state.kernel = None
                state.reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.warning("SpecTf CPU kernel %s unavailable: %s", variant, state.reason)
            state.tried = True
    return state.kernel


def variant_reason(variant: str) -> str | None:
    """None when `variant` loads here, else why not."""
    if disabled():
        return "disabled"
    return None if load_variant(variant) is not None else _loaded[variant].reason


@contextlib.contextmanager
def forced_fallback() -> Iterator[None]:
    """Within this block every kernel counts as unavailable (tests, comparisons)."""
    global _forced_off
    _forced_off += 1
    try:
        yield
    finally:
        _forced_off -= 1


def supports(spec: ModelSpec) -> str | None:
    """None when the kernels implement this architecture, else why not."""
    if (spec.embed_dim, spec.num_heads, spec.ff_dim, spec.num_layers) != (64, 8, 64, 1):
        return (f"kernel built for 64/8/64 x 1 layer, model is "
                f"{spec.embed_dim}/{spec.num_heads}/{spec.ff_dim} x {spec.num_layers}")
    if abs(spec.layer_norm_eps - 1e-5) > 1e-12:
        return "kernel built for layer-norm eps 1e-5"
    return None
