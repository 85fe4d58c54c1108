"""Synthetic EMIT-like L1B acquisitions (radiance, observation, location, GLT) for tests and demos.

Real EMIT scenes cannot be shipped with the project, so this module writes small, fully
deterministic stand-ins that have the same file layout, header keys and naming as the L1B
products, and radiance from a simple parametric physical model (surface patches, liquid, ice
and thin cirrus clouds, gas absorption, noise, fill). Everything is computed block by block of
lines from closed-form functions of (line, sample), so the output does not depend on the block
size and memory does not grow with the number of lines.

Class map of `SyntheticAcquisition.truth`: 0 fill, 1 clear surface, 2 thick liquid cloud,
3 ice cloud, 4 thin cirrus. Surface map of `SyntheticAcquisition.surface` (the ground under
any cloud): 0 fill, 1 vegetation, 2 soil, 3 water, 4 snow, 5 desert sand.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from l2b_mask.inputs.envi import raster_header, write_header
from l2b_mask.synthetic.shadow import SHADOW_TRUTH_OPACITY, cast_shadows, shade_factor

__all__ = [
    "CLASS_CLEAR",
    "CLASS_CIRRUS",
    "CLASS_FILL",
    "CLASS_ICE",
    "CLASS_THICK",
    "FILL_VALUE",
    "SURFACE_NAMES",
    "SyntheticAcquisition",
    "emit_wavelengths",
    "generate_acquisition",
    "reflectance_blocks",
    "solar_irradiance",
    "toa_reflectance",
]

FILL_VALUE = -9999.0
N_BANDS = 285

CLASS_FILL, CLASS_CLEAR, CLASS_THICK, CLASS_ICE, CLASS_CIRRUS = 0, 1, 2, 3, 4
SURFACE_NAMES = {0: "fill", 1: "vegetation", 2: "soil", 3: "water", 4: "snow", 5: "desert"}
_VEG, _SOIL, _WATER, _SNOW, _DESERT = 1, 2, 3, 4, 5

# Partial-band fill (option): band centres nearest these wavelengths get -9999 in a few pixels.
# 381 and 1300 nm lie in ranges the v0.1.0 model drops; 826 and 2200 nm are bands it uses.
PARTIAL_FILL_DROPPED_NM = (381.0, 1300.0)
PARTIAL_FILL_KEPT_NM = (826.0, 2200.0)
_PARTIAL_FILL_RATE = 0.01

OBS_BAND_NAMES = (
    "Path length (sensor-to-ground in meters)",
    "To-sensor azimuth (0 to 360 degrees CW from N)",
    "To-sensor zenith (0 to 90 degrees from zenith)",
    "To-sun azimuth (0 to 360 degrees CW from N)",
    "To-sun zenith (0 to 90 degrees from zenith)",
    "Solar phase",
    "Slope",
    "Aspect",
    "Cosine(i)",
    "UTC Time (decimal hours)",
    "Earth-sun distance (AU)",
)
LOC_BAND_NAMES = ("Longitude (WGS-84)", "Latitude (WGS-84)", "Elevation (m)")
GLT_BAND_NAMES = ("GLT Sample Lookup", "GLT Line Lookup")
WGS84_WKT = (
    'GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",SPHEROID["WGS_1984",6378137.0,298.257223563]],'
    'PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]]'
)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S+0000"

# Viewing and orbit geometry (ISS-like).
PIXEL_M = 60.0  # ground sampling distance, both directions
GRID_DEG = 0.000542  # orthorectified grid cell, degrees, both axes
HEADING_DEG = 50.0  # along-track direction, degrees clockwise from north: a slanted strip
ALTITUDE_M = 410_000.0
LINE_TIME_S = PIXEL_M / 7_200.0  # ground speed ~7.2 km/s
M_PER_DEG = 111_319.49  # metres per degree of latitude (and of longitude at the equator)
SUN_AZIMUTH_DEG = 62.0

# Block sizes: at most this many pixels of 285 bands are computed at once, whatever
# `lines_per_block` asks, so that a full-width scene stays within a few hundred MB.
_MAX_BLOCK_PIXELS = 1 << 15
_MAX_GLT_CELLS = 1 << 16

_RADIANCE_NOISE_REL = 0.005
_RADIANCE_NOISE_ABS = 0.02  # uW/cm2/nm/sr: a noise floor, so deep absorption bands dip below 0


# ---------------------------------------------------------------------------------------------
# Spectral grid and the solar irradiance


def emit_wavelengths() -> tuple[np.ndarray, np.ndarray]:
    """EMIT-like band centres and FWHM (nm), 285 bands from 381 to 2493.2 nm.

    The spacing shrinks slightly with wavelength (7.47 to 7.41 nm), as on the instrument; the
    values are rounded to the 5 decimals the headers carry so headers and arrays agree.
    """
    i = np.arange(N_BANDS, dtype=np.float64)
    curvature = -1.0e-4
    slope = (2493.2 - 381.0 - curvature * (N_BANDS - 1) ** 2) / (N_BANDS - 1)
    centres = 381.0 + slope * i + curvature * i**2
    fwhm = 8.6 - 0.3 * i / (N_BANDS - 1) + 0.02 * np.sin(i / 9.0)
    return np.round(centres, 5), np.round(fwhm, 5)


def _band_features(
    wl: np.ndarray, fwhm: np.ndarray, features: Sequence[tuple[float, float, float]]
) -> np.ndarray:
    """Sum of Gaussian features (centre, sigma, peak), each convolved with Gaussian band SRFs.

    The convolution of two Gaussians is a Gaussian with the variances added and the area kept,
    so narrow lines come out shallower and wider at band resolution, as on a real instrument.
    """
    srf_var = (fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))) ** 2
    total = np.zeros_like(wl, dtype=np.float64)
    for centre, sigma, peak in features:
        var = sigma**2 + srf_var
        total += peak * sigma / np.sqrt(var) * np.exp(-0.5 * (wl - centre) ** 2 / var)
    return total


_FRAUNHOFER = (  # (nm, sigma nm, fractional depth)
    (393.4, 0.9, 0.7), (396.8, 0.9, 0.6), (430.8, 1.0, 0.3), (486.1, 0.5, 0.4),
    (517.0, 1.5, 0.25), (589.3, 0.5, 0.4), (656.3, 0.6, 0.5), (850.0, 0.5, 0.3),
    (854.2, 0.6, 0.4), (866.2, 0.6, 0.35),
)


def solar_irradiance(
    wavelengths: np.ndarray | None = None, fwhm: np.ndarray | None = None
) -> np.ndarray:
    """Top-of-atmosphere solar irradiance at 1 AU (uW/cm2/nm) at band resolution.

    A 5778 K blackbody scaled to 200 uW/cm2/nm at its peak (~502 nm), dimmed a little in the
    near UV and with a few Fraunhofer-like lines: enough for plausible radiance and for
    converting it back to reflectance, with no external data file.
    """
    if wavelengths is None or fwhm is None:
        wavelengths, fwhm = emit_wavelengths()
    wl = np.asarray(wavelengths, dtype=np.float64)
    c2 = 1.438777e7  # second radiation constant, nm K
    temperature = 5778.0

    def planck(lam: np.ndarray | float) -> np.ndarray:
        return 1.0 / (np.power(lam, 5.0) * np.expm1(c2 / (np.asarray(lam) * temperature)))

    peak_nm = 2.897772e6 / temperature
    continuum = 200.0 * planck(wl) / planck(peak_nm)
    continuum *= 1.0 - 0.15 * np.exp(-(wl - 380.0) / 40.0)
    lines = _band_features(wl, np.asarray(fwhm, np.float64), _FRAUNHOFER)
    return continuum * np.clip(1.0 - lines, 0.05, None)


def toa_reflectance(
    radiance: np.ndarray, solar_zenith_deg: np.ndarray | float, earth_sun_au: np.ndarray | float,
    irradiance: np.ndarray | None = None,
) -> np.ndarray:
    """Invert the radiance model: rho = pi L d^2 / (E cos(sza)); bands on the last axis."""
    e = solar_irradiance() if irradiance is None else irradiance
    mu = np.cos(np.deg2rad(np.asarray(solar_zenith_deg, np.float64)))[..., None]
    d2 = np.asarray(earth_sun_au, np.float64)[..., None] ** 2
    return np.pi * np.asarray(radiance, np.float64) * d2 / (e * mu)


# ---------------------------------------------------------------------------------------------
# Gas absorption and reflectance spectra (band resolution)

# Vertical optical depths (centre nm, sigma nm, peak) for a ~2 cm water vapour column.
_WATER_TAU = (
    (720.0, 9.0, 0.10), (822.0, 11.0, 0.12), (940.0, 22.0, 0.65), (1135.0, 28.0, 0.75),
    (1375.0, 45.0, 4.5), (1870.0, 55.0, 5.0), (2700.0, 120.0, 4.0),
)
# Well-mixed gases: O2 (688, 762, 1268), CO2 (1575, 1605, 2010, 2060), CH4 (2300, 2350).
_MIXED_TAU = (
    (688.0, 2.5, 0.35), (762.0, 3.5, 2.5), (1268.0, 4.0, 0.15), (1575.0, 6.0, 0.06),
    (1605.0, 6.0, 0.06), (2010.0, 8.0, 0.35), (2060.0, 8.0, 0.40), (2300.0, 30.0, 0.08),
    (2350.0, 20.0, 0.08),
)


def _curve(
    wl: np.ndarray, points: Sequence[tuple[float, float]],
    dips: Sequence[tuple[float, float, float]] = (),
) -> np.ndarray:
    """Piecewise-linear reflectance through control points, times Gaussian absorption dips."""
    x, y = np.array(points, np.float64).T
    values = np.interp(wl, x, y)
    for centre, sigma, depth in dips:
        values *= 1.0 - depth * np.exp(-0.5 * ((wl - centre) / sigma) ** 2)
    return values


def _surface_spectra(wl: np.ndarray) -> np.ndarray:
    """(6, bands) reflectance of each surface code (row 0, fill, unused)."""
    visible = _curve(wl, [(380, 0.03), (450, 0.04), (500, 0.05), (550, 0.09), (600, 0.06),
                          (670, 0.035), (700, 0.05), (2500, 0.05)])
    nir = _curve(
        wl, [(380, 0.45), (900, 0.48), (1100, 0.46), (1300, 0.42), (1600, 0.33), (1800, 0.26),
             (2200, 0.17), (2500, 0.10)],
        [(970, 30, 0.05), (1200, 40, 0.10), (1450, 60, 0.45), (1940, 80, 0.60)],
    )
    red_edge = 1.0 / (1.0 + np.exp(-(wl - 715.0) / 12.0))
    vegetation = visible + (nir - visible) * red_edge
    soil = _curve(
        wl, [(380, 0.06), (500, 0.10), (700, 0.18), (1000, 0.25), (1300, 0.30), (1700, 0.34),
             (2100, 0.33), (2500, 0.28)],
        [(1450, 40, 0.12), (1940, 50, 0.18), (2200, 20, 0.08)],
    )
    water = _curve(wl, [(380, 0.07), (450, 0.065), (550, 0.05), (650, 0.025), (700, 0.015),
                        (800, 0.008), (1000, 0.005), (2500, 0.003)])
    snow = _curve(
        wl, [(380, 0.93), (600, 0.95), (800, 0.90), (950, 0.80), (1100, 0.65), (1300, 0.50),
             (1450, 0.12), (1550, 0.05), (1800, 0.20), (1950, 0.04), (2100, 0.10),
             (2250, 0.12), (2500, 0.03)],
        [(1030, 25, 0.15), (1250, 30, 0.20)],
    )
    desert = _curve(
        wl, [(380, 0.12), (450, 0.18), (550, 0.28), (650, 0.36), (800, 0.42), (1000, 0.46),
             (1300, 0.50), (1700, 0.53), (2100, 0.52), (2500, 0.45)],
        [(900, 60, 0.04), (1450, 40, 0.04), (1940, 50, 0.06), (2200, 20, 0.05)],
    )
    return np.stack([np.zeros_like(wl), vegetation, soil, water, snow, desert])


def _cloud_spectra(wl: np.ndarray) -> np.ndarray:
    """(2, bands) relative reflectance: row 0 liquid droplets, row 1 ice crystals."""
    liquid = _curve(wl, [(380, 1.0), (900, 0.98), (1100, 0.93), (1300, 0.88), (1450, 0.70),
                         (1550, 0.72), (1650, 0.72), (1800, 0.62), (1950, 0.38), (2100, 0.50),
                         (2250, 0.48), (2500, 0.30)])
    ice = _curve(wl, [(380, 1.0), (900, 0.95), (1100, 0.85), (1300, 0.75), (1450, 0.40),
                      (1550, 0.22), (1650, 0.30), (1800, 0.30), (1950, 0.08), (2100, 0.15),
                      (2250, 0.18), (2500, 0.05)])
    return np.stack([liquid, ice])


# ---------------------------------------------------------------------------------------------
# Smooth random fields: closed-form in (line, sample), so any block can be evaluated alone


@dataclass(frozen=True)
class _Field:
    """A unit-variance sum of random plane waves.

    Summed in a fixed order with elementwise operations only (no BLAS), so a pixel's value is
    bit-identical whatever block it is computed in.
    """

    k_line: np.ndarray  # radians per line
    k_sample: np.ndarray  # radians per sample
    phase: np.ndarray
    amp: np.ndarray

    @classmethod
    def draw(
        cls, rng: np.random.Generator, min_wavelength: float, max_wavelength: float,
        components: int = 16, redness: float = 0.0,
    ) -> _Field:
        theta = rng.uniform(0.0, 2.0 * np.pi, components)
        wavelength = np.exp(rng.uniform(np.log(min_wavelength), np.log(max_wavelength),
                                        components))
        phase = rng.uniform(0.0, 2.0 * np.pi, components)
        amp = (wavelength / max_wavelength) ** redness
        amp = amp / np.sqrt(np.sum(amp**2) / 2.0)
        k = 2.0 * np.pi / wavelength
        return cls(k * np.cos(theta), k * np.sin(theta), phase, amp)

    def __call__(self, lines: np.ndarray, samples: np.ndarray) -> np.ndarray:
        """Values at (lines, samples), as (n, m)."""
        return self._evaluate(lines, samples, gradient=False)[0]

    def with_gradient(
        self, lines: np.ndarray, samples: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values and their exact derivatives per line and per sample, each (n, m)."""
        value, d_line, d_sample = self._evaluate(lines, samples, gradient=True)
        assert d_line is not None and d_sample is not None
        return value, d_line, d_sample

    def at(self, lines: np.ndarray, samples: np.ndarray) -> np.ndarray:
        """Values at arbitrary (fractional) points: `lines` and `samples` broadcast together."""
        lines, samples = np.asarray(lines, np.float64), np.asarray(samples, np.float64)
        value = np.zeros(np.broadcast_shapes(lines.shape, samples.shape))
        for j in range(self.amp.size):
            value += self.amp[j] * np.cos(lines * self.k_line[j] + samples * self.k_sample[j]
                                          + self.phase[j])
        return value

    def _evaluate(
        self, lines: np.ndarray, samples: np.ndarray, gradient: bool
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        a = lines[:, None] * self.k_line + self.phase  # (n, k)
        b = samples[:, None] * self.k_sample  # (m, k)
        ca, sa, cb, sb = np.cos(a), np.sin(a), np.cos(b), np.sin(b)
        value = np.zeros((lines.size, samples.size))
        d_line = np.zeros_like(value) if gradient else None
        d_sample = np.zeros_like(value) if gradient else None
        for j in range(self.amp.size):
            cos_ab = np.outer(ca[:, j], cb[:, j]) - np.outer(sa[:, j], sb[:, j])
            value += self.amp[j] * cos_ab
            if d_line is not None and d_sample is not None:
                sin_ab = np.outer(sa[:, j], cb[:, j]) + np.outer(ca[:, j], sb[:, j])
                d_line -= (self.amp[j] * self.k_line[j]) * sin_ab
                d_sample -= (self.amp[j] * self.k_sample[j]) * sin_ab
        return value, d_line, d_sample


# ---------------------------------------------------------------------------------------------
# The result


@dataclass(frozen=True)
class SyntheticAcquisition:
    """Paths of the written L1B products and the in-memory truth maps."""

    radiance: Path
    observation: Path
    location: Path
    glt: Path
    acquisition_id: str
    truth: np.ndarray  # (lines, samples) uint8: 0 fill, 1 clear, 2 thick, 3 ice, 4 cirrus
    surface: np.ndarray  # (lines, samples) uint8: SURFACE_NAMES codes, 0 at fill
    partial_fill: np.ndarray  # (lines, samples) uint8: 0 none, 1 dropped bands, 2 also kept
    truth_path: Path | None = None  # <rdn stem>_truth.npy when save_truth
    # With shadows=True only (None otherwise): the cloud-top height (m) of every cloud pixel,
    # NaN elsewhere, and the true shadow on clear pixels whose direct sun an opaque cloud blocks
    # by half or more: 1 when the scene has a pixel with a value where that cloud is seen, 2
    # when not (cast from outside the scene or under fill); 0 elsewhere, 255 at fill.
    cloud_height_m: np.ndarray | None = None
    shadow: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# The scene model


@dataclass
class _Block:
    """Per-pixel quantities of a block of lines, all (n, samples) unless noted."""

    lines: np.ndarray  # (n,)
    fill: np.ndarray  # bool
    truth: np.ndarray
    surface: np.ndarray
    partial: np.ndarray
    sza: np.ndarray
    earth_sun: np.ndarray  # (n,)
    cloud_height: np.ndarray | None = None  # with shadows only
    shadow: np.ndarray | None = None


def _cloud_class(cloudy: np.ndarray, type_value: np.ndarray) -> np.ndarray:
    """Class map of cloudy pixels by the cloud-type field: thick, thin cirrus or ice."""
    truth = np.full(cloudy.shape, CLASS_CLEAR, np.uint8)
    truth[cloudy & (type_value < -0.3)] = CLASS_THICK
    truth[cloudy & (type_value >= -0.3) & (type_value <= 0.55)] = CLASS_CIRRUS
    truth[cloudy & (type_value > 0.55)] = CLASS_ICE
    return truth


class _Scene:
    """Everything about one synthetic acquisition that does not depend on the block."""

    def __init__(
        self, *, lines: int, samples: int, seed: int, start_time: datetime,
        cloud_fraction: float, fill_lines: int, edge_fill: bool, partial_band_fill: bool,
        solar_zenith_deg: float, latitude: float, longitude: float,
        shadows: bool = False, cloud_heights_m: tuple[float, float] = (700.0, 2800.0),
    ) -> None:
        self.lines, self.samples, self.seed = lines, samples, seed
        self.shadows = shadows
        self.cloud_heights_m = cloud_heights_m
        self.start_time = start_time
        self.solar_zenith_deg = solar_zenith_deg
        self.partial_band_fill = partial_band_fill
        self.lat0, self.lon0 = latitude, longitude

        self.wl, self.fwhm = emit_wavelengths()
        self.irradiance = solar_irradiance(self.wl, self.fwhm)
        self.tau_water = _band_features(self.wl, self.fwhm, _WATER_TAU)
        self.tau_mixed = _band_features(self.wl, self.fwhm, _MIXED_TAU)
        # Rayleigh plus a little aerosol path reflectance, for a unit airmass.
        self.path_refl = 0.025 * (450.0 / self.wl) ** 4 + 0.006 * (550.0 / self.wl) ** 1.3
        self.surface_spectra = _surface_spectra(self.wl).astype(np.float32)
        self.cloud_spectra = _cloud_spectra(self.wl).astype(np.float32)

        rng = np.random.default_rng([seed, 1])
        self.surface_fields = [_Field.draw(rng, 12.0, 70.0) for _ in range(5)]
        self.surface_bias = np.array([0.0, 0.0, -0.1, -0.35, 0.0])  # veg soil water snow desert
        self.brightness_field = _Field.draw(rng, 4.0, 30.0)
        self.cloud_field = _Field.draw(rng, 14.0, 90.0, redness=0.5)
        self.cloud_type_field = _Field.draw(rng, 20.0, 100.0)
        self.cloud_amp_field = _Field.draw(rng, 6.0, 40.0)
        self.cirrus_field = _Field.draw(rng, 6.0, 40.0)
        self.water_vapour_field = _Field.draw(rng, 80.0, 600.0)
        self.elevation_field = _Field.draw(rng, 40.0, 500.0, redness=1.0)
        if cloud_fraction <= 0.0:
            self.cloud_threshold = math.inf
        elif cloud_fraction >= 1.0:
            self.cloud_threshold = -math.inf
        else:
            self.cloud_threshold = statistics.NormalDist().inv_cdf(1.0 - cloud_fraction)
        # Cloud-top height levels: a stream of its own, so the draws above stay as they were.
        self.height_field = _Field.draw(np.random.default_rng([seed, 5]), 60.0, 250.0)

        rng = np.random.default_rng([seed, 2])
        self.fill_line = np.zeros(lines, bool)
        if fill_lines:
            self.fill_line[rng.choice(lines, size=fill_lines, replace=False)] = True
        max_edge = min(4, max(1, samples // 16)) if (edge_fill and samples >= 8) else 0
        if max_edge:
            self.edge_left = rng.integers(1, max_edge + 1, lines)
            self.edge_right = rng.integers(1, max_edge + 1, lines)
        else:
            self.edge_left = np.zeros(lines, np.int64)
            self.edge_right = np.zeros(lines, np.int64)

        self.partial_bands_dropped = [int(np.argmin(abs(self.wl - w)))
                                      for w in PARTIAL_FILL_DROPPED_NM]
        self.partial_bands_kept = [int(np.argmin(abs(self.wl - w))) for w in PARTIAL_FILL_KEPT_NM]

        # Ground geometry: orthonormal along-track (u_a) and cross-track (u_c, to the right)
        # unit vectors, as (east, north).
        h = math.radians(HEADING_DEG)
        self.u_a = (math.sin(h), math.cos(h))
        self.u_c = (math.cos(h), -math.sin(h))
        self.centre_sample = (samples - 1) / 2.0
        self.m_per_deg_lon = M_PER_DEG * math.cos(math.radians(self.lat0))

        start = start_time.astimezone(UTC)
        self.start_hours = start.hour + start.minute / 60.0 + start.second / 3600.0
        self.start_doy = start.timetuple().tm_yday

    # -- geometry --------------------------------------------------------------------------

    def lonlat(self, line: np.ndarray, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre longitude and latitude: an exact affine map of (line, sample)."""
        x = line * PIXEL_M
        y = (sample - self.centre_sample) * PIXEL_M
        east = x * self.u_a[0] + y * self.u_c[0]
        north = x * self.u_a[1] + y * self.u_c[1]
        return self.lon0 + east / self.m_per_deg_lon, self.lat0 + north / M_PER_DEG

    def line_sample(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The inverse of `lonlat`: fractional (line, sample) of a ground point."""
        east = (lon - self.lon0) * self.m_per_deg_lon
        north = (lat - self.lat0) * M_PER_DEG
        line = (east * self.u_a[0] + north * self.u_a[1]) / PIXEL_M
        sample = self.centre_sample + (east * self.u_c[0] + north * self.u_c[1]) / PIXEL_M
        return line, sample

    def is_fill(self, line: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """Fill pixels (whole fill lines, swath edges) for integer in-bounds indices."""
        return (
            self.fill_line[line]
            | (sample < self.edge_left[line])
            | (sample >= self.samples - self.edge_right[line])
        )

    def solar_zenith(self, line: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """A smooth +-10 degree gradient across the scene around the requested centre value;
        `line` and `sample` broadcast together (fractional positions allowed)."""
        ln = 2.0 * line / (self.lines - 1) - 1.0 if self.lines > 1 else 0.0 * line
        sn = 2.0 * sample / (self.samples - 1) - 1.0 if self.samples > 1 else 0.0 * sample
        sza = self.solar_zenith_deg + 10.0 * (0.6 * ln + 0.4 * sn)
        return np.clip(sza, 0.0, 85.0)

    def solar_azimuth(self, line: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """A slow 2 degree drift along track and 1.5 across; arguments broadcast together."""
        ln_n = line / max(self.lines - 1, 1)
        sm_n = sample / max(self.samples - 1, 1)
        return SUN_AZIMUTH_DEG + 2.0 * ln_n - 1.5 * sm_n

    def view_angles(self, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cross-track metres from nadir, view zenith, view azimuth): the sensor is on the
        opposite side of the track from the pixel."""
        cross = (sample - self.centre_sample) * PIXEL_M
        vza = np.degrees(np.arctan(np.abs(cross) / ALTITUDE_M))
        vaz = np.where(cross > 0, HEADING_DEG - 90.0, HEADING_DEG + 90.0) % 360.0
        return cross, vza, vaz

    def ground_to_grid(self, d_east: np.ndarray, d_north: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
        """(d_line, d_sample) of a ground displacement in metres (the inverse of `lonlat`)."""
        return ((d_east * self.u_a[0] + d_north * self.u_a[1]) / PIXEL_M,
                (d_east * self.u_c[0] + d_north * self.u_c[1]) / PIXEL_M)

    def cloud_opacity_at(self, line: np.ndarray, sample: np.ndarray, mu0: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cloudy, opaque, opacity) of the cloud seen at fractional points, for a sun at
        cos(zenith) `mu0`: the fraction of the direct sun it stops. Thick and ice clouds stop
        their cover (`opaque`, as in `block`); thin cirrus only 1 - exp(-tau) of the slant path."""
        c = self.cloud_field.at(line, sample)
        cloudy = c > self.cloud_threshold
        kind = _cloud_class(cloudy, self.cloud_type_field.at(line, sample))
        cover = np.clip(0.45 + (c - self.cloud_threshold) / 0.6, 0.0, 1.0)
        opaque = np.where((kind == CLASS_THICK) | (kind == CLASS_ICE), cover, 0.0)
        tau_c = np.clip(0.175 + 0.08 * self.cirrus_field.at(line, sample), 0.05, 0.3)
        opacity = np.where(kind == CLASS_CIRRUS, 1.0 - np.exp(-tau_c / mu0), opaque)
        return cloudy, opaque, opacity

    def utc_hours(self, line: np.ndarray) -> np.ndarray:
        return self.start_hours + line * LINE_TIME_S / 3600.0

    def earth_sun_distance(self, line: np.ndarray) -> np.ndarray:
        """1 - e cos(0.9856 deg (doy - 4)), with the day of year taken fractionally."""
        doy = self.start_doy + self.utc_hours(line) / 24.0
        return 1.0 - 0.01672 * np.cos(np.deg2rad(0.9856 * (doy - 4.0)))

    # -- one block ------------------------------------------------------------------------

    def block(
        self, l0: int, l1: int
    ) -> tuple[_Block, np.ndarray, np.ndarray, np.ndarray]:
        """Compute lines [l0, l1): block facts, radiance (n, bands, m) float32 and obs
        (n, 11, m) and loc (n, 3, m) in float64, fill already applied."""
        ln = np.arange(l0, l1, dtype=np.float64)
        sm = np.arange(self.samples, dtype=np.float64)
        li = np.arange(l0, l1)
        si = np.arange(self.samples)
        n, m = ln.size, sm.size
        fill = self.is_fill(li[:, None], si[None, :])

        # Surface class and brightness.
        scores = np.stack([f(ln, sm) for f in self.surface_fields]) + self.surface_bias[:, None,
                                                                                          None]
        surface = (np.argmax(scores, axis=0) + 1).astype(np.uint8)
        brightness = 1.0 + 0.08 * self.brightness_field(ln, sm)

        # Clouds: where the cloud field is above the threshold; type from a second field.
        c = self.cloud_field(ln, sm)
        cloudy = c > self.cloud_threshold
        truth = _cloud_class(cloudy, self.cloud_type_field(ln, sm))

        # Geometry.
        sza = self.solar_zenith(ln[:, None], sm[None, :])
        _, vza, vaz = self.view_angles(sm)
        mu0 = np.cos(np.deg2rad(sza))
        mu = np.cos(np.deg2rad(vza))[None, :]
        airmass = 1.0 / mu0 + 1.0 / mu  # two-way, (n, m)
        d = self.earth_sun_distance(ln)
        wv = np.clip(1.0 + 0.3 * self.water_vapour_field(ln, sm), 0.4, None)

        # Clear-sky TOA reflectance: surface x two-way gas transmittance + path reflectance.
        rho = self.surface_spectra[surface] * brightness[..., None].astype(np.float32)
        cloud_height = shadow = None
        if self.shadows:  # the surface term only: path and cloud reflectance are not shaded
            opacity, opaque, opaque_seen, cloud_height = cast_shadows(self, ln, sm)
            rho *= shade_factor(opacity, self.wl)
            shadow = np.where(opaque_seen >= SHADOW_TRUTH_OPACITY, 1,
                              np.where(opaque >= SHADOW_TRUTH_OPACITY, 2, 0)).astype(np.uint8)
            shadow[cloudy] = 0
            cloud_height = np.where(cloudy, cloud_height, np.nan).astype(np.float32)
        tau = (airmass * wv)[..., None].astype(np.float32) * self.tau_water.astype(np.float32)
        tau += airmass[..., None].astype(np.float32) * self.tau_mixed.astype(np.float32)
        np.exp(-tau, out=tau)
        rho *= tau
        del tau
        rho += (0.5 * airmass)[..., None].astype(np.float32) * self.path_refl.astype(np.float32)

        # Cloud layer over the cloudy pixels only.
        idx = np.nonzero(cloudy)
        if idx[0].size:
            kind = truth[idx]
            amp_field = self.cloud_amp_field(ln, sm)[idx]
            excess = c[idx] - self.cloud_threshold
            cover = np.clip(0.45 + excess / 0.6, 0.0, 1.0)  # partial cover at cloud edges
            am = airmass[idx]
            thick = kind == CLASS_THICK
            ice = kind == CLASS_ICE
            cirrus = kind == CLASS_CIRRUS
            layer_amp = np.where(thick, 0.75 + 0.12 * amp_field, 0.65 + 0.1 * amp_field)
            layer_amp *= cover
            surf_weight = 1.0 - cover
            tau_c = np.clip(0.175 + 0.08 * self.cirrus_field(ln, sm)[idx], 0.05, 0.3)
            layer_amp = np.where(cirrus, 0.25 * (1.0 - np.exp(-tau_c * am)), layer_amp)
            surf_weight = np.where(cirrus, np.exp(-tau_c * am), surf_weight)
            # Fraction of the water vapour and of the well-mixed gases above the cloud top
            # (liquid ~2.5 km, ice ~8 km, cirrus ~11 km).
            f_water = np.where(thick, 0.15, np.where(ice, 0.015, 0.006))
            f_mixed = np.where(thick, 0.72, np.where(ice, 0.37, 0.25))
            tau = (am * wv[idx] * f_water)[:, None] * self.tau_water
            tau += (am * f_mixed)[:, None] * self.tau_mixed
            layer = self.cloud_spectra[np.where(thick, 0, 1)] * (layer_amp[:, None]
                                                                 * np.exp(-tau))
            layer += (0.5 * am * f_mixed)[:, None] * self.path_refl
            rho[idx] = (layer + surf_weight[:, None] * rho[idx]).astype(np.float32)

        # Radiance, uW/cm2/nm/sr, plus noise drawn per line so blocks do not matter.
        scale = (mu0 / (np.pi * d[:, None] ** 2)).astype(np.float32)
        rad = rho
        rad *= scale[..., None]
        rad *= self.irradiance.astype(np.float32)
        for j, line in enumerate(li):
            z = np.random.default_rng([self.seed, 3, int(line)]).standard_normal(
                (m, N_BANDS), dtype=np.float32)
            sigma = np.sqrt((_RADIANCE_NOISE_REL * rad[j]) ** 2 + _RADIANCE_NOISE_ABS**2)
            rad[j] += sigma * z

        partial = np.zeros((n, m), np.uint8)
        if self.partial_band_fill:
            for j, line in enumerate(li):
                u = np.random.default_rng([self.seed, 4, int(line)]).random(m)
                pick = (u < _PARTIAL_FILL_RATE) & ~fill[j]
                partial[j, pick] = np.where((si[pick] + int(line)) % 2 == 0, 1, 2)
            for b in self.partial_bands_dropped:
                rad[..., b][partial > 0] = FILL_VALUE
            for b in self.partial_bands_kept:
                rad[..., b][partial == 2] = FILL_VALUE

        truth[fill] = CLASS_FILL
        surface[fill] = 0
        rad[fill] = FILL_VALUE
        if shadow is not None and cloud_height is not None:
            shadow[fill] = 255
            cloud_height[fill] = np.nan

        obs = self._observation(ln, sm, sza, vza, vaz, d)
        loc = self._location(ln, sm)
        obs[np.broadcast_to(fill[:, None, :], obs.shape)] = FILL_VALUE
        loc[np.broadcast_to(fill[:, None, :], loc.shape)] = FILL_VALUE
        blk = _Block(li, fill, truth, surface, partial, sza, d, cloud_height, shadow)
        return blk, rad.transpose(0, 2, 1), obs, loc

    def _terrain(
        self, ln: np.ndarray, sm: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Elevation (m), slope and aspect (degrees) from one smooth field and its gradient."""
        value, d_line, d_sample = self.elevation_field.with_gradient(ln, sm)
        amplitude = 120.0
        elevation = 450.0 + amplitude * value
        # Metres of rise per metre along track / across track, then to east and north.
        ga, gc = amplitude * d_line / PIXEL_M, amplitude * d_sample / PIXEL_M
        g_east = ga * self.u_a[0] + gc * self.u_c[0]
        g_north = ga * self.u_a[1] + gc * self.u_c[1]
        slope = np.degrees(np.arctan(np.hypot(g_east, g_north)))
        aspect = np.degrees(np.arctan2(-g_east, -g_north)) % 360.0  # the downslope direction
        return elevation, slope, aspect

    def _observation(
        self, ln: np.ndarray, sm: np.ndarray, sza: np.ndarray, vza: np.ndarray,
        vaz: np.ndarray, d: np.ndarray,
    ) -> np.ndarray:
        n, m = ln.size, sm.size
        elevation, slope, aspect = self._terrain(ln, sm)
        saz = self.solar_azimuth(ln[:, None], sm[None, :])
        r_sza, r_vza = np.deg2rad(sza), np.deg2rad(vza)[None, :]
        r_saz, r_vaz = np.deg2rad(saz), np.deg2rad(vaz)[None, :]
        cos_phase = (np.cos(r_sza) * np.cos(r_vza)
                     + np.sin(r_sza) * np.sin(r_vza) * np.cos(r_saz - r_vaz))
        phase = np.degrees(np.arccos(np.clip(cos_phase, -1.0, 1.0)))
        r_slope, r_aspect = np.deg2rad(slope), np.deg2rad(aspect)
        cos_i = (np.cos(r_sza) * np.cos(r_slope)
                 + np.sin(r_sza) * np.sin(r_slope) * np.cos(r_saz - r_aspect))
        obs = np.empty((n, 11, m))
        obs[:, 0] = (ALTITUDE_M - elevation) / np.cos(r_vza)
        obs[:, 1] = vaz[None, :]
        obs[:, 2] = vza[None, :]
        obs[:, 3] = saz
        obs[:, 4] = sza
        obs[:, 5] = phase
        obs[:, 6] = slope
        obs[:, 7] = aspect
        obs[:, 8] = cos_i
        obs[:, 9] = self.utc_hours(ln)[:, None]
        obs[:, 10] = d[:, None]
        return obs

    def _location(self, ln: np.ndarray, sm: np.ndarray) -> np.ndarray:
        lon, lat = self.lonlat(ln[:, None], sm[None, :])
        elevation, _, _ = self._terrain(ln, sm)
        return np.stack([lon, lat, elevation], axis=1)

    # -- the orthorectified lookup table ----------------------------------------------------

    def glt_grid(self) -> tuple[float, float, int, int]:
        """Upper-left corner (lon, lat) and size (rows, cols) of a grid covering the swath."""
        corner_l = np.array([-1.5, -1.5, self.lines + 0.5, self.lines + 0.5])
        corner_s = np.array([-1.5, self.samples + 0.5, -1.5, self.samples + 0.5])
        lon, lat = self.lonlat(corner_l, corner_s)
        ulx = float(np.floor(lon.min() / GRID_DEG) * GRID_DEG)
        uly = float(np.ceil(lat.max() / GRID_DEG) * GRID_DEG)
        cols = int(math.ceil((lon.max() - ulx) / GRID_DEG)) + 1
        rows = int(math.ceil((uly - lat.min()) / GRID_DEG)) + 1
        return ulx, uly, rows, cols

    def glt_rows(self, r0: int, r1: int, ulx: float, uly: float, cols: int) -> np.ndarray:
        """GLT rows [r0, r1) as (rows, 2, cols) int32: the nearest non-fill pixel within one
        pixel of each cell centre, 1-based (sample, line), or 0."""
        lat = uly - (np.arange(r0, r1) + 0.5) * GRID_DEG
        lon = ulx + (np.arange(cols) + 0.5) * GRID_DEG
        fl, fs = self.line_sample(lon[None, :], lat[:, None])
        l_floor, s_floor = np.floor(fl).astype(np.int64), np.floor(fs).astype(np.int64)
        best_d2 = np.full(fl.shape, np.inf)
        best_l = np.full(fl.shape, -1, np.int64)
        best_s = np.full(fl.shape, -1, np.int64)
        for dl in (0, 1):
            for ds in (0, 1):
                cl, cs = l_floor + dl, s_floor + ds
                d2 = (fl - cl) ** 2 + (fs - cs) ** 2
                ok = (cl >= 0) & (cl < self.lines) & (cs >= 0) & (cs < self.samples)
                ok &= d2 <= 1.0
                ok[ok] = ~self.is_fill(cl[ok], cs[ok])
                better = ok & (d2 < best_d2)
                best_d2[better] = d2[better]
                best_l[better] = cl[better]
                best_s[better] = cs[better]
        out = np.zeros((r1 - r0, 2, cols), np.int32)
        found = best_l >= 0
        out[:, 0][found] = best_s[found] + 1
        out[:, 1][found] = best_l[found] + 1
        return out


# ---------------------------------------------------------------------------------------------
# Writing


def _emit_stem(acquisition_id: str, orbit: int, scene: int, prod: str, build: str,
               version: str) -> str:
    return f"{acquisition_id}_o{orbit:05d}_s{scene:03d}_l1b_{prod}_b{build}_v{version}"


def _write(f: BinaryIO, array: np.ndarray, dtype: str) -> None:
    f.write(np.ascontiguousarray(array, dtype=np.dtype(dtype)).tobytes())


def _fill_lines_default(lines: int) -> int:
    return 0 if lines < 16 else max(1, lines // 32)


def generate_acquisition(
    out_dir: Path | str,
    *,
    lines: int = 64,
    samples: int = 64,
    seed: int = 0,
    start_time: datetime = datetime(2024, 3, 2, 0, 58, 29, tzinfo=UTC),
    orbit: int = 6201,
    scene: int = 0,
    build: str = "0106",
    version: str = "01",
    cloud_fraction: float = 0.3,
    fill_lines: int | None = None,
    edge_fill: bool = True,
    partial_band_fill: bool = False,
    solar_zenith_deg: float = 35.0,
    obs_dtype: Any = np.float64,
    lines_per_block: int = 256,
    save_truth: bool = False,
    latitude: float = -25.0,
    longitude: float = 133.0,
    shadows: bool = False,
    cloud_heights_m: tuple[float, float] = (700.0, 2800.0),
) -> SyntheticAcquisition:
    """Write one synthetic L1B acquisition (rdn, obs, loc, glt) into `out_dir`.

    The same arguments give byte-identical files; `lines_per_block` only bounds memory (a
    block is also capped at 32768 pixels) and never changes the output. `fill_lines=None`
    means one whole fill line per 32 lines (at least one from 16 lines, none below).
    `latitude`/`longitude` place the centre of the first line. `shadows=True` darkens the
    ground under the clouds' shadows (cloud tops within `cloud_heights_m`) and returns the
    cloud heights and the true shadow; off (the default), the files are those of before.
    """
    if lines < 1 or samples < 1:
        raise ValueError(f"lines and samples must be positive, got {lines} x {samples}")
    if not 0.0 <= cloud_fraction <= 1.0:
        raise ValueError(f"cloud_fraction must be in [0, 1], got {cloud_fraction}")
    if not 0 <= orbit <= 99_999 or not 0 <= scene <= 999:
        raise ValueError(f"orbit (5 digits) or scene (3 digits) out of range: {orbit}, {scene}")
    if len(build) != 4 or len(version) != 2:
        raise ValueError(f"build must have 4 characters and version 2: {build!r}, {version!r}")
    if lines_per_block < 1:
        raise ValueError(f"lines_per_block must be positive, got {lines_per_block}")
    obs_dt = np.dtype(obs_dtype)
    if obs_dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"obs_dtype must be float32 or float64, got {obs_dt}")
    n_fill = _fill_lines_default(lines) if fill_lines is None else int(fill_lines)
    if not 0 <= n_fill <= lines:
        raise ValueError(f"fill_lines must be in [0, {lines}], got {n_fill}")
    if not 0.0 <= solar_zenith_deg < 90.0:
        raise ValueError(f"solar_zenith_deg must be in [0, 90), got {solar_zenith_deg}")
    lo_h, hi_h = (float(h) for h in cloud_heights_m)
    if not 0.0 <= lo_h <= hi_h:
        raise ValueError(f"cloud_heights_m must be 0 <= min <= max, got {cloud_heights_m}")
    if start_time.tzinfo is None:
        start_time = start_time.replace(tzinfo=UTC)
    start_time = start_time.astimezone(UTC)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    acquisition_id = start_time.strftime("emit%Y%m%dt%H%M%S")
    paths = {
        prod: out / (_emit_stem(acquisition_id, orbit, scene, prod, build, version) + ".img")
        for prod in ("rdn", "obs", "loc", "glt")
    }
    sc = _Scene(
        lines=lines, samples=samples, seed=seed, start_time=start_time,
        cloud_fraction=cloud_fraction, fill_lines=n_fill, edge_fill=edge_fill,
        partial_band_fill=partial_band_fill, solar_zenith_deg=solar_zenith_deg,
        latitude=latitude, longitude=longitude, shadows=shadows, cloud_heights_m=(lo_h, hi_h),
    )

    truth = np.zeros((lines, samples), np.uint8)
    surface = np.zeros((lines, samples), np.uint8)
    partial = np.zeros((lines, samples), np.uint8)
    height = np.full((lines, samples), np.nan, np.float32) if shadows else None
    shadow = np.zeros((lines, samples), np.uint8) if shadows else None
    step = max(1, min(lines_per_block, _MAX_BLOCK_PIXELS // samples))
    with (
        open(paths["rdn"], "wb") as f_rdn,
        open(paths["obs"], "wb") as f_obs,
        open(paths["loc"], "wb") as f_loc,
    ):
        for l0 in range(0, lines, step):
            l1 = min(lines, l0 + step)
            blk, rad, obs, loc = sc.block(l0, l1)
            truth[l0:l1], surface[l0:l1], partial[l0:l1] = blk.truth, blk.surface, blk.partial
            if height is not None and shadow is not None:
                height[l0:l1], shadow[l0:l1] = blk.cloud_height, blk.shadow
            _write(f_rdn, rad, "<f4")
            _write(f_obs, obs, obs_dt.newbyteorder("<").str)
            _write(f_loc, loc, "<f8")
            del blk, rad, obs, loc

    ulx, uly, rows, cols = sc.glt_grid()
    glt_step = max(1, min(lines_per_block * samples, _MAX_GLT_CELLS) // cols)
    with open(paths["glt"], "wb") as f_glt:
        for r0 in range(0, rows, glt_step):
            _write(f_glt, sc.glt_rows(r0, min(rows, r0 + glt_step), ulx, uly, cols), "<i4")

    stop_time = start_time + timedelta(seconds=lines * LINE_TIME_S)
    times = {
        "emit acquisition start time": start_time.strftime(TIME_FORMAT),
        "emit acquisition stop time": stop_time.strftime(TIME_FORMAT),
    }
    _write_headers(paths, sc, lines, samples, obs_dt, times, (ulx, uly, rows, cols))

    truth_path = None
    if save_truth:
        truth_path = paths["rdn"].with_name(paths["rdn"].stem + "_truth.npy")
        np.save(truth_path, truth)
    return SyntheticAcquisition(
        radiance=paths["rdn"], observation=paths["obs"], location=paths["loc"],
        glt=paths["glt"], acquisition_id=acquisition_id, truth=truth, surface=surface,
        partial_fill=partial, truth_path=truth_path, cloud_height_m=height, shadow=shadow,
    )


def _write_headers(
    paths: dict[str, Path], sc: _Scene, lines: int, samples: int, obs_dt: np.dtype,
    times: dict[str, str], grid: tuple[float, float, int, int],
) -> None:
    def header(prod: str, description: str, meta: dict[str, Any]) -> None:
        write_header(paths[prod].with_suffix(".hdr"), {"description": description, **meta})

    header("rdn", "EMIT L1B at-sensor calibrated radiance (synthetic), uW/cm^2/nm/sr",
           raster_header(lines, samples, N_BANDS, np.float32, "bil", {
               "data ignore value": -9999,
               "wavelength units": "Nanometers",
               "wavelength": [f"{w:.5f}" for w in sc.wl],
               "fwhm": [f"{w:.5f}" for w in sc.fwhm],
               **times,
           }))
    header("obs", "EMIT L1B observation geometry (synthetic)",
           raster_header(lines, samples, len(OBS_BAND_NAMES), obs_dt, "bil", {
               "data ignore value": -9999,
               "band names": list(OBS_BAND_NAMES),
               **times,
           }))
    header("loc", "EMIT L1B pixel locations (synthetic)",
           raster_header(lines, samples, len(LOC_BAND_NAMES), np.float64, "bil", {
               "data ignore value": -9999,
               "band names": list(LOC_BAND_NAMES),
               **times,
           }))
    ulx, uly, rows, cols = grid
    header("glt", "EMIT L1B geometry lookup table, 1-based, 0 = no pixel (synthetic)",
           raster_header(rows, cols, len(GLT_BAND_NAMES), np.int32, "bil", {
               "band names": list(GLT_BAND_NAMES),
               "map info": ["Geographic Lat/Lon", 1, 1, repr(ulx), repr(uly), repr(GRID_DEG),
                            repr(GRID_DEG), "WGS-84", "units=Degrees"],
               "coordinate system string": WGS84_WKT,
               **times,
           }))


# ---------------------------------------------------------------------------------------------
# Labelled spectra (no files): what the training tests need


def reflectance_blocks(
    lines: int, samples: int, *, seed: int = 0, cloud_fraction: float = 0.3,
    solar_zenith_deg: float = 35.0,
    start_time: datetime = datetime(2024, 3, 2, 0, 58, 29, tzinfo=UTC), lines_per_block: int = 64,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(pixels, 285) float32 TOA reflectance and the truth class of each pixel, block by block.

    The same scene model as `generate_acquisition` (noise included), without fill and without
    writing radiance: the spectra are the radiance turned back into reflectance, which is what
    a labelled training set holds.
    """
    sc = _Scene(lines=lines, samples=samples, seed=seed, start_time=start_time,
                cloud_fraction=cloud_fraction, fill_lines=0, edge_fill=False,
                partial_band_fill=False, solar_zenith_deg=solar_zenith_deg, latitude=-25.0,
                longitude=133.0)
    step = max(1, min(lines_per_block, _MAX_BLOCK_PIXELS // samples))
    for l0 in range(0, lines, step):
        blk, rad, _, _ = sc.block(l0, min(lines, l0 + step))
        earth_sun = np.broadcast_to(blk.earth_sun[:, None], blk.sza.shape)
        rho = toa_reflectance(rad.transpose(0, 2, 1), blk.sza, earth_sun, sc.irradiance)
        yield rho.reshape(-1, N_BANDS).astype(np.float32), blk.truth.reshape(-1)
