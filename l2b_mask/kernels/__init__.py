"""Compiled CPU kernel for the SpecTf forward pass (AVX2 + FMA), with a clean fallback.

The kernel (`spectf_avx2.cpp`, plain C ABI, no torch headers) computes the whole forward pass of
one pixel in the core's cache: embedding, layer norms, projections, attention with a fused
softmax and value product, feed-forward, max over tokens and head. It is compiled with the
system C++ compiler into a cache folder keyed by the source and the flags, and loaded with
ctypes; the call releases the GIL and is reentrant (no global state), so several threads may run
it at once.

Two builds of the one source:
  * ``avx2`` (any x86-64 CPU with AVX2/FMA): the float32 arithmetic (`float32`,
    `float32-fastexp`), the same instructions on every machine;
  * ``avx512`` (AVX-512 F/VL/BW/VNNI/BF16: Zen 4, Sapphire Rapids and later): adds the
    mixed-precision forward pass, int16 projections and Q.K^T and bfloat16 P.V (the
    `bfloat16` precision on the CPU), about 1.6 times the float32 speed.

Pre-build both at set-up time with `python -m l2b_mask.kernels.build`. When one cannot be built
or loaded (no compiler, not x86-64, a CPU without the instructions, `L2B_MASK_KERNEL=off`),
`load()` / `load_mixed()` return None, the reason is logged once, and the model falls back to
the pure-torch path.
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
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("spectf_avx2.cpp")
ABI_VERSION = 1
FLAGS = ("-O3", "-std=c++17", "-mavx2", "-mfma", "-fno-math-errno", "-fPIC", "-shared", "-pthread")
#: the mixed-precision build: AVX-512 encodings and the int16 / bfloat16 dot products
MIXED_FLAGS = (*FLAGS, "-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512vnni", "-mavx512bf16",
               "-DSPECTF_MIXED")
#: the /proc/cpuinfo flags the mixed build needs
MIXED_CPU_FLAGS = ("avx512f", "avx512vl", "avx512bw", "avx512_vnni", "avx512_bf16")
VARIANTS = {"avx2": FLAGS, "avx512": MIXED_FLAGS}
#: exp2 polynomial degree per precision: 5 is faithful (1.5e-7 relative), 3 the fast one; the
#: mixed path keeps 5, so that its only approximations are its documented roundings (degree 2
#: would gain 6% there for +4.6e-3 in P: docs/performance.md)
EXP_DEGREE = {"float32": 5, "float32-fastexp": 3, "bfloat16": 5}  # every precision has a kernel
#: precisions run by the mixed (avx512) build
MIXED_PRECISIONS = ("bfloat16",)


def variant(precision: str) -> str:
    """The build that runs `precision` on the CPU."""
    return "avx512" if precision in MIXED_PRECISIONS else "avx2"

_lock = threading.Lock()
_forced_off = 0


class _Loaded:
    """One build's library, loaded at most once per process; the reason when it cannot be."""

    def __init__(self) -> None:
        self.lib: ctypes.CDLL | None = None
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


def library_path(variant: str = "avx2") -> Path:
    """Where the library for this source and this variant's flags lives in the cache.

    The key leaves the compiler out on purpose: a container builds the kernel in a stage that has
    g++ and runs it in one that has none, and must still find it.
    """
    h = hashlib.sha256(SOURCE.read_bytes())
    for part in (*VARIANTS[variant], platform.machine(), str(ABI_VERSION)):
        h.update(part.encode())
    return cache_dir() / f"spectf_{variant}-{h.hexdigest()[:16]}.so"


def cpu_supported() -> str | None:
    """None when this CPU can run the kernel, else why not."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"not an x86-64 CPU ({platform.machine()})"
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return f"CPU lacks AVX2/FMA (torch reports {torch.backends.cpu.get_cpu_capability()})"
    return None


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def mixed_cpu_supported() -> str | None:
    """None when this CPU can run the mixed-precision build, else why not."""
    why = cpu_supported()
    if why:
        return why
    missing = [f for f in MIXED_CPU_FLAGS if f not in _cpu_flags()]
    return f"CPU lacks {', '.join(missing)}" if missing else None


def build_library(force: bool = False, variant: str = "avx2") -> Path:
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
            proc = subprocess.run([cxx, *VARIANTS[variant], str(SOURCE), "-o", tmp], capture_output=True,
                                  text=True, timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"compiling {SOURCE.name} ({variant}) failed: {proc.stderr.strip()[-2000:]}")
            Path(tmp).chmod(0o755)  # mkstemp makes it 0600: other users of the venv must load it
            Path(tmp).replace(target)                 # atomic: readers never see a partial file
        finally:
            Path(tmp).unlink(missing_ok=True)
    log.info("built SpecTf kernel %s", target)
    return target


def _open(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    if lib.spectf_abi_version() != ABI_VERSION:
        raise RuntimeError(f"{path} has ABI {lib.spectf_abi_version()}, expected {ABI_VERSION}")
    for name in ("spectf_forward", "spectf_forward_mixed"):
        fn = getattr(lib, name, None)   # the mixed entry exists in the avx512 build only
        if fn is not None:
            fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.c_int, ctypes.c_int]
            fn.restype = ctypes.c_int
    return lib


def _disabled() -> bool:
    return bool(_forced_off) or os.environ.get("L2B_MASK_KERNEL", "").lower() in ("0", "off", "no", "false")


def load_variant(variant: str) -> ctypes.CDLL | None:
    """One build's library, building it if needed; None (reason logged once) if unavailable."""
    state = _loaded[variant]
    if _disabled():
        return None
    if state.tried:
        return state.lib
    with _lock:
        if not state.tried:
            try:
                why = cpu_supported() if variant == "avx2" else mixed_cpu_supported()
                if why:
                    raise RuntimeError(why)
                state.lib = _open(build_library(variant=variant))
            except Exception as exc:  # noqa: BLE001 - any failure means: use the torch path
                state.lib = None
                state.reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                what = "" if variant == "avx2" else f" ({variant}, for precision bfloat16)"
                log.warning("SpecTf CPU kernel%s unavailable, using the torch path: %s", what, state.reason)
            state.tried = True
    return state.lib


def load() -> ctypes.CDLL | None:
    """The float32 kernel library, building it if needed; None (reason logged once) if unavailable."""
    return load_variant("avx2")


def load_mixed() -> ctypes.CDLL | None:
    """The mixed-precision (avx512) library, building it if needed; None (reason logged once) if not."""
    return load_variant("avx512")


def available() -> bool:
    return load() is not None


def mixed_available() -> bool:
    return load_mixed() is not None


def unavailable_reason(variant: str = "avx2") -> str | None:
    if _disabled():
        return "disabled"
    load_variant(variant)
    return _loaded[variant].reason


@contextlib.contextmanager
def forced_fallback() -> Iterator[None]:
    """Within this block the kernel counts as unavailable (tests, comparisons)."""
    global _forced_off
    _forced_off += 1
    try:
        yield
    finally:
        _forced_off -= 1


def supports(model: torch.nn.Module) -> str | None:
    """None when the kernel implements this model's architecture, else why not."""
    s = model.spec
    if (s.embed_dim, s.num_heads, s.ff_dim, s.num_layers) != (64, 8, 64, 1):
        return (f"kernel built for 64/8/64 x 1 layer, model is {s.embed_dim}/{s.num_heads}/{s.ff_dim}"
                f" x {s.num_layers}")
    if abs(s.layer_norm_eps - 1e-5) > 1e-12:
        return "kernel built for layer-norm eps 1e-5"
    return None


def pack_parameters(model: torch.nn.Module, band_term: torch.Tensor) -> np.ndarray:
    """The kernel's parameter block for `model` and a (T,) band term (layout: spectf_avx2.cpp).

    LayerNorm affine terms are folded into the projection after them and the query rows are
    scaled by log2(e)/sqrt(head width) (the kernel's softmax works in base 2), in float64.
    """
    d = model.spec.embed_dim
    hd = d // model.spec.num_heads
    layer = model.layers[0]
    mha = layer.attention.attention

    def f64(t: torch.Tensor) -> np.ndarray:
        return t.detach().to("cpu", torch.float64).numpy()

    embed = model.spectral_embed.linear
    we, be = embed.weight.detach().cpu(), embed.bias.detach().cpu()
    band = band_term.detach().to("cpu", torch.float32)
    t = band.shape[0]
    tp = (t + 7) // 8 * 8
    ct = np.zeros((d, tp), np.float32)
    ct[:, :t] = (band[None, :] * we[:, 1:2] + be[:, None]).numpy()   # float32, as nn.Linear would

    win, bin_ = f64(mha.in_proj_weight), f64(mha.in_proj_bias)
    g1, b1n = f64(layer.norm1.weight), f64(layer.norm1.bias)
    win_f, bin_f = win * g1[None, :], bin_ + win @ b1n
    qscale = np.log2(np.e) / np.sqrt(hd)
    win_f[:d] *= qscale
    bin_f[:d] *= qscale
    w1, b1 = f64(layer.ff.linear1.weight), f64(layer.ff.linear1.bias)
    g2, b2n = f64(layer.norm2.weight), f64(layer.norm2.bias)
    parts = [
        we[:, 0].numpy(), ct, win_f, bin_f,
        f64(mha.out_proj.weight), f64(mha.out_proj.bias),
        w1 * g2[None, :], b1 + w1 @ b2n,
        f64(layer.ff.linear2.weight), f64(layer.ff.linear2.bias),
        f64(model.head.weight), f64(model.head.bias),
    ]
    return np.ascontiguousarray(np.concatenate([np.asarray(p, np.float32).ravel() for p in parts]))


def forward(lib: ctypes.CDLL, params: np.ndarray, reflectance: torch.Tensor, threads: int,
            exp_degree: int, mixed: bool = False) -> torch.Tensor:
    """P(cloud) (N,) float32 for (N, T) float32 CPU reflectance with packed `params`.

    `mixed` runs the mixed-precision forward pass (a library from `load_mixed()`)."""
    x = reflectance.detach().to(torch.float32).contiguous()
    n, t = x.shape
    out = torch.empty(n, dtype=torch.float32)
    if n == 0:
        return out
    fn = lib.spectf_forward_mixed if mixed else lib.spectf_forward
    rc = fn(x.data_ptr(), n, t, params.ctypes.data, out.data_ptr(), max(1, threads), exp_degree)
    if rc != 0:
        raise RuntimeError(f"spectf_forward{'_mixed' if mixed else ''} failed ({rc})")
    return out
