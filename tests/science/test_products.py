"""Products: names, the ENVI and netCDF writers read back by independent readers, statistics."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import write_pair, write_raster

from l2b_mask.errors import InputProductError, OutputError
from l2b_mask.inputs.location import LocationArrays, read_location
from l2b_mask.inputs.scene import Scene, parse_emit_time
from l2b_mask.products.envi import EnviProductWriter, read_envi_product, write_envi_product
from l2b_mask.products.netcdf import netcdf_value, read_netcdf_product, write_netcdf_product
from l2b_mask.products.summary import CloudFraction, cloud_fraction
from l2b_mask.synthetic.scene import generate_acquisition
from pge.sds.attributes import emit_global_attributes
from pge.sds.files import product_files
from pge.sds.naming import parse_identity, product_stem

RDN = "emit20240302t005829_o06201_s000_l1b_rdn_b0106_v01"
LINES, SAMPLES = 7, 5
HEADER_EXTRA = {
    "emit acquisition start time": "2024-03-02T00:58:29+0000",
    "emit pge name": "https://github.com/example/l2b-mask-pge",
    "emit pge input files": ["radiance_file=/in/a_rdn.img", "observation_file=/in/a_obs.img"],
    "emit data product version": "01",
    "cloud threshold": 0.51,
    "cloud threshold comparison": ">",
    "model version": "0.1.0",
}


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    """A probability with two no-value pixels and its flag (as inference.cloud_flag makes it)."""
    rng = np.random.default_rng(7)
    prob = rng.uniform(0.0, 1.0, (LINES, SAMPLES)).astype(np.float32)
    prob[0, 0] = prob[3, 2] = np.nan
    prob[1, 1], prob[1, 2] = 0.0, 1.0
    flag = (prob > 0.51).astype(np.uint8)
    flag[np.isnan(prob)] = 255
    return prob, flag


# ---------------------------------------------------------------------------------------------
# Naming


@pytest.mark.parametrize("suffix", [".img", ".hdr", ""])
def test_emit_radiance_name_gives_emit_stem(suffix):
    path = Path("/data/l1b") / f"{RDN}{suffix}"
    assert product_stem(path) == "emit20240302t005829_o06201_s000_l2b_mask_b0106_v01"
    assert product_stem(path, "02") == "emit20240302t005829_o06201_s000_l2b_mask_b0106_v02"
    assert product_stem(path, build="0107").endswith("_b0107_v01")


def test_identity_fields_and_start_time():
    identity = parse_identity(f"/x/{RDN}.hdr")
    assert identity is not None
    assert identity.acquisition_id == "emit20240302t005829"
    assert (identity.orbit, identity.scene, identity.build, identity.version) == (
        "06201", "000", "0106", "01")
    assert identity.start_time == datetime(2024, 3, 2, 0, 58, 29, tzinfo=UTC)
    assert identity.start_time.utcoffset().total_seconds() == 0
    assert identity.flight_line == RDN[:31]


@pytest.mark.parametrize("name", ["scene_rdn.img", "emit20241302t005829_o06201_s000_l1b_rdn_b0106_v01.img",
                                  "emit20240302t005829_o6201_s000_l1b_rdn_b0106_v01.img"])
def test_non_emit_names(name):
    assert parse_identity(name) is None
    assert product_stem(Path("/d") / name) == Path(name).stem + "_l2b_mask"


def test_fallback_strips_hdr_and_img():
    assert product_stem("/d/scene_rdn.hdr") == "scene_rdn_l2b_mask"
    assert product_stem("/d/scene_rdn.img.hdr") == "scene_rdn_l2b_mask"


@pytest.mark.parametrize("bad", ["1", "001", "v1"])
def test_product_version_must_be_two_digits(bad):
    with pytest.raises(ValueError, match="2 digits"):
        product_stem(RDN, bad)


def test_product_files(tmp_path):
    stem = product_stem(f"{RDN}.img")
    files = product_files(stem, tmp_path)
    assert files.envi_data == tmp_path / f"{stem}.img"
    assert files.envi_header == tmp_path / f"{stem}.hdr"
    assert files.netcdf == tmp_path / f"{stem}.nc"
    assert files.provenance == tmp_path / f"{stem}_provenance.json"
    assert files.log == tmp_path / f"{stem}_pge.log"
    assert files.metadata == tmp_path / f"{stem}_metadata.json"
    assert files.browse == tmp_path / f"{stem}.png"
    assert files.ummg == tmp_path / f"{stem}.cmr.json"
    assert files.stac == tmp_path / f"{stem}_stac.json"
    assert files.ortho_flag == tmp_path / f"{stem}_ortho.tif"
    assert files.ortho_probability == tmp_path / f"{stem}_ortho_prob.tif"
    assert files.ortho_buffer == tmp_path / f"{stem}_ortho_buffer.tif"
    assert files.ortho_shadow == tmp_path / f"{stem}_ortho_shadow.tif"
    assert len(files.all()) == 13 and all(p.parent == tmp_path for p in files.all())
    assert len({p.name for p in files.all()}) == 13
    assert product_files(stem).netcdf == Path(f"{stem}.nc")


# ---------------------------------------------------------------------------------------------
# ENVI


def _expected_bands(prob, flag):
    no_value = flag == 255
    return np.where(no_value, -9999.0, flag).astype(np.float32), np.where(no_value, -9999.0, prob)


def test_envi_round_trip_with_spectral(tmp_path, pair):
    from spectral.io import envi

    prob, flag = pair
    img = tmp_path / "p.img"
    write_envi_product(img, prob, flag, HEADER_EXTRA)
    opened = envi.open(str(img.with_suffix(".hdr")), str(img))
    data = np.asarray(opened.load())
    assert data.shape == (LINES, SAMPLES, 4) and data.dtype == np.float32
    band1, band2 = _expected_bands(prob, flag)
    np.testing.assert_array_equal(data[:, :, 0], band1)
    np.testing.assert_array_equal(data[:, :, 1], band2)
    assert (data[:, :, 2:] == -9999).all()  # buffer and shadow not given: no value anywhere
    meta = opened.metadata
    assert meta["band names"] == ["Cloud Flag", "Cloud Probability", "Cloud Buffer Distance",
                                  "Cloud Shadow Flag"]
    assert float(meta["data ignore value"]) == -9999
    assert meta["interleave"] == "bil" and meta["byte order"] == "0"
    assert meta["description"].startswith("EMIT L2B cloud mask (SpecTf)")
    for key, value in HEADER_EXTRA.items():
        assert key in meta
        expected = value if isinstance(value, list) else str(value)
        assert meta[key] == expected
    text = img.with_suffix(".hdr").read_text()
    keys = [line.split(" = ")[0] for line in text.splitlines()[1:]]
    assert keys[-len(HEADER_EXTRA):] == list(HEADER_EXTRA)  # extras last, in order


def test_envi_round_trip_with_gdal(tmp_path, pair):
    from osgeo import gdal

    gdal.UseExceptions()
    prob, flag = pair
    img = tmp_path / "p.img"
    write_envi_product(img, prob, flag, HEADER_EXTRA)
    ds = gdal.Open(str(img))
    assert ds.GetDriver().ShortName == "ENVI"
    assert (ds.RasterCount, ds.RasterYSize, ds.RasterXSize) == (4, LINES, SAMPLES)
    band1, band2 = _expected_bands(prob, flag)
    for index, (name, expected) in enumerate(
            [("Cloud Flag", band1), ("Cloud Probability", band2)], start=1):
        band = ds.GetRasterBand(index)
        assert band.DataType == gdal.GDT_Float32
        assert band.GetNoDataValue() == -9999
        assert band.GetDescription() == name
        np.testing.assert_array_equal(band.ReadAsArray(), expected)
    ds = None


def test_envi_reader_inverts_writer(tmp_path, pair):
    prob, flag = pair
    write_envi_product(tmp_path / "p.img", prob, flag, {})
    flag_back, prob_back = read_envi_product(tmp_path / "p.hdr")
    np.testing.assert_array_equal(flag_back, flag)
    np.testing.assert_array_equal(prob_back, prob)  # NaN == NaN for assert_array_equal


def test_no_value_in_either_input_marks_both_bands(tmp_path, pair):
    prob, flag = pair
    flag = flag.copy()
    flag[2, 4] = 255  # flag says no value, probability has one
    write_envi_product(tmp_path / "p.img", prob, flag, {})
    flag_back, prob_back = read_envi_product(tmp_path / "p.img")
    assert flag_back[2, 4] == 255 and np.isnan(prob_back[2, 4])


def test_block_writer_any_order_equals_whole(tmp_path, pair):
    prob, flag = pair
    write_envi_product(tmp_path / "whole.img", prob, flag, HEADER_EXTRA)
    with EnviProductWriter(tmp_path / "blocks.img", LINES, SAMPLES, HEADER_EXTRA) as writer:
        for start, stop in [(4, 7), (0, 2), (2, 4)]:
            writer.write_block(start, {"probability": prob[start:stop], "flag": flag[start:stop]})
    assert (tmp_path / "blocks.img").read_bytes() == (tmp_path / "whole.img").read_bytes()
    assert (tmp_path / "blocks.hdr").read_text() == (tmp_path / "whole.hdr").read_text()


def test_block_writer_refuses_missing_lines(tmp_path, pair):
    prob, flag = pair
    writer = EnviProductWriter(tmp_path / "p.img", LINES, SAMPLES, {})
    writer.write_block(0, {"probability": prob[:3], "flag": flag[:3]})
    with pytest.raises(OutputError, match="4 of 7 lines were never written"):
        writer.close()
    assert not (tmp_path / "p.img").exists() and not (tmp_path / "p.hdr").exists()


@pytest.mark.parametrize(("extra", "message"), [
    ({"band names": ["x", "y"]}, "keys the writer owns"),
    ({"Data Type": 5}, "keys the writer owns"),
])
def test_block_writer_refuses_owned_header_keys(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        EnviProductWriter(tmp_path / "p.img", LINES, SAMPLES, extra)


def test_bad_inputs_are_refused(tmp_path, pair):
    prob, flag = pair
    with pytest.raises(ValueError, match="other than 0, 1 and 255"):
        write_envi_product(tmp_path / "p.img", prob, np.where(flag == 1, 2, flag), {})
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        write_envi_product(tmp_path / "p.img", np.where(prob == 1.0, 1.5, prob), flag, {})
    with pytest.raises(ValueError, match="same 2-D shape"):
        write_envi_product(tmp_path / "p.img", prob, flag[:-1], {})
    with EnviProductWriter(tmp_path / "q.img", LINES, SAMPLES) as writer:
        with pytest.raises(ValueError, match="outside 0..7"):
            writer.write_block(5, {"probability": prob[:3], "flag": flag[:3]})
        writer.write_block(0, {"probability": prob, "flag": flag})


# ---------------------------------------------------------------------------------------------
# netCDF


@pytest.fixture
def location() -> LocationArrays:
    rng = np.random.default_rng(3)
    lon = rng.uniform(-120, -119, (LINES, SAMPLES))
    lat = rng.uniform(34, 35, (LINES, SAMPLES))
    elev = rng.uniform(0, 3000, (LINES, SAMPLES))
    lon[0, 0] = lat[0, 0] = elev[0, 0] = -9999.0
    return LocationArrays(lon, lat, elev)


RUN_ATTRS = {
    "cloud_threshold": 0.51,
    "cloud_threshold_comparison": ">",
    "model_version": "0.1.0",
    "software_build_version": "010635",
    "bands_dropped": [(0, 405), (1275, 1321)],
    "valid_wavelengths": np.array([405.0, 2455.0]),
    "flip_horizontal": True,
    "input_files": {"radiance_file": Path("/in/a_rdn.img")},
    "time_coverage_end": "2024-03-02T00:59:00+0000",
    "unused": None,
}


def _write_nc(path, pair, location=None):
    prob, flag = pair
    base = emit_global_attributes(radiance_path=f"/in/{RDN}.img",
                                  date_created=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    write_netcdf_product(path, prob, flag, global_attrs=RUN_ATTRS, base_attrs=base,
                         variable_attrs={"cloud_mask": {"comment": "probability > 0.51"}},
                         location=location)


def test_netcdf_layout(tmp_path, pair, location):
    from netCDF4 import Dataset

    prob, flag = pair
    path = tmp_path / "p.nc"
    _write_nc(path, pair, location)
    with Dataset(path) as ds:
        assert ds.data_model == "NETCDF4"
        assert {k: len(v) for k, v in ds.dimensions.items()} == {
            "downtrack": LINES, "crosstrack": SAMPLES, "bands": 4}
        mask, proba = ds["cloud_mask"], ds["cloud_probability"]
        assert mask.dimensions == proba.dimensions == ("downtrack", "crosstrack")
        assert mask.dtype == np.uint8 and proba.dtype == np.float32
        assert mask._FillValue == 255 and mask.getncattr("_FillValue").dtype == np.uint8
        assert proba._FillValue == np.float32(-9999.0)
        assert proba.getncattr("_FillValue").dtype == np.float32
        np.testing.assert_array_equal(mask.flag_values, np.array([0, 1], np.uint8))
        assert mask.flag_values.dtype == np.uint8
        assert mask.flag_meanings == "clear cloud" and "units" not in mask.ncattrs()
        assert mask.coverage_content_type == "thematicClassification"
        assert mask.comment == "probability > 0.51"
        np.testing.assert_array_equal(proba.valid_range, np.array([0, 1], np.float32))
        assert proba.valid_range.dtype == np.float32 and proba.units == "1"
        assert proba.coverage_content_type == "modelResult"
        for var in (mask, proba):
            filters = var.filters()
            assert filters["zlib"] and filters["shuffle"] and filters["complevel"] >= 4
            assert var.chunking() == [LINES, SAMPLES]
        mask.set_auto_mask(False)
        proba.set_auto_mask(False)
        np.testing.assert_array_equal(mask[:], flag)
        raw = proba[:]
        np.testing.assert_array_equal(raw[np.isnan(prob)], -9999.0)
        np.testing.assert_array_equal(raw[~np.isnan(prob)], prob[~np.isnan(prob)])


def test_netcdf_global_attributes(tmp_path, pair):
    from netCDF4 import Dataset

    path = tmp_path / "p.nc"
    _write_nc(path, pair)
    with Dataset(path) as ds:
        attrs = {k: ds.getncattr(k) for k in ds.ncattrs()}
        assert "location" not in ds.groups
    for key in ["ncei_template_version", "summary", "keywords", "sensor", "instrument",
                "platform", "Conventions", "institution", "license", "naming_authority",
                "date_created", "keywords_vocabulary", "stdname_vocabulary", "creator_name",
                "creator_url", "project", "project_url", "publisher_name", "publisher_url",
                "publisher_email", "identifier_product_doi_authority", "title", "references",
                "source", "processing_level", "product_version", "time_coverage_start",
                "time_coverage_end", "flight_line", "history"]:
        assert key in attrs, key
    for key, value in attrs.items():
        assert isinstance(value, str | np.number | np.ndarray | int | float), (key, value)
        if isinstance(value, np.ndarray):
            assert value.dtype.kind in "iuf", key
    assert attrs["title"] == "EMIT L2B Cloud Mask 60 m V001"
    assert attrs["product_version"] == "V001" and attrs["processing_level"] == "L2B"
    assert "10.1073/pnas.2502903122" in attrs["references"]
    assert attrs["Conventions"].startswith("CF-")
    assert attrs["date_created"] == "2025-01-02T03:04:05Z"
    assert attrs["flight_line"] == "emit20240302t005829_o06201_s000"
    assert attrs["time_coverage_start"] == "2024-03-02T00:58:29Z"
    assert attrs["time_coverage_end"] == "2024-03-02T00:59:00Z"
    assert attrs["cloud_threshold"] == pytest.approx(0.51)
    assert attrs["cloud_threshold_comparison"] == ">" and attrs["model_version"] == "0.1.0"
    assert attrs["flip_horizontal"] == 1
    assert attrs["bands_dropped"] == "[[0, 405], [1275, 1321]]"
    np.testing.assert_array_equal(attrs["valid_wavelengths"], [405.0, 2455.0])
    assert attrs["input_files"] == '{"radiance_file": "/in/a_rdn.img"}'
    assert "unused" not in attrs


def test_netcdf_location_group(tmp_path, pair, location):
    from netCDF4 import Dataset

    path = tmp_path / "p.nc"
    _write_nc(path, pair, location)
    with Dataset(path) as ds:
        group = ds.groups["location"]
        expected = {"lon": ("Longitude (WGS-84)", "degrees_east", "longitude"),
                    "lat": ("Latitude (WGS-84)", "degrees_north", "latitude"),
                    "elev": ("Surface Elevation", "m", None)}
        for name, (long_name, units, standard_name) in expected.items():
            var = group[name]
            var.set_auto_mask(False)
            assert var.dimensions == ("downtrack", "crosstrack") and var.dtype == np.float64
            assert var.long_name == long_name and var.units == units
            assert getattr(var, "standard_name", None) == standard_name
            assert var._FillValue == -9999.0
            np.testing.assert_array_equal(var[:], getattr(location, name))


def test_netcdf_reader_inverts_writer(tmp_path, pair):
    prob, flag = pair
    _write_nc(tmp_path / "p.nc", pair)
    flag_back, prob_back = read_netcdf_product(tmp_path / "p.nc")
    np.testing.assert_array_equal(flag_back, flag)
    np.testing.assert_array_equal(prob_back, prob)


def test_gdal_opens_probability_subdataset(tmp_path, pair, location):
    from osgeo import gdal

    gdal.UseExceptions()
    prob, _ = pair
    path = tmp_path / "p.nc"
    _write_nc(path, pair, location)
    # Without a y coordinate variable GDAL assumes netCDF rows run bottom-up and flips them;
    # the swath is stored top-down (line 0 first), so read it as such.
    previous = gdal.GetConfigOption("GDAL_NETCDF_BOTTOMUP")
    gdal.SetConfigOption("GDAL_NETCDF_BOTTOMUP", "NO")
    try:
        ds = gdal.Open(f'NETCDF:"{path}":cloud_probability')
        assert (ds.RasterCount, ds.RasterYSize, ds.RasterXSize) == (1, LINES, SAMPLES)
        band = ds.GetRasterBand(1)
        assert band.DataType == gdal.GDT_Float32 and band.GetNoDataValue() == -9999
        expected = np.where(np.isnan(prob), -9999, prob)
        np.testing.assert_array_equal(band.ReadAsArray(), expected)
        ds = None
    finally:
        gdal.SetConfigOption("GDAL_NETCDF_BOTTOMUP", previous)


def test_bad_attribute_name_is_refused_before_writing(tmp_path, pair):
    prob, flag = pair
    with pytest.raises(ValueError, match="not CF-style"):
        write_netcdf_product(tmp_path / "p.nc", prob, flag, global_attrs={"cloud threshold": 1})
    with pytest.raises(ValueError, match="unknown variable"):
        write_netcdf_product(tmp_path / "p.nc", prob, flag, global_attrs={},
                             variable_attrs={"mask": {"comment": "x"}})
    assert not (tmp_path / "p.nc").exists()


def test_netcdf_value_conversions():
    assert netcdf_value(None) is None
    assert netcdf_value(True) == 1 and netcdf_value(np.bool_(False)) == 0
    assert netcdf_value(Path("/a/b")) == "/a/b"
    assert netcdf_value(datetime(2024, 3, 2, tzinfo=UTC)) == "2024-03-02T00:00:00Z"
    assert netcdf_value(np.float32(0.5)).dtype == np.float32
    assert netcdf_value([1, 2.5]).dtype == np.float64
    assert netcdf_value(["a", Path("/b")]) == '["a", "/b"]'
    assert netcdf_value([]) == ""
    assert netcdf_value(np.eye(2, dtype=int)) == "[[1, 0], [0, 1]]"


# ---------------------------------------------------------------------------------------------
# Location input


def _write_loc(folder: Path, lines: int, samples: int) -> Path:
    cube = np.zeros((lines, 3, samples), np.float64)
    cube[:, 0, :] = -119.5
    cube[:, 1, :] = 34.5
    cube[:, 2, :] = np.arange(samples)
    cube[0, :, 0] = -9999.0
    return write_raster(folder / "scene_loc.img", cube, extra={"data ignore value": -9999})


def test_read_location(tmp_path):
    loc = read_location(_write_loc(tmp_path, LINES, SAMPLES), (LINES, SAMPLES), lines_per_block=3)
    assert loc.shape == (LINES, SAMPLES)
    assert loc.lon[1, 1] == -119.5 and loc.lat[1, 1] == 34.5
    np.testing.assert_array_equal(loc.elev[2], np.arange(SAMPLES))
    assert loc.lon[0, 0] == loc.lat[0, 0] == loc.elev[0, 0] == -9999.0


def test_location_dimension_mismatch_names_the_file(tmp_path):
    path = _write_loc(tmp_path, LINES + 1, SAMPLES)
    with pytest.raises(InputProductError, match="8 lines x 5 samples") as info:
        read_location(path, (LINES, SAMPLES))
    assert info.value.path is not None and info.value.path.name == "scene_loc.hdr"


def test_location_shape_mismatch_at_write(tmp_path, pair):
    prob, flag = pair
    small = np.zeros((LINES - 1, SAMPLES))
    with pytest.raises(ValueError, match="location"):
        write_netcdf_product(tmp_path / "p.nc", prob, flag, global_attrs={},
                             location=LocationArrays(small, small, small))


# ---------------------------------------------------------------------------------------------
# Statistics


def test_cloud_fraction_counts():
    flag = np.array([[0, 1, 1, 255],
                     [0, 0, 1, 255]], np.uint8)
    fraction = cloud_fraction(flag)
    assert (fraction.valid_pixels, fraction.cloudy_pixels, fraction.total_pixels) == (6, 3, 8)
    assert fraction.percent_of_valid == pytest.approx(50.0)
    assert fraction.percent_of_all == pytest.approx(37.5)
    assert fraction.no_value_pixels == 2 and fraction.percent_no_value == pytest.approx(25.0)
    assert cloud_fraction(flag[:1]) + cloud_fraction(flag[1:]) == fraction


def test_cloud_fraction_without_valid_pixels():
    fraction = cloud_fraction(np.full((3, 3), 255, np.uint8))
    assert fraction == CloudFraction(0, 0, 9, 0.0, 0.0)


def test_cloud_fraction_refuses_unknown_values():
    with pytest.raises(ValueError, match="other than"):
        cloud_fraction(np.array([0, 1, 2], np.uint8))


# ---------------------------------------------------------------------------------------------
# Acquisition times: a stop before the start is refused when the inputs are validated


def _with_times(folder: Path, start: str, stop: str) -> tuple[Path, Path]:
    return write_pair(folder, rdn_extra={"emit acquisition start time": start,
                                         "emit acquisition stop time": stop})


def test_acquisition_times_parsed_from_the_radiance_header(tmp_path):
    rdn, obs = _with_times(tmp_path, "2024-03-02T00:58:29+0000", "2024-03-02T00:58:40+0000")
    scene = Scene.open(rdn, obs)
    assert scene.acquisition_start == datetime(2024, 3, 2, 0, 58, 29, tzinfo=UTC)
    assert scene.acquisition_stop == datetime(2024, 3, 2, 0, 58, 40, tzinfo=UTC)
    # equal times are a (degenerate) valid range; absent or unparseable ones are simply unknown
    rdn, obs = _with_times(tmp_path, "2024-03-02T00:58:29+0000", "2024-03-02T00:58:29+0000")
    assert Scene.open(rdn, obs).acquisition_stop == Scene.open(rdn, obs).acquisition_start
    rdn, obs = _with_times(tmp_path, "2024-03-02T00:58:29+0000", "soon")
    assert Scene.open(rdn, obs).acquisition_stop is None
    assert parse_emit_time("2024-03-02T00:58:29") == datetime(2024, 3, 2, 0, 58, 29, tzinfo=UTC)
    assert parse_emit_time(None) is None


def test_acquisition_stop_before_start_is_an_input_error(tmp_path):
    rdn, obs = _with_times(tmp_path, "2024-03-02T00:58:29+0000", "2024-03-02T00:58:28+0000")
    with pytest.raises(InputProductError) as info:
        Scene.open(rdn, obs)
    err = info.value
    assert err.path == rdn.with_suffix(".hdr")
    assert "2024-03-02T00:58:28+0000" in err.problem and "2024-03-02T00:58:29+0000" in err.problem
    assert "before" in err.problem


@pytest.mark.parametrize("start_in_header", [True, False], ids=["header_start", "file_name_start"])
def test_pge_exits_4_on_a_stop_time_before_the_start(tmp_path, start_in_header):
    """Through the PGE: exit 4 at input validation, naming the radiance header and both times,
    and nothing published (before the fix the run succeeded with a reversed granule time). The
    start comes from the header or, when the header has none, from the EMIT file name."""
    acq = generate_acquisition(tmp_path / "in", lines=8, samples=6, seed=2)
    hdr = acq.radiance.with_suffix(".hdr")
    lines = hdr.read_text().splitlines()
    lines = [("emit acquisition stop time = 2024-03-02T00:50:00+0000"
              if x.startswith("emit acquisition stop time") else x) for x in lines
             if start_in_header or not x.startswith("emit acquisition start time")]
    hdr.write_text("\n".join(lines) + "\n")
    anc = Path(__file__).resolve().parents[2] / "ancillary"
    rc = tmp_path / "rc.json"
    rc.write_text(json.dumps({
        "input_files": {"radiance": str(acq.radiance), "observation": str(acq.observation)},
        "ancillary_files": {"model_weights": str(anc / "spectf_cloud/v0.1.0/weights.pt"),
                            "irradiance": str(anc / "spectf_cloud/irr.npy")},
        "output": {"directory": str(tmp_path / "out")},
        "processing": {"device": "cpu"}}))
    proc = subprocess.run([sys.executable, "-m", "pge.cli", str(rc)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 4, (proc.stdout[-2000:], proc.stderr)
    assert proc.stderr.count("\n") == 1
    line = proc.stderr.strip()
    assert line.startswith(f"input product invalid: {hdr}: ")
    assert "2024-03-02T00:50:00+0000" in line and "2024-03-02T00:58:29+0000" in line
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["exit_code"] == 4 and summary["error"] == line
    steps = [json.loads(x).get("step") for x in proc.stdout.splitlines()[:-1]]
    assert "validate_inputs" in steps and "validate_ancillary" not in steps
    assert not [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")]
