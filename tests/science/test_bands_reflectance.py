"""Band selection, irradiance convolution and TOA reflectance on hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import emit_like_wavelengths

from l2b_mask.algorithm.bands import kept_bands
from l2b_mask.algorithm.reflectance import band_irradiance, load_irradiance, toa_reflectance
from l2b_mask.errors import AncillaryError


def test_emit_bands_keep_268(spec, reference_dir):
    from l2b_mask.inputs.scene import Scene

    s = Scene.open(reference_dir / "public_s7_rdn.hdr", reference_dir / "public_s7_obs.hdr")
    kept = kept_bands(s.wavelengths_nm, spec.drop_ranges_nm)
    assert kept.size == 268
    wl = s.wavelengths_nm[kept]
    assert wl.min() > 405 and wl.max() < 2455 and not np.any((wl >= 1275) & (wl <= 1321))


def test_drop_ranges_are_inclusive():
    wl = np.array([404.9, 405.0, 405.1, 1274.9, 1275.0, 1321.0, 1321.1, 2455.0])
    assert kept_bands(wl, [(0, 405), (1275, 1321), (2455, 9999)]).tolist() == [2, 3, 6]


def test_synthetic_grid_keeps_bands_in_order():
    wl, _ = emit_like_wavelengths()
    kept = kept_bands(wl, [(0, 405), (1275, 1321), (2455, 9999)])
    assert np.all(np.diff(kept) > 0) and 260 < kept.size < 275


def test_band_irradiance_of_a_flat_spectrum_is_flat():
    grid = np.arange(350.0, 2500.5, 0.5)
    out = band_irradiance(grid, np.full(grid.size, 150.0), np.array([500.0, 1000.0]), np.array([8.0, 9.0]))
    np.testing.assert_allclose(out, 150.0, rtol=1e-12)


def test_band_irradiance_matches_a_hand_weighted_sum():
    grid = np.arange(350.0, 2500.5, 0.5)
    irr = 100 + np.sin(grid / 7.0) * 20
    centre, fwhm = 612.3, 8.4
    sigma = fwhm / 2.355
    w = [math.exp(-0.5 * ((g - centre) / sigma) ** 2) for g in grid]
    expected = sum(wi * e for wi, e in zip(w, irr, strict=True)) / sum(w)
    out = band_irradiance(grid, irr, np.array([centre]), np.array([fwhm]))
    assert out[0] == pytest.approx(expected, rel=1e-12)


def test_band_irradiance_of_a_line_is_the_line_weighted_by_its_response():
    grid = np.arange(350.0, 2500.5, 0.5)
    irr = np.zeros(grid.size)
    irr[grid == 600.0] = 1.0
    sigma = 8.0 / 2.355
    out = band_irradiance(grid, irr, np.array([600.0, 604.0]), np.array([8.0, 8.0]))
    offsets = np.arange(-200, 201) * 0.5
    norm0 = np.exp(-0.5 * (offsets / sigma) ** 2).sum()
    assert out[0] == pytest.approx(1.0 / norm0, rel=1e-9)
    assert out[1] == pytest.approx(math.exp(-0.5 * (4.0 / sigma) ** 2) / norm0, rel=1e-9)


def test_toa_by_hand():
    rad = np.array([[10.0, 20.0], [5.0, 0.0]], np.float32)
    sza = np.array([0.0, 60.0])
    e = np.array([200.0, 100.0])
    d = 0.99
    out = toa_reflectance(rad, sza, d, e)
    expected = np.array([[math.pi * 10 * d * d / 200, math.pi * 20 * d * d / 100],
                         [math.pi * 5 * d * d / (200 * 0.5), 0.0]])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_negative_radiance_is_kept():
    out = toa_reflectance(np.array([[-1.0]], np.float32), np.array([30.0]), 1.0, np.array([100.0]))
    assert out[0, 0] < 0


def test_official_irradiance_loads(spec):
    wl, irr = load_irradiance(spec.irradiance_path)
    assert wl.shape == (4301,) and wl[0] == 350.0 and wl[-1] == 2500.0 and 150 < irr.max() < 300


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((10, 3)), r"\(N, 2\) array"),
    (np.zeros(10), r"\(N, 2\) array"),
    (np.column_stack([np.arange(10.0), np.full(10, 2.0)]), "not uW/cm2/nm"),
    (np.column_stack([np.arange(10.0)[::-1], np.full(10, 200.0)]), "not strictly increasing"),
    (np.column_stack([np.arange(10.0), np.r_[np.nan, np.full(9, 200.0)]]), "NaN or Inf"),
    (np.column_stack([np.arange(10), np.full(10, 200)]), "floating point"),
])
def test_bad_irradiance(tmp_path, array, message):
    p = tmp_path / "irr.npy"
    np.save(p, array)
    with pytest.raises(AncillaryError, match=message):
        load_irradiance(p)


def test_irradiance_missing_or_garbage(tmp_path):
    with pytest.raises(AncillaryError, match="not found"):
        load_irradiance(tmp_path / "none.npy")
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(AncillaryError, match="unreadable"):
        load_irradiance(tmp_path / "bad.npy")
