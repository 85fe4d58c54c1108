"""Ground geometry of the instrument grid, from the L1B location arrays (lon, lat, elevation).

Two things the cloud buffer and the cloud shadow need and the radiance alone cannot give: the
ground size of a pixel (to turn metres into pixels) and, per pixel, which way east and north
point on the swath grid (the swath is not north-up: EMIT flies along the ISS track, slanted).
Both come from the differences of neighbouring pixels' positions, on a sphere; a location file
whose geometry cannot be that of an EMIT swath is refused before anything is computed from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt

from l2b_mask.errors import InputProductError

LOCATION_FILL = -9999.0
EARTH_RADIUS_M = 6_371_008.8  # IUGG mean Earth radius
NOMINAL_PIXEL_SIZE_M = 60.0  # EMIT's nominal ground sampling distance, when there is no location
# What an EMIT pixel can measure on the ground: ~60 m at nadir from the ISS (400-420 km), a
# little more off nadir. Outside this the location file cannot belong to an EMIT observation.
PLAUSIBLE_SPACING_M = (20.0, 200.0)
# A pixel's ground cell (|det| of the local metres-per-pixel Jacobian) against the product of its
# two spacings: 1 for a square grid, near 0 when lines and samples run along one ground line.
_MIN_CELL_SQUARENESS = 0.25
_ELEVATION_RANGE_M = (-1000.0, 9000.0)

SPACING_METHOD = (
    "mean of the along-track mean and the cross-track mean of the great-circle (haversine, "
    f"sphere of radius {EARTH_RADIUS_M:.1f} m, elevation ignored) distances between the "
    "centres of adjacent pixels (line to line, sample to sample), over pairs of pixels that "
    "both have a location (fill -9999 and non-finite values excluded)"
)

__all__ = [
    "EARTH_RADIUS_M",
    "NOMINAL_PIXEL_SIZE_M",
    "SPACING_METHOD",
    "GroundSpacing",
    "LocalAxes",
    "check_location_geometry",
    "ground_spacing",
    "local_axes",
    "nominal_ground_spacing",
]


@dataclass(frozen=True)
class GroundSpacing:
    """Mean distance between centres of adjacent pixels, and how it was obtained (metadata)."""

    mean_m: float  # (along + cross) / 2: the pixel size the cloud buffer uses
    along_track_m: float  # line to line
    cross_track_m: float  # sample to sample
    method: str  # one sentence for the product metadata


def nominal_ground_spacing() -> GroundSpacing:
    """EMIT's nominal 60 m, for when there is no location file (say so in log and metadata)."""
    return GroundSpacing(NOMINAL_PIXEL_SIZE_M, NOMINAL_PIXEL_SIZE_M, NOMINAL_PIXEL_SIZE_M,
                         "nominal EMIT ground sampling distance (no location file)")


@dataclass(frozen=True)
class LocalAxes:
    """Per-pixel map from a ground displacement (east, north) in metres to (line, sample).

    d_line = line_per_east * dx + line_per_north * dy, and d_sample likewise; each array is
    float64 (lines, samples), finite everywhere (pixels without a location take the axes of
    the nearest pixel that has one: the grid turns slowly).
    """

    line_per_east: np.ndarray
    line_per_north: np.ndarray
    sample_per_east: np.ndarray
    sample_per_north: np.ndarray

    def to_grid(
        self, d_east_m: np.ndarray, d_north_m: np.ndarray, index: tuple[np.ndarray, ...] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(d_line, d_sample) of ground displacements, at every pixel or at the pixels `index`."""
        sel = (lambda a: a) if index is None else (lambda a: a[index])
        d_line = sel(self.line_per_east) * d_east_m + sel(self.line_per_north) * d_north_m
        d_sample = sel(self.sample_per_east) * d_east_m + sel(self.sample_per_north) * d_north_m
        return d_line, d_sample


def _valid(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    return (np.isfinite(lon) & np.isfinite(lat) & (lon != LOCATION_FILL) & (lat != LOCATION_FILL)
            & (np.abs(lat) <= 90.0) & (lon >= -180.0) & (lon <= 360.0))


def _haversine_m(lon1: np.ndarray, lat1: np.ndarray, lon2: np.ndarray, lat2: np.ndarray) -> np.ndarray:
    p1, p2 = np.deg2rad(lat1), np.deg2rad(lat2)
    dp, dl = p2 - p1, np.deg2rad(lon2 - lon1)
    a = np.sin(dp / 2.0) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2.0) ** 2
    return 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _pair_distances(lon: np.ndarray, lat: np.ndarray, ok: np.ndarray, axis: int) -> np.ndarray:
    """Distances between each pixel and its next neighbour along `axis`, both valid."""
    head = (slice(None, -1), slice(None)) if axis == 0 else (slice(None), slice(None, -1))
    tail = (slice(1, None), slice(None)) if axis == 0 else (slice(None), slice(1, None))
    both = ok[head] & ok[tail]
    return _haversine_m(lon[head][both], lat[head][both], lon[tail][both], lat[tail][both])


def ground_spacing(lon: np.ndarray, lat: np.ndarray) -> GroundSpacing:
    """Mean ground spacing of adjacent pixels (see SPACING_METHOD); NaN for a direction that
    has no valid pair (a one-line scene has no along-track pair: the cross-track mean is used)."""
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    ok = _valid(lon, lat)
    along = _pair_distances(lon, lat, ok, 0)
    cross = _pair_distances(lon, lat, ok, 1)
    along_m = float(along.mean()) if along.size else float("nan")
    cross_m = float(cross.mean()) if cross.size else float("nan")
    mean_m = float(np.nanmean([along_m, cross_m])) if along.size or cross.size else float("nan")
    return GroundSpacing(mean_m, along_m, cross_m, SPACING_METHOD)


def _metres_per_pixel(lon: np.ndarray, lat: np.ndarray, ok: np.ndarray, axis: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(east, north) metres per pixel step along `axis`: central differences where both
    neighbours have a location, one-sided at edges and next to fill, NaN where neither."""
    lat_r = np.deg2rad(np.where(ok, lat, 0.0))
    east_per_deg = EARTH_RADIUS_M * np.pi / 180.0 * np.cos(lat_r)
    north_per_deg = EARTH_RADIUS_M * np.pi / 180.0
    d_east = np.full(lon.shape, np.nan)
    d_north = np.full(lon.shape, np.nan)
    n = lon.shape[axis]
    if n < 2:
        return d_east, d_north
    lo = [slice(None)] * 2
    hi = [slice(None)] * 2
    lo[axis], hi[axis] = slice(None, -1), slice(1, None)
    lo_t, hi_t = tuple(lo), tuple(hi)
    # Forward difference at each pixel with a next neighbour, backward at each with a previous.
    dlon = (lon[hi_t] - lon[lo_t] + 180.0) % 360.0 - 180.0  # across the antimeridian too
    dlat = lat[hi_t] - lat[lo_t]
    pair = ok[hi_t] & ok[lo_t]
    fe, fn = np.full(lon.shape, np.nan), np.full(lon.shape, np.nan)
    be, bn = np.full(lon.shape, np.nan), np.full(lon.shape, np.nan)
    fe[lo_t] = np.where(pair, dlon * east_per_deg[lo_t], np.nan)
    fn[lo_t] = np.where(pair, dlat * north_per_deg, np.nan)
    be[hi_t] = np.where(pair, dlon * east_per_deg[hi_t], np.nan)
    bn[hi_t] = np.where(pair, dlat * north_per_deg, np.nan)
    with np.errstate(invalid="ignore"):
        d_east = np.where(np.isnan(fe), be, np.where(np.isnan(be), fe, 0.5 * (fe + be)))
        d_north = np.where(np.isnan(fn), bn, np.where(np.isnan(bn), fn, 0.5 * (fn + bn)))
    return d_east, d_north


def _fill_nearest(arrays: list[np.ndarray], missing: np.ndarray) -> list[np.ndarray]:
    """Give each missing pixel the value of the nearest pixel that is not missing."""
    if not missing.any():
        return arrays
    _, (il, isamp) = distance_transform_edt(missing, return_indices=True)
    return [a[il, isamp] for a in arrays]


def _jacobian(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, ...]:
    """East/north metres per line and per sample, per pixel (NaN where unknown), and validity."""
    ok = _valid(lon, lat)
    e_l, n_l = _metres_per_pixel(lon, lat, ok, 0)
    e_s, n_s = _metres_per_pixel(lon, lat, ok, 1)
    return e_l, n_l, e_s, n_s, ok


def local_axes(lon: np.ndarray, lat: np.ndarray) -> LocalAxes:
    """Inverse of each pixel's local Jacobian [[E/line, E/sample], [N/line, N/sample]].

    A one-line or one-sample scene has no second direction: it is taken perpendicular to the
    known one and of the same length, samples to the right of the line direction (a guess that
    only matters for displacements off the one known axis). Call `check_location_geometry`
    first: degenerate geometry gives no usable inverse.
    """
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    e_l, n_l, e_s, n_s, _ = _jacobian(lon, lat)
    if lon.shape[0] < 2:
        e_l, n_l = -n_s, e_s.copy()
    if lon.shape[1] < 2:
        e_s, n_s = n_l.copy(), -e_l
    missing = ~(np.isfinite(e_l) & np.isfinite(n_l) & np.isfinite(e_s) & np.isfinite(n_s))
    if missing.all():
        raise ValueError("no pixel has a usable local geometry")
    e_l, n_l, e_s, n_s = _fill_nearest([e_l, n_l, e_s, n_s], missing)
    det = e_l * n_s - e_s * n_l
    return LocalAxes(line_per_east=n_s / det, line_per_north=-e_s / det,
                     sample_per_east=-n_l / det, sample_per_north=e_l / det)


def check_location_geometry(
    path: Path | str, lon: np.ndarray, lat: np.ndarray, elevation: np.ndarray | None = None,
    expected_shape: tuple[int, int] | None = None,
) -> GroundSpacing:
    """Refuse a location file that cannot be the geometry of this observation; return its
    ground spacing when it can.

    Refused (InputProductError, exit 4, naming `path`): a shape other than the observation's;
    no pixel with a location; coordinates outside the globe; adjacent pixels whose mean spacing
    along or across track is outside 20-200 m (EMIT: ~60 m), which includes every pixel at one
    point; a grid whose lines and samples run along one ground direction; elevations outside
    -1000..9000 m.
    """
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    if expected_shape is not None and lon.shape != tuple(expected_shape):
        raise InputProductError(path, f"location is {lon.shape[0]} lines x {lon.shape[1]} samples "
                                      f"but the observation is {expected_shape[0]} x {expected_shape[1]}")
    if lat.shape != lon.shape or lon.ndim != 2:
        raise InputProductError(path, f"longitude {lon.shape} and latitude {lat.shape} must be "
                                      "2-D and of one shape")
    present = np.isfinite(lon) & np.isfinite(lat) & (lon != LOCATION_FILL) & (lat != LOCATION_FILL)
    if not present.any():
        raise InputProductError(path, "no pixel has a location (all fill or NaN)")
    ok = _valid(lon, lat)
    if not ok[present].all():
        raise InputProductError(path, "longitude/latitude outside [-180, 360] x [-90, 90] degrees")
    spacing = ground_spacing(lon, lat)
    lo, hi = PLAUSIBLE_SPACING_M
    for name, value in (("along-track", spacing.along_track_m), ("cross-track", spacing.cross_track_m)):
        if np.isfinite(value) and not lo <= value <= hi:
            raise InputProductError(path, f"mean {name} spacing of adjacent pixels is {value:.4g} m, "
                                          f"not the ~60 m of EMIT pixels ({lo:g}-{hi:g} m)")
    if not np.isfinite(spacing.mean_m):
        raise InputProductError(path, "no two adjacent pixels both have a location")
    if min(lon.shape) >= 2:
        e_l, n_l, e_s, n_s, _ = _jacobian(lon, lat)
        cell = np.abs(e_l * n_s - e_s * n_l) / (np.hypot(e_l, n_l) * np.hypot(e_s, n_s))
        squareness = float(np.nanmedian(cell)) if np.isfinite(cell).any() else 0.0
        if squareness < _MIN_CELL_SQUARENESS:
            raise InputProductError(path, "lines and samples run along one ground direction "
                                          f"(median |sin| of the angle between them {squareness:.3g})")
    if elevation is not None:
        elev = np.asarray(elevation, np.float64)[present]
        elev = elev[np.isfinite(elev) & (elev != LOCATION_FILL)]
        e_lo, e_hi = _ELEVATION_RANGE_M
        if elev.size and not (e_lo <= elev.min() and elev.max() <= e_hi):
            raise InputProductError(path, f"elevation {elev.min():.6g}..{elev.max():.6g} m outside "
                                          f"{e_lo:g}..{e_hi:g} m")
    return spacing
