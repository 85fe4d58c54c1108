"""The shadow sweep is bounded by the scene whatever the angles (issue 20): a pixel at or near
the horizon has no shadow value, and the sweep's steps are capped by the scene's size, while
normal angles sweep exactly as before (one grid of heights, <= 1 pixel a step)."""

from __future__ import annotations

import numpy as np
import pytest

from l2b_mask.algorithm.cloud_shadow import (
    SHADOW_NO_VALUE,
    SWEEP_BUDGET_PX,
    SunViewAngles,
    cloud_shadow_flag,
    scene_reach_px,
    shadow_displacement_per_m,
    sweep_shadow,
)
from l2b_mask.algorithm.geometry import local_axes

R = 6_371_008.8
N = 64


def _swath(lines: int = N, samples: int = N) -> tuple[np.ndarray, np.ndarray]:
    """lon/lat of a north-up 60 m grid."""
    li, si = np.meshgrid(np.arange(lines, dtype=float), np.arange(samples, dtype=float),
                         indexing="ij")
    lat = 40.0 - np.degrees(60.0 * li / R)
    lon = -100.0 + np.degrees(60.0 * si / (R * np.cos(np.deg2rad(40.0))))
    return lon, lat


def _angles(sza: float = 40.0, saa: float = 135.0, vza: float = 5.0, vaa: float = 300.0
            ) -> SunViewAngles:
    return SunViewAngles(*(np.full((N, N), a) for a in (sza, saa, vza, vaa)))


def _flag() -> np.ndarray:
    flag = np.zeros((N, N), np.uint8)
    flag[20:26, 30:36] = 1
    flag[40, 10] = 1
    return flag


def _one_grid_sweep(flag, angles, axes, lo, hi) -> np.ndarray:
    """The sweep as it was before the bound (the oracle for normal angles)."""
    cl, cs = np.nonzero((flag == 1) & angles.valid())
    de, dn = shadow_displacement_per_m(angles, (cl, cs))
    dl, ds = axes.to_grid(de, dn, (cl, cs))
    steps = max(1, int(np.ceil((hi - lo) * float(np.max(np.hypot(dl, ds))))))
    dl, ds = dl.astype(np.float32), ds.astype(np.float32)
    swept = np.zeros(flag.shape, bool)
    for h in np.linspace(lo, hi, steps + 1, dtype=np.float32):
        tl = np.rint(cl.astype(np.float32) + h * dl).astype(np.int32)
        ts = np.rint(cs.astype(np.float32) + h * ds).astype(np.int32)
        ok = (tl >= 0) & (tl < N) & (ts >= 0) & (ts < N)
        swept[tl[ok], ts[ok]] = True
    return swept & (flag == 0)


@pytest.mark.parametrize("sza", [20.0, 60.0, 80.0])
def test_normal_angles_sweep_exactly_as_before(sza):
    lon, lat = _swath()
    axes, angles, flag = local_axes(lon, lat), _angles(sza=sza), _flag()
    swept, work = sweep_shadow(flag, angles, axes, (500.0, 3000.0))
    assert work.clipped_pixels == 0
    assert np.array_equal(swept, _one_grid_sweep(flag, angles, axes, 500.0, 3000.0))


@pytest.mark.parametrize("which", ["view", "sun"])
def test_a_pixel_at_89_9999_degrees_is_no_value_and_the_sweep_stays_small(which):
    lon, lat = _swath()
    axes, flag = local_axes(lon, lat), _flag()
    angles = _angles()
    zenith = angles.view_zenith if which == "view" else angles.solar_zenith
    zenith[22, 32] = 89.9999  # a cloud pixel
    zenith[50, 50] = 89.9999  # a clear one
    swept, work = sweep_shadow(flag, angles, axes, (500.0, 3000.0))
    # before the bound: ceil(2500 m x tan(89.9999) / 60 m) = 23.9 million steps
    assert work.steps <= SWEEP_BUDGET_PX + scene_reach_px(flag.shape) + 3
    assert work.steps < 200
    shadow = cloud_shadow_flag(flag, angles, axes, (500.0, 3000.0), darkness_test=False)
    assert shadow[22, 32] == SHADOW_NO_VALUE and shadow[50, 50] == SHADOW_NO_VALUE
    # that cloud pixel casts nothing: as if it had no value at all
    reference = flag.copy()
    reference[22, 32] = 255
    expected = cloud_shadow_flag(reference, _angles(), axes, (500.0, 3000.0), darkness_test=False)
    expected[50, 50] = SHADOW_NO_VALUE
    assert np.array_equal(shadow, expected)


def test_angles_beyond_the_horizon_or_not_finite_are_no_value():
    lon, lat = _swath()
    axes, flag = local_axes(lon, lat), _flag()
    angles = _angles()
    angles.view_zenith[5, 5] = 90.0
    angles.solar_zenith[6, 6] = 120.0
    angles.view_azimuth[7, 7] = np.nan
    shadow = cloud_shadow_flag(flag, angles, axes, (500.0, 3000.0), darkness_test=False)
    assert all(shadow[i, i] == SHADOW_NO_VALUE for i in (5, 6, 7))
    assert (shadow == SHADOW_NO_VALUE).sum() == 3


def test_lowest_height_zero_near_the_horizon_is_swept_only_inside_the_scene():
    """From 0 m no shadow starts outside the scene: the near-horizon cloud pixel keeps a value
    and is swept on its own grid up to where its shadow leaves the scene, <= 1 pixel a step,
    as a continuous streak."""
    lon, lat = _swath()
    axes = local_axes(lon, lat)
    flag = np.zeros((N, N), np.uint8)
    flag[32, 32] = 1
    angles = _angles(sza=89.9999, saa=270.0, vza=0.0)  # sun in the west: shadow to the east
    swept, work = sweep_shadow(flag, angles, axes, (0.0, 3000.0))
    assert work.clipped_pixels == 1 and work.uniform_pixels == 0
    assert work.steps <= scene_reach_px(flag.shape) + 2
    assert swept[32, 33:].all() and swept.sum() == N - 33  # the streak to the scene's edge


@pytest.mark.parametrize("sza", [88.0, 89.0])
def test_clipped_sweep_lands_where_the_whole_sweep_does(sza):
    """Above the budget, the clipped sweep marks what the one-grid sweep marks inside the scene
    (to a pixel of rounding), at a fraction of its steps."""
    lon, lat = _swath()
    axes = local_axes(lon, lat)
    flag = np.zeros((N, N), np.uint8)
    flag[10, 10] = 1
    angles = _angles(sza=sza, saa=315.0, vza=0.0)  # shadow towards the south-east
    lo, hi = 10.0, 3000.0
    swept, work = sweep_shadow(flag, angles, axes, (lo, hi))
    assert work.clipped_pixels == 1
    whole = _one_grid_sweep(flag, angles, axes, lo, hi)
    assert abs(int(swept.sum()) - int(whole.sum())) <= 2
    assert (swept & whole).sum() >= 0.9 * whole.sum()
