"""Geometric cloud shadow on the instrument grid (ATBD 4.2.3), with an optional darkness test.

A cloud top at height h seen by the instrument at ground pixel G shades the ground at
G + h [tan(SZA) u(SAA + 180) - tan(VZA) u(VAA + 180)], u(a) = (sin a, cos a) as (east, north),
azimuths clockwise from north, SZA/SAA towards the sun and VZA/VAA towards the sensor: the sun
ray through the cloud lands on the anti-solar side, and the instrument had seen the cloud
displaced the other way by its own parallax. The cloud's height is unknown, so every cloud
pixel is swept over a range of heights, finely enough (at most one pixel of displacement per
step) that the swept shadow has no gaps; the displacement is turned from metres into lines and
samples with the location file's local east/north axes of each cloud pixel (the swath is not
north-up). The sweep flags far more ground than the real shadow (which lies at the cloud's one
height); the darkness test keeps only the swept pixels that are also clearly darker than the
clear ground of their own kind (water or land) around them: open water is as dark in the NIR
and SWIR as shaded land, so comparing it with land would call every lake a shadow.

The sweep is bounded by the scene whatever the angles (ATBD 4.2.3): a pixel whose sun or view
is at or below the horizon, or so near it that its shadow at the lowest height already lies
farther than the scene's diagonal, has no shadow value (its shading cloud could only be outside
the scene); a cloud pixel whose swept line is longer than `SWEEP_BUDGET_PX` (or the scene's
diagonal, if longer) is swept only up to the height where its shadow leaves the scene. The
steps are then at most about the budget plus the diagonal, however near the horizon.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt, map_coordinates

from l2b_mask.algorithm.geometry import LocalAxes

FLAG_CLEAR, FLAG_CLOUD, FLAG_NO_VALUE = 0, 1, 255
SHADOW, NOT_SHADOW, SHADOW_NO_VALUE = 1, 0, 255
DEFAULT_CLOUD_HEIGHTS_M = (500.0, 3000.0)
MAX_CLOUD_HEIGHT_M = 20_000.0  # above the tropopause anywhere: a larger value is a unit mistake
# Wavelengths (nm) of the reflectance bands the darkness test takes, in this order: green, then
# NIR and SWIR. Brightness is the mean of the NIR and SWIR bands, where diffuse skylight is
# small (deep shadows) and haze adds little; green and NIR give the water index.
DARKNESS_BANDS_NM = (560.0, 860.0, 1250.0, 1650.0)
# Pixels of swept shadow line that one common height grid may take (at least the diagonal):
# above it a cloud pixel's sweep is clipped to the part that can land in the scene. Normal
# angles stay far below it (3 km at 80 degrees: 280 pixels of 60 m).
SWEEP_BUDGET_PX = 1024

__all__ = [
    "DARKNESS_BANDS_NM",
    "DEFAULT_CLOUD_HEIGHTS_M",
    "DarknessTest",
    "SunViewAngles",
    "SweepWork",
    "cloud_shadow_flag",
    "darker_than_surroundings",
    "geometric_shadow",
    "shadow_displacement_per_m",
    "sweep_shadow",
    "unusable_geometry",
    "validate_height_range",
]


@dataclass(frozen=True)
class SunViewAngles:
    """Per-pixel angles of the observation file, degrees, each (lines, samples).

    Bands named 'to-sun zenith', 'to-sun azimuth', 'to-sensor zenith', 'to-sensor azimuth'
    (EMIT obs indices 4, 3, 2, 1); azimuths clockwise from north.
    """

    solar_zenith: np.ndarray
    solar_azimuth: np.ndarray
    view_zenith: np.ndarray
    view_azimuth: np.ndarray

    def valid(self) -> np.ndarray:
        """Pixels whose four angles are finite and whose zeniths lie in [0, 90)."""
        ok = np.ones(np.shape(self.solar_zenith), bool)
        for a in (self.solar_zenith, self.solar_azimuth, self.view_zenith, self.view_azimuth):
            ok &= np.isfinite(a)
        for z in (self.solar_zenith, self.view_zenith):
            ok &= (z >= 0.0) & (z < 90.0)
        return ok


@dataclass(frozen=True)
class DarknessTest:
    """Keep a swept pixel only if its brightness is below `ratio` times the local median
    brightness of the clear pixels of its kind.

    Brightness: the mean of the NIR and SWIR reflectance bands (DARKNESS_BANDS_NM[1:]). Kind:
    water where (green - NIR) / (green + NIR) > `water_index`, else land. References: clear
    pixels outside the swept shadow. Local median: per tile of `tile_px` x `tile_px` pixels
    (none when fewer than `min_reference_fraction` of its pixels are references), then the
    median over each tile's 3 x 3 neighbourhood of tiles, then bilinear between tile centres;
    a tile with no reference in its neighbourhood takes the nearest tile that has one. With no
    reference of its kind anywhere, a pixel is compared with the references of the other kind.
    Defaults chosen on synthetic seeds 1-3 (docs/ATBD.md 4.2.3).
    """

    ratio: float = 0.6
    water_index: float = 0.3
    tile_px: int = 32
    min_reference_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"darkness ratio must be in (0, 1], got {self.ratio}")
        if not -1.0 <= self.water_index <= 1.0:
            raise ValueError(f"water index threshold must be in [-1, 1], got {self.water_index}")
        if self.tile_px < 2:
            raise ValueError(f"darkness tile must be at least 2 pixels, got {self.tile_px}")
        if not 0.0 <= self.min_reference_fraction <= 1.0:
            raise ValueError("min_reference_fraction must be in [0, 1]")


def validate_height_range(heights_m: Sequence[float]) -> tuple[float, float]:
    """(min, max) cloud-top heights in metres, or ValueError naming what is wrong.

    Two numbers, 0 <= min <= max <= 20 km (min == max sweeps one height).
    """
    values = tuple(float(h) for h in heights_m)
    if len(values) != 2:
        raise ValueError(f"cloud heights must be [min, max] in metres, got {len(values)} values")
    lo, hi = values
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"cloud heights must be finite, got [{lo}, {hi}]")
    if lo < 0.0 or hi < 0.0:
        raise ValueError(f"cloud heights must not be negative, got [{lo:g}, {hi:g}] m")
    if lo > hi:
        raise ValueError(f"cloud height min {lo:g} m is above max {hi:g} m")
    if hi > MAX_CLOUD_HEIGHT_M:
        raise ValueError(f"cloud height max {hi:g} m is above {MAX_CLOUD_HEIGHT_M:g} m (metres?)")
    return lo, hi


def shadow_displacement_per_m(
    angles: SunViewAngles, index: tuple[np.ndarray, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(east, north) ground displacement of the shadow from the seen cloud, per metre of height.

    tan(SZA) u(SAA + 180) - tan(VZA) u(VAA + 180) = -tan(SZA) u(SAA) + tan(VZA) u(VAA).
    """
    def sel(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float64)
        return a if index is None else a[index]

    tan_s = np.tan(np.deg2rad(sel(angles.solar_zenith)))
    tan_v = np.tan(np.deg2rad(sel(angles.view_zenith)))
    saa, vaa = np.deg2rad(sel(angles.solar_azimuth)), np.deg2rad(sel(angles.view_azimuth))
    return -tan_s * np.sin(saa) + tan_v * np.sin(vaa), -tan_s * np.cos(saa) + tan_v * np.cos(vaa)


@dataclass(frozen=True)
class SweepWork:
    """What a sweep cost: the steps of the common height grid (cloud pixels whose whole line
    fits the budget), of the clipped grid (the others), and the cloud pixels in each."""

    uniform_steps: int
    clipped_steps: int
    uniform_pixels: int
    clipped_pixels: int

    @property
    def steps(self) -> int:
        return self.uniform_steps + self.clipped_steps


def scene_reach_px(shape: tuple[int, ...]) -> float:
    """The farthest two pixels of the scene are apart (its diagonal), in pixels."""
    return float(np.hypot(shape[0], shape[1]))


def _px_per_m(angles: SunViewAngles, axes: LocalAxes, index: tuple[np.ndarray, ...] | None
              ) -> tuple[np.ndarray, np.ndarray]:
    """(d_line, d_sample) of the shadow per metre of cloud height."""
    de, dn = shadow_displacement_per_m(angles, index)
    return axes.to_grid(de, dn, index)


def unusable_geometry(angles: SunViewAngles, axes: LocalAxes, lowest_height_m: float
                      ) -> np.ndarray:
    """Bool (lines, samples): pixels whose angles the shadow cannot use: not finite, sun or
    view at or beyond the horizon, or so near it that the shadow at the lowest cloud height
    lies farther away than the scene's diagonal."""
    valid = angles.valid()
    shape = np.shape(angles.solar_zenith)
    far = np.zeros(shape, bool)
    if lowest_height_m > 0.0 and valid.any():
        index = np.nonzero(valid)
        with np.errstate(over="ignore", invalid="ignore"):
            dl, ds = _px_per_m(angles, axes, index)
            far[index] = ~(np.hypot(dl, ds) * lowest_height_m <= scene_reach_px(shape))
    return ~valid | far


def _sweep(swept: np.ndarray, cl: np.ndarray, cs: np.ndarray, dl: np.ndarray, ds: np.ndarray,
           heights: Iterable[np.ndarray | np.floating]) -> None:
    """Mark the landing pixel of every cloud pixel at every height (per pixel or common)."""
    lines, samples = swept.shape
    fl, fs = cl.astype(np.float32), cs.astype(np.float32)
    dl, ds = dl.astype(np.float32), ds.astype(np.float32)
    for h in heights:
        tl = np.rint(fl + h * dl).astype(np.int32)
        ts = np.rint(fs + h * ds).astype(np.int32)
        inside = (tl >= 0) & (tl < lines) & (ts >= 0) & (ts < samples)
        swept[tl[inside], ts[inside]] = True


def sweep_shadow(
    flag: np.ndarray, angles: SunViewAngles, axes: LocalAxes,
    cloud_heights_m: Sequence[float] = DEFAULT_CLOUD_HEIGHTS_M,
    unusable: np.ndarray | None = None,
) -> tuple[np.ndarray, SweepWork]:
    """`geometric_shadow`, and what its sweep cost. `unusable`: `unusable_geometry` when the
    caller has it already."""
    lo, hi = validate_height_range(cloud_heights_m)
    if unusable is None:
        unusable = unusable_geometry(angles, axes, lo)
    cloud = (flag == FLAG_CLOUD) & ~unusable
    cl, cs = np.nonzero(cloud)
    swept = np.zeros(flag.shape, bool)
    if cl.size == 0:
        return swept, SweepWork(0, 0, 0, 0)
    dl, ds = _px_per_m(angles, axes, (cl, cs))
    rate = np.hypot(dl, ds)  # pixels of displacement per metre of height
    reach = scene_reach_px(flag.shape)
    whole = rate * (hi - lo) <= max(float(SWEEP_BUDGET_PX), reach)
    uniform = clipped = 0
    if whole.any():
        # <= 1 pixel of displacement per step, on one grid of heights for all these pixels
        uniform = max(1, int(np.ceil((hi - lo) * float(np.max(rate[whole])))))
        _sweep(swept, cl[whole], cs[whole], dl[whole], ds[whole],
               np.linspace(lo, hi, uniform + 1, dtype=np.float32))
    steep = ~whole
    if steep.any():
        # each from the lowest height to where its shadow has left the scene, <= 1 px a step
        span = np.minimum(hi, (reach + 1.0) / rate[steep]) - lo
        clipped = max(1, int(np.ceil(float(np.max(span * rate[steep])))))
        span32, lo32 = span.astype(np.float32), np.float32(lo)
        _sweep(swept, cl[steep], cs[steep], dl[steep], ds[steep],
               (lo32 + t * span32 for t in np.linspace(0.0, 1.0, clipped + 1, dtype=np.float32)))
    work = SweepWork(uniform, clipped, int(np.count_nonzero(whole)), int(np.count_nonzero(steep)))
    return swept & (flag == FLAG_CLEAR), work


def geometric_shadow(
    flag: np.ndarray, angles: SunViewAngles, axes: LocalAxes,
    cloud_heights_m: Sequence[float] = DEFAULT_CLOUD_HEIGHTS_M,
    unusable: np.ndarray | None = None,
) -> np.ndarray:
    """Bool (lines, samples): clear pixels (flag 0) under the shadow of some cloud pixel swept
    over the height range. Cloud pixels whose angles are unusable (`unusable_geometry`) cast
    nothing."""
    return sweep_shadow(flag, angles, axes, cloud_heights_m, unusable)[0]


def _tile_medians(brightness: np.ndarray, reference: np.ndarray, test: DarknessTest) -> np.ndarray:
    """Median reference brightness per tile (NaN where too few references), (tiles_l, tiles_s)."""
    t = test.tile_px
    lines, samples = brightness.shape
    nl, ns = -(-lines // t), -(-samples // t)
    padded = np.full((nl * t, ns * t), np.nan, np.float32)
    padded[:lines, :samples] = np.where(reference, brightness, np.nan)
    tiles = padded.reshape(nl, t, ns, t).transpose(0, 2, 1, 3).reshape(nl, ns, t * t)
    count = np.isfinite(tiles).sum(axis=2)
    medians = np.full((nl, ns), np.nan, np.float32)
    enough = count >= max(1, int(test.min_reference_fraction * t * t))
    if enough.any():
        medians[enough] = np.nanmedian(tiles[enough], axis=1)
    return medians


def _local_clear_median(brightness: np.ndarray, reference: np.ndarray, test: DarknessTest
                        ) -> np.ndarray | None:
    """Per-pixel local median brightness of the reference pixels; None if there is none."""
    medians = _tile_medians(brightness, reference, test)
    if not np.isfinite(medians).any():
        return None
    padded = np.pad(medians, 1, constant_values=np.nan)
    nl, ns = medians.shape
    stack = np.stack([padded[i:i + nl, j:j + ns] for i in range(3) for j in range(3)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN neighbourhoods: filled below
        hood = np.nanmedian(stack, axis=0)
    missing = ~np.isfinite(hood)
    if missing.any():
        _, (il, js) = distance_transform_edt(missing, return_indices=True)
        hood = hood[il, js]
    t = test.tile_px
    lines, samples = brightness.shape
    rows = (np.arange(lines, dtype=np.float32) + 0.5) / t - 0.5
    cols = (np.arange(samples, dtype=np.float32) + 0.5) / t - 0.5
    grid = np.meshgrid(rows, cols, indexing="ij")
    return map_coordinates(hood.astype(np.float32), grid, order=1, mode="nearest")


def darker_than_surroundings(
    reflectance: Sequence[np.ndarray] | np.ndarray, reference: np.ndarray, test: DarknessTest,
) -> np.ndarray | None:
    """Bool (lines, samples): darker than `ratio` x the local clear median of its kind (see
    DarknessTest); None when there is no reference pixel at all. Not finite: not darker."""
    bands = [np.asarray(b, np.float32) for b in reflectance]
    shape = reference.shape
    if len(bands) < 2 or any(b.shape != shape for b in bands):
        raise ValueError(f"the darkness test needs {len(DARKNESS_BANDS_NM)} reflectance bands "
                         f"(near {DARKNESS_BANDS_NM} nm), each of shape {shape}")
    green, nir = bands[0], bands[1]
    brightness = np.mean(np.stack(bands[1:]), axis=0)
    with np.errstate(all="ignore"):
        water = (green - nir) / (green + nir) > test.water_index
    reference = reference & np.isfinite(brightness)
    background = {kind: _local_clear_median(brightness, reference & (water == kind), test)
                  for kind in (True, False)}
    on_water = background[True] if background[True] is not None else background[False]
    on_land = background[False] if background[False] is not None else background[True]
    if on_water is None or on_land is None:
        return None
    with np.errstate(invalid="ignore"):
        return brightness < test.ratio * np.where(water, on_water, on_land)


def cloud_shadow_flag(
    flag: np.ndarray, angles: SunViewAngles, axes: LocalAxes,
    cloud_heights_m: Sequence[float] = DEFAULT_CLOUD_HEIGHTS_M,
    darkness_test: bool = True,
    reflectance: Sequence[np.ndarray] | np.ndarray | None = None,
    darkness: DarknessTest = DarknessTest(),
) -> np.ndarray:
    """Uint8 (lines, samples) cloud shadow flag: 1 shadow, 0 not, 255 where `flag` is 255 or
    the pixel's angles are unusable (`unusable_geometry`: at or near the horizon).

    `flag`: the cloud flag (1 cloud, 0 clear, 255 no value). `reflectance`: TOA reflectance
    bands nearest DARKNESS_BANDS_NM, in that order, each (lines, samples); required when
    `darkness_test` is true. With the test on, a swept pixel whose brightness is not finite is
    dropped, and a scene with no clear pixel outside the swept shadow keeps the whole geometric
    shadow (there is nothing to compare with).
    """
    flag = np.asarray(flag)
    if flag.ndim != 2:
        raise ValueError(f"flag must be 2-D (lines, samples), got shape {flag.shape}")
    for a in (angles.solar_zenith, angles.solar_azimuth, angles.view_zenith, angles.view_azimuth):
        if np.shape(a) != flag.shape:
            raise ValueError(f"angle shape {np.shape(a)} differs from the flag's {flag.shape}")
    if darkness_test and reflectance is None:
        raise ValueError("the darkness test needs reflectance bands (or darkness_test=False)")
    unusable = unusable_geometry(angles, axes, validate_height_range(cloud_heights_m)[0])
    shadow = geometric_shadow(flag, angles, axes, cloud_heights_m, unusable)
    if darkness_test and shadow.any():
        assert reflectance is not None
        darker = darker_than_surroundings(reflectance, (flag == FLAG_CLEAR) & ~shadow, darkness)
        if darker is not None:
            shadow &= darker
    out = np.where(shadow, SHADOW, NOT_SHADOW).astype(np.uint8)
    out[(flag == FLAG_NO_VALUE) | unusable] = SHADOW_NO_VALUE
    return out
