"""Pre-build the SpecTf CPU kernels into their cache: `python -m l2b_mask.kernels.build [--force]`.

Builds the float32 library (avx2) and the mixed-precision one (avx512: the code is compiled
whatever this CPU has, so a container image built here also serves Zen 4 / Sapphire Rapids hosts).
Exit status 0 when the kernels this CPU can use are built and load, 0 with a notice when it can use
none (the torch path will be used), 1 when a compiler exists but a build this CPU needs fails.
"""

from __future__ import annotations

import argparse
import sys

from l2b_mask import kernels


def _build(variant: str, force: bool, why_not_here: str | None) -> int:
    """Build one variant and check it loads; a failure counts (1) only where this CPU can use it."""
    try:
        path = kernels.build_library(force=force, variant=variant)
    except RuntimeError as exc:
        print(f"l2b_mask.kernels: {variant} build failed: {exc}", file=sys.stderr)
        return 1 if why_not_here is None else 0
    if why_not_here is not None:
        print(f"l2b_mask.kernels: {path} (not usable on this CPU: {why_not_here}; its precisions use "
              "the torch path here)")
        return 0
    if kernels.load_variant(variant) is None:
        print(f"l2b_mask.kernels: built {path} but it does not load: {kernels.unavailable_reason(variant)}",
              file=sys.stderr)
        return 1
    print(f"l2b_mask.kernels: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = ap.parse_args(argv)
    why = kernels.cpu_supported()
    if why:
        print(f"l2b_mask.kernels: not built: {why}; the torch path will be used")
        return 0
    if kernels.compiler() is None and not kernels.library_path().is_file():
        print("l2b_mask.kernels: not built: no C++ compiler; the torch path will be used")
        return 0
    return (_build("avx2", args.force, None)
            or _build("avx512", args.force, kernels.mixed_cpu_supported()))


if __name__ == "__main__":
    sys.exit(main())
