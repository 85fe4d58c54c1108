"""The EMIT geometry lookup table (GLT): read it, parse its `map info`, resample with it.

An EMIT L1B GLT is an ENVI int32 raster of 2 bands on a north-up geographic grid (EPSG:4326):
band 1 the swath sample, band 2 the swath line of the pixel that each grid cell shows, both
1-based, 0 where no swath pixel falls in the cell. In the classic ENVI GLT convention a
negative value names a cell filled from a neighbouring pixel; its absolute value is the pixel
to use, so this module looks pixels up by absolute value and keeps the signs it read for the
netCDF copy. The grid's georeferencing is the header's `map info`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from l2b_mask.errors import InputProductError
from l2b_mask.inputs.envi import EnviReader, read_header

GLT_FILL = 0
EPSG_WGS84 = 4326
# OGC WKT1 of EPSG:4326, written without GDAL so that the library can run where it is absent;
# GDAL, PROJ and netCDF readers all identify it as EPSG:4326.
WGS84_WKT = (
    'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,'
    'AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,'
    'AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],'
    'AXIS["Latitude",NORTH],AXIS["Longitude",EAST],AUTHORITY["EPSG","4326"]]'
)
_GEOGRAPHIC = "geographic lat/lon"
_WGS84_DATUMS = {"wgs-84", "wgs84", "wgs 84", "wgs_1984", "d_wgs_1984"}
_ROTATION = re.compile(r"rotation\s*=\s*([-+0-9.eE]+)")


@dataclass(frozen=True)
class Bounds:
    """A geographic box in degrees: west, south, east, north (WGS-84)."""

    west: float
    south: float
    east: float
    north: float

    def __post_init__(self) -> None:
        values = (self.west, self.south, self.east, self.north)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"bounds must be finite numbers: {values}")
        if self.west > self.east or self.south > self.north:
            raise ValueError(f"bounds are inverted (west {self.west} > east {self.east} or "
                             f"south {self.south} > north {self.north})")
        if not (-90.0 <= self.south <= self.north <= 90.0):
            raise ValueError(f"latitudes outside [-90, 90]: {self.south}, {self.north}")

    @classmethod
    def of_points(cls, lon: np.ndarray, lat: np.ndarray) -> Bounds:
        lon, lat = np.asarray(lon, float), np.asarray(lat, float)
        if lon.size == 0:
            raise ValueError("no points to bound")
        return cls(float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max()))


@dataclass(frozen=True)
class MapInfo:
    """What an ENVI `map info` says about a north-up grid."""

    projection: str
    geotransform: tuple[float, float, float, float, float, float]  # GDAL order
    datum: str
    units: str | None

    @property
    def epsg(self) -> int | None:
        if self.projection.lower() == _GEOGRAPHIC and self.datum.lower() in _WGS84_DATUMS:
            return EPSG_WGS84
        return None


def parse_map_info(map_info: Sequence[str] | str, where: Path | str | None = None) -> MapInfo:
    """Parse ENVI `map info` into a GDAL geotransform.

    `{proj, ref x, ref y, ref easting, ref northing, x size, y size, [zone, hemisphere,] datum,
    units=..., rotation=...}`: the reference pixel is 1-based with (1, 1) the outer corner of
    the upper-left pixel (GDAL's ENVI driver reads it the same way), so the upper-left corner is
    `easting - (ref_x - 1) * dx`, `northing + (ref_y - 1) * dy`. Only north-up grids are
    accepted: a rotation other than 0 is an input error.
    """
    items = [s.strip() for s in (map_info.strip("{} ").split(",") if isinstance(map_info, str)
                                 else map_info)]
    if len(items) < 7:
        raise InputProductError(where, f"'map info' has {len(items)} fields, at least 7 needed")
    try:
        ref_x, ref_y, easting, northing, dx, dy = (float(v) for v in items[1:7])
    except ValueError:
        raise InputProductError(where, f"'map info' fields 2-7 are not numbers: {items[1:7]}") from None
    if not (dx > 0 and dy > 0 and all(math.isfinite(v) for v in (ref_x, ref_y, easting, northing))):
        raise InputProductError(where, f"'map info' pixel size must be positive: {dx}, {dy}")
    rest = items[7:]
    units = next((r.split("=", 1)[1].strip() for r in rest if r.lower().startswith("units")), None)
    rotation = next((float(m.group(1)) for r in rest if (m := _ROTATION.fullmatch(r.lower()))), 0.0)
    if rotation != 0.0:
        raise InputProductError(where, f"'map info' grid is rotated by {rotation} degrees; "
                                       "only north-up grids are supported")
    plain = [r for r in rest if "=" not in r]
    projection = items[0]
    # UTM carries zone and hemisphere before the datum; geographic grids go straight to it.
    datum = plain[-1] if plain else ""
    geotransform = (easting - (ref_x - 1.0) * dx, dx, 0.0, northing + (ref_y - 1.0) * dy, 0.0, -dy)
    return MapInfo(projection=projection, geotransform=geotransform, datum=datum, units=units)


@dataclass(frozen=True)
class Glt:
    """A GLT in memory: (rows, cols) int32 sample and line lookups and the grid they lie on."""

    sample: np.ndarray  # 1-based swath sample, 0 = no pixel (negative: filled from a neighbour)
    line: np.ndarray  # 1-based swath line, same convention
    geotransform: tuple[float, float, float, float, float, float]  # GDAL order, north-up
    crs_wkt: str = WGS84_WKT
    epsg: int | None = EPSG_WGS84
    source: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if np.shape(self.sample) != np.shape(self.line) or np.ndim(self.sample) != 2:
            raise ValueError(f"sample {np.shape(self.sample)} and line {np.shape(self.line)} "
                             "must be one 2-D shape")
        gt = self.geotransform
        if len(gt) != 6 or gt[2] != 0 or gt[4] != 0 or gt[1] <= 0 or gt[5] >= 0:
            raise ValueError(f"geotransform must be north-up (dx > 0, dy < 0, no rotation): {gt}")

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) = (ortho_y, ortho_x)."""
        return tuple(np.shape(self.sample))  # type: ignore[return-value]

    @property
    def valid(self) -> np.ndarray:
        """Cells that show a swath pixel."""
        return (self.sample != GLT_FILL) & (self.line != GLT_FILL)

    def indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(valid, line index, sample index): 0-based swath indices, 0 where not valid."""
        valid = self.valid
        line = np.where(valid, np.abs(self.line.astype(np.int64)) - 1, 0)
        sample = np.where(valid, np.abs(self.sample.astype(np.int64)) - 1, 0)
        return valid, line, sample

    def check_swath(self, shape: tuple[int, int]) -> None:
        """Refuse a GLT that points outside a swath of (lines, samples)."""
        valid, line, sample = self.indices()
        if not valid.any():
            return
        if line[valid].max() >= shape[0] or sample[valid].max() >= shape[1]:
            raise InputProductError(
                self.source, f"GLT points at line {int(line[valid].max()) + 1} / sample "
                             f"{int(sample[valid].max()) + 1} (1-based) outside the swath of "
                             f"{shape[0]} lines x {shape[1]} samples")

    def resample(self, swath: np.ndarray, fill: float | int) -> np.ndarray:
        """The swath array on the GLT grid: each cell takes the pixel its GLT entry names.

        Nearest neighbour by construction (the GLT is the resampling); `fill` where no pixel.
        """
        swath = np.asarray(swath)
        if swath.ndim != 2:
            raise ValueError(f"swath must be (lines, samples), not {swath.shape}")
        self.check_swath(swath.shape)
        valid, line, sample = self.indices()
        out = np.full(self.shape, fill, dtype=swath.dtype)
        out[valid] = swath[line[valid], sample[valid]]
        return out

    # -- grid geometry -----------------------------------------------------------------------

    def cell_of(self, x: float, y: float) -> tuple[int, int]:
        """(row, col) of the cell containing the point (lon, lat); may be outside the grid."""
        gt = self.geotransform
        return int(math.floor((y - gt[3]) / gt[5])), int(math.floor((x - gt[0]) / gt[1]))

    def cell_centre(self, row: int, col: int) -> tuple[float, float]:
        """(lon, lat) of a cell centre."""
        gt = self.geotransform
        return gt[0] + (col + 0.5) * gt[1], gt[3] + (row + 0.5) * gt[5]

    def grid_bounds(self) -> Bounds:
        """Outer edges of the whole grid (what EMIT writes as the product's bounding box)."""
        gt = self.geotransform
        rows, cols = self.shape
        return Bounds(gt[0], gt[3] + rows * gt[5], gt[0] + cols * gt[1], gt[3])

    def data_bounds(self) -> Bounds:
        """Outer edges of the cells that show a swath pixel (the grid's when there are none)."""
        valid = self.valid
        if not valid.any():
            return self.grid_bounds()
        rows = np.flatnonzero(valid.any(axis=1))
        cols = np.flatnonzero(valid.any(axis=0))
        gt = self.geotransform
        return Bounds(float(gt[0] + cols[0] * gt[1]), float(gt[3] + (rows[-1] + 1) * gt[5]),
                      float(gt[0] + (cols[-1] + 1) * gt[1]), float(gt[3] + rows[0] * gt[5]))

    @property
    def resolution(self) -> tuple[float, float]:
        """Cell size (x, y) in CRS units (degrees for EPSG:4326), both positive."""
        return self.geotransform[1], -self.geotransform[5]


def read_glt(path: Path | str, swath_shape: tuple[int, int] | None = None) -> Glt:
    """Read an EMIT GLT (ENVI, 2 integer bands: sample, line) and its `map info`.

    `swath_shape` (lines, samples) of the radiance, when given, is checked against every
    entry: a GLT pointing outside the swath belongs to another acquisition.
    """
    header = read_header(path)
    where = header.header_path
    if header.bands < 2:
        raise InputProductError(where, f"GLT has {header.bands} band(s), expected 2 "
                                       "(sample lookup, line lookup)")
    if header.dtype.kind not in "iu":
        raise InputProductError(where, f"GLT must hold integers, not {header.dtype}")
    map_info = header.meta.get("map info")
    if map_info is None:
        raise InputProductError(where, "GLT header has no 'map info' (its grid is unknown)")
    info = parse_map_info(map_info, where)
    if info.epsg != EPSG_WGS84:
        raise InputProductError(where, f"GLT grid is '{info.projection}' on datum '{info.datum}'; "
                                       "only geographic WGS-84 (EPSG:4326) grids are supported")
    with EnviReader(header) as reader:
        cube = reader.read_lines(0, header.lines, [0, 1], np.int64)
    if np.abs(cube).max(initial=0) > np.iinfo(np.int32).max:
        raise InputProductError(where, "GLT values exceed the int32 range")
    glt = Glt(sample=np.ascontiguousarray(cube[:, :, 0], np.int32),
              line=np.ascontiguousarray(cube[:, :, 1], np.int32),
              geotransform=info.geotransform, crs_wkt=WGS84_WKT, epsg=EPSG_WGS84,
              source=header.data_path)
    return checked(glt, where, swath_shape)


def checked(glt: Glt, where: Path, swath_shape: tuple[int, int] | None) -> Glt:
    """The checks of every GLT, whichever file it came from: no cell with only one of sample
    and line, and (given the swath's shape) every entry inside the swath."""
    half = (glt.sample == GLT_FILL) != (glt.line == GLT_FILL)
    if half.any():
        raise InputProductError(where, f"GLT has {int(half.sum())} cells where only one of "
                                       "sample and line is 0")
    if swath_shape is not None:
        glt.check_swath(swath_shape)
    return glt
