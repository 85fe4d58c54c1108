"""LP DAAC L1B netCDF granules as inputs: the same acquisition read from ENVI and from the
granules gives the same values, and every malformed granule is refused in one line."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import small_granule
from netCDF4 import Dataset

from l2b_mask.errors import ExitCode, InputProductError
from l2b_mask.inputs.daac import (
    SWATH_DIMS,
    DaacReader,
    check_same_acquisition,
    granule_kind,
    is_daac_granule,
    open_granule,
    open_observation_granule,
    open_radiance_granule,
    read_granule_glt,
    read_granule_location,
)
from l2b_mask.inputs.daac_names import parse_daac_name
from l2b_mask.inputs.envi import EnviReader, read_header
from l2b_mask.inputs.glt import read_glt
from l2b_mask.inputs.location import read_location
from l2b_mask.inputs.scene import Scene, observation_band_names
from l2b_mask.synthetic.cli import main as synthetic_main
from l2b_mask.synthetic.daac import write_daac_granules, write_float32_spectral_header
from l2b_mask.synthetic.scene import OBS_BAND_NAMES, emit_wavelengths, generate_acquisition

LINES, SAMPLES = 40, 24
START = datetime(2024, 3, 2, 0, 58, 29, tzinfo=UTC)


def _acquisition(folder: Path, lines: int = LINES, start: datetime = START):
    acq = generate_acquisition(folder, lines=lines, samples=SAMPLES, start_time=start,
                               obs_dtype=np.float32)
    write_float32_spectral_header(acq.radiance)
    return acq, write_daac_granules(acq, chunk_lines=16, lines_per_block=16)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """One acquisition as ENVI (float32 header values, float32 observation) and as granules."""
    return _acquisition(tmp_path_factory.mktemp("acq"))


# ---------------------------------------------------------------------------------------------
# Same values on both paths


def test_granules_describe_the_envi_scene(both):
    acq, granules = both
    scene = Scene.open(acq.radiance, acq.observation)
    rad = open_radiance_granule(granules.radiance)
    obs = open_observation_granule(granules.observation)
    assert (rad.lines, rad.samples, rad.bands) == (scene.lines, scene.samples, 285)
    assert (obs.lines, obs.samples, obs.bands) == (scene.lines, scene.samples, 11)
    assert rad.wavelengths_nm.dtype == np.float32 and rad.fwhm_nm.dtype == np.float32
    # exact: the ENVI header holds the float32 values, written so they read back unchanged
    assert np.array_equal(rad.wavelengths_nm.astype(np.float64), scene.wavelengths_nm)
    assert np.array_equal(rad.fwhm_nm.astype(np.float64), scene.fwhm_nm)
    assert obs.band_names == observation_band_names(scene.observation_header)
    assert (obs.solar_zenith_band, obs.earth_sun_band) == (scene.solar_zenith_band,
                                                           scene.earth_sun_band)
    for g in (rad, obs):
        assert (g.acquisition_start, g.acquisition_stop) == (scene.acquisition_start,
                                                             scene.acquisition_stop)
        assert g.acquisition_start == START
        assert g.flight_line == "emit20240302t005829_o06201_s000"
        assert g.product_version == "V001"
        assert g.nodata == scene.radiance_nodata == -9999.0
        assert g.has_location and g.has_glt
        assert g.header_path == g.data_path == g.path
    check_same_acquisition(rad, obs)


@pytest.mark.parametrize("bands", [None, [0, 7, 284], np.array([3, 1])])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_radiance_blocks_equal_envi(both, bands, dtype):
    acq, granules = both
    rad = open_radiance_granule(granules.radiance)
    fill_seen = False
    with EnviReader(read_header(acq.radiance)) as envi, DaacReader(rad) as daac:
        for start in range(0, LINES, 7):  # blocks that straddle the 16-line chunks
            stop = min(start + 7, LINES)
            want = envi.read_lines(start, stop, bands, dtype)
            got = daac.read_lines(start, stop, bands, dtype)
            assert got.flags.c_contiguous and got.dtype == want.dtype
            assert np.array_equal(got, want)
            fill_seen |= bool((got == -9999).any())
    assert fill_seen  # fill pixels come through as stored, as from ENVI


def test_observation_bands_equal_envi(both):
    acq, granules = both
    obs = open_observation_granule(granules.observation)
    with EnviReader(read_header(acq.observation)) as envi, DaacReader(obs) as daac:
        for band in (obs.solar_zenith_band, obs.earth_sun_band):
            got = daac.read_band(5, 29, band)
            assert got.dtype == np.float64 and got.shape == (24, SAMPLES)
            assert np.array_equal(got, envi.read_band(5, 29, band))


def test_reader_refuses_lines_outside_and_closes_twice(both):
    _, granules = both
    reader = DaacReader(open_radiance_granule(granules.radiance))
    with pytest.raises(ValueError, match=r"line range \[0, 41\) outside 0..40"):
        reader.read_lines(0, LINES + 1)
    reader.read_lines(0, 1)
    reader.close()
    reader.close()


def test_location_and_glt_equal_envi(both):
    acq, granules = both
    want_loc = read_location(acq.location, (LINES, SAMPLES))
    want_glt = read_glt(acq.glt, (LINES, SAMPLES))
    for granule in (granules.radiance, granules.observation):  # both carry the location group
        loc = read_granule_location(granule, (LINES, SAMPLES), lines_per_block=9)
        for name in ("lon", "lat", "elev"):
            assert np.array_equal(getattr(loc, name), getattr(want_loc, name))
        glt = read_granule_glt(granule, (LINES, SAMPLES))
        assert np.array_equal(glt.sample, want_glt.sample)
        assert np.array_equal(glt.line, want_glt.line)
        assert glt.sample.dtype == np.int32 and glt.valid.any()
        assert (glt.geotransform, glt.crs_wkt, glt.epsg) == (want_glt.geotransform,
                                                             want_glt.crs_wkt, want_glt.epsg)
        assert glt.source == granule


def test_location_of_another_size_is_refused(both):
    _, granules = both
    with pytest.raises(InputProductError, match="location is 40 lines x 24 samples but the "
                                                "radiance is 41 x 24"):
        read_granule_location(granules.radiance, (LINES + 1, SAMPLES))
    with pytest.raises(InputProductError, match="outside the swath"):
        read_granule_glt(granules.radiance, (LINES - 5, SAMPLES))


def _glt_granule(path: Path, glt_x: np.ndarray, glt_y: np.ndarray, *, fill: int = 0,
                 spatial_ref: str | None = None, geotransform=(130.0, 0.001, 0.0, -20.0, 0.0, -0.001)
                 ) -> Path:
    """A granule holding only a `location` GLT, as EMIT writes it (`_FillValue` given)."""
    from l2b_mask.inputs.glt import WGS84_WKT

    with Dataset(path, "w", format="NETCDF4") as ds:
        ds.createDimension("ortho_y", glt_x.shape[0])
        ds.createDimension("ortho_x", glt_x.shape[1])
        if geotransform is not None:
            ds.geotransform = np.asarray(geotransform, np.float64)
        ds.spatial_ref = spatial_ref or WGS84_WKT
        group = ds.createGroup("location")
        for name, values in (("glt_x", glt_x), ("glt_y", glt_y)):
            var = group.createVariable(name, "i4", ("ortho_y", "ortho_x"), fill_value=fill,
                                       zlib=True)
            var.set_auto_maskandscale(False)
            var[:] = values
    return path


def test_glt_fill_of_minus_9999_means_no_pixel(tmp_path):
    # EMIT's writer gives every variable _FillValue -9999, the GLT too; no-pixel cells hold 0
    glt_x = np.array([[1, 2, 0], [-9999, 3, 1]], np.int32)
    glt_y = np.array([[1, 1, 0], [-9999, 2, 2]], np.int32)
    glt = read_granule_glt(_glt_granule(tmp_path / "g.nc", glt_x, glt_y, fill=-9999), (2, 3))
    assert np.array_equal(glt.sample, [[1, 2, 0], [0, 3, 1]])
    assert np.array_equal(glt.line, [[1, 1, 0], [0, 2, 2]])
    assert glt.geotransform == (130.0, 0.001, 0.0, -20.0, 0.0, -0.001)
    assert glt.valid.sum() == 4


@pytest.mark.parametrize(("kwargs", "words"), [
    (dict(geotransform=None), "granule has no 'geotransform' attribute"),
    (dict(geotransform=(1.0, 2.0)), "'geotransform' must be 6 finite numbers"),
    (dict(geotransform=(130.0, 0.001, 0.0, -20.0, 0.0, 0.001)), "GLT grid unusable"),
    (dict(spatial_ref='PROJCS["WGS 84 / UTM zone 33N",GEOGCS["WGS 84"]]'),
     "only geographic WGS-84 (EPSG:4326) grids are supported"),
])
def test_unusable_glt_grid_is_one_input_error(tmp_path, kwargs, words):
    ones = np.ones((2, 2), np.int32)
    path = _glt_granule(tmp_path / "g.nc", ones, ones, **kwargs)
    with pytest.raises(InputProductError) as info:
        read_granule_glt(path)
    _one_line_error(info, path, words)


def test_half_filled_glt_cell_is_refused(tmp_path):
    path = _glt_granule(tmp_path / "g.nc", np.array([[1, 0]], np.int32),
                        np.array([[1, 1]], np.int32))
    with pytest.raises(InputProductError) as info:
        read_granule_glt(path)
    _one_line_error(info, path, "GLT has 1 cells where only one of sample and line is 0")


def test_float32_header_rewrite_reads_back_exactly(tmp_path):
    acq = generate_acquisition(tmp_path, lines=4, samples=3)
    before = read_header(acq.radiance).float_list("wavelength")
    assert np.array_equal(before, emit_wavelengths()[0])
    assert not np.array_equal(before, before.astype(np.float32))  # text != float32: the reason
    write_float32_spectral_header(acq.radiance)
    after = read_header(acq.radiance)
    assert np.array_equal(after.float_list("wavelength"), before.astype(np.float32))
    assert np.array_equal(after.float_list("fwhm"), emit_wavelengths()[1].astype(np.float32))
    assert after.lines == 4 and after.meta["emit acquisition start time"]


# ---------------------------------------------------------------------------------------------
# Content, names, pairing


def test_kind_is_judged_by_content(both, tmp_path):
    acq, granules = both
    assert granule_kind(granules.radiance) == "RAD"
    assert granule_kind(granules.observation) == "OBS"
    renamed = tmp_path / "anything.h5"
    shutil.copy(granules.observation, renamed)
    assert granule_kind(renamed) == "OBS"
    text = tmp_path / "EMIT_L1B_RAD_001_20240302T005829_2406201_001.nc"
    text.write_text("not a granule\n")
    for path in (acq.radiance, acq.radiance.with_suffix(".hdr"), text, tmp_path / "missing.nc"):
        assert granule_kind(path) is None and not is_daac_granule(path)
    assert is_daac_granule(granules.radiance)


def test_daac_names_parse():
    name = parse_daac_name("/data/EMIT_L1B_RAD_001_20220815T042838_2222703_003.nc")
    assert name is not None
    assert (name.kind, name.version, name.orbit, name.short_orbit, name.scene) == (
        "RAD", "001", "2222703", "22703", "003")
    assert name.start_time == datetime(2022, 8, 15, 4, 28, 38, tzinfo=UTC)
    assert name.file_name("OBS") == "EMIT_L1B_OBS_001_20220815T042838_2222703_003.nc"
    obs = parse_daac_name(name.file_name("OBS"))
    assert obs.kind == "OBS" and obs.acquisition == name.acquisition
    assert parse_daac_name("EMIT_L1B_OBS_001_20220815T042838_2222703_003").kind == "OBS"
    for bad in ("EMIT_L2A_RFL_001_20220815T042838_2222703_003.nc",  # not L1B RAD/OBS
                "EMIT_L1B_RAD_001_20221315T042838_2222703_003.nc",  # month 13
                "EMIT_L1B_RAD_001_20220815T042838_22703_003.nc",  # 5-digit orbit
                "emit20240302t005829_o06201_s000_l1b_rdn_b0106_v01.img"):
        assert parse_daac_name(bad) is None


def test_synthetic_granule_names_carry_year_orbit_and_daac_scene(both):
    _, granules = both
    name = parse_daac_name(granules.radiance)
    assert name.file_name() == "EMIT_L1B_RAD_001_20240302T005829_2406201_001.nc"
    assert name.file_name("OBS") == granules.observation.name


def _one_line_error(exc_info, path: Path, words: str) -> None:
    exc = exc_info.value
    assert exc.path == path and exc.exit_code == ExitCode.INPUT == 4
    assert "\n" not in str(exc) and path.name in str(exc)
    assert words in exc.problem, exc.problem


def test_rad_and_obs_of_other_acquisitions_or_sizes_are_refused(both, tmp_path):
    _, granules = both
    rad = open_radiance_granule(granules.radiance)
    _, later = _acquisition(tmp_path / "later", lines=8, start=datetime(2024, 3, 2, 1, 0, 0,
                                                                        tzinfo=UTC))
    other = open_observation_granule(later.observation)
    with pytest.raises(InputProductError) as info:
        check_same_acquisition(rad, other)
    _one_line_error(info, later.observation, "not the same acquisition as the radiance")
    assert "name time/orbit/scene, flight_line, time_coverage_start" in str(info.value)
    _, shorter = _acquisition(tmp_path / "shorter", lines=32)  # same names, times, flight line
    with pytest.raises(InputProductError) as info:
        check_same_acquisition(rad, open_observation_granule(shorter.observation))
    _one_line_error(info, shorter.observation,
                    f"observation is 32 lines x 24 samples but the radiance {rad.path.name}")
    with pytest.raises(InputProductError) as info:
        check_same_acquisition(rad, rad)
    _one_line_error(info, rad.path, "given as the observation but it is an EMIT L1B RAD")


# ---------------------------------------------------------------------------------------------
# Malformed granules, built here with netCDF4


def test_the_builder_makes_valid_granules(tmp_path):
    assert open_granule(small_granule(tmp_path / "r.nc")).kind == "RAD"
    assert open_granule(small_granule(tmp_path / "o.nc", "obs")).earth_sun_band == 10


_WL, _FWHM = emit_wavelengths()
BAD_GRANULES = {
    "bil dimensions": (dict(dims=("downtrack", "bands", "crosstrack")),
                       "'radiance' has dimensions ('downtrack', 'bands', 'crosstrack'), expected"),
    "2-D radiance": (dict(dims=("downtrack", "crosstrack")), "'radiance' has dimensions"),
    "integer radiance": (dict(dtype="i2"), "'radiance' must be floating point"),
    "no band group": (dict(band_vars={}), "granule has no 'sensor_band_parameters' group"),
    "no fwhm": (dict(band_vars={"wavelengths": _WL}),
                "granule has no 'sensor_band_parameters/fwhm'"),
    "unsorted wavelengths": (dict(band_vars={"wavelengths": _WL[::-1], "fwhm": _FWHM}),
                             "wavelengths are not finite and strictly increasing"),
    "zero fwhm": (dict(band_vars={"wavelengths": _WL, "fwhm": 0 * _FWHM}),
                  "fwhm values must be finite and positive"),
    "284 bands": (dict(bands=284), "radiance has 284 bands, expected 285"),
    "neither variable": (dict(variable="rdn"), "holds neither of 'radiance' and 'obs'"),
    "reversed times": (dict(attrs={"time_coverage_start": "2024-03-02T00:58:29+0000",
                                   "time_coverage_end": "2024-03-01T00:00:00+0000"}),
                       "'time_coverage_end' 2024-03-01T00:00:00+0000 is before"),
    "obs of 10 bands": (dict(variable="obs", bands=10), "observation file has 10 bands"),
    "obs without solar zenith": (
        dict(variable="obs", band_vars={"observation_bands": [f"band {i}" for i in range(11)]}),
        "expected one band named like 'to-sun zenith' among the band names, found 0"),
    "obs with two Earth-Sun names": (
        dict(variable="obs", band_vars={"observation_bands": list(OBS_BAND_NAMES[:9])
                                        + ["Earth-sun distance (AU)"] * 2}),
        "expected one band named like 'earth-sun distance' among the band names, found 2"),
    "obs without band names": (dict(variable="obs", band_vars={"wavelengths": _WL[:11]}),
                               "granule has no 'sensor_band_parameters/observation_bands'"),
}


@pytest.mark.parametrize("case", sorted(BAD_GRANULES))
def test_malformed_granule_is_one_input_error(tmp_path, case):
    kwargs, words = BAD_GRANULES[case]
    path = small_granule(tmp_path / "EMIT_L1B_RAD_001_20240302T005829_2406201_001.nc", **kwargs)
    with pytest.raises(InputProductError) as info:
        open_granule(path)
    _one_line_error(info, path, words)


def test_any_band_count_when_told(tmp_path):
    granule = open_radiance_granule(small_granule(tmp_path / "r.nc", bands=284), expected_bands=None)
    assert granule.bands == 284 and granule.wavelengths_nm.size == 284


def test_truncated_granule_is_one_input_error(both, tmp_path):
    _, granules = both
    data = granules.radiance.read_bytes()
    path = tmp_path / granules.radiance.name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputProductError) as info:
        open_radiance_granule(path)
    _one_line_error(info, path, "HDF5 file that netCDF-4 cannot open, truncated or damaged")
    assert granule_kind(path) is None


def test_text_file_named_nc_is_one_input_error(tmp_path):
    path = tmp_path / "EMIT_L1B_RAD_001_20240302T005829_2406201_001.nc"
    path.write_text("ENVI\nsamples = 3\n")
    with pytest.raises(InputProductError) as info:
        open_radiance_granule(path)
    _one_line_error(info, path, "not a netCDF-4/HDF5 file (NetCDF: Unknown file format)")
    with pytest.raises(InputProductError) as info:
        open_granule(tmp_path / "missing.nc")
    _one_line_error(info, tmp_path / "missing.nc", "netCDF granule not found")


def test_granule_without_location_group_is_refused_for_location(tmp_path):
    path = small_granule(tmp_path / "r.nc")
    assert not open_granule(path).has_location
    with pytest.raises(InputProductError) as info:
        read_granule_location(path)
    _one_line_error(info, path, "granule has no 'location' group")
    with pytest.raises(InputProductError) as info:
        read_granule_glt(path)
    _one_line_error(info, path, "granule has no 'location' group")


# ---------------------------------------------------------------------------------------------
# Streaming


def _bytes_read() -> int:
    """Bytes this process has asked the kernel for (Linux /proc/self/io `rchar`)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_a_block_reads_its_chunks_not_the_variable(tmp_path):
    if not Path("/proc/self/io").is_file():
        pytest.skip("needs Linux /proc/self/io")
    lines, samples, chunk = 512, 32, 16
    wl, fwhm = emit_wavelengths()
    path = tmp_path / "big.nc"
    with Dataset(path, "w", format="NETCDF4") as ds:  # 18.7 MB of radiance, 16-line chunks
        for name, size in zip(SWATH_DIMS, (lines, samples, 285), strict=True):
            ds.createDimension(name, size)
        var = ds.createVariable("radiance", "f4", SWATH_DIMS, chunksizes=(chunk, samples, 285))
        for start in range(0, lines, 64):
            var[start:start + 64] = np.full((64, samples, 285), start, np.float32)
        group = ds.createGroup("sensor_band_parameters")
        group.createVariable("wavelengths", "f4", ("bands",))[:] = wl
        group.createVariable("fwhm", "f4", ("bands",))[:] = fwhm
    whole = lines * samples * 285 * 4
    chunk_bytes = whole // (lines // chunk)
    with DaacReader(open_radiance_granule(path)) as reader:
        reader.read_lines(0, 1)  # opens the file: metadata reads are not the block's
        before = _bytes_read()
        tracemalloc.start()
        block = reader.read_lines(200, 216)  # straddles two chunks
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        read = _bytes_read() - before
    assert block.shape == (16, samples, 285) and block[0, 0, 0] == 192 and block[-1, 0, 0] == 192
    assert chunk_bytes <= read <= 3 * chunk_bytes, (read, chunk_bytes, whole)
    assert peak < 3 * block.nbytes < whole / 10, (peak, block.nbytes)


# ---------------------------------------------------------------------------------------------
# The command


def test_synthetic_command_writes_daac_only(tmp_path, capsys):
    assert synthetic_main([str(tmp_path), "--lines", "6", "--samples", "4", "--format", "daac",
                           "--float32-header"]) == 0
    result = json.loads(capsys.readouterr().out)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["EMIT_L1B_OBS_001_20240302T005829_2406201_001.nc",
                     "EMIT_L1B_RAD_001_20240302T005829_2406201_001.nc"]
    assert result["location"] == result["glt"] == result["radiance"]
    assert granule_kind(result["radiance"]) == "RAD" and granule_kind(result["observation"]) == "OBS"
    check_same_acquisition(open_radiance_granule(result["radiance"]),
                           open_observation_granule(result["observation"]))


def test_synthetic_command_writes_both(tmp_path, capsys):
    assert synthetic_main([str(tmp_path), "--lines", "6", "--samples", "4", "--format",
                           "both"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert Path(result["radiance"]).suffix == ".img" and Path(result["radiance"]).is_file()
    assert granule_kind(result["daac_radiance"]) == "RAD"
    assert granule_kind(result["daac_observation"]) == "OBS"
