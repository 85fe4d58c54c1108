"""Beyond the cloud: the cloud buffer distance and the cloud shadow of one acquisition.

The one entry point products are made from (`beyond_cloud`): from the cloud flag, the scene's
observation angles, the location (or None) and the settings, it returns the buffer distance
(ATBD 8.1), the shadow flag (ATBD 8.2, None without a location: the shadow's direction on the
swath grid needs each pixel's ground axes) and the pixel size with how it was obtained. The
darkness test needs TOA reflectance near `DARKNESS_BANDS_NM` for the whole scene: the caller
collects it while streaming the model (`SceneInference(keep_reflectance_nm=
reflectance_bands_needed(...))`), so the 1.8 GB radiance is read once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from l2b_mask.algorithm.cloud_buffer import DEFAULT_CLOUD_HEIGHT_M, cloud_buffer_distance
from l2b_mask.algorithm.cloud_shadow import (
    DARKNESS_BANDS_NM,
    DEFAULT_CLOUD_HEIGHTS_M,
    SHADOW,
    SunViewAngles,
    cloud_shadow_flag,
    validate_height_range,
)
from l2b_mask.algorithm.geometry import GroundSpacing, ground_spacing, local_axes, nominal_ground_spacing
from l2b_mask.inputs.l1b import (
    OBS_SOLAR_AZIMUTH,
    OBS_SOLAR_AZIMUTH_NAME,
    OBS_SOLAR_ZENITH,
    OBS_SOLAR_ZENITH_NAME,
    OBS_VIEW_AZIMUTH,
    OBS_VIEW_AZIMUTH_NAME,
    OBS_VIEW_ZENITH,
    OBS_VIEW_ZENITH_NAME,
    find_band,
)
from l2b_mask.inputs.location import LocationArrays
from l2b_mask.inputs.observation import ObservationGeometry
from l2b_mask.inputs.scene import Scene, band_names
from l2b_mask.nodata import FLOAT_NO_VALUE

# No comma: the reason also goes into an ENVI header value, where a comma splits a list.
NO_LOCATION = ("no location file: the shadow is displaced on the ground and turning that into "
               "lines and samples needs each pixel's ground position")
BUFFERED_DEFINITION = ("pixels with a value whose buffer distance is > 0 (within the reach of a "
                       "cloud: neither cloud (0), beyond reach (-1) nor without value)")

__all__ = [
    "BUFFERED_DEFINITION",
    "BeyondCloud",
    "BeyondCloudSettings",
    "beyond_cloud",
    "read_sun_view_angles",
    "reflectance_bands_needed",
    "sun_view_angles",
]


@dataclass(frozen=True)
class BeyondCloudSettings:
    """Cloud-top heights of the buffer's reach and the shadow's sweep, and the darkness test."""

    buffer_cloud_height_m: float = DEFAULT_CLOUD_HEIGHT_M
    shadow_cloud_heights_m: tuple[float, float] = DEFAULT_CLOUD_HEIGHTS_M
    shadow_darkness_test: bool = True

    def __post_init__(self) -> None:
        h = self.buffer_cloud_height_m
        if not (np.isfinite(h) and h > 0):
            raise ValueError(f"buffer cloud height must be a positive number of metres, got {h}")
        object.__setattr__(self, "shadow_cloud_heights_m",
                           validate_height_range(self.shadow_cloud_heights_m))


@dataclass(frozen=True)
class BeyondCloud:
    """The buffer distance and shadow of one scene, and what they were made with."""

    buffer_distance: np.ndarray  # (lines, samples) float32: 0 cloud, >0 px, -1 beyond, -9999
    shadow: np.ndarray | None  # (lines, samples) uint8: 1 shadow, 0 not, 255; None: not made
    spacing: GroundSpacing  # the pixel size of the buffer's reach, and how it was obtained
    settings: BeyondCloudSettings
    shadow_missing: str | None  # why there is no shadow (None when there is one)
    darkness_wavelengths_nm: tuple[float, ...] = ()  # scene bands the darkness test used

    def fractions(self) -> dict[str, Any]:
        """Shadowed and buffered pixel counts and percentages of the pixels with a value."""
        with_value = self.buffer_distance != FLOAT_NO_VALUE
        valid = int(np.count_nonzero(with_value))
        buffered = int(np.count_nonzero(self.buffer_distance > 0))
        out: dict[str, Any] = {
            "pixels_with_value": valid, "buffered_pixels": buffered,
            "buffered_percent_of_valid": 100.0 * buffered / valid if valid else 0.0,
            "shadow_pixels": None, "shadow_percent_of_valid": None,
        }
        if self.shadow is not None:
            shadow = int(np.count_nonzero(self.shadow == SHADOW))
            out["shadow_pixels"] = shadow
            out["shadow_percent_of_valid"] = 100.0 * shadow / valid if valid else 0.0
        return out


def reflectance_bands_needed(settings: BeyondCloudSettings, has_location: bool) -> tuple[float, ...]:
    """Wavelengths (nm) whose reflectance the inference must keep for `beyond_cloud`: the
    darkness test's, when a shadow will be made with it; none otherwise."""
    return tuple(DARKNESS_BANDS_NM) if has_location and settings.shadow_darkness_test else ()


def read_sun_view_angles(scene: Scene, lines_per_block: int = 256) -> SunViewAngles:
    """The four angles of the observation file, found by band name as `Scene` finds its bands
    (EMIT's positions 4, 3, 2, 1 without names), float32 with NaN where the file has fill.
    A pass of its own over the file: a run that read it already takes `sun_view_angles`."""
    header = scene.observation_header
    names = band_names(header)
    bands = [find_band(names, OBS_SOLAR_ZENITH_NAME, OBS_SOLAR_ZENITH, header),
             find_band(names, OBS_SOLAR_AZIMUTH_NAME, OBS_SOLAR_AZIMUTH, header),
             find_band(names, OBS_VIEW_ZENITH_NAME, OBS_VIEW_ZENITH, header),
             find_band(names, OBS_VIEW_AZIMUTH_NAME, OBS_VIEW_AZIMUTH, header)]
    out = np.empty((len(bands), scene.lines, scene.samples), np.float32)
    with scene.observation_reader() as reader:
        for start in range(0, scene.lines, lines_per_block):
            stop = min(start + lines_per_block, scene.lines)
            out[:, start:stop] = reader.read_lines(start, stop, bands, np.float32).transpose(2, 0, 1)
    return _angles_with_nan(out, scene.observation_nodata)


def sun_view_angles(observation: ObservationGeometry) -> SunViewAngles:
    """`read_sun_view_angles` of an observation file already read (`read_observation`): the
    same float32 values, without another pass over the file."""
    out = np.stack([observation.solar_zenith, observation.solar_azimuth,
                    observation.view_zenith, observation.view_azimuth]).astype(np.float32, copy=False)
    return _angles_with_nan(out, observation.nodata)


def _angles_with_nan(out: np.ndarray, nodata: float) -> SunViewAngles:
    """(4, lines, samples) float32 angles with the file's fill (and anything at or below
    -9990) made NaN."""
    out[(out == np.float32(nodata)) | (out <= -9990.0)] = np.nan
    return SunViewAngles(out[0], out[1], out[2], out[3])


def beyond_cloud(
    flag: np.ndarray, angles: SunViewAngles, location: LocationArrays | None,
    settings: BeyondCloudSettings = BeyondCloudSettings(),
    reflectance: Sequence[np.ndarray] | None = None,
    darkness_wavelengths_nm: Sequence[float] = (),
) -> BeyondCloud:
    """Buffer distance and shadow of a cloud flag (1 cloud, 0 clear, 255 no value).

    Pixel size: the location's mean ground spacing of adjacent pixels (`SPACING_METHOD`), else
    EMIT's nominal 60 m. Shadow: only with a location; with the darkness test, `reflectance` is
    the TOA reflectance nearest `DARKNESS_BANDS_NM`, in that order (ValueError without it).
    Pixels without a flag value have no value in either layer.
    """
    flag = np.asarray(flag)
    if location is not None:
        spacing = ground_spacing(location.lon, location.lat)
    else:
        spacing = nominal_ground_spacing()
    buffer = cloud_buffer_distance(flag, angles.solar_zenith, spacing.mean_m,
                                   settings.buffer_cloud_height_m)
    if location is None:
        return BeyondCloud(buffer, None, spacing, settings, NO_LOCATION)
    shadow = cloud_shadow_flag(flag, angles, local_axes(location.lon, location.lat),
                               settings.shadow_cloud_heights_m, settings.shadow_darkness_test,
                               reflectance)
    used = tuple(float(w) for w in darkness_wavelengths_nm) if settings.shadow_darkness_test else ()
    return BeyondCloud(buffer, shadow, spacing, settings, None, used)

