"""Scene validation: every inconsistency between the radiance and observation files."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_pair, write_raster

from l2b_mask.errors import InputProductError
from l2b_mask.inputs.envi import EnviReader, read_header
from l2b_mask.inputs.scene import Scene


def _edit(path, old, new):
    hdr = path.with_suffix(".hdr")
    text = hdr.read_text()
    assert old in text, old
    hdr.write_text(text.replace(old, new, 1))


def test_valid_pair_opens(tmp_path):
    rdn, obs = write_pair(tmp_path)
    s = Scene.open(rdn, obs)
    assert (s.lines, s.samples) == (6, 5)
    assert s.wavelengths_nm.shape == (285,) and s.solar_zenith_band == 4 and s.earth_sun_band == 10


def test_bands_found_by_name_when_reordered(tmp_path):
    rdn, obs = write_pair(tmp_path, obs_bands=12)
    hdr = obs.with_suffix(".hdr")
    text = hdr.read_text().replace("To-sun zenith (0 to 90 degrees from zenith)", "TMP")
    text = text.replace("Extra", "To-sun zenith (0 to 90 degrees from zenith)").replace("TMP", "Extra")
    hdr.write_text(text)
    s = Scene.open(rdn, obs)
    assert s.solar_zenith_band == 11 and s.earth_sun_band == 10


def test_bands_by_position_without_names(tmp_path):
    rdn, obs = write_pair(tmp_path, names=False, obs_dtype=np.float32)
    s = Scene.open(rdn, obs)
    assert (s.solar_zenith_band, s.earth_sun_band) == (4, 10)


@pytest.mark.parametrize(("target", "old", "new", "message"), [
    ("rdn", "data type = 4", "data type = 2", "radiance must be floating point"),
    ("obs", "data type = 5", "data type = 3", "observation geometry must be floating point"),
    ("rdn", "wavelength = {", "wavelengthx = {", "no 'wavelength'"),
    ("rdn", "fwhm = {", "fwhmx = {", "no 'fwhm'"),
    ("rdn", "wavelength = {381.00558, ", "wavelength = {", "284 wavelengths for 285 bands"),
    ("rdn", "fwhm = {8.50000, ", "fwhm = {", "284 fwhm values for 285 bands"),
    ("rdn", "fwhm = {8.50000", "fwhm = {-1.0", "fwhm values must be finite and positive"),
    ("rdn", "wavelength units = Nanometers", "wavelength units = furlongs", "unknown 'wavelength units'"),
])
def test_radiance_and_obs_problems(tmp_path, target, old, new, message):
    rdn, obs = write_pair(tmp_path)
    # an integer file of the same byte size keeps the size check quiet
    if target == "obs":
        _edit(obs, "bands = 11", "bands = 22")
    elif "data type" in old:
        _edit(rdn, "bands = 285", "bands = 570")
    _edit(rdn if target == "rdn" else obs, old, new)
    with pytest.raises(InputProductError, match=message):
        Scene.open(rdn, obs)


@pytest.mark.parametrize("swap", ["unsorted", "duplicated", "nan"])
def test_wavelengths_must_increase(tmp_path, swap):
    wl = [f"{w:.5f}" for w in np.linspace(381.00558, 2493.2, 285)]
    if swap == "unsorted":
        wl[10], wl[11] = wl[11], wl[10]
    elif swap == "duplicated":
        wl[11] = wl[10]
    else:
        wl[5] = "nan"
    rdn, obs = write_pair(tmp_path, rdn_extra={"wavelength": wl})
    with pytest.raises(InputProductError, match="not finite and strictly increasing"):
        Scene.open(rdn, obs)


def test_wrong_radiance_band_count(tmp_path):
    rdn, obs = write_pair(tmp_path, bands=284)
    with pytest.raises(InputProductError, match="284 bands, expected 285") as err:
        Scene.open(rdn, obs)
    assert err.value.path.name == "scene_rdn.hdr"
    assert Scene.open(rdn, obs, expected_radiance_bands=None).radiance_header.bands == 284


def test_wrong_obs_band_count(tmp_path):
    rdn, _ = write_pair(tmp_path)
    obs = write_raster(tmp_path / "o10.img", np.ones((6, 10, 5)), extra={"data ignore value": -9999})
    with pytest.raises(InputProductError, match="10 bands, expected 11 or 12"):
        Scene.open(rdn, obs)


def test_dimension_mismatch_names_both(tmp_path):
    rdn, _ = write_pair(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, obs = write_pair(other, lines=7)
    message = "7 lines x 5 samples but the radiance scene_rdn.hdr is 6 x 5"
    with pytest.raises(InputProductError, match=message):
        Scene.open(rdn, obs)


def test_ambiguous_band_names(tmp_path):
    rdn, obs = write_pair(tmp_path)
    _edit(obs, "Solar phase", "To-sun zenith again")
    with pytest.raises(InputProductError, match="found 2"):
        Scene.open(rdn, obs)


def _set_obs(obs, band, values):
    h = read_header(obs)
    with EnviReader(h) as r:
        cube = r.read_lines(0, h.lines, dtype=h.dtype).transpose(0, 2, 1).copy()
    cube[:, band, :] = values
    cube.astype(h.dtype).tofile(h.data_path)


def test_earth_sun_distance_ignores_fill(tmp_path):
    rdn, obs = write_pair(tmp_path, esd=0.99)
    d = np.full((6, 5), 0.99)
    d[0, :] = -9999
    d[3, 2] = np.nan
    d[1, 1] = 1.01
    _set_obs(obs, 10, d)
    expected = (0.99 * 23 + 1.01) / 24
    assert Scene.open(rdn, obs).earth_sun_distance(lines_per_block=2) == pytest.approx(expected, rel=1e-12)


def test_earth_sun_distance_all_fill_or_implausible(tmp_path):
    rdn, obs = write_pair(tmp_path)
    _set_obs(obs, 10, -9999)
    with pytest.raises(InputProductError, match="no pixel has a valid Earth-Sun distance"):
        Scene.open(rdn, obs).earth_sun_distance()
    _set_obs(obs, 10, 149.6e6)
    with pytest.raises(InputProductError, match="outside 0.97-1.03"):
        Scene.open(rdn, obs).earth_sun_distance()
