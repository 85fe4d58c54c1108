"""Compiled CPU kernel for the SpecTf forward pass (AVX2 + FMA), with a clean fallback.

The kernel (`spectf_avx2.cpp`, plain C ABI, no torch headers) computes the whole forward pass of
one pixel in the core's cache: embedding, layer norms, projections, attention with a fused
softmax and value product, feed-forward, max over tokens and head. It is compiled once with the
system C++ compiler into a cache folder keyed by the source and the flags, and
loaded with ctypes; the call releases the GIL and is reentrant (no global state), so several
threads may run it at once.

Pre-build it at set-up time with `python -m l2b_mask.kernels.build`. When it cannot be built or
loaded (no compiler, not x86-64, a CPU without AVX2/FMA, `L2B_MASK_KERNEL=off`), `load()` returns
None, the reason is logged once, and the model falls back to the pure-torch path.
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
#: exp2 polynomial degree per kernel variant: 5 is faithful (1.5e-7 relative), 3 the fast one.
EXP_DEGREE = {"float32": 5, "float32-fastexp": 3}

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_reason: str | None = None
_tried = False
_forced_off = 0


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


def library_path() -> Path:
    """Where the library for this source and these flags lives in the cache.

    The key leaves the compiler out on purpose: a container builds the kernel in a stage that has
    g++ and runs it in one that has none, and must still find it.
    """
    h = hashlib.sha256(SOURCE.read_bytes())
    for part in (*FLAGS, platform.machine(), str(ABI_VERSION)):
        h.update(part.encode())
    return cache_dir() / f"spectf_avx2-{h.hexdigest()[:16]}.so"


def cpu_supported() -> str | None:
    """None when this CPU can run the kernel, else why not."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"not an x86-64 CPU ({platform.machine()})"
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return f"CPU lacks AVX2/FMA (torch reports {torch.backends.cpu.get_cpu_capability()})"
    return None


def build(force: bool = False) -> Path:
    """Compile the kernel into the cache (once; safe across processes and threads); its path."""
    target = library_path()
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
            proc = subprocess.run([cxx, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True,
                                  timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"compiling {SOURCE.name} failed: {proc.stderr.strip()[-2000:]}")
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
    lib.spectf_forward.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p,
                                   ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.spectf_forward.restype = ctypes.c_int
    return lib


def load() -> ctypes.CDLL | None:
    """The loaded kernel library, building it if needed; None (reason logged once) if unavailable."""
    global _lib, _reason, _tried
    if _forced_off or os.environ.get("L2B_MASK_KERNEL", "").lower() in ("0", "off", "no", "false"):
        return None
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            try:
                why = cpu_supported()
                if why:
                    raise RuntimeError(why)
                _lib = _open(build())
            except Exception as exc:  # noqa: BLE001 - any failure means: use the torch path
                _lib, _reason = None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.warning("SpecTf CPU kernel unavailable, using the torch path: %s", _reason)
            _tried = True
    return _lib


def available() -> bool:
    return load() is not None


def unavailable_reason() -> str | None:
    if _forced_off or os.environ.get("L2B_MASK_KERNEL", "").lower() in ("0", "off", "no", "false"):
        return "disabled"
    load()
    return _reason


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
            exp_degree: int) -> torch.Tensor:
    """P(cloud) (N,) float32 for (N, T) float32 CPU reflectance with packed `params`."""
    x = reflectance.detach().to(torch.float32).contiguous()
    n, t = x.shape
    out = torch.empty(n, dtype=torch.float32)
    if n == 0:
        return out
    rc = lib.spectf_forward(x.data_ptr(), n, t, params.ctypes.data, out.data_ptr(), max(1, threads),
                            exp_degree)
    if rc != 0:
        raise RuntimeError(f"spectf_forward failed ({rc})")
    return out
