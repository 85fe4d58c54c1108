"""One acquisition: its radiance and observation-geometry rasters, checked against each other.

Everything that can be known wrong about the inputs is found in `Scene.open`, before any
compute; the iteration afterwards only reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from l2b_mask.errors import InputProductError
from l2b_mask.inputs.daac import (
    DaacGranule,
    DaacReader,
    check_same_acquisition,
    open_observation_granule,
    open_radiance_granule,
)
from l2b_mask.inputs.envi import EnviHeader, EnviReader, read_header
from l2b_mask.inputs.formats import DAAC, input_format, open_raster, raster_reader
from l2b_mask.inputs.l1b import (
    EMIT_RADIANCE_BANDS,
    OBS_BAND_COUNTS,
    OBS_EARTH_SUN_DISTANCE,
    OBS_EARTH_SUN_DISTANCE_NAME,
    OBS_SOLAR_AZIMUTH,
    OBS_SOLAR_AZIMUTH_NAME,
    OBS_SOLAR_ZENITH,
    OBS_SOLAR_ZENITH_NAME,
    check_same_size,
    check_spectral_axis,
    find_band,
    parse_emit_time,
)

# Plausible Earth-Sun distance (AU): perihelion 0.983, aphelion 1.017.
_EARTH_SUN_RANGE = (0.97, 1.03)
_WAVELENGTH_UNITS = {"nanometers": 1.0, "nm": 1.0, "micrometers": 1000.0, "um": 1000.0,
                     "microns": 1000.0, "µm": 1000.0}


def observation_band_names(header: EnviHeader) -> list[str] | None:
    """The observation file's band names, None when it has none; one name per band or an error."""
    names = header.string_list("band names")
    if names is not None and len(names) != header.bands:
        raise InputProductError(header.header_path, f"{len(names)} band names for {header.bands} bands")
    return names


ACQUISITION_START_KEY = "emit acquisition start time"
ACQUISITION_STOP_KEY = "emit acquisition stop time"


def acquisition_times(header: EnviHeader) -> tuple[datetime | None, datetime | None]:
    """(start, stop) of the acquisition from the radiance header's EMIT keys, None where absent.

    A stop before the start is an input error: the granule's time range would be reversed.
    """
    start_text, stop_text = header.meta.get(ACQUISITION_START_KEY), header.meta.get(ACQUISITION_STOP_KEY)
    start, stop = parse_emit_time(start_text), parse_emit_time(stop_text)
    if start is not None and stop is not None and stop < start:
        raise InputProductError(
            header.header_path,
            f"'{ACQUISITION_STOP_KEY}' {str(stop_text).strip()} is before "
            f"'{ACQUISITION_START_KEY}' {str(start_text).strip()}",
        )
    return start, stop


def _check_float(header: EnviHeader, what: str) -> None:
    if header.dtype.kind != "f":
        raise InputProductError(
            header.header_path,
            f"{what} must be floating point (ENVI data type 4 or 5), found data type "
            f"{header.data_type_code}",
        )


def _spectral_axis(header: EnviHeader) -> tuple[np.ndarray, np.ndarray]:
    wl = header.float_list("wavelength")
    fwhm = header.float_list("fwhm")
    where = header.header_path
    if wl is None or wl.size == 0:
        raise InputProductError(where, "radiance header has no 'wavelength'")
    if fwhm is None or fwhm.size == 0:
        raise InputProductError(where, "radiance header has no 'fwhm'")
    units = str(header.meta.get("wavelength units", "nanometers")).strip().lower()
    if units not in _WAVELENGTH_UNITS:
        raise InputProductError(where, f"unknown 'wavelength units' {units!r}")
    scale = _WAVELENGTH_UNITS[units]
    wl, fwhm = wl * scale, fwhm * scale
    check_spectral_axis(wl, fwhm, header.bands, where)
    return wl, fwhm


@dataclass(frozen=True)
class Scene:
    """Radiance + observation geometry of one acquisition, validated and ready to stream.

    Either format: `radiance_header` / `observation_header` are ENVI headers or LP DAAC
    granules (`DaacGranule`, with the same `lines`, `samples`, `bands`, `nodata`,
    `header_path`); `radiance_reader()` / `observation_reader()` read both alike.
    """

    radiance_header: EnviHeader | DaacGranule
    observation_header: EnviHeader | DaacGranule
    wavelengths_nm: np.ndarray
    fwhm_nm: np.ndarray
    solar_zenith_band: int
    earth_sun_band: int
    acquisition_start: datetime | None = None  # from the radiance header, when it says
    acquisition_stop: datetime | None = None

    @classmethod
    def open(
        cls, radiance: Path | str, observation: Path | str,
        expected_radiance_bands: int | None = EMIT_RADIANCE_BANDS,
    ) -> Scene:
        """Open and check both inputs, ENVI rasters or LP DAAC granules (never one of each)."""
        if input_format(radiance, observation) == DAAC:
            return cls._open_granules(radiance, observation, expected_radiance_bands)
        rdn = read_header(radiance)
        obs = read_header(observation)
        _check_float(rdn, "radiance")
        _check_float(obs, "observation geometry")
        if expected_radiance_bands is not None and rdn.bands != expected_radiance_bands:
            raise InputProductError(
                rdn.header_path, f"radiance has {rdn.bands} bands, expected {expected_radiance_bands}"
            )
        wl, fwhm = _spectral_axis(rdn)
        start, stop = acquisition_times(rdn)
        if obs.bands not in OBS_BAND_COUNTS:
            raise InputProductError(
                obs.header_path, f"observation file has {obs.bands} bands, expected 11 or 12"
            )
        check_same_size(rdn, obs)
        names = observation_band_names(obs)
        sza = find_band(names, OBS_SOLAR_ZENITH_NAME, OBS_SOLAR_ZENITH, obs)
        esd = find_band(names, OBS_EARTH_SUN_DISTANCE_NAME, OBS_EARTH_SUN_DISTANCE, obs)
        return cls(rdn, obs, wl, fwhm, sza, esd, start, stop)

    @classmethod
    def _open_granules(cls, radiance: Path | str, observation: Path | str,
                       expected_radiance_bands: int | None) -> Scene:
        """The DAAC path: each granule checked at open (the ENVI path's checks and words),
        then the pair (same acquisition, same size)."""
        rdn = open_radiance_granule(radiance, expected_radiance_bands)
        obs = open_observation_granule(observation)
        check_same_acquisition(rdn, obs)
        assert rdn.wavelengths_nm is not None and rdn.fwhm_nm is not None
        assert obs.solar_zenith_band is not None and obs.earth_sun_band is not None
        return cls(rdn, obs, rdn.wavelengths_nm.astype(np.float64),
                   rdn.fwhm_nm.astype(np.float64), obs.solar_zenith_band, obs.earth_sun_band,
                   rdn.acquisition_start, rdn.acquisition_stop)

    @property
    def lines(self) -> int:
        return self.radiance_header.lines

    @property
    def samples(self) -> int:
        return self.radiance_header.samples

    @property
    def radiance_nodata(self) -> float:
        value = self.radiance_header.nodata
        return -9999.0 if value is None else value

    @property
    def observation_nodata(self) -> float:
        value = self.observation_header.nodata
        return -9999.0 if value is None else value

    def radiance_reader(self) -> EnviReader | DaacReader:
        return raster_reader(self.radiance_header)

    def observation_reader(self) -> EnviReader | DaacReader:
        return raster_reader(self.observation_header)

    def earth_sun_distance(self, lines_per_block: int = 512) -> float:
        """Scene mean Earth-Sun distance (AU) over valid observation pixels only.

        Fill pixels (-9999) must not enter the mean: averaging them in, as the published
        implementation does, turns every pixel's reflectance to nonsense.
        """
        total, count = 0.0, 0
        with self.observation_reader() as reader:
            for start in range(0, self.lines, lines_per_block):
                stop = min(start + lines_per_block, self.lines)
                d = reader.read_band(start, stop, self.earth_sun_band, np.float64)
                block_total, block_count = earth_sun_sums(d, self.observation_nodata)
                total += block_total
                count += block_count
        return earth_sun_mean(total, count, self.observation_header.data_path)


def earth_sun_sums(distance: np.ndarray, nodata: float) -> tuple[float, int]:
    """(sum, count) of the valid Earth-Sun distances of one float64 block: finite, not fill,
    positive. Summed block by block (512 lines) wherever the scene mean is made, so that every
    reader of it gets the same bits."""
    ok = np.isfinite(distance) & (distance != nodata) & (distance > 0)
    return float(distance[ok].sum()), int(ok.sum())


def earth_sun_mean(total: float, count: int, where: Path) -> float:
    """The scene mean Earth-Sun distance from its sums; no valid pixel, or a mean outside the
    plausible range, is an input error of the observation file `where`."""
    if count == 0:
        raise InputProductError(where, "no pixel has a valid Earth-Sun distance")
    mean = total / count
    lo, hi = _EARTH_SUN_RANGE
    if not lo <= mean <= hi:
        raise InputProductError(where, f"mean Earth-Sun distance {mean:.6g} AU outside {lo}-{hi}")
    return mean


def band_names(header: EnviHeader | DaacGranule) -> list[str] | None:
    """An observation file's band names, ENVI or granule (None: an ENVI file without names)."""
    return observation_band_names(header) if isinstance(header, EnviHeader) else header.band_names


def solar_angle_bands(header: EnviHeader | DaacGranule) -> tuple[int, int]:
    """Zero-based (to-sun zenith, to-sun azimuth) bands of an observation file (ENVI or
    granule): found by band name as `Scene` finds its bands, else EMIT's positions 4 and 3."""
    names = band_names(header)
    return (find_band(names, OBS_SOLAR_ZENITH_NAME, OBS_SOLAR_ZENITH, header),
            find_band(names, OBS_SOLAR_AZIMUTH_NAME, OBS_SOLAR_AZIMUTH, header))


def mean_solar_angles(observation_path: Path | str,
                      lines_per_block: int = 256) -> tuple[float | None, float | None]:
    """(mean solar zenith, mean solar azimuth) in degrees over pixels with a value, read block
    by block from the observation file's to-sun zenith and azimuth bands (by name, as `Scene`
    finds them; EMIT's positions 4 and 3 when the file has no band names); None where no pixel
    has one. ENVI raster or LP DAAC OBS granule."""
    header = open_raster(observation_path)
    bands = list(solar_angle_bands(header))
    sums = SolarAngleSums()
    with raster_reader(header) as reader:
        for start in range(0, header.lines, lines_per_block):
            stop = min(header.lines, start + lines_per_block)
            block = reader.read_lines(start, stop, bands, np.float64)
            sums.add(block[:, :, 0], block[:, :, 1], header.nodata)
    return sums.means()


class SolarAngleSums:
    """Running sums of the solar zenith and azimuth over pixels with a value (finite, above
    -9990, not the file's fill), added 256 lines at a time wherever the means are made, so that
    every reader of them gets the same bits."""

    def __init__(self) -> None:
        self.sums = np.zeros(2)
        self.counts = np.zeros(2, np.int64)

    def add(self, zenith: np.ndarray, azimuth: np.ndarray, nodata: float | None) -> None:
        """One block's (lines, samples) float64 solar zenith and azimuth."""
        for i, plane in enumerate((zenith, azimuth)):
            ok = np.isfinite(plane) & (plane > -9990.0)
            if nodata is not None:
                ok &= plane != nodata
            self.sums[i] += plane[ok].sum()
            self.counts[i] += int(ok.sum())

    def means(self) -> tuple[float | None, float | None]:
        means = [float(self.sums[i] / self.counts[i]) if self.counts[i] else None
                 for i in range(2)]
        return means[0], means[1]
