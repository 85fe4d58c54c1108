"""Cloud buffer distance: how far, in pixels, each pixel lies from the nearest cloud-flag pixel.

The band has the semantics of the operational EMIT L2A mask's buffer-distance band so that users
can apply the same rule to either product: 0 on cloud, the Euclidean distance in pixels of the
instrument grid elsewhere, -1 beyond the reach `tan(solar zenith) x H / pixel size` (where a
cloud of top height H cannot shade the pixel, whatever the sun azimuth), -9999 where the pixel
has no value. The reach uses each pixel's own solar zenith.

A scene without a single cloud-flag pixel has no finite distance anywhere: every pixel with a
value is beyond any reach, so it gets -1. (The distance transform of an array with no zero
would otherwise return distances to a point outside the image, which mean nothing.)
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

FLAG_CLEAR, FLAG_CLOUD, FLAG_NO_VALUE = 0, 1, 255
DISTANCE_NO_VALUE = -9999.0
DISTANCE_BEYOND_REACH = -1.0
DEFAULT_CLOUD_HEIGHT_M = 3000.0

__all__ = [
    "DEFAULT_CLOUD_HEIGHT_M",
    "DISTANCE_BEYOND_REACH",
    "DISTANCE_NO_VALUE",
    "buffer_reach_pixels",
    "cloud_buffer_distance",
]


def buffer_reach_pixels(
    solar_zenith_deg: np.ndarray | float, pixel_size_m: float,
    cloud_height_m: float = DEFAULT_CLOUD_HEIGHT_M,
) -> np.ndarray:
    """tan(SZA) x H / pixel size, in pixels: the farthest a shadow of a cloud top at H falls."""
    return np.tan(np.deg2rad(np.asarray(solar_zenith_deg, np.float64))) * cloud_height_m / pixel_size_m


def cloud_buffer_distance(
    flag: np.ndarray, solar_zenith_deg: np.ndarray, pixel_size_m: float,
    cloud_height_m: float = DEFAULT_CLOUD_HEIGHT_M,
) -> np.ndarray:
    """Float32 (lines, samples) buffer distance from a cloud flag (1 cloud, 0 clear, 255 none).

    `solar_zenith_deg` is per pixel (same shape as `flag`); a pixel whose solar zenith is not a
    finite angle in [0, 90] degrees has no reach and is given the no-value -9999, like a
    pixel without a flag. Pixels without a value count as not cloud for the distance.
    """
    flag = np.asarray(flag)
    sza = np.asarray(solar_zenith_deg, np.float64)
    if flag.ndim != 2:
        raise ValueError(f"flag must be 2-D (lines, samples), got shape {flag.shape}")
    if sza.shape != flag.shape:
        raise ValueError(f"solar zenith shape {sza.shape} differs from the flag's {flag.shape}")
    if not (np.isfinite(pixel_size_m) and pixel_size_m > 0):
        raise ValueError(f"pixel size must be a positive number of metres, got {pixel_size_m}")
    if not (np.isfinite(cloud_height_m) and cloud_height_m > 0):
        raise ValueError(f"cloud height must be a positive number of metres, got {cloud_height_m}")

    cloud = flag == FLAG_CLOUD
    no_value = (flag == FLAG_NO_VALUE) | ~np.isfinite(sza) | (sza < 0.0) | (sza > 90.0)
    if cloud.any():
        # Distance of every non-zero element to the nearest zero: the cloud pixels are the zeros.
        distance = distance_transform_edt(~cloud).astype(np.float32)
        with np.errstate(invalid="ignore"):
            reach = buffer_reach_pixels(np.where(no_value, 0.0, sza), pixel_size_m, cloud_height_m)
        distance[(distance >= reach) & ~cloud] = DISTANCE_BEYOND_REACH
    else:
        distance = np.full(flag.shape, DISTANCE_BEYOND_REACH, np.float32)
    distance[no_value] = DISTANCE_NO_VALUE
    return distance
