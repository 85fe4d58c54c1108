"""What an EMIT L1B input is, whichever format carries it (the SDS's ENVI rasters or the LP
DAAC's netCDF granules): band counts, where the observation's bands are, the time format, and
the checks both readers make in the same words.

The granule reader (`daac`), the scene built from either format (`scene`, which makes the ENVI
rasters' checks), the observation reader (`observation`) and the beyond-cloud step import this
module; it imports none of them, so they share these facts without importing each other.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from l2b_mask.errors import InputProductError

EMIT_RADIANCE_BANDS = 285
OBS_BAND_COUNTS = (11, 12)
# Zero-based positions in the EMIT observation file, used when it carries no band names; with
# names, bands are found by these (lower-case) parts of their names wherever they are.
OBS_SOLAR_AZIMUTH = 3
OBS_SOLAR_ZENITH = 4
OBS_EARTH_SUN_DISTANCE = 10
OBS_SOLAR_AZIMUTH_NAME = "to-sun azimuth"
OBS_SOLAR_ZENITH_NAME = "to-sun zenith"
OBS_EARTH_SUN_DISTANCE_NAME = "earth-sun distance"
OBS_VIEW_AZIMUTH, OBS_VIEW_AZIMUTH_NAME = 1, "to-sensor azimuth"
OBS_VIEW_ZENITH, OBS_VIEW_ZENITH_NAME = 2, "to-sensor zenith"


class Raster(Protocol):
    """What the checks here read of an input, ENVI header or granule alike."""

    @property
    def header_path(self) -> Path: ...

    @property
    def lines(self) -> int: ...

    @property
    def samples(self) -> int: ...


def parse_emit_time(text: object) -> datetime | None:
    """An EMIT header time ('2024-03-02T00:58:29+0000') as an aware datetime (UTC when it names
    no zone); None when absent or not a time."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(str(text).strip())
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def find_band(names: list[str] | None, needle: str, fallback: int, raster: Raster) -> int:
    """Zero-based index of the one band whose name contains `needle` (case-insensitive), or
    `fallback` (EMIT's position) when the file has no band names."""
    if not names:
        return fallback
    hits = [i for i, name in enumerate(names) if needle in name.lower()]
    if len(hits) != 1:
        raise InputProductError(
            raster.header_path,
            f"expected one band named like '{needle}' among the band names, found {len(hits)}",
        )
    return hits[0]


def check_same_size(rdn: Raster, obs: Raster) -> None:
    """The observation must cover the radiance's lines and samples exactly."""
    if (obs.lines, obs.samples) != (rdn.lines, rdn.samples):
        raise InputProductError(
            obs.header_path,
            f"observation is {obs.lines} lines x {obs.samples} samples but the radiance "
            f"{rdn.header_path.name} is {rdn.lines} x {rdn.samples}",
        )


# EMIT measures 381-2493 nm: band centres (in nm, after the header's units) outside this are
# another instrument's, or micrometres labelled as nanometres (which would otherwise surface
# later as the model's bands missing, blamed on the model specification).
PLAUSIBLE_WAVELENGTHS_NM = (200.0, 3000.0)


def check_spectral_axis(wl: np.ndarray, fwhm: np.ndarray, bands: int, where: Path) -> None:
    """The one check of a radiance's spectral axis, whichever format it came from (ENVI header
    text or the granule's float32 `sensor_band_parameters`): one value per band, wavelengths
    finite and strictly increasing and within `PLAUSIBLE_WAVELENGTHS_NM`, FWHM finite and
    positive."""
    if wl.size != bands:
        raise InputProductError(where, f"{wl.size} wavelengths for {bands} bands")
    if fwhm.size != bands:
        raise InputProductError(where, f"{fwhm.size} fwhm values for {bands} bands")
    if not np.all(np.isfinite(wl)) or np.any(np.diff(wl) <= 0):
        raise InputProductError(where, "wavelengths are not finite and strictly increasing")
    if not np.all(np.isfinite(fwhm)) or np.any(fwhm <= 0):
        raise InputProductError(where, "fwhm values must be finite and positive")
    lo, hi = PLAUSIBLE_WAVELENGTHS_NM
    if wl[0] < lo or wl[-1] > hi:
        raise InputProductError(where, f"wavelengths {wl[0]:.6g}-{wl[-1]:.6g} nm are outside "
                                       f"{lo:g}-{hi:g} nm, not an EMIT radiance's spectral axis "
                                       "(micrometres labelled as nanometres?)")
