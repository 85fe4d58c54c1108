"""The library entry point of the cloud buffer and shadow, and the reflectance kept while
streaming for it (the whole PGE is in test_pge_beyond_cloud.py)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import OBS_NAMES, write_pair, write_raster

from l2b_mask.algorithm.beyond_cloud import (
    NO_LOCATION,
    BeyondCloudSettings,
    beyond_cloud,
    read_sun_view_angles,
    reflectance_bands_needed,
)
from l2b_mask.algorithm.cloud_buffer import cloud_buffer_distance
from l2b_mask.algorithm.cloud_shadow import DARKNESS_BANDS_NM, cloud_shadow_flag
from l2b_mask.algorithm.geometry import ground_spacing, local_axes
from l2b_mask.algorithm.inference import CloudModel, InferenceSettings, SceneInference
from l2b_mask.algorithm.reflectance import band_irradiance, load_irradiance
from l2b_mask.inputs.envi import EnviReader
from l2b_mask.inputs.location import read_location
from l2b_mask.inputs.scene import Scene
from l2b_mask.synthetic.scene import CLASS_CLEAR, CLASS_FILL, generate_acquisition


def test_kept_reflectance_is_the_toa_reflectance_and_changes_nothing_else(spec, tmp_path):
    rdn, obs = write_pair(tmp_path, lines=9, samples=7, seed=3, sza=40.0)
    cube = np.memmap(rdn, np.float32, "r+", shape=(9, 285, 7))
    cube[2, :, 3] = -9999.0  # one pixel without a value
    cube.flush()
    scene = Scene.open(rdn, obs)
    model = CloudModel.load(spec, InferenceSettings(device="cpu"))
    plain = SceneInference(scene, model).run(4)
    result = SceneInference(scene, model, keep_reflectance_nm=DARKNESS_BANDS_NM).run_keeping(4)
    kept = result.reflectance
    np.testing.assert_array_equal(result.probability, plain)
    assert SceneInference(scene, model).run_keeping(4).reflectance is None
    assert kept.reflectance.shape == (9, 7, 4)
    assert np.abs(kept.wavelengths_nm - DARKNESS_BANDS_NM).max() < 10.0
    # Independently: rho = pi L d^2 / (E cos SZA), E the band's irradiance, d = 1 AU here.
    grid, irr = load_irradiance(spec.irradiance_path)
    with EnviReader(scene.radiance_header) as reader:
        radiance = reader.read_lines(0, 9, dtype=np.float64)
    for i, wl in enumerate(kept.wavelengths_nm):
        band = int(np.flatnonzero(scene.wavelengths_nm == wl)[0])
        e = band_irradiance(grid, irr, scene.wavelengths_nm[[band]], scene.fwhm_nm[[band]])[0]
        rho = np.pi * radiance[:, :, band] / (e * np.cos(np.deg2rad(40.0)))
        rho[2, 3] = np.nan
        np.testing.assert_allclose(kept.planes()[i], rho, rtol=1e-6)


def _flag(acq) -> np.ndarray:
    truth = acq.truth
    return np.where(truth == CLASS_FILL, 255, np.where(truth == CLASS_CLEAR, 0, 1)).astype(np.uint8)


@pytest.fixture(scope="module")
def acq(tmp_path_factory):
    return generate_acquisition(tmp_path_factory.mktemp("bc"), lines=48, samples=48, seed=5,
                                shadows=True)


def test_without_location_the_nominal_pixel_size_and_no_shadow(acq):
    angles = read_sun_view_angles(Scene.open(acq.radiance, acq.observation))
    flag = _flag(acq)
    result = beyond_cloud(flag, angles, None, BeyondCloudSettings(buffer_cloud_height_m=500.0))
    assert result.shadow is None and result.shadow_missing == NO_LOCATION
    assert result.spacing.mean_m == 60.0 and "nominal" in result.spacing.method
    np.testing.assert_array_equal(result.buffer_distance,
                                  cloud_buffer_distance(flag, angles.solar_zenith, 60.0, 500.0))
    counts = result.fractions()
    assert counts["shadow_percent_of_valid"] is None
    assert counts["buffered_pixels"] == int((result.buffer_distance > 0).sum()) > 0
    assert (result.buffer_distance == -1).any()  # the 500 m reach (~7 px) cuts inside the scene


def test_with_location_the_located_pixel_size_and_the_geometric_shadow(acq):
    angles = read_sun_view_angles(Scene.open(acq.radiance, acq.observation))
    flag, loc = _flag(acq), read_location(acq.location)
    settings = BeyondCloudSettings(shadow_cloud_heights_m=(700.0, 2800.0), shadow_darkness_test=False)
    result = beyond_cloud(flag, angles, loc, settings)
    spacing = ground_spacing(loc.lon, loc.lat)
    assert result.spacing == spacing and result.shadow_missing is None
    np.testing.assert_array_equal(result.buffer_distance,
                                  cloud_buffer_distance(flag, angles.solar_zenith, spacing.mean_m))
    expected = cloud_shadow_flag(flag, angles, local_axes(loc.lon, loc.lat), (700.0, 2800.0), False)
    np.testing.assert_array_equal(result.shadow, expected)
    assert (result.shadow == 1).any() and (result.shadow[flag == 255] == 255).all()
    with pytest.raises(ValueError, match="reflectance"):
        beyond_cloud(flag, angles, loc, BeyondCloudSettings())  # darkness test without bands


def test_sun_and_view_angles_are_found_by_name(tmp_path):
    lines, samples = 3, 4
    obs = np.zeros((lines, 11, samples))
    order = [4, 3, 2, 1, 0, 5, 6, 7, 8, 9, 10]  # the files's bands in another order
    names = [OBS_NAMES[i] for i in order]
    for position, band in enumerate(order):
        obs[:, position, :] = 10.0 * band + 1.0
    obs[0, 0, 0] = -9999.0
    path = write_raster(tmp_path / "obs.img", obs, extra={"band names": names,
                                                           "data ignore value": -9999})
    rdn, _ = write_pair(tmp_path, lines=lines, samples=samples)
    angles = read_sun_view_angles(Scene.open(rdn, path))
    assert np.nanmax(angles.solar_zenith) == 41.0 and np.isnan(angles.solar_zenith[0, 0])
    assert (angles.solar_azimuth == 31.0).all() and (angles.view_zenith == 21.0).all()
    assert (angles.view_azimuth == 11.0).all()


def test_settings_and_the_bands_needed():
    with pytest.raises(ValueError, match="positive"):
        BeyondCloudSettings(buffer_cloud_height_m=0.0)
    with pytest.raises(ValueError, match="above max"):
        BeyondCloudSettings(shadow_cloud_heights_m=(3000.0, 500.0))
    with pytest.raises(ValueError, match="negative"):
        BeyondCloudSettings(shadow_cloud_heights_m=(-1.0, 500.0))
    assert reflectance_bands_needed(BeyondCloudSettings(), True) == DARKNESS_BANDS_NM
    assert reflectance_bands_needed(BeyondCloudSettings(), False) == ()
    assert reflectance_bands_needed(BeyondCloudSettings(shadow_darkness_test=False), True) == ()
