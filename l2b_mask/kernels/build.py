"""Pre-build the SpecTf CPU kernel into its cache: `python -m l2b_mask.kernels.build [--force]`.

Exit status 0 when the kernel is built and loads, 0 with a notice when this machine cannot use it
(the torch path will be used), 1 when a compiler exists but the build fails.
"""

from __future__ import annotations

import argparse
import sys

from l2b_mask import kernels


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
    try:
        path = kernels.build(force=args.force)
    except RuntimeError as exc:
        print(f"l2b_mask.kernels: build failed: {exc}", file=sys.stderr)
        return 1
    if not kernels.available():
        print(f"l2b_mask.kernels: built {path} but it does not load: {kernels.unavailable_reason()}",
              file=sys.stderr)
        return 1
    print(f"l2b_mask.kernels: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
