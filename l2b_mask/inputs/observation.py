"""The observation file of an acquisition read once, for everything a run takes from it.

A run needs four things of the observation file: the scene mean Earth-Sun distance (before the
first reflectance), the mean solar angles (metadata), the solar zenith of every pixel (which
pixels have a value, their reflectance, the cloud buffer) and the four sun and view angles of
every pixel (the cloud shadow). Each used to be a pass of its own over the file; for an ENVI
BIL file, every pass reads all of its bands. `read_observation` makes one pass and keeps
only what is needed: four (lines, samples) planes (float32 for EMIT's float32 file: ~25 MB for
a full 1280 x 1242 scene, never the 11-band float64 cube) and the two sums.

Every value is the one the separate passes gave, to the bit: the planes hold the file's values
unrounded (float64 planes for a float64 file), and the sums are made over the same blocks of
lines (`earth_sun_sums`, 512 lines; `SolarAngleSums`, 256 lines) from the same float64 values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l2b_mask.inputs.l1b import (
    OBS_VIEW_AZIMUTH,
    OBS_VIEW_AZIMUTH_NAME,
    OBS_VIEW_ZENITH,
    OBS_VIEW_ZENITH_NAME,
    find_band,
)
from l2b_mask.inputs.scene import (
    Scene,
    SolarAngleSums,
    band_names,
    earth_sun_mean,
    earth_sun_sums,
    solar_angle_bands,
)

EARTH_SUN_LINES = 512  # the blocks of `Scene.earth_sun_distance`'s sums
SOLAR_ANGLE_LINES = 256  # the blocks of `mean_solar_angles`' sums (divides EARTH_SUN_LINES)


@dataclass(frozen=True)
class ObservationGeometry:
    """What a run takes from the observation file, read in one pass.

    The angle planes are (lines, samples) in degrees, as stored (fill included): float32 for a
    float32 file, float64 for a float64 one, so that any reader's cast of them is the file's.
    """

    solar_zenith: np.ndarray
    solar_azimuth: np.ndarray
    view_zenith: np.ndarray
    view_azimuth: np.ndarray
    nodata: float  # the scene's observation fill (-9999 when the file names none)
    mean_solar_zenith: float | None  # over pixels with a value; None when none has one
    mean_solar_azimuth: float | None
    earth_sun_total: float  # sum and count of the valid Earth-Sun distances
    earth_sun_count: int
    path: Path  # the observation data file, named by the errors

    def earth_sun_distance(self) -> float:
        """The scene mean Earth-Sun distance (AU); InputProductError when no pixel has a valid
        one or the mean is implausible (as `Scene.earth_sun_distance`)."""
        return earth_sun_mean(self.earth_sun_total, self.earth_sun_count, self.path)


def read_observation(scene: Scene) -> ObservationGeometry:
    """One pass over the scene's observation file (ENVI or granule): the solar zenith and
    azimuth, view zenith and azimuth planes, the mean solar angles and the Earth-Sun sums.
    Bands are found by name as `Scene` finds them (EMIT's positions without names)."""
    header = scene.observation_header
    names = band_names(header)
    zenith, azimuth = solar_angle_bands(header)
    bands = [zenith, azimuth,
             find_band(names, OBS_VIEW_ZENITH_NAME, OBS_VIEW_ZENITH, header),
             find_band(names, OBS_VIEW_AZIMUTH_NAME, OBS_VIEW_AZIMUTH, header),
             scene.earth_sun_band]
    plane_dtype = np.float64 if np.dtype(header.dtype).itemsize > 4 else np.float32
    planes = np.empty((4, scene.lines, scene.samples), plane_dtype)
    angle_sums = SolarAngleSums()
    total, count = 0.0, 0
    with scene.observation_reader() as reader:
        for start in range(0, scene.lines, EARTH_SUN_LINES):
            stop = min(start + EARTH_SUN_LINES, scene.lines)
            block = reader.read_lines(start, stop, bands, plane_dtype)
            planar = np.ascontiguousarray(block.transpose(2, 0, 1))  # (5, lines, samples)
            planes[:, start:stop] = planar[:4]
            block_total, block_count = earth_sun_sums(planar[4].astype(np.float64),
                                                      scene.observation_nodata)
            total += block_total
            count += block_count
            sun = planar[:2].astype(np.float64)  # exact: the file's values
            for sub in range(0, stop - start, SOLAR_ANGLE_LINES):
                part = slice(sub, sub + SOLAR_ANGLE_LINES)
                angle_sums.add(sun[0, part], sun[1, part], header.nodata)
    mean_zenith, mean_azimuth = angle_sums.means()
    return ObservationGeometry(planes[0], planes[1], planes[2], planes[3],
                               scene.observation_nodata, mean_zenith, mean_azimuth, total, count,
                               header.data_path)
