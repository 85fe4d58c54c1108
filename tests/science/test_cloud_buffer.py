"""Cloud buffer distance against a brute-force distance, with no value, reach cut and no cloud."""

from __future__ import annotations

import numpy as np
import pytest

from l2b_mask.algorithm.cloud_buffer import cloud_buffer_distance


def _brute_force(flag: np.ndarray, sza: np.ndarray, pixel_m: float, height_m: float) -> np.ndarray:
    lines, samples = flag.shape
    clouds = np.argwhere(flag == 1)
    out = np.empty(flag.shape, np.float64)
    for i in range(lines):
        for j in range(samples):
            if flag[i, j] == 255:
                out[i, j] = -9999.0
                continue
            if flag[i, j] == 1:
                out[i, j] = 0.0
                continue
            d = np.min(np.hypot(clouds[:, 0] - i, clouds[:, 1] - j)) if len(clouds) else np.inf
            reach = np.tan(np.deg2rad(sza[i, j])) * height_m / pixel_m
            out[i, j] = -1.0 if d >= reach else d
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    flag = (rng.random((23, 31)) < 0.04).astype(np.uint8)
    flag[rng.random(flag.shape) < 0.1] = 255  # no value, some next to clouds
    flag[5, :] = 255  # a whole fill line between clouds: not a cloud, distances pass across it
    sza = rng.uniform(10.0, 70.0, flag.shape)  # per-pixel reach 0.9 to 14 pixels at 60 m, 500 m
    got = cloud_buffer_distance(flag, sza, 60.0, 500.0)
    assert got.dtype == np.float32
    want = _brute_force(flag, sza, 60.0, 500.0)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert (got == -1).any() and (got > 1).any()  # both the cut and real distances are exercised


def test_no_value_is_not_cloud_and_cut_is_at_reach():
    flag = np.zeros((1, 12), np.uint8)
    flag[0, 0] = 1
    flag[0, 1] = 255
    sza = np.full(flag.shape, 45.0)  # reach = 300 m / 60 m = 5 pixels exactly
    got = cloud_buffer_distance(flag, sza, 60.0, 300.0)
    np.testing.assert_array_equal(got[0], [0, -9999, 2, 3, 4, -1, -1, -1, -1, -1, -1, -1])


def test_no_cloud_anywhere_is_beyond_reach():
    flag = np.zeros((4, 5), np.uint8)
    flag[0, 0] = 255
    got = cloud_buffer_distance(flag, np.full(flag.shape, 30.0), 60.0)
    assert got[0, 0] == -9999 and np.all(got.ravel()[1:] == -1)


def test_invalid_solar_zenith_has_no_value():
    flag = np.array([[1, 0, 0, 0]], np.uint8)
    sza = np.array([[30.0, np.nan, -9999.0, 30.0]])
    got = cloud_buffer_distance(flag, sza, 60.0)
    np.testing.assert_array_equal(got[0], [0.0, -9999.0, -9999.0, 3.0])


@pytest.mark.parametrize("kwargs", [{"pixel_size_m": 0.0}, {"pixel_size_m": np.nan},
                                    {"pixel_size_m": 60.0, "cloud_height_m": -1.0}])
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        cloud_buffer_distance(np.zeros((2, 2), np.uint8), np.zeros((2, 2)), **kwargs)
