"""Geolocated and catalogue products, each opened with the library a user would use.

GLT reading, the netCDF with the GLT (netCDF4 and GDAL, with a warp through the geolocation
arrays), the IOOS compliance-checker, the orthorectified COGs (GDAL), the browse PNG (Pillow,
as a catalogue or a user would open it, and GDAL's PNG driver) and the UMM-G record (json,
hashlib).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import compliance_problems, write_raster
from PIL import Image

from l2b_mask.errors import InputProductError
from l2b_mask.inputs.envi import EnviReader, read_header
from l2b_mask.inputs.glt import Glt, parse_map_info, read_glt
from l2b_mask.inputs.location import LocationArrays, read_location
from l2b_mask.inputs.scene import Scene as SceneInputs
from l2b_mask.inputs.scene import mean_solar_angles, solar_angle_bands
from l2b_mask.products.browse import (
    CLOUD_ALPHA,
    LEGEND_HEIGHT,
    LEGEND_MIN_WIDTH,
    browse_bands,
    compose,
    write_browse_png,
)
from l2b_mask.products.netcdf import write_netcdf_product
from l2b_mask.products.ortho import write_ortho_geotiff
from l2b_mask.synthetic.scene import generate_acquisition
from pge.sds.attributes import emit_global_attributes
from pge.sds.files import ProductFiles, product_files
from pge.sds.naming import parse_identity
from pge.sds.ummg import (
    build_ummg,
    day_night_flag,
    granule_ur,
    swath_polygon,
    validate_ummg,
    write_ummg,
)

gdal = pytest.importorskip("osgeo.gdal")
gdal.UseExceptions()

LINES, SAMPLES = 40, 36
STEM = "emit20240302t005829_o06201_s000_l2b_mask_b0106_v01"


@dataclass(frozen=True)
class Scene:
    folder: Path
    radiance: Path
    observation: Path
    location: Path
    glt_path: Path
    glt: Glt
    loc: LocationArrays
    flag: np.ndarray
    probability: np.ndarray
    netcdf: Path
    ortho: ProductFiles

    def interior_cloud_pixel(self) -> tuple[int, int]:
        """A cloud pixel whose 8 neighbours are cloud too (a warp cannot miss it)."""
        c = self.flag == 1
        inner = np.ones_like(c[1:-1, 1:-1])
        for dl in (-1, 0, 1):
            for ds in (-1, 0, 1):
                inner &= c[1 + dl:c.shape[0] - 1 + dl, 1 + ds:c.shape[1] - 1 + ds]
        found = np.argwhere(inner) + 1
        assert found.size, "the synthetic scene has no interior cloud pixel"
        line, sample = found[len(found) // 2]
        return int(line), int(sample)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Scene:
    folder = tmp_path_factory.mktemp("geo")
    acq = generate_acquisition(folder, lines=LINES, samples=SAMPLES, seed=3)
    # A probability that differs pixel by pixel, so a value identifies its pixel.
    rng = np.random.default_rng(1)
    cloudy = acq.truth >= 2
    prob = np.where(cloudy, rng.uniform(0.6, 1.0, cloudy.shape), rng.uniform(0.0, 0.4, cloudy.shape))
    prob = prob.astype(np.float32)
    prob[acq.truth == 0] = np.nan
    flag = np.where(np.isnan(prob), 255, prob > 0.51).astype(np.uint8)
    glt = read_glt(acq.glt, (LINES, SAMPLES))
    loc = read_location(acq.location, (LINES, SAMPLES))
    nc = folder / f"{STEM}.nc"
    base = emit_global_attributes(radiance_path=acq.radiance, day_night_flag="Day")
    write_netcdf_product(nc, prob, flag, base_attrs=base, location=loc, glt=glt,
                         global_attrs={"time_coverage_end": "2024-03-02T00:58:30+0000"})
    ortho = product_files(STEM, folder)
    write_ortho_geotiff(ortho.ortho_flag, ortho.ortho_probability, flag, prob, glt)
    return Scene(folder, acq.radiance, acq.observation, acq.location, acq.glt, glt, loc, flag,
                 prob, nc, ortho)


def _raw_glt(path: Path) -> np.ndarray:
    """The GLT as (2, rows, cols) int32, read with GDAL's ENVI driver."""
    return gdal.Open(str(path)).ReadAsArray()


# ---------------------------------------------------------------------------------------------
# GLT


def test_glt_read_is_one_based_with_zero_fill_and_gdal_geotransform(scene):
    raw = _raw_glt(scene.glt_path)
    np.testing.assert_array_equal(scene.glt.sample, raw[0])
    np.testing.assert_array_equal(scene.glt.line, raw[1])
    valid = scene.glt.valid
    assert valid.any() and (~valid).any()
    assert scene.glt.sample[valid].min() >= 1 and scene.glt.line[valid].min() >= 1
    assert scene.glt.sample[valid].max() <= SAMPLES and scene.glt.line[valid].max() <= LINES
    assert (scene.glt.sample[~valid] == 0).all()
    np.testing.assert_allclose(scene.glt.geotransform,
                               gdal.Open(str(scene.glt_path)).GetGeoTransform(), rtol=0, atol=1e-12)
    # Each valid cell's centre lies within a pixel or so of the pixel it names.
    rows, cols = np.nonzero(valid)
    for r, c in list(zip(rows, cols, strict=True))[:: max(1, len(rows) // 25)]:
        lon, lat = scene.glt.cell_centre(r, c)
        line, sample = scene.glt.line[r, c] - 1, scene.glt.sample[r, c] - 1
        assert abs(scene.loc.lon[line, sample] - lon) < 1.5e-3
        assert abs(scene.loc.lat[line, sample] - lat) < 1.5e-3


def test_map_info_reference_pixel_and_rotation():
    info = parse_map_info("{Geographic Lat/Lon, 1.5, 2, 10.0, 50.0, 0.5, 0.25, WGS-84, units=Degrees}")
    assert info.geotransform == (9.75, 0.5, 0.0, 50.25, 0.0, -0.25)
    assert info.epsg == 4326 and info.units == "Degrees"
    assert parse_map_info(["UTM", "1", "1", "5e5", "4e6", "60", "60", "11", "North", "WGS-84"]).epsg is None
    with pytest.raises(InputProductError, match="rotated"):
        parse_map_info("{Geographic Lat/Lon, 1, 1, 10, 50, 0.5, 0.5, WGS-84, rotation=12.0}")


def test_glt_pointing_outside_the_swath_is_refused(scene):
    with pytest.raises(InputProductError, match="outside the swath"):
        read_glt(scene.glt_path, (LINES - 5, SAMPLES))


def test_glt_negative_entries_are_neighbour_fill(scene):
    glt = Glt(sample=-scene.glt.sample, line=-scene.glt.line, geotransform=scene.glt.geotransform)
    np.testing.assert_array_equal(glt.resample(scene.flag, 255), scene.glt.resample(scene.flag, 255))


# ---------------------------------------------------------------------------------------------
# netCDF with the GLT


def test_netcdf_glt_layout(scene):
    from netCDF4 import Dataset

    with Dataset(scene.netcdf) as ds:
        ds.set_auto_mask(False)
        assert {k: len(v) for k, v in ds.dimensions.items()} == {
            "downtrack": LINES, "crosstrack": SAMPLES, "bands": 4,
            "ortho_y": scene.glt.shape[0], "ortho_x": scene.glt.shape[1]}
        loc = ds["location"]
        raw = _raw_glt(scene.glt_path)
        for name, band, long_name in (("glt_x", 0, "GLT Sample Lookup"), ("glt_y", 1, "GLT Line Lookup")):
            var = loc[name]
            assert var.dimensions == ("ortho_y", "ortho_x") and var.dtype == np.int32
            assert var.getncattr("_FillValue") == 0
            assert var.long_name == long_name and var.units == "pixel location"
            np.testing.assert_array_equal(var[:], raw[band])
        for name in ("lon", "lat", "elev"):
            assert loc[name].dimensions == ("downtrack", "crosstrack")
        gt = np.asarray(ds.geotransform)
        np.testing.assert_allclose(gt, scene.glt.geotransform, rtol=0, atol=1e-12)
        assert "WGS 84" in ds.spatial_ref and 'AUTHORITY["EPSG","4326"]' in ds.spatial_ref
        rows, cols = scene.glt.shape
        assert ds.westernmost_longitude == pytest.approx(gt[0])
        assert ds.easternmost_longitude == pytest.approx(gt[0] + cols * gt[1])
        assert ds.northernmost_latitude == pytest.approx(gt[3])
        assert ds.southernmost_latitude == pytest.approx(gt[3] + rows * gt[5])
        assert (ds.geospatial_lon_min, ds.geospatial_lon_max, ds.geospatial_lat_min,
                ds.geospatial_lat_max) == (ds.westernmost_longitude, ds.easternmost_longitude,
                                           ds.southernmost_latitude, ds.northernmost_latitude)
        # The located pixels lie inside the box.
        ok = scene.loc.lon != -9999
        assert ds.westernmost_longitude < scene.loc.lon[ok].min() < scene.loc.lon[ok].max() < \
            ds.easternmost_longitude
        assert ds.title == "EMIT L2B Cloud Mask 60 m V001"
        assert ds.flight_line == STEM[:31] and ds.day_night_flag == "Day"
        assert ds.time_coverage_start == "2024-03-02T00:58:29Z"
        assert ds.time_coverage_end == "2024-03-02T00:58:30Z"
        assert ds["cloud_mask"].coordinates == "/location/lon /location/lat"


def test_netcdf_without_glt_keeps_its_old_layout(scene, tmp_path):
    from netCDF4 import Dataset

    path = tmp_path / "plain.nc"
    write_netcdf_product(path, scene.probability, scene.flag, global_attrs={})
    with Dataset(path) as ds:
        assert set(ds.dimensions) == {"downtrack", "crosstrack", "bands"}
        assert set(ds.groups) == {"sensor_band_parameters"}
        assert "geotransform" not in ds.ncattrs() and "coordinates" not in ds["cloud_mask"].ncattrs()


def test_gdal_sees_the_geolocation_and_the_glt(scene):
    sub = f'NETCDF:"{scene.netcdf}":cloud_mask'
    info = gdal.Open(str(scene.netcdf)).GetMetadata("SUBDATASETS")
    names = [v for k, v in info.items() if k.endswith("_NAME")]
    for var in ("cloud_mask", "cloud_probability", "/location/lon", "/location/lat", "/location/glt_x"):
        assert f'NETCDF:"{scene.netcdf}":{var}' in names
    geoloc = gdal.Open(sub).GetMetadata("GEOLOCATION")
    assert geoloc["X_DATASET"].endswith(":/location/lon")
    assert geoloc["Y_DATASET"].endswith(":/location/lat")
    assert "4326" in geoloc["SRS"]
    # With no y coordinate variable GDAL's netCDF driver shows rows bottom-up (flipped); the
    # data and the geolocation arrays flip together, so warps are right, but a user reading
    # the GLT itself with GDAL must ask for the file's order.
    glt_x = gdal.Open(f'NETCDF:"{scene.netcdf}":/location/glt_x')
    np.testing.assert_array_equal(glt_x.ReadAsArray()[::-1], scene.glt.sample)
    assert glt_x.GetRasterBand(1).GetNoDataValue() == 0
    gdal.SetConfigOption("GDAL_NETCDF_BOTTOMUP", "NO")
    try:
        glt_x = gdal.Open(f'NETCDF:"{scene.netcdf}":/location/glt_x')
        np.testing.assert_array_equal(glt_x.ReadAsArray(), scene.glt.sample)
    finally:
        gdal.SetConfigOption("GDAL_NETCDF_BOTTOMUP", None)


def _warp_to_glt_grid(source, glt: Glt, **kwargs):
    rows, cols = glt.shape
    b = glt.grid_bounds()
    return gdal.Warp("", source, format="MEM", dstSRS="EPSG:4326", width=cols, height=rows,
                     outputBounds=(b.west, b.south, b.east, b.north), resampleAlg="near",
                     geoloc=True, **kwargs)


def test_geolocation_round_trip_ortho_and_gdal_warp(scene):
    line, sample = scene.interior_cloud_pixel()
    lon, lat = scene.loc.lon[line, sample], scene.loc.lat[line, sample]
    row, col = scene.glt.cell_of(lon, lat)
    assert 0 <= row < scene.glt.shape[0] and 0 <= col < scene.glt.shape[1]
    expected_prob = scene.probability[line, sample]

    paths = scene.ortho
    flag_ortho = gdal.Open(str(paths.ortho_flag)).ReadAsArray()
    prob_ortho = gdal.Open(str(paths.ortho_probability)).ReadAsArray()
    assert flag_ortho[row, col] == 1
    # The GLT names this pixel or a neighbour (the cell centre is within a pixel of it): the
    # value is that pixel's, exactly.
    named = (scene.glt.line[row, col] - 1, scene.glt.sample[row, col] - 1)
    assert max(abs(named[0] - line), abs(named[1] - sample)) <= 1
    assert prob_ortho[row, col] == scene.probability[named]

    # GDAL 3.5+: the netCDF subdataset carries GEOLOCATION, so a plain warp orthorectifies it.
    warped = _warp_to_glt_grid(f'NETCDF:"{scene.netcdf}":cloud_mask', scene.glt)
    assert warped.ReadAsArray()[row, col] == 1
    warped_p = _warp_to_glt_grid(f'NETCDF:"{scene.netcdf}":cloud_probability', scene.glt)
    value = warped_p.ReadAsArray()[row, col]
    neighbourhood = scene.probability[line - 1:line + 2, sample - 1:sample + 2]
    assert value in neighbourhood and value > 0.51
    # Both orthorectifications agree almost everywhere both have a value.
    both = (warped.ReadAsArray() != 255) & (flag_ortho != 255)
    assert both.sum() > 100 and (warped.ReadAsArray()[both] == flag_ortho[both]).mean() > 0.9
    del expected_prob


def test_explicit_geolocation_vrt_works_without_driver_support(scene, tmp_path):
    """What a user of any GDAL version (2.x on) can do: name the lon/lat arrays explicitly."""
    vrt = gdal.Translate(str(tmp_path / "mask.vrt"), f'NETCDF:"{scene.netcdf}":cloud_mask', format="VRT")
    vrt.SetMetadata({}, "GEOLOCATION")
    vrt.SetMetadata({
        "X_DATASET": f'NETCDF:"{scene.netcdf}":/location/lon', "X_BAND": "1",
        "Y_DATASET": f'NETCDF:"{scene.netcdf}":/location/lat', "Y_BAND": "1",
        "PIXEL_OFFSET": "0", "LINE_OFFSET": "0", "PIXEL_STEP": "1", "LINE_STEP": "1",
        "SRS": "EPSG:4326", "GEOREFERENCING_CONVENTION": "PIXEL_CENTER"}, "GEOLOCATION")
    vrt = None
    line, sample = scene.interior_cloud_pixel()
    row, col = scene.glt.cell_of(scene.loc.lon[line, sample], scene.loc.lat[line, sample])
    warped = _warp_to_glt_grid(str(tmp_path / "mask.vrt"), scene.glt)
    assert warped.ReadAsArray()[row, col] == 1


# ---------------------------------------------------------------------------------------------
# Compliance


# High-priority results the checker reports wrongly, each with the reason.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_compliance_checker_no_high_priority_failures(scene, monkeypatch):
    assert not compliance_problems(scene.netcdf, monkeypatch)


# ---------------------------------------------------------------------------------------------
# Orthorectified COGs


def test_ortho_cog_layout_crs_nodata(scene):
    paths = scene.ortho
    assert paths.ortho_probability.name == f"{STEM}_ortho_prob.tif"
    expected = ((paths.ortho_flag, "Byte", 255, "Cloud Flag"),
                (paths.ortho_probability, "Float32", -9999, "Cloud Probability"))
    for path, dtype, nodata, description in expected:
        info = gdal.Info(str(path), format="json")
        assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
        assert info["metadata"]["IMAGE_STRUCTURE"]["COMPRESSION"] == "DEFLATE"
        assert 'ID["EPSG",4326]' in info["coordinateSystem"]["wkt"]
        np.testing.assert_allclose(info["geoTransform"], scene.glt.geotransform, rtol=0, atol=1e-12)
        assert info["size"] == [scene.glt.shape[1], scene.glt.shape[0]]
        band = info["bands"][0]
        assert band["type"] == dtype and band["noDataValue"] == nodata
        assert band["description"] == description
        assert not Path(f"{path}.aux.xml").exists()
    from osgeo_utils.samples.validate_cloud_optimized_geotiff import validate

    for path in (paths.ortho_flag, paths.ortho_probability):
        warnings, errors, _ = validate(str(path), full_check=True)
        assert not errors, errors


def test_ortho_values_are_the_glt_lookup(scene):
    paths = scene.ortho
    flag = gdal.Open(str(paths.ortho_flag)).ReadAsArray()
    prob = gdal.Open(str(paths.ortho_probability)).ReadAsArray()
    valid, line, sample = scene.glt.indices()
    np.testing.assert_array_equal(flag[valid], scene.flag[line[valid], sample[valid]])
    assert (flag[~valid] == 255).all() and (prob[~valid] == -9999).all()
    expected = scene.probability[line[valid], sample[valid]]
    np.testing.assert_array_equal(prob[valid], np.where(np.isnan(expected), -9999, expected))
    assert ((flag == 255) == (prob == -9999)).all()


# ---------------------------------------------------------------------------------------------
# Browse


def _open_with_pillow(path: Path) -> tuple[Image.Image, np.ndarray]:
    """The PNG as Pillow reads it, and its pixels as a (rows, cols, bands) int array."""
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        return image, np.asarray(image).astype(int)


def _magenta_overlay(pixels: np.ndarray) -> np.ndarray:
    """Pixels blended with the mask colour (magenta) at CLOUD_ALPHA: red and blue at least
    alpha * 255, green at most (1 - alpha) * 255."""
    floor, ceiling = CLOUD_ALPHA * 255 - 1, (1 - CLOUD_ALPHA) * 255 + 1
    return (pixels[..., 0] >= floor) & (pixels[..., 2] >= floor) & (pixels[..., 1] <= ceiling)


def test_browse_png_with_pillow(scene, tmp_path):
    """What a catalogue sees: an RGBA PNG, full size here, the mask colour on every cloud."""
    path = tmp_path / f"{STEM}.png"
    write_browse_png(path, scene.radiance, scene.flag)
    image, rgba = _open_with_pillow(path)
    # Pillow: (width, height); the image top left, the legend panel below it
    assert image.mode == "RGBA" and image.size == (max(SAMPLES, LEGEND_MIN_WIDTH),
                                                   LINES + LEGEND_HEIGHT)
    assert max(image.size) <= 1000
    assert (rgba[LINES:, :, 3] == 255).all()  # the legend is opaque
    rgba = rgba[:LINES, :SAMPLES]
    cloud, clear, no_value = scene.flag == 1, scene.flag == 0, scene.flag == 255
    assert cloud.any() and clear.any() and no_value.any()
    assert _magenta_overlay(rgba[cloud]).all()
    assert (rgba[cloud, 3] == 255).all()
    assert _magenta_overlay(rgba[clear]).mean() < 0.5
    assert (rgba[no_value] == 0).all()
    # the same pixels as GDAL reads
    np.testing.assert_array_equal(
        rgba, gdal.Open(str(path)).ReadAsArray().transpose(1, 2, 0)[:LINES, :SAMPLES])


def test_browse_png_of_a_long_scene_is_at_most_1000_px_with_pillow(tmp_path):
    """The catalogue limit with the default max_side: a 1500-line swath becomes 1000 px long
    with its legend, and the browse pixels made only of cloud carry the mask colour."""
    acq = generate_acquisition(tmp_path, lines=1500, samples=3, seed=1)
    flag = np.where(acq.truth == 0, 255, acq.truth >= 2).astype(np.uint8)
    path = tmp_path / "long.png"
    write_browse_png(path, acq.radiance, flag)
    image, rgba = _open_with_pillow(path)
    rows_n = 1000 - LEGEND_HEIGHT
    assert image.mode == "RGBA" and image.size == (LEGEND_MIN_WIDTH, 1000)
    rgba = rgba[:rows_n, :2]
    # browse row r covers swath lines [1500 r / rows_n, ...); column c the samples of its share
    rows = (np.arange(1500) * rows_n) // 1500
    cols = (np.arange(3) * 2) // 3
    all_cloud = np.ones((rows_n, 2), bool)
    np.logical_and.at(all_cloud, (rows[:, None], cols[None, :]), flag == 1)
    assert all_cloud.sum() > 10
    assert _magenta_overlay(rgba[all_cloud]).all()


def test_demo_browse_in_docs_opens_with_pillow():
    image, rgba = _open_with_pillow(Path(__file__).resolve().parents[2] / "docs" / "browse_demo.png")
    assert image.mode in ("RGB", "RGBA") and max(image.size) <= 1000
    assert _magenta_overlay(rgba).any()  # the demo acquisition has cloud, drawn in the mask colour


def test_browse_png_rgba_with_cloud_overlay(scene, tmp_path):
    path = tmp_path / f"{STEM}.png"
    write_browse_png(path, scene.radiance, scene.flag)
    ds = gdal.Open(str(path))
    assert ds.GetDriver().ShortName == "PNG" and ds.RasterCount == 4
    assert (ds.RasterYSize, ds.RasterXSize) == (LINES + LEGEND_HEIGHT, LEGEND_MIN_WIDTH)
    rgba = ds.ReadAsArray().transpose(1, 2, 0).astype(int)[:LINES, :SAMPLES]
    no_value = scene.flag == 255
    assert (rgba[no_value] == 0).all()
    assert (rgba[~no_value, 3] == 255).all()
    cloud = rgba[scene.flag == 1]
    # Magenta at CLOUD_ALPHA: red and blue at least (alpha * 255), green at most (1-alpha) * 255.
    floor, ceiling = CLOUD_ALPHA * 255 - 1, (1 - CLOUD_ALPHA) * 255 + 1
    assert (cloud[:, 0] >= floor).all() and (cloud[:, 2] >= floor).all()
    assert (cloud[:, 1] <= ceiling).all()
    clear = rgba[scene.flag == 0]
    assert np.mean((clear[:, 0] >= floor) & (clear[:, 2] >= floor) & (clear[:, 1] <= ceiling)) < 0.5


def test_browse_downsamples_large_scenes(scene, tmp_path):
    """The image is reduced so that image and legend fit in max_side."""
    path = tmp_path / "small.png"
    max_side = LEGEND_MIN_WIDTH
    write_browse_png(path, scene.radiance, scene.flag, max_side=max_side)
    ds = gdal.Open(str(path))
    assert max(ds.RasterXSize, ds.RasterYSize) == max_side
    assert ds.RasterXSize == LEGEND_MIN_WIDTH
    assert ds.RasterYSize == LINES + LEGEND_HEIGHT  # 40 lines fit: not reduced
    with pytest.raises(ValueError, match="legend"):
        write_browse_png(tmp_path / "tiny.png", scene.radiance, scene.flag, max_side=20)
    assert not (tmp_path / "tiny.png").exists()
    image, _ = _open_with_pillow(path)
    assert image.size == (ds.RasterXSize, ds.RasterYSize) and image.mode == "RGBA"


def test_browse_bands_are_nearest_650_560_470(scene):
    wl = read_header(scene.radiance).float_list("wavelength")
    bands = browse_bands(scene.radiance)
    for band, target in zip(bands, (650, 560, 470), strict=True):
        assert abs(wl[band] - target) == np.min(np.abs(wl - target))


def test_browse_compose_blend():
    stretched = np.full((1, 3, 3), 1.0)
    rgba = compose(stretched, np.array([[0.0, 1.0, 0.5]]), np.array([[True, True, False]]))
    assert rgba[0, 0].tolist() == [255, 255, 255, 255]
    assert rgba[0, 1].tolist() == [255, 128, 255, 255]
    assert rgba[0, 2].tolist() == [0, 0, 0, 0]


# ---------------------------------------------------------------------------------------------
# UMM-G


def _reordered_observation(observation: Path, folder: Path, order: list[int],
                           names: bool = True) -> Path:
    """The observation file with its bands in `order` (new band i = old band order[i]), band
    names moved with them (or dropped)."""
    header = read_header(observation)
    with EnviReader(header) as reader:
        cube = reader.read_lines(0, header.lines, None, np.float64)  # (lines, samples, bands)
    extra = {"data ignore value": -9999}
    old_names = header.string_list("band names")
    if names:
        extra["band names"] = [old_names[i] for i in order]
    return write_raster(folder / "reordered_obs.img", cube[:, :, order].transpose(0, 2, 1),
                        extra=extra)


def test_solar_angles_found_by_band_name_in_a_reordered_observation_file(scene, tmp_path):
    """UMM-G's SOLAR_ZENITH/AZIMUTH and DayNightFlag, and the netCDF day_night_flag (both from
    mean_solar_angles), follow the band names as Scene does, not EMIT's positions."""
    expected = mean_solar_angles(scene.observation)
    assert expected[0] is not None and expected[0] < 90 and day_night_flag(expected[0]) == "Day"
    # to-sun zenith (4) and azimuth (3) moved to the end; path length (0, hundreds of km) and
    # UTC time now sit at positions 3 and 4, where reading by position would find them.
    order = [1, 2, 5, 0, 9, 6, 7, 8, 10, 3, 4]
    moved = _reordered_observation(scene.observation, tmp_path, order)
    hdr = read_header(moved)
    assert hdr.string_list("band names")[4] == "UTC Time (decimal hours)"
    sza, saz = mean_solar_angles(moved)
    assert sza == pytest.approx(expected[0], rel=1e-12)
    assert saz == pytest.approx(expected[1], rel=1e-12)
    assert day_night_flag(sza) == "Day"
    # Scene finds the same zenith band with the same helper
    assert SceneInputs.open(scene.radiance, moved).solar_zenith_band == 10
    assert solar_angle_bands(hdr) == (10, 9)


def test_solar_angles_by_position_without_names_and_ambiguous_names_rejected(scene, tmp_path):
    unnamed = _reordered_observation(scene.observation, tmp_path, list(range(11)), names=False)
    assert mean_solar_angles(unnamed) == pytest.approx(mean_solar_angles(scene.observation))
    hdr = unnamed.with_suffix(".hdr")
    names = [f"band {i}" for i in range(11)]
    names[4] = "To-sun zenith (0 to 90 degrees from zenith)"
    names[2] = names[3] = "To-sun azimuth (0 to 360 degrees CW from N)"
    hdr.write_text(hdr.read_text() + "band names = {" + ", ".join(names) + "}\n")
    with pytest.raises(InputProductError, match="named like 'to-sun azimuth'.*found 2"):
        mean_solar_angles(unnamed)


def test_granule_ur_pattern():
    identity = parse_identity(STEM)
    assert granule_ur(identity, "01") == "EMIT_L2B_MASK_001_20240302T005829_2406201_000"
    assert granule_ur(identity, "02", scene=7) == "EMIT_L2B_MASK_002_20240302T005829_2406201_007"


def test_ummg_record(scene, tmp_path):
    files = [scene.netcdf, scene.ortho.ortho_flag, scene.ortho.ortho_probability]
    browse = tmp_path / f"{STEM}.png"
    write_browse_png(browse, scene.radiance, scene.flag)
    files.append(browse)
    sza, saz = mean_solar_angles(scene.observation)
    identity = parse_identity(scene.radiance)
    ummg = build_ummg(
        product_version="01", identity=identity, files=files, cloud_cover_percent=37.6,
        bounds=scene.glt.grid_bounds(), pge_name="https://github.com/example/l2b-mask-pge",
        pge_version="0.1.0", production_time=datetime(2024, 3, 3, 1, 2, 3, tzinfo=UTC),
        end_time=datetime(2024, 3, 2, 0, 58, 30, tzinfo=UTC), day_night=day_night_flag(sza),
        polygon=swath_polygon(scene.loc.lon, scene.loc.lat), solar_zenith=sza,
        solar_azimuth=saz, software_build_version="010635")
    out = tmp_path / f"{STEM}.cmr.json"
    write_ummg(out, ummg)
    record = json.loads(out.read_text())
    assert validate_ummg(record) == []
    assert re.fullmatch(r"EMIT_L2B_MASK_\d{3}_\d{8}T\d{6}_\d{7}_\d{3}", record["GranuleUR"])
    assert record["CollectionReference"] == {"ShortName": "EMITL2BMASK", "Version": "001"}
    assert record["CloudCover"] == 38 and isinstance(record["CloudCover"], int)
    assert record["TemporalExtent"]["RangeDateTime"] == {
        "BeginningDateTime": "2024-03-02T00:58:29.000Z", "EndingDateTime": "2024-03-02T00:58:30.000Z"}
    granule = record["DataGranule"]
    assert granule["DayNightFlag"] == "Day" and granule["ProductionDateTime"] == "2024-03-03T01:02:03.000Z"
    entries = granule["ArchiveAndDistributionInformation"]
    assert [e["Name"] for e in entries] == [f.name for f in files]
    for entry, path in zip(entries, files, strict=True):
        assert entry["SizeInBytes"] == path.stat().st_size
        assert entry["Checksum"] == {"Algorithm": "SHA-512",
                                     "Value": hashlib.sha512(path.read_bytes()).hexdigest()}
    assert [e["Format"] for e in entries] == ["NETCDF-4", "GeoTIFF", "GeoTIFF", "PNG"]
    attrs = {a["Name"]: a["Values"] for a in record["AdditionalAttributes"]}
    assert attrs["ORBIT"] == ["2406201"] and attrs["ORBIT_SEGMENT"] == ["0"] and attrs["SCENE"] == ["0"]
    assert 25 < float(attrs["SOLAR_ZENITH"][0]) < 45 and float(attrs["SOLAR_AZIMUTH"][0]) > 0
    geometry = record["SpatialExtent"]["HorizontalSpatialDomain"]["Geometry"]
    rect = geometry["BoundingRectangles"][0]
    points = geometry["GPolygons"][0]["Boundary"]["Points"]
    assert points[0] == points[-1] and len(points) == 5
    for p in points:
        assert rect["WestBoundingCoordinate"] <= p["Longitude"] <= rect["EastBoundingCoordinate"]
        assert rect["SouthBoundingCoordinate"] <= p["Latitude"] <= rect["NorthBoundingCoordinate"]
    ring = [(p["Longitude"], p["Latitude"]) for p in points]
    area2 = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:], strict=True))
    assert area2 > 0  # counter-clockwise, as CMR requires


def test_ummg_validation_catches_broken_records(scene):
    good = build_ummg(product_version="01", identity=parse_identity(scene.radiance),
                      files=[scene.netcdf], cloud_cover_percent=0.0, bounds=None, pge_name="p",
                      pge_version="1", production_time=datetime(2024, 1, 1, tzinfo=UTC))
    assert validate_ummg(good) == []
    broken = json.loads(json.dumps(good))
    del broken["CollectionReference"]
    broken["CloudCover"] = 12.5
    broken["DataGranule"]["DayNightFlag"] = "Dusk"
    broken["DataGranule"]["ArchiveAndDistributionInformation"][0]["Checksum"]["Algorithm"] = "SHA512"
    broken["GranuleUR"] = "EMIT_L2B_MASK_1_x"
    problems = " | ".join(validate_ummg(broken))
    for needle in ("CollectionReference", "CloudCover", "Dusk", "SHA512", "GranuleUR"):
        assert needle in problems
    with pytest.raises(ValueError):
        write_ummg(Path("/nonexistent/never-written.json"), broken)
