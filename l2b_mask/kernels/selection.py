"""Which compiled kernel runs a precision on this CPU: the loader (`l2b_mask.kernels`) asked for
the variant the calibration (`calibrate`) chose, or None and why not.

Kept apart from both so that each imports only downwards: the calibration loads variants to time
them, and the choice here needs the calibration.
"""

from __future__ import annotations

import l2b_mask.kernels as kernels
from l2b_mask.kernels import calibrate


def for_precision(precision: str) -> kernels.Kernel | None:
    """The kernel that runs `precision` on this CPU (the calibrated choice), or None."""
    if kernels.disabled():
        return None
    variant = calibrate.choose(precision)
    return kernels.load_variant(variant) if variant is not None else None


def available(precision: str = "float32") -> bool:
    return for_precision(precision) is not None


def unavailable_reason(precision: str = "float32") -> str | None:
    """None when `precision` has a kernel here, else why not (for errors and test skips)."""
    if kernels.disabled():
        return "disabled"
    if for_precision(precision) is not None:
        return None
    return calibrate.why_none(precision)
