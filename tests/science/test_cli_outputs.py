"""`l2b-mask` beyond the GeoTIFF pair: the format by extension, `--ortho`, `--layers`, progress,
the `SPECTF_DEPLOY_*` environment, and a failed rerun that leaves the previous result whole.

The layers are compared with `l2b_mask.mask_radiance` (which tests/science/test_python_api.py
holds to the PGE's product bit for bit), the ortho COGs with GDAL (EPSG:4326, the GLT's grid).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr

import l2b_mask
from l2b_mask import cli
from l2b_mask.inputs.envi import EnviReader, read_header
from l2b_mask.inputs.glt import read_glt
from l2b_mask.nodata import FLAG_NO_VALUE, FLOAT_NO_VALUE
from l2b_mask.products.envi import read_envi_layers
from l2b_mask.synthetic.daac import write_formats
from l2b_mask.synthetic.scene import SyntheticAcquisition, generate_acquisition

LINES = SAMPLES = 20


@pytest.fixture(scope="module")
def acq(tmp_path_factory, spec) -> SyntheticAcquisition:
    return generate_acquisition(tmp_path_factory.mktemp("cli_out"), lines=LINES, samples=SAMPLES,
                                seed=3)


@pytest.fixture(scope="module")
def expected(acq):
    """The library's layers for this acquisition (location given: the shadow too)."""
    def cube(path: Path) -> np.ndarray:
        header = read_header(path)
        with EnviReader(header) as reader:
            return reader.read_lines(0, header.lines, dtype=np.float64)

    header = read_header(acq.radiance)
    loc = cube(acq.location)
    return l2b_mask.mask_radiance(cube(acq.radiance).astype(np.float32), cube(acq.observation),
                                  header.float_list("wavelength"), header.float_list("fwhm"),
                                  lon=loc[:, :, 0], lat=loc[:, :, 1], elev=loc[:, :, 2])


def _run(capsys, *args: object) -> tuple[int, list[str], list[dict], str]:
    """main() in process: (exit code, path lines, progress events, stderr)."""
    code = cli.main([str(a) for a in args] + ["--device", "cpu"])
    out, err = capsys.readouterr()
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return code, [line for line in out.splitlines() if not line.startswith("{")], events, err


def _band(path: Path) -> np.ndarray:
    ds = gdal.Open(str(path))
    data = ds.GetRasterBand(1).ReadAsArray()
    ds = None
    return data


def _one_line(stderr: str, *parts: str) -> None:
    assert stderr.count("\n") == 1 and stderr.startswith("l2b-mask: "), stderr
    for part in parts:
        assert part in stderr, (part, stderr)


def _as_nan(values: np.ndarray, no_value: float) -> np.ndarray:
    out = values.astype(np.float32)
    out[values == no_value] = np.nan
    return out


def test_envi_output_by_extension(acq, expected, tmp_path, capsys):
    code, paths, _, err = _run(capsys, acq.radiance, acq.observation, tmp_path / "m.hdr",
                               "--layers", "buffer")
    assert code == 0 and err == "", err
    assert paths == [str(tmp_path / "m.img"), str(tmp_path / "m.hdr")]
    layers = read_envi_layers(tmp_path / "m.hdr")
    assert np.array_equal(_as_nan(layers.flag, 255), expected.cloud_mask.values, equal_nan=True)
    assert np.array_equal(layers.probability, expected.cloud_probability.values, equal_nan=True)
    assert np.array_equal(_as_nan(layers.buffer_distance, FLOAT_NO_VALUE),
                          expected.cloud_buffer_distance.values, equal_nan=True)
    assert (layers.shadow == FLAG_NO_VALUE).all()  # not asked for
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.hdr", "m.img"]  # no scratch left


def test_netcdf_output_by_extension_with_every_layer(acq, expected, tmp_path, capsys):
    out = tmp_path / "m.nc"
    code, paths, _, err = _run(capsys, acq.radiance, acq.observation, out, "--layers",
                               "buffer,shadow", "--location", acq.location, "--glt", acq.glt)
    assert code == 0 and err == "" and paths == [str(out)], err
    ds = l2b_mask.open_product(out)
    for name in ("cloud_mask", "cloud_probability", "cloud_buffer_distance", "cloud_shadow", "lat"):
        assert np.array_equal(ds[name].values, expected[name].values, equal_nan=True), name
    assert ds.attrs["cloud_model_version"] and l2b_mask.open_product(out, ortho=True).sizes["lat"]


@pytest.mark.parametrize("name", ["m.png", "m", "m.TIFF.bak"])
def test_other_extensions_are_a_usage_error(acq, tmp_path, capsys, name):
    code, paths, events, err = _run(capsys, acq.radiance, acq.observation, tmp_path / name)
    assert code == 2 and paths == [] and events == []
    _one_line(err, name, "unknown output extension", ".tif", ".nc")
    assert list(tmp_path.iterdir()) == []


def test_ortho_cogs_carry_their_crs_and_the_glt_grid(acq, expected, tmp_path, capsys):
    out = tmp_path / "m.tif"
    code, paths, _, err = _run(capsys, acq.radiance, acq.observation, out, "--ortho", "--glt",
                               acq.glt, "--proba", "--layers", "shadow", "--location",
                               acq.location)
    assert code == 0 and err == "", err
    assert paths == [str(out), str(tmp_path / "m_prob.tif"), str(tmp_path / "m_shadow.tif")]
    glt = read_glt(acq.glt)
    for path, name, fill in ((out, "cloud_mask", 255), (tmp_path / "m_prob.tif",
                                                       "cloud_probability", FLOAT_NO_VALUE),
                             (tmp_path / "m_shadow.tif", "cloud_shadow", 255)):
        ds = gdal.Open(str(path))
        assert ds.GetMetadataItem("LAYOUT", "IMAGE_STRUCTURE") == "COG"
        srs = osr.SpatialReference(wkt=ds.GetProjection())
        assert srs.GetAuthorityName(None) == "EPSG" and srs.GetAuthorityCode(None) == "4326"
        assert ds.GetGeoTransform() == pytest.approx(glt.geotransform)
        ds = None
        swath = expected[name].values
        want = glt.resample(np.where(np.isnan(swath), fill, swath).astype(np.float32), fill)
        assert np.array_equal(_band(path).astype(np.float32), want), name


def test_ortho_from_a_granule_uses_its_own_glt(tmp_path, capsys):
    own = generate_acquisition(tmp_path / "in", lines=LINES, samples=SAMPLES, seed=3)
    shape = read_glt(own.glt).shape
    granules = write_formats(own, "daac")  # the granules replace the ENVI files
    out = tmp_path / "g.tif"
    code, _, _, err = _run(capsys, granules["radiance"], granules["observation"], out, "--ortho")
    assert code == 0 and err == "", err
    assert _band(out).shape == shape


def test_ortho_without_a_glt_is_refused_before_compute(acq, tmp_path, capsys):
    code, paths, events, err = _run(capsys, acq.radiance, acq.observation, tmp_path / "m.tif",
                                    "--ortho")
    assert code == 4 and events == []
    _one_line(err, "--ortho needs a GLT")
    code, _, _, err = _run(capsys, acq.radiance, acq.observation, tmp_path / "m.nc", "--ortho")
    assert code == 2
    _one_line(err, "--ortho writes GeoTIFFs")


def test_layers_as_geotiffs_and_their_refusals(acq, expected, tmp_path, capsys):
    out = tmp_path / "m.tif"
    code, paths, _, err = _run(capsys, acq.radiance, acq.observation, out, "--layers",
                               "buffer,shadow", "--location", acq.location)
    assert code == 0 and err == "", err
    assert paths == [str(out), str(tmp_path / "m_buffer.tif"), str(tmp_path / "m_shadow.tif")]
    assert np.array_equal(_as_nan(_band(tmp_path / "m_buffer.tif"), FLOAT_NO_VALUE),
                          expected.cloud_buffer_distance.values, equal_nan=True)
    assert np.array_equal(_as_nan(_band(tmp_path / "m_shadow.tif"), 255),
                          expected.cloud_shadow.values, equal_nan=True)
    code, _, _, err = _run(capsys, acq.radiance, acq.observation, out, "--layers", "shadow")
    assert code == 2
    _one_line(err, "--layers shadow needs a location")
    code, _, _, err = _run(capsys, acq.radiance, acq.observation, out, "--layers", "haze")
    assert code == 2
    _one_line(err, "unknown layer 'haze'")


def test_progress_is_json_lines_on_stdout_and_stderr_stays_empty(acq, tmp_path, capsys):
    code, _, events, err = _run(capsys, acq.radiance, acq.observation, tmp_path / "m.tif",
                                "--lines-per-block", "4")
    assert code == 0 and err == ""
    assert len(events) >= 2 and all(e["event"] == "progress" for e in events)
    assert events[-1]["lines_done"] == events[-1]["lines_total"] == LINES
    assert [e["lines_done"] for e in events] == sorted(e["lines_done"] for e in events)
    code, paths, events, err = _run(capsys, acq.radiance, acq.observation, tmp_path / "n.tif",
                                    "--progress", "none")
    assert code == 0 and events == [] and paths == [str(tmp_path / "n.tif")]


def test_progress_bar_goes_to_stderr_and_an_error_line_comes_last(acq, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    code, _, events, err = _run(capsys, acq.radiance, acq.observation,
                                tmp_path / "a_file" / "m.tif", "--progress", "bar")
    assert code == 7 and events == []
    assert "l2b-mask: " in err and err.rstrip("\n").splitlines()[-1].startswith("l2b-mask: ")
    assert "cannot create output folder" in err.splitlines()[-1]


def test_spectf_deploy_environment(acq, tmp_path, monkeypatch, capsys, expected):
    out = tmp_path / "env.tif"
    for name, value in {"RDNFP": acq.radiance, "OBSFP": acq.observation, "OUTFP": out,
                        "PROBA": "true", "THRESHOLD": "0.3", "DEVICE": "-1"}.items():
        monkeypatch.setenv(f"SPECTF_DEPLOY_{name}", str(value))
    code, paths, _, err = _run(capsys)
    assert code == 0 and err == "" and paths == [str(out), str(tmp_path / "env_prob.tif")], err
    prob = expected.cloud_probability.values
    assert np.array_equal(_band(out), np.where(np.isnan(prob), 255, prob > 0.3).astype(np.uint8))
    code, _, _, _ = _run(capsys, acq.radiance, acq.observation, out, "--threshold", "0.9")
    assert code == 0  # the command line wins over the environment
    assert np.array_equal(_band(out), np.where(np.isnan(prob), 255, prob > 0.9).astype(np.uint8))
    monkeypatch.setenv("SPECTF_DEPLOY_THRESHOLD", "high")
    code, _, _, err = _run(capsys)
    assert code == 2
    _one_line(err, "SPECTF_DEPLOY_THRESHOLD", "not a number")
    monkeypatch.delenv("SPECTF_DEPLOY_THRESHOLD")
    monkeypatch.setenv("SPECTF_DEPLOY_PROBA", "maybe")
    code, _, _, err = _run(capsys)
    assert code == 2
    _one_line(err, "SPECTF_DEPLOY_PROBA")
    for name in ("RDNFP", "PROBA"):
        monkeypatch.delenv(f"SPECTF_DEPLOY_{name}")
    code, _, _, err = _run(capsys)
    assert code == 2
    _one_line(err, "RADIANCE is required", "SPECTF_DEPLOY_RDNFP")


def _console(args: list[object], limit: int | None = None) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "l2b-mask"
    if not script.is_file():
        pytest.skip(f"console script l2b-mask not installed next to {sys.executable}")

    def fsize() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([str(script), *map(str, args), "--device", "cpu"], capture_output=True,
                          text=True, timeout=300, preexec_fn=fsize)


@pytest.mark.parametrize("fits", ["nothing", "the_mask_only"])
def test_a_rerun_that_cannot_write_leaves_the_previous_result_whole(acq, tmp_path, fits):
    """A file size limit (what a full disk does to a write): exit 7, one line, and the
    previous mask and probability exactly as they were, nothing else left in the folder."""
    out = tmp_path / "mask.tif"
    first = _console([acq.radiance, acq.observation, out, "--proba"])
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    sizes = sorted(len(b) for b in before.values())
    assert sizes[0] < sizes[1]  # the mask is the smaller file
    limit = 512 if fits == "nothing" else sizes[0] + 64
    second = _console([acq.radiance, acq.observation, out, "--proba", "--threshold", "0.05"],
                      limit=limit)
    assert second.returncode == 7, second.stderr
    _one_line(second.stderr)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_planted_link_is_replaced_not_written_through(acq, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "m.tif").symlink_to(victim)
    code, _, _, err = _run(capsys, acq.radiance, acq.observation, out_dir / "m.tif")
    assert code == 0, err
    assert victim.read_text() == "keep me"
    assert not (out_dir / "m.tif").is_symlink() and _band(out_dir / "m.tif").shape == (LINES, SAMPLES)
    assert [p.name for p in out_dir.iterdir()] == ["m.tif"]


def test_publish_puts_every_previous_file_back_when_one_cannot_be_placed(tmp_path):
    from l2b_mask.command_files import Staging
    from l2b_mask.errors import OutputError

    files = {"flag": tmp_path / "m.tif", "probability": tmp_path / "m_prob.tif",
             "buffer": tmp_path / "m_buffer.tif"}
    files["flag"].write_text("old flag")
    files["probability"].write_text("old probability")
    with Staging(tmp_path) as staging:
        staged = staging.paths(files)
        staged["flag"].write_text("new flag")
        staged["probability"].write_text("new probability")  # the buffer never got written
        with pytest.raises(OutputError, match="cannot publish"):
            staging.publish(files)
    assert files["flag"].read_text() == "old flag"
    assert files["probability"].read_text() == "old probability"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif", "m_prob.tif"]
