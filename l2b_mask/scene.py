"""One acquisition: its radiance and observation-geometry rasters, checked against each other.

Everything that can be known wrong about the inputs is found in `Scene.open`, before any
compute; the iteration afterwards only reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l2b_mask.envi import EnviHeader, EnviReader, read_header
from l2b_mask.errors import InputProductError

EMIT_RADIANCE_BANDS = 285
OBS_BAND_COUNTS = (11, 12)
# Zero-based positions in the EMIT observation file, used when it carries no band names.
OBS_SOLAR_ZENITH = 4
OBS_EARTH_SUN_DISTANCE = 10
# Plausible Earth-Sun distance (AU): perihelion 0.983, aphelion 1.017.
_EARTH_SUN_RANGE = (0.97, 1.03)
_WAVELENGTH_UNITS = {"nanometers": 1.0, "nm": 1.0, "micrometers": 1000.0, "um": 1000.0,
                     "microns": 1000.0, "µm": 1000.0}


def _find_band(names: list[str] | None, needle: str, fallback: int, header: EnviHeader) -> int:
    if not names:
        return fallback
    hits = [i for i, name in enumerate(names) if needle in name.lower()]
    if len(hits) != 1:
        raise InputProductError(
            header.header_path,
            f"expected one band named like '{needle}' among the band names, found {len(hits)}",
        )
    return hits[0]


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
    if wl.size != header.bands:
        raise InputProductError(where, f"{wl.size} wavelengths for {header.bands} bands")
    if fwhm.size != header.bands:
        raise InputProductError(where, f"{fwhm.size} fwhm values for {header.bands} bands")
    if not np.all(np.isfinite(wl)) or np.any(np.diff(wl) <= 0):
        raise InputProductError(where, "wavelengths are not finite and strictly increasing")
    if not np.all(np.isfinite(fwhm)) or np.any(fwhm <= 0):
        raise InputProductError(where, "fwhm values must be finite and positive")
    return wl, fwhm


@dataclass
class Scene:
    """Radiance + observation geometry of one acquisition, validated and ready to stream."""

    radiance_header: EnviHeader
    observation_header: EnviHeader
    wavelengths_nm: np.ndarray
    fwhm_nm: np.ndarray
    solar_zenith_band: int
    earth_sun_band: int

    @classmethod
    def open(
        cls, radiance: Path | str, observation: Path | str,
        expected_radiance_bands: int | None = EMIT_RADIANCE_BANDS,
    ) -> Scene:
        rdn = read_header(radiance)
        obs = read_header(observation)
        _check_float(rdn, "radiance")
        _check_float(obs, "observation geometry")
        if expected_radiance_bands is not None and rdn.bands != expected_radiance_bands:
            raise InputProductError(
                rdn.header_path, f"radiance has {rdn.bands} bands, expected {expected_radiance_bands}"
            )
        wl, fwhm = _spectral_axis(rdn)
        if obs.bands not in OBS_BAND_COUNTS:
            raise InputProductError(
                obs.header_path, f"observation file has {obs.bands} bands, expected 11 or 12"
            )
        if (obs.lines, obs.samples) != (rdn.lines, rdn.samples):
            raise InputProductError(
                obs.header_path,
                f"observation is {obs.lines} lines x {obs.samples} samples but the radiance "
                f"{rdn.header_path.name} is {rdn.lines} x {rdn.samples}",
            )
        names = obs.string_list("band names")
        if names is not None and len(names) != obs.bands:
            raise InputProductError(obs.header_path, f"{len(names)} band names for {obs.bands} bands")
        sza = _find_band(names, "to-sun zenith", OBS_SOLAR_ZENITH, obs)
        esd = _find_band(names, "earth-sun distance", OBS_EARTH_SUN_DISTANCE, obs)
        return cls(rdn, obs, wl, fwhm, sza, esd)

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

    def radiance_reader(self) -> EnviReader:
        return EnviReader(self.radiance_header)

    def observation_reader(self) -> EnviReader:
        return EnviReader(self.observation_header)

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
