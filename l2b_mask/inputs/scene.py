"""One acquisition: its radiance and observation-geometry rasters, checked against each other.

Everything that can be known wrong about the inputs is found in `Scene.open`, before any
compute; the iteration afterwards only reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from l2b_mask.errors import InputProductError
from l2b_mask.inputs.envi import EnviHeader, EnviReader, read_header

if TYPE_CHECKING:  # l2b_mask.inputs.daac imports this module's constants
    from l2b_mask.inputs.daac import DaacGranule, DaacReader

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


def find_band(names: list[str] | None, needle: str, fallback: int, header: EnviHeader) -> int:
    """Zero-based index of the one band whose name contains `needle` (case-insensitive), or
    `fallback` (EMIT's position) when the file has no band names."""
    if not names:
        return fallback
    hits = [i for i, name in enumerate(names) if needle in name.lower()]
    if len(hits) != 1:
        raise InputProductError(
            header.header_path,
            f"expected one band named like '{needle}' among the band names, found {len(hits)}",
        )
    return hits[0]


ACQUISITION_START_KEY = "emit acquisition start time"
ACQUISITION_STOP_KEY = "emit acquisition stop time"


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


def check_same_size(rdn: EnviHeader | DaacGranule, obs: EnviHeader | DaacGranule) -> None:
    """The observation must cover the radiance's lines and samples exactly."""
    if (obs.lines, obs.samples) != (rdn.lines, rdn.samples):
        raise InputProductError(
            obs.header_path,
            f"observation is {obs.lines} lines x {obs.samples} samples but the radiance "
            f"{rdn.header_path.name} is {rdn.lines} x {rdn.samples}",
        )


def _check_float(header: EnviHeader, what: str) -> None:
    if header.dtype.kind != "f":
        raise InputProductError(
            header.header_path,
            f"{what} must be floating point (ENVI data type 4 or 5), found data type "
            f"{header.data_type_code}",
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


@dataclass
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
        from l2b_mask.inputs.formats import DAAC, input_format  # imports this module

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
        from l2b_mask.inputs.daac import open_observation_granule, open_radiance_granule
        from l2b_mask.inputs.daac_names import check_same_acquisition

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
        from l2b_mask.inputs.formats import raster_reader

        return raster_reader(self.radiance_header)

    def observation_reader(self) -> EnviReader | DaacReader:
        from l2b_mask.inputs.formats import raster_reader

        return raster_reader(self.observation_header)

    def earth_sun_distance(self, lines_per_block: int = 512) -> float:
        """Scene mean Earth-Sun distance (AU) over valid observation pixels only.

        Fill pixels (-9999) must not enter the mean: averaging them in, as the published
        implementation does, turns every pixel's reflectance to nonsense.
        """
        total, count = 0.0, 0
        nodata = self.observation_nodata
        with self.observation_reader() as reader:
            for start in range(0, self.lines, lines_per_block):
                stop = min(start + lines_per_block, self.lines)
                d = reader.read_band(start, stop, self.earth_sun_band, np.float64)
                ok = np.isfinite(d) & (d != nodata) & (d > 0)
                total += float(d[ok].sum())
                count += int(ok.sum())
        where = self.observation_header.data_path
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
    from l2b_mask.inputs.formats import open_raster, raster_reader

    header = open_raster(observation_path)
    bands = list(solar_angle_bands(header))
    nodata = header.nodata
    sums = np.zeros(2)
    counts = np.zeros(2, np.int64)
    with raster_reader(header) as reader:
        for start in range(0, header.lines, lines_per_block):
            stop = min(header.lines, start + lines_per_block)
            block = reader.read_lines(start, stop, bands, np.float64)
            ok = np.isfinite(block) & (block > -9990.0)
            if nodata is not None:
                ok &= block != nodata
            for i in range(2):
                sums[i] += block[:, :, i][ok[:, :, i]].sum()
                counts[i] += int(ok[:, :, i].sum())
    means = [float(sums[i] / counts[i]) if counts[i] else None for i in range(2)]
    return means[0], means[1]
