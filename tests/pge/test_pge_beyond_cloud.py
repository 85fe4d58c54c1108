"""The cloud buffer distance and cloud shadow through the whole PGE (issue 13).

Four PGE runs as the SDS makes them, side by side: a synthetic acquisition with rendered
shadows, its location and GLT (every product, the ortho on); the same without a location file
(nominal pixel size, no shadow, and why); a location file whose pixels all sit at one point
(exit 4); a cloud-height range the wrong way round or negative (exit 3). The products are
compared with the library's `beyond_cloud` on the same flag, and the netCDF is opened the way
NASA's EMIT tools open it (xarray, h5netcdf, the root and both groups, the GLT applied).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_pge_e2e import Result, assert_one_stderr_line, config, run_pge, write_config

from l2b_mask.algorithm.beyond_cloud import BeyondCloudSettings, beyond_cloud, read_sun_view_angles
from l2b_mask.algorithm.cloud_shadow import DARKNESS_BANDS_NM
from l2b_mask.algorithm.geometry import NOMINAL_PIXEL_SIZE_M
from l2b_mask.algorithm.inference import CloudModel, InferenceSettings, SceneInference
from l2b_mask.inputs.envi import read_header
from l2b_mask.inputs.glt import read_glt
from l2b_mask.inputs.location import read_location
from l2b_mask.inputs.scene import Scene
from l2b_mask.products.browse import SHADOW_RGB, compose
from l2b_mask.products.envi import read_envi_layers
from l2b_mask.products.netcdf import read_netcdf_layers
from l2b_mask.synthetic.scene import SyntheticAcquisition, generate_acquisition
from pge.errors import ExitCode

LINES, SAMPLES, SEED = 40, 48, 3
STEM = "emit20240302t005829_o06201_s000_l2b_mask_b0106_v01"
NEW_ORTHO = ("_ortho_buffer.tif", "_ortho_shadow.tif")
BUFFER_H = 1000.0


@dataclass
class Runs:
    base: Path
    acq: SyntheticAcquisition
    results: dict[str, Result]

    def out(self, name: str) -> Path:
        return self.base / name / "out"

    def file(self, name: str, suffix: str) -> Path:
        return self.out(name) / f"{STEM}{suffix}"

    def metadata(self, name: str) -> dict:
        return json.loads(self.file(name, "_metadata.json").read_text())


def _collapsed_location(acq: SyntheticAcquisition, folder: Path) -> Path:
    """A copy of the location file with every pixel at the centre pixel's point."""
    header = read_header(acq.location)
    folder.mkdir(parents=True)
    data = np.fromfile(header.data_path, "<f8").reshape(header.lines, header.bands, header.samples)
    data[:, :, :] = data[header.lines // 2, :, header.samples // 2][None, :, None]
    img = folder / header.data_path.name
    data.tofile(img)
    (folder / header.header_path.name).write_text(header.header_path.read_text())
    return img


@pytest.fixture(scope="module")
def runs(tmp_path_factory, spec) -> Runs:
    base = tmp_path_factory.mktemp("beyond").resolve()
    acq = generate_acquisition(base / "in", lines=LINES, samples=SAMPLES, seed=SEED, shadows=True)
    bad_loc = _collapsed_location(acq, base / "bad_loc")
    cases = {
        # a lower buffer height than the default, so the reach (~12 px) cuts inside the scene
        "full": {"output": {"write_ortho": True}, "algorithm": {"buffer_cloud_height_m": BUFFER_H}},
        "no_location": {"output": {"write_ortho": True}, "input_files": {"location": None}},
        "one_point": {"input_files": {"location": str(bad_loc)}},
        "reversed": {"algorithm": {"shadow_cloud_heights_m": [3000, 500]}},
        "negative": {"algorithm": {"shadow_cloud_heights_m": [-100, 500]}},
    }
    for name, sections in cases.items():
        (base / name).mkdir()
        write_config(base / name / "rc.json", config(acq, base / name, spec, **sections))
    with ThreadPoolExecutor(len(cases)) as pool:
        futures = {name: pool.submit(run_pge, ["rc.json"], base / name) for name in cases}
        return Runs(base, acq, {name: f.result() for name, f in futures.items()})


@pytest.fixture(scope="module")
def full(runs) -> Runs:
    assert runs.results["full"].code == 0, str(runs.results["full"])
    return runs


@pytest.fixture(scope="module")
def library(full, spec):
    """The library's result on the PGE's own flag, the reflectance kept as the PGE keeps it."""
    acq = full.acq
    scene = Scene.open(acq.radiance, acq.observation)
    model = CloudModel.load(spec, InferenceSettings(device="cpu"))
    inference = SceneInference(scene, model, keep_reflectance_nm=DARKNESS_BANDS_NM)
    kept = inference.run_keeping(64).reflectance
    flag = read_envi_layers(full.file("full", ".img")).flag
    return beyond_cloud(flag, read_sun_view_angles(scene), read_location(acq.location),
                        BeyondCloudSettings(buffer_cloud_height_m=BUFFER_H), kept.planes(),
                        kept.wavelengths_nm.tolist())


def test_envi_bands_three_and_four_are_the_librarys(full, library):
    layers = read_envi_layers(full.file("full", ".img"))
    np.testing.assert_array_equal(layers.buffer_distance, library.buffer_distance)
    np.testing.assert_array_equal(layers.shadow, library.shadow)
    assert (layers.shadow == 1).sum() > 0 and (layers.buffer_distance > 0).sum() > 0
    assert (layers.buffer_distance == -1).any() and (layers.buffer_distance == 0).any()
    header = read_header(full.file("full", ".hdr"))
    assert header.string_list("band names") == ["Cloud Flag", "Cloud Probability",
                                                "Cloud Buffer Distance", "Cloud Shadow Flag"]


def test_netcdf_variables_equal_the_envi_bands(full):
    from netCDF4 import Dataset

    nc, envi = read_netcdf_layers(full.file("full", ".nc")), read_envi_layers(full.file("full", ".img"))
    np.testing.assert_array_equal(nc.buffer_distance, envi.buffer_distance)
    np.testing.assert_array_equal(nc.shadow, envi.shadow)
    with Dataset(full.file("full", ".nc")) as ds:
        buffer, shadow = ds["cloud_buffer_distance"], ds["cloud_shadow"]
        assert buffer.dtype == np.float32 and buffer._FillValue == -9999
        assert "pixels" in buffer.long_name and "tan(solar zenith) x H / pixel size" in buffer.comment
        assert shadow.dtype == np.uint8 and shadow._FillValue == 255
        assert list(shadow.flag_values) == [0, 1] and shadow.flag_meanings == "not_shadow shadow"
        assert list(ds["sensor_band_parameters/mask_bands"][:]) == [
            "Cloud Flag", "Cloud Probability", "Cloud Buffer Distance", "Cloud Shadow Flag"]


def test_pge_netcdf_passes_the_compliance_checker(full, monkeypatch):
    from conftest import compliance_problems

    assert compliance_problems(full.file("full", ".nc"), monkeypatch) == []


def _emit_tools_style(path: Path):
    """Open the product as NASA's `emit_tools.emit_xarray(path, ortho=True)` does: root and the
    `location` and `sensor_band_parameters` groups with xarray's h5netcdf engine, one dataset
    with the groups' variables as coordinates, fills as NaN, then every root variable put on
    the GLT grid (1-based `glt_x`/`glt_y`, 0 = no pixel) with pixel-centre lon/lat vectors from
    the `geotransform` attribute."""
    import xarray as xr

    root = xr.open_dataset(path, engine="h5netcdf")
    loc = xr.open_dataset(path, engine="h5netcdf", group="location")
    bands = xr.open_dataset(path, engine="h5netcdf", group="sensor_band_parameters")
    coords = {"downtrack": (["downtrack"], root.downtrack.data),
              "crosstrack": (["crosstrack"], root.crosstrack.data),
              **loc.variables, **bands.variables}
    flat = xr.Dataset(data_vars={**root.variables}, coords=coords, attrs=root.attrs)
    # xarray decodes the GLT's fill (0) as NaN: back to 0, as the client does
    glt = np.nan_to_num(np.stack([flat["glt_x"].data, flat["glt_y"].data], axis=-1), nan=0).astype(int)
    has = np.all(glt != 0, axis=-1)
    gt = flat.attrs["geotransform"]
    lon = gt[0] + 0.5 * gt[1] + np.arange(glt.shape[1]) * gt[1]
    lat = gt[3] + 0.5 * gt[5] + np.arange(glt.shape[0]) * gt[5]
    ortho = {}
    for var in root.data_vars:
        swath = np.where(flat[var].data == -9999, np.nan, flat[var].data).astype(np.float32)
        grid = np.full(glt.shape[:2], np.nan, np.float32)
        grid[has] = swath[glt[has, 1] - 1, glt[has, 0] - 1]
        ortho[var] = grid
    return flat, ortho, has, glt, lon, lat


def test_emit_tools_opens_every_variable_and_places_each_pixel(full):
    flat, ortho, has, glt, lon, lat = _emit_tools_style(full.file("full", ".nc"))
    assert set(ortho) == {"cloud_mask", "cloud_probability", "cloud_buffer_distance",
                          "cloud_shadow"}
    assert {"lon", "lat", "elev", "glt_x", "glt_y", "mask_bands"} <= set(flat.coords)
    envi = read_envi_layers(full.file("full", ".img"))
    lines, samples = glt[has, 1] - 1, glt[has, 0] - 1
    shadow = envi.shadow[lines, samples].astype(np.float32)
    np.testing.assert_array_equal(ortho["cloud_shadow"][has], np.where(shadow == 255, np.nan, shadow))
    buffer = envi.buffer_distance[lines, samples]
    np.testing.assert_array_equal(ortho["cloud_buffer_distance"][has],
                                  np.where(buffer == -9999, np.nan, buffer))
    # Each grid cell's centre is where the location file puts the pixel it shows (GLT: nearest
    # pixel within one pixel of the cell centre; grid cells and pixels are both ~60 m).
    rows, cols = np.nonzero(has)
    pixel_lon = flat["lon"].data[lines, samples]
    pixel_lat = flat["lat"].data[lines, samples]
    cell = abs(float(flat.attrs["geotransform"][1]))
    assert np.abs(lon[cols] - pixel_lon).max() < 2.5 * cell
    assert np.abs(lat[rows] - pixel_lat).max() < 2.5 * cell


def test_ortho_geotiffs_of_both_new_bands(full):
    from osgeo import gdal

    glt = read_glt(full.acq.glt, (LINES, SAMPLES))
    envi = read_envi_layers(full.file("full", ".img"))
    for suffix, swath, fill in ((NEW_ORTHO[0], envi.buffer_distance, np.float32(-9999)),
                                (NEW_ORTHO[1], envi.shadow, np.uint8(255))):
        ds = gdal.Open(str(full.file("full", suffix)))
        band = ds.GetRasterBand(1)
        assert band.GetNoDataValue() == fill
        np.testing.assert_array_equal(band.ReadAsArray(), glt.resample(swath, fill))
        ds = None


def test_metadata_states_pixel_size_settings_and_fractions(full, library):
    meta = full.metadata("full")
    envi = read_envi_layers(full.file("full", ".img"))
    valid = int((envi.flag != 255).sum())
    buf, sh = meta["cloud_buffer"], meta["cloud_shadow"]
    assert buf["pixel_size_m"] == pytest.approx(library.spacing.mean_m)
    assert 50 < buf["pixel_size_m"] < 70 and "haversine" in buf["pixel_size_method"]
    assert buf["buffered_pixels"] == int((envi.buffer_distance > 0).sum())
    assert buf["buffered_percent_of_valid_pixels"] == pytest.approx(100 * buf["buffered_pixels"] / valid)
    assert "> 0" in buf["buffered_means"] and buf["cloud_height_m"] == BUFFER_H
    assert sh["made"] is True and sh["not_made_because"] is None
    assert sh["cloud_heights_m"] == [500, 3000] and sh["darkness_test"] is True
    assert sh["shadow_pixels"] == int((envi.shadow == 1).sum()) > 0
    assert sh["shadow_percent_of_valid_pixels"] == pytest.approx(100 * sh["shadow_pixels"] / valid)
    timings = json.loads(full.file("full", "_provenance.json").read_text())["timings_s"]
    assert "beyond_cloud" in timings


def test_without_location_nominal_pixel_size_and_no_shadow_with_the_reason(runs):
    result = runs.results["no_location"]
    assert result.code == 0, str(result)
    meta = runs.metadata("no_location")
    assert meta["cloud_buffer"]["pixel_size_m"] == NOMINAL_PIXEL_SIZE_M
    assert "nominal" in meta["cloud_buffer"]["pixel_size_method"]
    reason = meta["cloud_shadow"]["not_made_because"]
    assert meta["cloud_shadow"]["made"] is False and "no location file" in reason
    assert meta["cloud_shadow"]["shadow_percent_of_valid_pixels"] is None
    provenance = json.loads(runs.file("no_location", "_provenance.json").read_text())
    assert provenance["skipped_outputs"] == {"cloud_shadow": reason, "ortho_shadow": reason}
    events = result.events
    assert any(e["event"] == "nominal_pixel_size" for e in events)
    assert any(e["event"] == "output_skipped" and e["output"] == "cloud_shadow"
               and e["reason"] == reason for e in events)
    assert runs.file("no_location", NEW_ORTHO[0]).is_file()
    assert not runs.file("no_location", NEW_ORTHO[1]).exists()
    envi = read_envi_layers(runs.file("no_location", ".img"))
    assert (envi.shadow == 255).all() and (envi.buffer_distance[envi.flag != 255] != -9999).all()
    assert (read_netcdf_layers(runs.file("no_location", ".nc")).shadow == 255).all()


def test_location_with_every_pixel_at_one_point_exits_4_naming_it(runs):
    line = assert_one_stderr_line(runs.results["one_point"], ExitCode.INPUT)
    assert str(runs.base / "bad_loc") in line and "spacing" in line
    assert not runs.out("one_point").exists() or not any(runs.out("one_point").glob(f"{STEM}*"))


@pytest.mark.parametrize("name, words", [("reversed", "min 3000 m is above max 500 m"),
                                         ("negative", "greater than or equal to 0")])
def test_cloud_height_range_reversed_or_negative_exits_3(runs, name, words):
    line = assert_one_stderr_line(runs.results[name], ExitCode.RUNCONFIG)
    assert "algorithm.shadow_cloud_heights_m" in line and words in line


def test_browse_draws_shadow_in_a_second_colour():
    grey = np.full((1, 3, 3), 0.5)
    valid = np.ones((1, 3), bool)
    rgba = compose(grey, np.array([[1.0, 0.0, 0.0]]), valid, np.array([[0.0, 1.0, 0.0]]))
    cloud, shadow, clear = rgba[0, 0, :3].astype(int), rgba[0, 1, :3].astype(int), rgba[0, 2, :3].astype(int)
    assert clear.tolist() == [128, 128, 128]
    assert not np.array_equal(cloud, shadow)
    # The shadow pixel moved from grey towards amber (more red than blue), the cloud towards magenta.
    assert shadow[0] > clear[0] and shadow[2] < clear[2] and SHADOW_RGB[2] < SHADOW_RGB[0]
    assert cloud[0] > clear[0] and cloud[2] > clear[2]
