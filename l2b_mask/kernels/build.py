"""Pre-build the SpecTf CPU kernels and choose among them: `python -m l2b_mask.kernels.build [--force]`.

Builds every variant (the code is compiled whatever this CPU has, so a container image built here
also serves hosts with other instructions), then runs the calibration (`l2b_mask.kernels.calibrate`:
times the variants this CPU can run, about a second, and caches the choice). Exit status 0 when the
kernels this CPU can use are built and load, 0 with a notice when it can use none (the torch path
will be used), 1 when a variant this CPU could use is neither cached nor built (its build failed,
or no compiler is found for it) or does not load.
"""

from __future__ import annotations

import argparse
import platform
import sys

import l2b_mask.kernels as kernels
from l2b_mask.kernels import calibrate


def _build(variant: str, force: bool) -> int:
    """Build one variant and check it loads; a failure counts (1) only where this CPU can use it."""
    why_not_here = kernels.variant_unavailable(variant)
    try:
        path = kernels.build_library(force=force, variant=variant)
    except RuntimeError as exc:
        print(f"l2b_mask.kernels: {variant} build failed: {exc}", file=sys.stderr)
        return 1 if why_not_here is None else 0
    if why_not_here is not None:
        print(f"l2b_mask.kernels: {path} (not usable on this CPU: {why_not_here})")
        return 0
    if kernels.load_variant(variant) is None:
        print(f"l2b_mask.kernels: built {path} but it does not load: {kernels.variant_reason(variant)}",
              file=sys.stderr)
        return 1
    print(f"l2b_mask.kernels: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild and measure again even when cached")
    args = ap.parse_args(argv)
    if platform.machine().lower() not in ("x86_64", "amd64"):
        print(f"l2b_mask.kernels: not built: not an x86-64 CPU ({platform.machine()}); "
              "the torch path will be used")
        return 0
    if kernels.compiler() is None and not kernels.library_path().is_file():
        print("l2b_mask.kernels: not built: no C++ compiler; the torch path will be used")
        return 0
    failed = 0
    for variant in kernels.VARIANTS:
        failed |= _build(variant, args.force)
    calibrate.main(["--force"] if args.force else [])
    return failed


if __name__ == "__main__":
    sys.exit(main())
