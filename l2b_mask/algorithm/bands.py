"""Which bands the model sees: every band whose centre lies outside the spec's drop ranges."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def kept_bands(wavelengths_nm: np.ndarray, drop_ranges_nm: Iterable[tuple[float, float]]) -> np.ndarray:
    """Indices (in band order) of bands whose centre is in no inclusive drop range."""
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    dropped = np.zeros(wl.shape, bool)
    for lo, hi in drop_ranges_nm:
        dropped |= (wl >= lo) & (wl <= hi)
    return np.flatnonzero(~dropped)
