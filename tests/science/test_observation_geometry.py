"""`read_observation`, the one pass over the observation file a PGE run makes (issue 21),
gives every value the separate passes give, to the bit: the Earth-Sun distance, the mean solar
angles, the streamed solar zenith and the four angles of the shadow. Scenes of more than 512
lines (the Earth-Sun sums' block) with fill, NaN and a varying distance; float32 and float64
files; BIL and BSQ; with and without band names (then EMIT's positions)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import OBS_NAMES, write_pair, write_raster

from l2b_mask.algorithm.beyond_cloud import read_sun_view_angles, sun_view_angles
from l2b_mask.errors import InputProductError
from l2b_mask.inputs.observation import read_observation
from l2b_mask.inputs.scene import Scene, mean_solar_angles

LINES, SAMPLES = 1100, 3  # two full 512-line blocks and a part; four 256-line blocks and a part


def _observation(folder, dtype, interleave: str, names: bool, seed: int = 1):
    """A radiance/observation pair whose observation has varied angles, fill and NaN."""
    rdn, _ = write_pair(folder, LINES, SAMPLES, bands=8, seed=seed)
    rng = np.random.default_rng(seed)
    obs = rng.uniform(0.0, 360.0, (LINES, 11, SAMPLES))
    obs[:, 4, :] = rng.uniform(0.0, 95.0, (LINES, SAMPLES))  # some with the sun down
    obs[:, 10, :] = 1.0 + 0.01 * np.sin(np.arange(LINES) / 50.0)[:, None]
    obs[rng.random(obs.shape) < 0.02] = -9999.0
    obs[rng.random(obs.shape) < 0.005] = np.nan
    extra = {"data ignore value": -9999}
    if names:
        extra["band names"] = OBS_NAMES
    path = write_raster(folder / "scene_obs.img", obs.astype(dtype), interleave, extra=extra)
    return Scene.open(rdn, path, expected_radiance_bands=None), path


@pytest.mark.parametrize(("dtype", "interleave", "names"), [
    (np.float32, "bil", True), (np.float64, "bil", False), (np.float32, "bsq", False)])
def test_one_pass_gives_every_value_of_the_separate_passes(tmp_path, dtype, interleave, names):
    scene, path = _observation(tmp_path, dtype, interleave, names)
    once = read_observation(scene)
    assert once.earth_sun_distance() == scene.earth_sun_distance()
    assert (once.mean_solar_zenith, once.mean_solar_azimuth) == mean_solar_angles(path)
    with scene.observation_reader() as reader:
        streamed = reader.read_band(0, LINES, scene.solar_zenith_band)
    np.testing.assert_array_equal(once.solar_zenith.astype(np.float64), streamed)
    separate, kept = read_sun_view_angles(scene), sun_view_angles(once)
    for name in ("solar_zenith", "solar_azimuth", "view_zenith", "view_azimuth"):
        a, b = getattr(separate, name), getattr(kept, name)
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, b)  # NaN where the file has fill, in both
    assert once.solar_zenith.dtype == dtype  # the file's values, unrounded


def test_one_pass_refuses_what_the_earth_sun_distance_refuses(tmp_path):
    """No valid Earth-Sun distance: the same input error, when the distance is asked for."""
    rdn, obs = write_pair(tmp_path, 4, 3, bands=8, esd=-9999.0)
    scene = Scene.open(rdn, obs, expected_radiance_bands=None)
    once = read_observation(scene)
    with pytest.raises(InputProductError, match="no pixel has a valid Earth-Sun distance"):
        scene.earth_sun_distance()
    with pytest.raises(InputProductError, match="no pixel has a valid Earth-Sun distance"):
        once.earth_sun_distance()
