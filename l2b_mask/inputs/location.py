"""The per-pixel location of an acquisition (EMIT L1B LOC): longitude, latitude, elevation.

Read whole (three float64 planes, about 38 MB for a full scene): the product writers and the
geometry need every pixel at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l2b_mask.errors import InputProductError
from l2b_mask.inputs.envi import EnviReader, read_header
from l2b_mask.inputs.glt import Bounds
from l2b_mask.nodata import FLOAT_NO_VALUE

LOC_FILL = FLOAT_NO_VALUE


@dataclass(frozen=True)
class LocationArrays:
    """Per-pixel longitude, latitude (degrees, WGS-84) and elevation (m), -9999 where unknown."""

    lon: np.ndarray
    lat: np.ndarray
    elev: np.ndarray

    def __post_init__(self) -> None:
        shapes = {name: np.shape(getattr(self, name)) for name in ("lon", "lat", "elev")}
        if len(set(shapes.values())) != 1 or len(shapes["lon"]) != 2:
            raise ValueError(f"lon, lat and elev must share one (lines, samples) shape: {shapes}")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(np.shape(self.lon))  # type: ignore[return-value]


# (variable, loc band, long_name, units, standard_name)
LOCATION_BANDS = (
    ("lon", 0, "Longitude (WGS-84)", "degrees_east", "longitude"),
    ("lat", 1, "Latitude (WGS-84)", "degrees_north", "latitude"),
    ("elev", 2, "Surface Elevation", "m", None),
)


def read_location(loc_path: Path | str, shape: tuple[int, int] | None = None,
                  lines_per_block: int = 512) -> LocationArrays:
    """The EMIT L1B LOC raster (bands: lon, lat, elev) as float64 arrays with -9999 fill.

    `shape` is the (lines, samples) of the radiance: a LOC of another size belongs to another
    acquisition or is damaged, and is refused before anything is written.
    """
    header = read_header(loc_path)
    if header.bands < len(LOCATION_BANDS):
        raise InputProductError(header.header_path,
                                f"location raster has {header.bands} bands, expected 3 "
                                "(longitude, latitude, elevation)")
    if shape is not None and (header.lines, header.samples) != tuple(shape):
        raise InputProductError(header.header_path,
                                f"location is {header.lines} lines x {header.samples} samples "
                                f"but the radiance is {shape[0]} x {shape[1]}")
    nodata = header.nodata
    out = np.empty((len(LOCATION_BANDS), header.lines, header.samples), np.float64)
    with EnviReader(header) as reader:
        for start in range(0, header.lines, lines_per_block):
            stop = min(start + lines_per_block, header.lines)
            block = reader.read_lines(start, stop, [b for _, b, *_ in LOCATION_BANDS],
                                      np.float64)
            out[:, start:stop, :] = block.transpose(2, 0, 1)
    bad = ~np.isfinite(out)
    if nodata is not None:
        bad |= out == nodata
    out[bad] = LOC_FILL
    return LocationArrays(lon=out[0], lat=out[1], elev=out[2])


def location_bounds(location: LocationArrays) -> Bounds | None:
    """The box of the pixel centres that have a location (None when none has)."""
    lon, lat = np.asarray(location.lon), np.asarray(location.lat)
    ok = np.isfinite(lon) & np.isfinite(lat) & (lon != LOC_FILL) & (lat != LOC_FILL)
    return Bounds.of_points(lon[ok], lat[ok]) if ok.any() else None

