"""Which kernel variant runs each precision on this CPU: timed once, cached, never guessed.

For every precision, the variants that compute it and whose instructions this CPU has
(`variants.Variant.cpu_flags` against /proc/cpuinfo) are timed on the same synthetic pixels, one
thread, CPU time, best of a few interleaved rounds (robust to other load on the machine; about a
second in all once the libraries are built). The fastest is chosen. The choice is cached in
`calibration.json` in the kernel cache folder, keyed by the CPU model, a hash of its flags, a hash
of the kernel sources and of the variant table: a change of any of them, a choice this CPU cannot
run, or an unreadable file means measuring again. $L2B_MASK_KERNEL_VARIANT names a variant to use
instead where it computes the precision and runs here (benchmarks compare variants with it).

    python -m l2b_mask.kernels.calibrate [--force]     # also run by `python -m l2b_mask.kernels.build`
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

import l2b_mask.kernels as kernels
from l2b_mask.kernels import variants
from l2b_mask.kernels.params import KernelWeights, pack_parameters
from l2b_mask.kernels.variants import EXP_DEGREE, VARIANTS, cpu_model, serving, source_hash

log = logging.getLogger(__name__)

CACHE_FILE = "calibration.json"
ENV_VARIANT = "L2B_MASK_KERNEL_VARIANT"
PIXELS, ROUNDS, TOKENS = 96, 3, 268

_lock = threading.Lock()
_choice: dict[str, str | None] | None = None     # this process's selection, once made
_ignored_env: set[str] = set()


@dataclass(frozen=True)
class Calibration:
    """The variant chosen per precision (None: no kernel here) and the rates behind the choice."""

    choice: dict[str, str | None]
    rates: dict[str, dict[str, float]] = field(default_factory=dict)   # precision -> variant -> px/CPU-s
    measured: bool = True                                              # False: read from the cache


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_key(flags: frozenset[str]) -> dict[str, str]:
    """What a cached choice is valid for."""
    table = json.dumps([[v.name, v.precisions, v.compile_flags, v.cpu_flags] for v in VARIANTS.values()])
    return {"cpu_model": cpu_model(), "cpu_flags": _short_hash(" ".join(sorted(flags))),
            "source": source_hash()[:16], "variants": _short_hash(table), "abi": str(kernels.ABI_VERSION)}


def runnable(precision: str, flags: frozenset[str]) -> list[str]:
    """The variants computing `precision` whose instructions a CPU with `flags` has."""
    return [v.name for v in serving(precision) if kernels.variant_unavailable(v.name, flags) is None]


def cache_path() -> Path:
    """Next to the libraries; where that folder is read-only to this user (a container's venv
    built by root), the user's own cache folder."""
    folder = kernels.cache_dir()
    if folder.is_dir() and not os.access(folder, os.W_OK):
        folder = Path.home() / ".cache" / "l2b_mask"
    return folder / CACHE_FILE


def read_cache(path: Path, key: dict[str, str], flags: frozenset[str]) -> dict[str, str | None] | None:
    """The cached choice when it is valid for `key` and runnable with `flags`, else None (logged)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("kernel calibration cache %s unreadable (%s): measuring again", path, exc)
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        log.info("kernel calibration cache %s is for another CPU or kernel source: measuring again", path)
        return None
    choice = data.get("choice")
    if not isinstance(choice, dict) or set(choice) != set(EXP_DEGREE):
        log.warning("kernel calibration cache %s is malformed: measuring again", path)
        return None
    for precision, name in choice.items():
        ok = runnable(precision, flags)
        if (name is None and ok) or (name is not None and name not in ok):
            log.warning("kernel calibration cache %s names %s for %s, not a choice for this CPU: "
                        "measuring again", path, name, precision)
            return None
    return choice


def _write_cache(path: Path, key: dict[str, str], result: Calibration) -> None:
    record = {"key": key, "choice": result.choice, "rates_px_per_cpu_s": result.rates,
              "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(path)                                  # atomic: readers never see half a file
    except OSError as exc:
        log.info("kernel calibration not cached (%s): it holds for this process only", exc)


def measure(flags: frozenset[str]) -> Calibration:
    """Time the variants each precision can use here; the fastest per precision."""
    params = pack_parameters(KernelWeights.random(), np.linspace(-1.7, 1.7, TOKENS))
    rho = torch.from_numpy(np.random.default_rng(1).uniform(0, 0.8, (PIXELS, TOKENS)).astype(np.float32))
    choice: dict[str, str | None] = {}
    rates: dict[str, dict[str, float]] = {}
    timed: dict[tuple[str, int], float] = {}      # a variant at an exp degree is timed once
    for precision, degree in EXP_DEGREE.items():
        loaded = {n: k for n in runnable(precision, flags) if (k := kernels.load_variant(n)) is not None}
        if len(loaded) <= 1:
            choice[precision] = next(iter(loaded), None)
            continue
        todo = {n: k for n, k in loaded.items() if (n, degree) not in timed}
        best = dict.fromkeys(todo, 0.0)
        for _ in range(ROUNDS):
            for name, kernel in todo.items():
                t0 = time.thread_time()
                kernel.forward(params, rho, 1, degree)
                best[name] = max(best[name], PIXELS / max(time.thread_time() - t0, 1e-9))
        timed.update({(n, degree): r for n, r in best.items()})
        rates[precision] = {n: round(timed[n, degree], 1) for n in loaded}
        choice[precision] = max(loaded, key=lambda n: timed[n, degree])
    return Calibration(choice, rates)


def calibrate(force: bool = False) -> Calibration:
    """The valid cached choice, else a new measurement (cached)."""
    flags = variants.cpu_flags()
    key, path = cache_key(flags), cache_path()
    cached = None if force else read_cache(path, key, flags)
    if cached is not None:
        return Calibration(cached, measured=False)
    result = measure(flags)
    log.info("kernel variants measured on %s: %s (px/CPU-s: %s)", key["cpu_model"], result.choice,
             result.rates)
    _write_cache(path, key, result)
    return result


def choose(precision: str) -> str | None:
    """The variant to run `precision` with here, or None when none can."""
    global _choice
    forced = os.environ.get(ENV_VARIANT)
    if forced:
        if forced in VARIANTS and precision in VARIANTS[forced].precisions and kernels.load_variant(forced):
            return forced
        if (forced, precision) not in _ignored_env:
            _ignored_env.add((forced, precision))
            log.warning("%s=%s does not run %s here: using the calibrated choice", ENV_VARIANT, forced,
                        precision)
    if _choice is None:
        with _lock:
            if _choice is None:
                _choice = calibrate().choice
    return _choice[precision]


def why_none(precision: str) -> str:
    """Why no variant runs `precision` here, one reason per variant."""
    reasons = []
    for v in serving(precision):
        reasons.append(f"{v.name}: {kernels.variant_reason(v.name) or 'not chosen'}")
    return "; ".join(reasons) or f"no kernel computes {precision}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="measure even when a valid choice is cached")
    args = ap.parse_args(argv)
    result = calibrate(force=args.force)
    for precision, name in result.choice.items():
        rates = result.rates.get(precision)
        timed = ", ".join(f"{n} {r:.0f}" for n, r in rates.items()) + " px/CPU-s" if rates else (
            "cached" if not result.measured else "the only one")
        print(f"l2b_mask.kernels: {precision}: {name or 'no kernel (torch path)'} ({timed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
