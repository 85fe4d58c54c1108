"""The Python entry points: `open_product` (netCDF, ENVI; swath and GLT grid), `mask_radiance`
and `mask_reflectance` against the PGE's own products, the lazy package root, and
docs/python.md run as written.

One small demo run (the PGE on a synthetic acquisition, in a subprocess) is shared by all.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from netCDF4 import Dataset

import l2b_mask
from l2b_mask.errors import InputProductError
from l2b_mask.inputs.envi import EnviReader, read_header
from l2b_mask.products.envi import read_envi_layers
from l2b_mask.products.netcdf import read_netcdf_layers

PROJECT = Path(__file__).resolve().parents[2]
LINES = SAMPLES = 24


@pytest.fixture(scope="module")
def demo(tmp_path_factory, spec) -> Path:
    """A folder holding `demo_output/` of `l2b-mask-demo` (inputs and products)."""
    base = tmp_path_factory.mktemp("python_api")
    done = subprocess.run([sys.executable, "-m", "pge.demo", "--folder", "demo_output",
                           "--lines", str(LINES), "--samples", str(SAMPLES), "--device", "cpu"],
                          cwd=base, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return base


def _one(folder: Path, pattern: str) -> Path:
    (path,) = folder.glob(pattern)
    return path


def _raster(path: Path) -> np.ndarray:
    header = read_header(path)
    with EnviReader(header) as reader:
        return reader.read_lines(0, header.lines, dtype=np.float64)


def test_netcdf_swath_layers_nan_flags_and_coordinates(demo):
    nc = _one(demo / "demo_output/products", "*.nc")
    ds = l2b_mask.open_product(nc)
    stored = read_netcdf_layers(nc)
    no_value = stored.flag == 255
    assert no_value.any() and (~no_value).any()
    for name in ("cloud_mask", "cloud_probability", "cloud_buffer_distance", "cloud_shadow"):
        assert ds[name].dims == ("downtrack", "crosstrack") and ds[name].dtype == np.float32
        assert np.array_equal(ds[name].isnull().values, no_value), name
    assert np.array_equal(ds.cloud_mask.values[~no_value], stored.flag[~no_value])
    assert np.array_equal(ds.cloud_probability.values, stored.probability, equal_nan=True)
    assert np.array_equal(ds.cloud_shadow.values[~no_value], stored.shadow[~no_value])
    for flag, meanings in (("cloud_mask", "clear cloud"), ("cloud_shadow", "not_shadow shadow")):
        assert ds[flag].attrs["flag_meanings"] == meanings
        assert list(ds[flag].attrs["flag_values"]) == [0, 1]
    with Dataset(nc) as raw:
        lon = raw["location/lon"][:].filled(np.nan)
        title = raw.getncattr("title")
    assert set(ds.coords) == {"lon", "lat"} and ds.lon.dims == ("downtrack", "crosstrack")
    assert np.array_equal(ds.lon.values, lon, equal_nan=True)
    assert ds.attrs["title"] == title


def test_ortho_each_cell_takes_its_glt_pixel(demo):
    """The GLT applied as emit_tools applies it, repeated here from the raw netCDF variables."""
    nc = _one(demo / "demo_output/products", "*.nc")
    swath = l2b_mask.open_product(nc)
    grid = l2b_mask.open_product(nc, ortho=True)
    with Dataset(nc) as raw:
        gx = np.asarray(raw["location/glt_x"][:].filled(0), np.int64)
        gy = np.asarray(raw["location/glt_y"][:].filled(0), np.int64)
        gt = np.asarray(raw.getncattr("geotransform"), np.float64)
    valid = (gx != 0) & (gy != 0)
    assert valid.any() and (~valid).any()
    for name in ("cloud_mask", "cloud_probability", "cloud_buffer_distance", "elev"):
        want = np.full(gx.shape, np.nan)
        want[valid] = swath[name].values[np.abs(gy[valid]) - 1, np.abs(gx[valid]) - 1]
        assert grid[name].dims == ("lat", "lon")
        assert np.array_equal(grid[name].values, want, equal_nan=True), name
    assert np.allclose(grid.lon.values, gt[0] + (np.arange(gx.shape[1]) + 0.5) * gt[1])
    assert np.allclose(grid.lat.values, gt[3] + (np.arange(gx.shape[0]) + 0.5) * gt[5])
    assert grid.attrs["crs"] == "EPSG:4326"


def test_envi_with_its_location_equals_the_netcdf(demo):
    products, inputs = demo / "demo_output/products", demo / "demo_output/inputs"
    nc = _one(products, "*.nc")
    hdr = nc.with_suffix(".hdr")
    from_nc = l2b_mask.open_product(nc)
    from_envi = l2b_mask.open_product(hdr.with_suffix(".img"), location=_one(inputs, "*_loc_*.hdr"))
    for name in ("cloud_mask", "cloud_probability", "cloud_buffer_distance", "cloud_shadow", "lat"):
        assert from_envi[name].equals(from_nc[name]), name
    assert np.array_equal(from_envi.cloud_mask.isnull(), read_envi_layers(hdr).flag == 255)
    assert "emit_pge_version" in from_envi.attrs and "lines" not in from_envi.attrs
    bare = l2b_mask.open_product(hdr)
    assert "lon" not in bare.coords
    with pytest.raises(InputProductError, match="needs a GLT"):
        l2b_mask.open_product(hdr, ortho=True)
    grid = l2b_mask.open_product(hdr, ortho=True, glt=_one(inputs, "*_glt_*.hdr"))
    assert grid.cloud_probability.equals(l2b_mask.open_product(nc, ortho=True).cloud_probability)


def test_not_a_product_is_an_input_error_naming_it(demo, tmp_path):
    rdn = _one(demo / "demo_output/inputs", "*_rdn_*.hdr")
    with pytest.raises(InputProductError) as caught:
        l2b_mask.open_product(rdn)
    assert caught.value.path is not None and caught.value.path.name.startswith(rdn.stem)
    text = tmp_path / "x.nc"
    text.write_text("not netCDF")
    with pytest.raises(InputProductError):
        l2b_mask.open_product(text)


@pytest.fixture(scope="module")
def arrays(demo) -> dict[str, np.ndarray]:
    inputs = demo / "demo_output/inputs"
    rdn_hdr = _one(inputs, "*_rdn_*.hdr")
    header = read_header(rdn_hdr)
    return {"radiance": _raster(rdn_hdr).astype(np.float32),
            "observation": _raster(_one(inputs, "*_obs_*.hdr")),
            "location": _raster(_one(inputs, "*_loc_*.hdr")),
            "wl": header.float_list("wavelength"), "fwhm": header.float_list("fwhm")}


def test_mask_radiance_is_the_pges_product_to_the_bit(demo, arrays):
    product = l2b_mask.open_product(_one(demo / "demo_output/products", "*.nc"))
    loc = arrays["location"]
    masked = l2b_mask.mask_radiance(arrays["radiance"], arrays["observation"], arrays["wl"],
                                    arrays["fwhm"], lon=loc[:, :, 0], lat=loc[:, :, 1],
                                    elev=loc[:, :, 2])
    for name in ("cloud_mask", "cloud_probability", "cloud_buffer_distance", "cloud_shadow", "lon"):
        assert masked[name].equals(product[name]), name
    assert masked.attrs["cloud_model_version"] and 0 < masked.attrs["cloud_threshold"] < 1
    no_location = l2b_mask.mask_radiance(arrays["radiance"], arrays["observation"], arrays["wl"],
                                         arrays["fwhm"])
    assert "cloud_shadow" not in no_location and "lon" not in no_location.coords
    assert np.array_equal(no_location.cloud_probability.values, product.cloud_probability.values,
                          equal_nan=True)
    assert "no location" in no_location.attrs["cloud_shadow_not_made"]


def test_mask_radiance_refuses_arrays_that_do_not_fit(arrays):
    with pytest.raises(InputProductError, match="observation"):
        l2b_mask.mask_radiance(arrays["radiance"], arrays["observation"][1:], arrays["wl"],
                               arrays["fwhm"])
    with pytest.raises(InputProductError, match="wavelengths"):
        l2b_mask.mask_radiance(arrays["radiance"], arrays["observation"], arrays["wl"][:-1],
                               arrays["fwhm"])


def test_mask_reflectance_matches_the_radiance_path(demo, arrays, spec):
    """The PGE's own reflectance handed in: the same probability wherever the PGE has one."""
    from l2b_mask.algorithm.reflectance import band_irradiance, load_irradiance, toa_reflectance
    from l2b_mask.inputs.scene import Scene

    inputs = demo / "demo_output/inputs"
    scene = Scene.open(_one(inputs, "*_rdn_*.hdr"), _one(inputs, "*_obs_*.hdr"))
    per_band = band_irradiance(*load_irradiance(spec.irradiance_path), arrays["wl"], arrays["fwhm"])
    rdn, obs = arrays["radiance"], arrays["observation"]
    rho = toa_reflectance(rdn, obs[:, :, 4], scene.earth_sun_distance(), per_band)
    rho[(rdn == -9999).any(axis=-1) | (obs[:, :, 4] == -9999)] = np.nan
    product = l2b_mask.open_product(_one(demo / "demo_output/products", "*.nc"))
    masked = l2b_mask.mask_reflectance(rho, arrays["wl"])
    assert set(masked.data_vars) == {"cloud_mask", "cloud_probability"}
    has = product.cloud_probability.notnull().values
    assert np.array_equal(masked.cloud_probability.values[has], product.cloud_probability.values[has])
    geometry = l2b_mask.mask_reflectance(rho, arrays["wl"], observation=obs)
    assert np.array_equal(geometry.cloud_buffer_distance.values[has],
                          product.cloud_buffer_distance.values[has])


def test_import_loads_neither_torch_nor_xarray():
    code = ("import sys, l2b_mask; assert 'torch' not in sys.modules and 'xarray' not in "
            "sys.modules, 'eager'; assert callable(l2b_mask.open_product); "
            "assert set(l2b_mask.__all__) <= set(dir(l2b_mask)); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr
    with pytest.raises(AttributeError):
        _ = l2b_mask.no_such_name


def test_docs_python_md_runs_as_written(demo, monkeypatch):
    text = (PROJECT / "docs/python.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(demo)
    namespace: dict = {"__name__": "docs_python_md"}
    for number, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"docs/python.md block {number}", "exec"), namespace)  # noqa: S102
        except Exception as exc:  # noqa: BLE001 - name the block that failed
            pytest.fail(f"docs/python.md block {number} fails: {type(exc).__name__}: {exc}")
    assert Path.cwd() == demo
