"""End to end: the PGE as the SDS runs it, a subprocess with a run configuration.

One successful run (`python -m pge.cli rc.json`) on a small synthetic EMIT acquisition is
shared by the product, metadata, provenance and log checks; every exit-code case runs once, all
of them at the same time (through the forking "zygote" below, so that torch is imported once),
and each exit-code test only reads its result. The reference-scene parity goes through the
whole PGE as well, so the products (not just the library) carry the published probabilities.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import compliance_problems

import pge.cli
from l2b_mask.synthetic.scene import TIME_FORMAT, SyntheticAcquisition, generate_acquisition
from pge.errors import ExitCode

PROJECT = Path(__file__).resolve().parents[2]
LINES, SAMPLES = 24, 24
SEED = 11
START = datetime(2024, 3, 2, 0, 58, 29, tzinfo=UTC)  # generate_acquisition's default start
STEM = "emit20240302t005829_o06201_s000_l2b_mask_b0106_v01"
BUILD_VERSION = "010635"
STEPS = ("load_config", "prepare_output", "validate_inputs", "validate_ancillary", "run",
         "beyond_cloud", "write_products", "validate_products", "write_metadata", "write_granule_metadata",
         "write_provenance")
# Every product file of the shared successful run (its configuration turns the ortho on).
PRODUCT_SUFFIXES = {
    "envi_data": ".img", "envi_header": ".hdr", "netcdf": ".nc", "browse": ".png",
    "ortho_flag": "_ortho.tif", "ortho_probability": "_ortho_prob.tif",
    "ortho_buffer": "_ortho_buffer.tif", "ortho_shadow": "_ortho_shadow.tif",
    "metadata": "_metadata.json", "ummg": ".cmr.json", "stac": "_stac.json",
    "provenance": "_provenance.json",
    "log": "_pge.log",
}
PRODUCT_KEYS = tuple(PRODUCT_SUFFIXES)
# What a run with the default output switches writes (no ortho, UMM-G only with an EMIT name).
DEFAULT_SUFFIXES = {k: v for k, v in PRODUCT_SUFFIXES.items() if not k.startswith("ortho_")}
ENVI_BANDS = ["Cloud Flag", "Cloud Probability", "Cloud Buffer Distance", "Cloud Shadow Flag"]
NODATA = -9999.0


# ---------------------------------------------------------------------------------------------
# Running the PGE


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    @property
    def summary(self) -> dict[str, Any]:
        assert self.lines, f"no stdout at all (stderr: {self.stderr!r})"
        return json.loads(self.lines[-1])

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines[:-1]]

    def __str__(self) -> str:  # shown by pytest when an assertion about a run fails
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT), env.get("PYTHONPATH")) if p)
    return env


def run_pge(args: list[str], cwd: Path, *, timeout: float = 300) -> Result:
    """`python -m pge.cli ARGS` in `cwd`, as the SDS runs the console script."""
    cmd = [sys.executable, "-m", "pge.cli", *args]
    p = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True,
                       timeout=timeout, check=False)
    return Result(p.returncode, p.stdout, p.stderr)


def config(acq: SyntheticAcquisition | dict[str, Path], base: Path, spec: Any, *,
           out: str = "out", **sections: dict[str, Any]) -> dict[str, Any]:
    """A run configuration with paths relative to `base` where possible, then `sections`
    merged over it (a value of None deletes the key)."""

    def rel(p: Path) -> str:
        p = Path(p)
        try:
            return str(p.relative_to(base))
        except ValueError:
            return str(p)

    files = acq if isinstance(acq, dict) else {
        "radiance": acq.radiance, "observation": acq.observation,
        "location": acq.location, "glt": acq.glt}
    cfg: dict[str, Any] = {
        "input_files": {k: rel(v) for k, v in files.items()},
        "ancillary_files": {"model_weights": str(spec.weights_path),
                            "irradiance": str(spec.irradiance_path)},
        "output": {"directory": out},
        "processing": {"device": "cpu"},
        "pge": {"software_build_version": BUILD_VERSION},
    }
    for section, values in sections.items():
        target = cfg.setdefault(section, {})
        for key, value in values.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
    return cfg


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def assert_no_products(out: Path) -> None:
    """The output folder is absent or empty: no product, no log, no (hidden) scratch."""
    if out.exists():
        left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
        assert left == [], f"left in {out}: {left}"


def assert_one_stderr_line(result: Result, code: int) -> str:
    assert result.code == code, str(result)
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, str(result)
    line = result.stderr.rstrip("\n")
    assert line.startswith(f"{ExitCode(code).label}: "), line
    return line


def assert_failure_summary(result: Result, code: int, line: str) -> None:
    assert result.summary == {"status": "failure", "exit_code": code, "error": line}
    for event in result.events:
        assert {"event", "level", "timestamp"} <= event.keys(), event


# ---------------------------------------------------------------------------------------------
# The successful run, shared


@dataclass
class Success:
    base: Path
    acq: SyntheticAcquisition
    runconfig: Path
    out: Path
    result: Result
    started: datetime
    finished: datetime
    products: dict[str, Path] = field(default_factory=dict)


@pytest.fixture(scope="module")
def success(tmp_path_factory, spec) -> Success:
    base = tmp_path_factory.mktemp("e2e_success").resolve()
    acq = generate_acquisition(base / "in", lines=LINES, samples=SAMPLES, seed=SEED)
    rc = write_config(base / "rc.json", config(acq, base, spec, output={"write_ortho": True}))
    started = datetime.now(UTC).replace(microsecond=0)
    result = run_pge(["rc.json"], base)
    finished = datetime.now(UTC)
    out = base / "out"
    products = {k: out / f"{STEM}{s}" for k, s in PRODUCT_SUFFIXES.items()}
    return Success(base, acq, rc, out, result, started, finished, products)


@pytest.fixture(scope="module")
def ok(success) -> Success:
    """The successful run, failing every dependent test at once if it did not succeed."""
    assert success.result.code == 0, str(success.result)
    return success


@pytest.fixture(scope="module")
def envi(ok) -> dict[str, Any]:
    from spectral.io import envi as spectral_envi

    img = spectral_envi.open(str(ok.products["envi_header"]), str(ok.products["envi_data"]))
    cube = np.asarray(img.load(), dtype=np.float32)  # (lines, samples, bands)
    return {"meta": img.metadata, "flag": cube[:, :, 0], "prob": cube[:, :, 1],
            "shape": img.shape, "dtype": np.dtype(img.dtype)}


def test_exit_zero_silent_stderr_and_success_summary(ok):
    result = ok.result
    assert result.stderr == ""
    summary = result.summary
    assert summary["status"] == "success" and summary["exit_code"] == 0
    assert set(summary) == {"status", "exit_code", "products", "cloud_fraction_percent"}
    assert summary["products"] == {k: str(ok.products[k]) for k in PRODUCT_KEYS}
    for path in summary["products"].values():
        assert Path(path).is_absolute() and Path(path).is_file()
    assert isinstance(summary["cloud_fraction_percent"], float)
    assert 0.0 <= summary["cloud_fraction_percent"] <= 100.0


def test_stdout_is_json_events_with_steps_and_progress(ok):
    events = ok.result.events
    assert events, "no log events on stdout"
    for event in events:
        assert {"event", "level", "timestamp"} <= event.keys(), event
        assert event["level"] in {"debug", "info", "warning", "error"}
    started = [e["step"] for e in events if e["event"] == "step_started"]
    finished = [e["step"] for e in events if e["event"] == "step_finished"]
    assert started == finished, "every step that starts also finishes, in the same order"
    assert [s for s in started if s in STEPS] == list(STEPS)
    for e in events:
        if e["event"] == "step_finished":
            assert e["seconds"] >= 0
    progress = [e for e in events if e["event"] == "inference_progress"]
    assert progress, "no inference_progress event"
    for e in progress:
        assert {"lines_done", "pixels_per_s", "eta_s"} <= e.keys()
    assert progress[-1]["lines_done"] == LINES and progress[-1]["eta_s"] == 0.0
    assert progress[-1]["pixels_per_s"] > 0
    assert not [e for e in events if e["level"] in ("warning", "error")]


def test_output_folder_holds_exactly_the_products(ok):
    names = sorted(p.name for p in ok.out.iterdir())
    assert names == sorted(p.name for p in ok.products.values())
    for p in ok.out.iterdir():
        assert p.is_file() and not p.name.startswith(".")


def test_envi_product_read_with_spectral(ok, envi):
    truth = ok.acq.truth
    meta = envi["meta"]
    assert envi["shape"] == (LINES, SAMPLES, 4) and envi["dtype"] == np.float32
    assert meta["band names"] == ENVI_BANDS
    assert float(meta["data ignore value"]) == NODATA
    flag, prob = envi["flag"], envi["prob"]
    no_value = truth == 0
    assert np.array_equal(prob == NODATA, no_value)
    assert np.array_equal(flag == NODATA, no_value)
    valid = ~no_value
    assert set(np.unique(flag[valid]).tolist()) <= {0.0, 1.0}
    assert prob[valid].min() >= 0.0 and prob[valid].max() <= 1.0
    threshold = float(meta["cloud threshold"])
    assert np.array_equal(flag[valid] == 1.0, prob[valid] > threshold)
    # Both classes occur: the scene is not degenerate and the threshold matters.
    assert 0 < np.count_nonzero(flag[valid] == 1.0) < np.count_nonzero(valid)


def test_envi_product_read_with_gdal(ok, envi):
    gdal = pytest.importorskip("osgeo.gdal")
    gdal.UseExceptions()
    ds = gdal.Open(str(ok.products["envi_data"]))
    try:
        assert (ds.RasterYSize, ds.RasterXSize, ds.RasterCount) == (LINES, SAMPLES, 4)
        assert [ds.GetRasterBand(i + 1).GetDescription() for i in range(4)] == ENVI_BANDS
        for index, name, values in ((1, "Cloud Flag", envi["flag"]),
                                    (2, "Cloud Probability", envi["prob"])):
            band = ds.GetRasterBand(index)
            assert band.DataType == gdal.GDT_Float32
            assert band.GetDescription() == name
            assert band.GetNoDataValue() == NODATA
            array = band.ReadAsArray()
            assert array.dtype == np.float32
            assert np.array_equal(array, values)
    finally:
        ds = None


def test_envi_header_carries_emit_metadata(ok, envi, spec):
    meta = envi["meta"]
    assert meta["emit acquisition start time"] == START.strftime(TIME_FORMAT)
    assert meta["emit acquisition start time"] == "2024-03-02T00:58:29+0000"
    assert meta["emit pge name"] == "l2b-mask-pge"
    assert meta["emit pge version"] == importlib.metadata.version("l2b-mask-pge")
    inputs = meta["emit pge input files"]
    assert isinstance(inputs, list)
    assert f"radiance_file={ok.acq.radiance.resolve()}" in inputs
    assert f"observation_parameters_file={ok.acq.observation.resolve()}" in inputs
    assert f"pixel_locations_file={ok.acq.location.resolve()}" in inputs
    assert f"model_weights_file={spec.weights_path}" in inputs
    assert meta["emit pge run command"] == "l2b-mask-pge rc.json"
    assert meta["emit software build version"] == BUILD_VERSION
    created = datetime.strptime(meta["emit data product creation time"], "%Y-%m-%dT%H:%M:%S%z")
    assert ok.started <= created <= ok.finished
    assert meta["emit data product version"] == "01"
    assert float(meta["cloud threshold"]) == spec.threshold
    assert meta["cloud threshold comparison"] == ">"
    assert meta["cloud model version"] == spec.version
    assert spec.version in meta["cloud model"]


@pytest.fixture(scope="module")
def netcdf(ok) -> dict[str, Any]:
    from netCDF4 import Dataset

    with Dataset(ok.products["netcdf"]) as ds:
        ds.set_auto_mask(False)
        out: dict[str, Any] = {"attrs": {k: ds.getncattr(k) for k in ds.ncattrs()},
                               "dims": {k: len(d) for k, d in ds.dimensions.items()},
                               "vars": {}, "groups": list(ds.groups)}
        for name in ("cloud_mask", "cloud_probability"):
            var = ds[name]
            out["vars"][name] = {"dtype": var.dtype, "dims": var.dimensions,
                                 "attrs": {k: var.getncattr(k) for k in var.ncattrs()},
                                 "filters": var.filters(), "data": np.array(var[:])}
        if "location" in ds.groups:
            out["location"] = {k: np.array(ds["location"][k][:]) for k in ("lon", "lat", "elev")}
    return out


def test_netcdf_variables(netcdf):
    dims = netcdf["dims"]
    assert {k: dims[k] for k in ("downtrack", "crosstrack")} == {"downtrack": LINES,
                                                                 "crosstrack": SAMPLES}
    # the GLT's grid, and the bands of sensor_band_parameters (the product's layers)
    assert set(dims) == {"downtrack", "crosstrack", "ortho_y", "ortho_x", "bands"}
    assert {"location", "sensor_band_parameters"} <= set(netcdf["groups"])
    mask = netcdf["vars"]["cloud_mask"]
    assert mask["dtype"] == np.uint8
    assert mask["dims"] == ("downtrack", "crosstrack")
    assert mask["attrs"]["_FillValue"] == 255
    assert np.asarray(mask["attrs"]["flag_values"]).tolist() == [0, 1]
    assert mask["attrs"]["flag_meanings"] == "clear cloud"
    prob = netcdf["vars"]["cloud_probability"]
    assert prob["dtype"] == np.float32
    assert prob["dims"] == ("downtrack", "crosstrack")
    assert prob["attrs"]["_FillValue"] == np.float32(NODATA)
    assert np.asarray(prob["attrs"]["valid_range"]).tolist() == [0.0, 1.0]
    for var in (mask, prob):
        assert var["filters"]["zlib"] is True
        assert var["data"].shape == (LINES, SAMPLES)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_pge_netcdf_passes_the_compliance_checker(ok, monkeypatch):
    """The file the PGE publishes (EMIT attributes, location group, GLT), not only the writer's."""
    assert not compliance_problems(ok.products["netcdf"], monkeypatch)


def test_netcdf_values_equal_the_envi_product(netcdf, envi):
    no_value = envi["prob"] == NODATA
    mask = netcdf["vars"]["cloud_mask"]["data"]
    prob = netcdf["vars"]["cloud_probability"]["data"]
    assert np.array_equal(mask == 255, no_value)
    assert np.array_equal(prob == np.float32(NODATA), no_value)
    assert np.array_equal(mask[~no_value], envi["flag"][~no_value].astype(np.uint8))
    assert np.array_equal(prob, envi["prob"])


def test_netcdf_location_group_equals_the_loc_file(ok, netcdf):
    from spectral.io import envi as spectral_envi

    assert sorted(netcdf["groups"]) == ["location", "sensor_band_parameters"]
    loc_img = spectral_envi.open(str(ok.acq.location.with_suffix(".hdr")), str(ok.acq.location))
    assert np.dtype(loc_img.dtype) == np.float64
    loc = np.array(loc_img.open_memmap())  # load() would convert to float32
    assert loc.shape == (LINES, SAMPLES, 3)
    assert np.array_equal(netcdf["location"]["lon"], loc[:, :, 0])
    assert np.array_equal(netcdf["location"]["lat"], loc[:, :, 1])
    assert np.array_equal(netcdf["location"]["elev"], loc[:, :, 2])
    known = loc[:, :, 0] != NODATA
    assert known.any()
    assert np.all(np.abs(loc[:, :, 1][known]) <= 90) and np.all(np.abs(loc[:, :, 0][known]) <= 180)


def test_netcdf_global_attributes(ok, netcdf, spec):
    attrs = netcdf["attrs"]
    assert attrs["Conventions"].startswith("CF-1.") and "ACDD-1.3" in attrs["Conventions"]
    assert attrs["title"].startswith("EMIT L2B Cloud Mask")
    assert "SpecTf" in attrs["summary"]
    assert attrs["product_version"] == "V001"
    assert attrs["flight_line"] == "emit20240302t005829_o06201_s000"
    assert attrs["time_coverage_start"] == "2024-03-02T00:58:29Z"
    assert attrs["cloud_threshold"] == spec.threshold
    assert attrs["cloud_threshold_comparison"] == ">"
    assert attrs["cloud_model_version"] == spec.version
    assert spec.version in attrs["cloud_model"]
    assert attrs["software_build_version"] == BUILD_VERSION
    assert attrs["software_delivery_version"] == importlib.metadata.version("l2b-mask-pge")
    assert "l2b-mask-pge rc.json" in attrs["history"]
    assert 0.0 <= attrs["cloud_fraction_percent_of_valid"] <= 100.0


def test_provenance_checksums_match_the_files(ok):
    record = json.loads(ok.products["provenance"].read_text())
    outputs = record["outputs"]
    assert set(outputs) == set(PRODUCT_KEYS) - {"provenance"}
    assert outputs["log"] == {"path": str(ok.products["log"].resolve())}
    for key, entry in outputs.items():
        if key == "log":
            continue
        path = ok.products[key]
        assert entry["path"] == str(path.resolve())
        assert entry["size_bytes"] == path.stat().st_size, key
        assert entry["sha256"] == sha256(path), key
    acq = ok.acq
    expected_inputs = {
        "radiance_header": acq.radiance.with_suffix(".hdr"), "radiance_data": acq.radiance,
        "observation_header": acq.observation.with_suffix(".hdr"),
        "observation_data": acq.observation,
        "location_header": acq.location.with_suffix(".hdr"), "location_data": acq.location,
        "glt_header": acq.glt.with_suffix(".hdr"), "glt_data": acq.glt,
    }
    assert set(record["inputs"]) == set(expected_inputs)
    for key, path in expected_inputs.items():
        entry = record["inputs"][key]
        assert entry["path"] == str(path.resolve()), key
        assert entry["sha256"] == sha256(path), key
        assert entry["size_bytes"] == path.stat().st_size, key
    assert set(record["ancillary"]) == {"model_weights", "irradiance", "model_spec"}
    for key, entry in record["ancillary"].items():
        assert entry["sha256"] == sha256(Path(entry["path"])), key


def test_provenance_run_configuration_software_and_processing(ok, spec):
    record = json.loads(ok.products["provenance"].read_text())
    rc = record["run_configuration"]
    assert rc["text"] == ok.runconfig.read_text()
    assert rc["sha256"] == sha256(ok.runconfig)
    assert rc["path"] == str(ok.runconfig.resolve())
    software = record["software"]
    for name in ("torch", "numpy", "netCDF4", "GDAL", "python", "l2b-mask-pge"):
        assert software.get(name) not in (None, "", "not installed"), name
    assert software["numpy"] == np.__version__
    processing = record["processing"]
    assert processing["device"] == "cpu"
    assert processing["precision"] == "float32"
    from l2b_mask.kernels import selection
    expected = "cpu kernel, f32-" if selection.available("float32") else "torch (cpu)"
    assert processing["implementation"].startswith(expected)
    assert processing["threshold"] == spec.threshold
    assert processing["model_version"] == spec.version
    timings = record["timings_s"]
    for name in STEPS[:-1]:  # the record is written during write_provenance
        assert isinstance(timings[name], int | float) and timings[name] >= 0, name
    generation = record["product_generation"]
    assert generation["run_command"] == "l2b-mask-pge rc.json"
    assert generation["version"] == importlib.metadata.version("l2b-mask-pge")


def test_metadata_cloud_fraction_matches_the_envi_flags(ok, envi, spec):
    meta = json.loads(ok.products["metadata"].read_text())
    flag = envi["flag"]
    valid = flag != NODATA
    cloudy = int(np.count_nonzero(flag == 1.0))
    fraction = meta["cloud_fraction"]
    assert fraction["cloudy_pixels"] == cloudy
    assert fraction["pixels_with_value"] == int(np.count_nonzero(valid))
    assert fraction["pixels"] == LINES * SAMPLES
    assert fraction["percent_of_valid_pixels"] == pytest.approx(100.0 * cloudy / valid.sum())
    assert fraction["percent_of_all_pixels"] == pytest.approx(100.0 * cloudy / flag.size)
    assert ok.result.summary["cloud_fraction_percent"] == round(
        fraction["percent_of_valid_pixels"], 4)
    assert envi["meta"]["emit acquisition cloud fraction"] == (
        f"{fraction['percent_of_valid_pixels']:.4f}")
    assert meta["product"] == STEM
    assert meta["acquisition_id"] == "emit20240302t005829"
    assert (meta["lines"], meta["samples"]) == (LINES, SAMPLES)
    assert meta["threshold"] == spec.threshold
    assert meta["model"]["version"] == spec.version
    assert set(meta["files"].values()) == {ok.products[k].name for k in PRODUCT_KEYS
                                           if k not in ("provenance", "log")}


def test_granule_metadata_describes_the_product(ok):
    """The UMM-G record: granule UR from the EMIT name, cloud cover as EMIT counts it (cloud
    plus no-value pixels, of all), the files with their SHA-512, the GLT grid's extent."""
    from l2b_mask.inputs.glt import read_glt
    from pge.sds.ummg import validate_ummg

    ummg = json.loads(ok.products["ummg"].read_text())
    assert validate_ummg(ummg) == []
    assert ummg["GranuleUR"] == "EMIT_L2B_MASK_001_20240302T005829_2406201_000"
    fraction = json.loads(ok.products["metadata"].read_text())["cloud_fraction"]
    no_value = 100.0 * (fraction["pixels"] - fraction["pixels_with_value"]) / fraction["pixels"]
    assert ummg["CloudCover"] == round(min(fraction["percent_of_all_pixels"] + no_value, 100.0))
    assert ummg["CloudCover"] == fraction["granule_cloud_cover_percent"]  # both say the same
    assert ummg["TemporalExtent"]["RangeDateTime"]["BeginningDateTime"] == (
        "2024-03-02T00:58:29.000Z")
    assert ummg["DataGranule"]["DayNightFlag"] == "Day"
    files = ummg["DataGranule"]["ArchiveAndDistributionInformation"]
    assert files[0]["Name"] == ok.products["netcdf"].name  # the granule's data file first
    assert {f["Name"] for f in files} == {ok.products[k].name for k in PRODUCT_KEYS if k not in (
        "metadata", "ummg", "stac", "provenance", "log")}
    for entry in files:
        path = ok.out / entry["Name"]
        assert entry["SizeInBytes"] == path.stat().st_size
        assert entry["Checksum"] == {"Algorithm": "SHA-512",
                                     "Value": hashlib.sha512(path.read_bytes()).hexdigest()}
    box = ummg["SpatialExtent"]["HorizontalSpatialDomain"]["Geometry"]["BoundingRectangles"][0]
    grid = read_glt(ok.acq.glt).grid_bounds()
    assert (box["WestBoundingCoordinate"], box["SouthBoundingCoordinate"],
            box["EastBoundingCoordinate"], box["NorthBoundingCoordinate"]) == pytest.approx(
        (grid.west, grid.south, grid.east, grid.north))


def test_orthorectified_geotiffs_and_browse_open_in_gdal(ok, envi):
    """The GeoTIFFs are on the GLT grid in EPSG:4326 with nodata set, and every located cell
    holds the swath pixel its GLT entry names; the browse is a small RGBA PNG."""
    from osgeo import gdal, osr

    from l2b_mask.inputs.glt import read_glt

    glt = read_glt(ok.acq.glt)
    valid = glt.valid
    lines, samples = np.abs(glt.line[valid]) - 1, np.abs(glt.sample[valid]) - 1
    for key, swath, nodata in (("ortho_flag", envi["flag"], 255), ("ortho_probability",
                                                                    envi["prob"], NODATA)):
        ds = gdal.Open(str(ok.products[key]))
        assert (ds.RasterYSize, ds.RasterXSize) == glt.shape
        assert ds.GetGeoTransform() == pytest.approx(glt.geotransform)
        srs = osr.SpatialReference(wkt=ds.GetProjection())
        srs.AutoIdentifyEPSG()
        assert srs.GetAuthorityCode(None) == "4326"
        band = ds.GetRasterBand(1)
        assert band.GetNoDataValue() == nodata
        grid = band.ReadAsArray().astype(np.float64)
        assert (grid[~valid] == nodata).all()
        expected = swath[lines, samples].astype(np.float64)
        expected[expected == NODATA] = nodata  # a located pixel may have no value
        assert np.array_equal(grid[valid], expected)
        ds = None
    png = gdal.Open(str(ok.products["browse"]))
    assert png.GetDriver().ShortName == "PNG" and png.RasterCount == 4
    assert max(png.RasterXSize, png.RasterYSize) <= 1000


def test_log_file_is_json_and_holds_this_runs_events(ok):
    log_lines = ok.products["log"].read_text().splitlines()
    assert log_lines
    events = [json.loads(line) for line in log_lines]
    for event in events:
        assert {"event", "level", "timestamp"} <= event.keys()
    # The file opens in prepare_output, at the run_configuration event, and closes when the
    # products are published: from there on it is the very same lines as stdout.
    stdout_events = ok.result.lines[:-1]
    first = next(i for i, line in enumerate(stdout_events)
                 if json.loads(line)["event"] == "run_configuration")
    assert log_lines == stdout_events[first:]
    names = [e["event"] for e in events]
    assert "inference_progress" in names and "run_finished" in names
    assert events[0]["product"] == STEM


# ---------------------------------------------------------------------------------------------
# Reruns: existing products


def _snapshot(out: Path) -> dict[str, tuple[int, int, str]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_ino, sha256(p)) for p in out.iterdir()}


@dataclass
class Rerun:
    base: Path
    before: dict[str, tuple[int, int, str]]
    old_provenance: dict[str, Any]
    result: Result


@pytest.fixture(scope="module")
def reruns(ok, tmp_path_factory) -> dict[str, Rerun]:
    """Two copies of the successful run's folder (inputs, run configuration, products), rerun
    at the same time: one with the same configuration, one with overwrite true."""
    jobs: dict[str, tuple[Path, str]] = {}
    for name in ("same_config", "overwrite"):
        dest = tmp_path_factory.mktemp(f"e2e_rerun_{name}").resolve() / "run"
        shutil.copytree(ok.base, dest, copy_function=shutil.copy2)
        rc = "rc.json"
        if name == "overwrite":
            cfg = json.loads((dest / "rc.json").read_text())
            cfg["output"]["overwrite"] = True
            rc = write_config(dest / "rc_overwrite.json", cfg).name
        jobs[name] = (dest, rc)
    before = {n: _snapshot(d / "out") for n, (d, _) in jobs.items()}
    provenance = {n: json.loads((d / "out" / f"{STEM}_provenance.json").read_text())
                  for n, (d, _) in jobs.items()}
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {n: pool.submit(run_pge, [rc], d) for n, (d, rc) in jobs.items()}
        return {n: Rerun(jobs[n][0], before[n], provenance[n], f.result())
                for n, f in futures.items()}


def test_rerun_without_overwrite_exits_7_and_keeps_the_products(reruns):
    rerun = reruns["same_config"]
    result = rerun.result
    line = assert_one_stderr_line(result, ExitCode.OUTPUT)
    assert f"{STEM}.img" in line and "overwrite" in line
    assert_failure_summary(result, ExitCode.OUTPUT, line)
    assert _snapshot(rerun.base / "out") == rerun.before  # same names, mtimes, inodes, bytes


def test_rerun_with_overwrite_replaces_the_products(reruns):
    rerun = reruns["overwrite"]
    result = rerun.result
    assert result.code == 0, str(result)
    assert result.stderr == ""
    out = rerun.base / "out"
    after = _snapshot(out)
    assert set(after) == set(rerun.before)  # the same six names, nothing else (no scratch)
    for name, (_mtime, inode, _digest) in after.items():
        assert inode != rerun.before[name][1], f"{name} was not replaced"
    provenance = json.loads((out / f"{STEM}_provenance.json").read_text())
    assert provenance["product_generation"]["started_utc"] != (
        rerun.old_provenance["product_generation"]["started_utc"])
    assert provenance["product_generation"]["run_command"] == "l2b-mask-pge rc_overwrite.json"
    assert result.summary["products"]["provenance"] == str(out / f"{STEM}_provenance.json")
    for key in ("envi_data", "envi_header", "netcdf", "metadata"):
        entry = provenance["outputs"][key]
        assert entry["sha256"] == sha256(Path(entry["path"]))


# ---------------------------------------------------------------------------------------------
# Reference parity through the whole PGE


@pytest.fixture(scope="module")
def parity_run(tmp_path_factory, spec, reference_dir) -> tuple[Path, Result]:
    base = tmp_path_factory.mktemp("e2e_parity")
    files = {"radiance": reference_dir / "public_s7_rdn.img",
             "observation": reference_dir / "public_s7_obs.img"}
    write_config(base / "rc.json", config(files, base, spec,
                                          processing={"precision": "float32"}))
    return base / "out", run_pge(["rc.json"], base)


def test_reference_parity_through_the_pge(parity_run, reference_dir):
    out, result = parity_run
    assert result.code == 0, str(result)
    assert result.stderr == ""
    stem = "public_s7_rdn_l2b_mask"
    # Not an EMIT name and no acquisition time in the header: no granule record (and a warning)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}{s}" for k, s in DEFAULT_SUFFIXES.items() if k not in ("ummg", "stac"))
    provenance = json.loads((out / f"{stem}_provenance.json").read_text())
    # and no location file: no cloud shadow (the buffer takes the nominal pixel size)
    assert set(provenance["skipped_outputs"]) == {"ummg", "stac", "cloud_shadow"}
    meta = json.loads((out / f"{stem}_metadata.json").read_text())
    assert set(meta["files"].values()) == {p.name for p in out.iterdir()} - {
        f"{stem}_provenance.json", f"{stem}_pge.log"}  # lists only files that exist
    assert any(e["event"] == "granule_metadata_skipped" for e in result.events)
    reference = np.load(reference_dir / "reference_prob_fp32.npy")
    ref_no_value = np.isnan(reference)
    assert 0 < ref_no_value.sum() < reference.size or not ref_no_value.any()

    from netCDF4 import Dataset
    from spectral.io import envi as spectral_envi

    cube = np.asarray(spectral_envi.open(str(out / f"{stem}.hdr"), str(out / f"{stem}.img"))
                      .load(), np.float32)
    envi_prob = cube[:, :, 1]
    with Dataset(out / f"{stem}.nc") as ds:
        ds.set_auto_mask(False)
        var = ds["cloud_probability"]
        nc_prob = np.array(var[:])
        nc_fill = var.getncattr("_FillValue")
    assert envi_prob.shape == nc_prob.shape == reference.shape
    assert np.array_equal(envi_prob == NODATA, ref_no_value)
    assert np.array_equal(nc_prob == nc_fill, ref_no_value)
    valid = ~ref_no_value
    assert np.abs(envi_prob[valid] - reference[valid]).max() <= 1e-4
    assert np.abs(nc_prob[valid] - reference[valid]).max() <= 1e-4


def test_bfloat16_through_the_pge_records_its_implementation(tmp_path, spec, reference_dir):
    """`precision: bfloat16` runs the kernel build the calibration chose for it (a 16-bit one, or
    a float32 one where faster; the torch path only where no kernel runs), says which in the
    provenance record, and stays within the bfloat16 bound of the published float32 result
    (ATBD section 9)."""
    from l2b_mask.kernels import calibrate, selection

    files = {"radiance": reference_dir / "public_s7_rdn.img",
             "observation": reference_dir / "public_s7_obs.img"}
    write_config(tmp_path / "rc.json", config(files, tmp_path, spec, processing={"precision": "bfloat16"}))
    result = run_pge(["rc.json"], tmp_path)
    assert result.code == 0, str(result)
    assert result.stderr == ""
    stem = tmp_path / "out" / "public_s7_rdn_l2b_mask"
    processing = json.loads(Path(f"{stem}_provenance.json").read_text())["processing"]
    assert processing["precision"] == "bfloat16"
    chosen = calibrate.choose("bfloat16") if selection.available("bfloat16") else None
    expected = f"cpu kernel, {chosen} build" if chosen else "torch (cpu)"
    assert processing["implementation"].startswith(expected)

    from spectral.io import envi as spectral_envi

    prob = np.asarray(spectral_envi.open(f"{stem}.hdr", f"{stem}.img").load(), np.float32)[:, :, 1]
    reference = np.load(reference_dir / "reference_prob_fp32.npy")
    valid = ~np.isnan(reference)
    assert np.array_equal(prob == NODATA, ~valid)
    assert np.abs(prob[valid] - reference[valid]).max() <= 0.05
    assert ((prob[valid] > spec.threshold) != (reference[valid] > spec.threshold)).sum() <= 2


# ---------------------------------------------------------------------------------------------
# Every exit code on a case that triggers it: all cases run at once, each test reads its result


@dataclass
class Case:
    code: int
    args: list[str]
    cwd: Path
    out: Path
    names: list[str]  # what the stderr line must mention
    # (signal, stdout-line trigger, delay in s): sent `delay` after the first matching line
    signal_when: tuple[signal.Signals, Callable[[str], bool], float] | None = None


def _step_started(step: str) -> Callable[[str], bool]:
    def trigger(line: str) -> bool:
        try:
            event = json.loads(line)
        except ValueError:
            return False
        return event.get("event") == "step_started" and event.get("step") == step
    return trigger


def _build_cases(root: Path, spec: Any) -> dict[str, Case]:
    shared = generate_acquisition(root / "shared_in", lines=LINES, samples=SAMPLES, seed=SEED)
    cases: dict[str, Case] = {}

    def case_dir(name: str) -> Path:
        d = root / name
        d.mkdir()
        return d

    def own_inputs(d: Path, **kwargs: Any) -> SyntheticAcquisition:
        return generate_acquisition(d / "in", lines=kwargs.pop("lines", LINES),
                                    samples=kwargs.pop("samples", SAMPLES), seed=SEED, **kwargs)

    def add(name: str, code: int, names: list[str], cfg: dict[str, Any] | None = None,
            args: list[str] | None = None, out: str = "out", **kw: Any) -> None:
        d = root / name
        if cfg is not None:
            write_config(d / "rc.json", cfg)
        cases[name] = Case(code, ["rc.json"] if args is None else args, d, d / out, names, **kw)

    # 2: usage
    d = case_dir("usage_no_argument")
    add("usage_no_argument", 2, ["run configuration"], args=[])
    d = case_dir("usage_unknown_option")
    add("usage_unknown_option", 2, ["--bogus"], config(shared, d, spec),
        args=["--bogus", "rc.json"])

    # 3: run configuration
    d = case_dir("runconfig_not_json")
    (d / "rc.json").write_text("this is not JSON {\n")
    add("runconfig_not_json", 3, ["rc.json", "JSON"])
    d = case_dir("runconfig_missing_key")
    cfg = config(shared, d, spec)
    del cfg["input_files"]["observation"]
    add("runconfig_missing_key", 3, ["rc.json", "input_files.observation"], cfg)
    d = case_dir("runconfig_unknown_key")
    add("runconfig_unknown_key", 3, ["rc.json", "output.overwrit"],
        config(shared, d, spec, output={"overwrit": True}))
    d = case_dir("runconfig_threshold_out_of_range")
    add("runconfig_threshold_out_of_range", 3, ["rc.json", "algorithm.threshold"],
        config(shared, d, spec, algorithm={"threshold": 1.5}))
    d = case_dir("runconfig_file_missing")
    add("runconfig_file_missing", 3, ["does_not_exist.json"], args=["does_not_exist.json"])

    # 4: inputs
    d = case_dir("input_radiance_header_missing")
    acq = own_inputs(d)
    acq.radiance.with_suffix(".hdr").unlink()
    add("input_radiance_header_missing", 4, [acq.radiance.with_suffix(".hdr").name],
        config(acq, d, spec))
    d = case_dir("input_radiance_truncated")
    acq = own_inputs(d)
    data = acq.radiance.read_bytes()
    acq.radiance.write_bytes(data[: len(data) // 2])
    add("input_radiance_truncated", 4, [acq.radiance.name], config(acq, d, spec))
    d = case_dir("input_observation_other_size")
    acq = own_inputs(d)
    other = generate_acquisition(d / "other", lines=LINES - 4, samples=SAMPLES, seed=SEED)
    cfg = config(acq, d, spec)
    cfg["input_files"]["observation"] = str(other.observation.relative_to(d))
    add("input_observation_other_size", 4, ["other", other.observation.with_suffix("").name],
        cfg)

    # 5: ancillary
    d = case_dir("ancillary_weights_checksum")
    weights = d / "weights_corrupt.pt"
    blob = bytearray(spec.weights_path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    add("ancillary_weights_checksum", 5, [str(weights)],
        config(shared, d, spec, ancillary_files={"model_weights": weights.name}))
    d = case_dir("ancillary_irradiance_missing")
    add("ancillary_irradiance_missing", 5, [str(d / "no_such_irr.npy")],
        config(shared, d, spec, ancillary_files={"irradiance": "no_such_irr.npy"}))

    # 6: processing
    d = case_dir("processing_device_missing")
    add("processing_device_missing", 6, ["cuda:99"],
        config(shared, d, spec, processing={"device": "cuda:99"}))

    # 7: output
    d = case_dir("output_under_a_file")
    (d / "afile").write_text("a regular file, not a folder\n")
    add("output_under_a_file", 7, [str(d / "afile" / "out")],
        config(shared, d, spec, out="afile/out"), out="afile/out")
    if os.geteuid() != 0:
        d = case_dir("output_not_writable")
        (d / "out").mkdir()
        (d / "out").chmod(0o500)
        add("output_not_writable", 7, [str(d / "out")], config(shared, d, spec))

    # 0: --validate-only on a good configuration checks everything and writes nothing
    d = case_dir("validate_only")
    add("validate_only", 0, [], config(shared, d, spec), args=["--validate-only", "rc.json"])

    # 8: interrupted while computing. Small blocks and batches, so that Python gets control
    # back (and raises) between forward passes, long before the scene is done; the signal
    # comes a moment after the run step starts, once its reader/writer threads are running
    # (a signal inside threading.Thread.start is the known bug that
    # test_interrupt_inside_an_except_exception_block_still_exits_8 pins down).
    for sig in (signal.SIGINT, signal.SIGTERM):
        name = f"interrupted_{sig.name.lower()}"
        d = case_dir(name)
        acq = own_inputs(d, lines=48, samples=48)
        cfg = config(acq, d, spec, processing={"lines_per_block": 2, "batch_size": 32})
        # SIGTERM goes through the PGE's own handler, which names it; SIGINT may surface as
        # Python's KeyboardInterrupt instead.
        names = ["SIGTERM"] if sig == signal.SIGTERM else []
        add(name, 8, names, cfg, signal_when=(sig, _step_started("run"), 0.3))
    return cases


# The failure matrix runs through a "zygote": one Python process imports the PGE (torch,
# GDAL, netCDF: ~3 s of CPU) once and forks a child per case, which sets its working folder
# and stdout/stderr files and calls `pge.cli.main(args)` exactly as the console script does,
# then exits with its return value. Every case is still its own process with real file
# descriptors and a real exit status (signals included), but two dozen cases cost one import
# instead of two dozen, which is what keeps this file fast on two cores.
_ZYGOTE = r"""
import json, os, sys, traceback
import pge.cli, pge.run, netCDF4  # the expensive imports, once, before any fork
jobs = json.loads(sys.stdin.read())
pids = {}
for job in jobs:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            os.chdir(job["cwd"])
            for fd, name in ((1, "stdout"), (2, "stderr")):
                target = os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(target, fd)
                os.close(target)
            code = pge.cli.main(job["args"])
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    pids[pid] = job["name"]
print(json.dumps({name: pid for pid, name in pids.items()}), flush=True)
codes = {}
while pids:
    pid, status = os.waitpid(-1, 0)
    codes[pids.pop(pid)] = os.waitstatus_to_exitcode(status)
print(json.dumps(codes), flush=True)
"""


def run_forked(cases: dict[str, Case], logs: Path, timeout: float = 300) -> dict[str, Result]:
    """Run every case at once as a child of the zygote; signal those that ask for it."""
    logs.mkdir(parents=True, exist_ok=True)
    jobs = [{"name": n, "args": c.args, "cwd": str(c.cwd), "stdout": str(logs / f"{n}.out"),
             "stderr": str(logs / f"{n}.err")} for n, c in cases.items()]
    for job in jobs:  # there from the start, so that the signal trigger can always read them
        Path(job["stdout"]).touch()
        Path(job["stderr"]).touch()
    # One torch thread per child: a dozen children share the cores, and idle OpenMP threads
    # spinning against each other only slow every case down.
    env = {**_env(), "OMP_NUM_THREADS": "1"}
    zygote = subprocess.Popen([sys.executable, "-c", _ZYGOTE], cwd=logs, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    # The zygote and its children form their own process group: one kill stops them all.
    watchdog = threading.Timer(timeout, os.killpg, (zygote.pid, signal.SIGKILL))
    watchdog.start()
    try:
        assert zygote.stdin is not None and zygote.stdout is not None
        assert zygote.stderr is not None
        zygote.stdin.write(json.dumps(jobs))
        zygote.stdin.close()
        first = zygote.stdout.readline()
        assert first, f"zygote died: {zygote.stderr.read()}"
        pids = json.loads(first)
        waiting = {n: c.signal_when for n, c in cases.items() if c.signal_when is not None}
        due: dict[str, float] = {}
        while waiting and watchdog.is_alive():
            now = time.monotonic()
            for name, (sig, trigger, delay) in list(waiting.items()):
                if name not in due:
                    text = (logs / f"{name}.out").read_text()
                    if any(trigger(line) for line in text.splitlines()):
                        due[name] = now + delay
                elif now >= due[name]:
                    os.kill(pids[name], sig)
                    del waiting[name]
            time.sleep(0.01)
        out = zygote.stdout.read()
        err = zygote.stderr.read()
        zygote.wait()
    finally:
        watchdog.cancel()
        if zygote.poll() is None:
            os.killpg(zygote.pid, signal.SIGKILL)
            zygote.wait()
    assert zygote.returncode == 0, (
        f"zygote failed ({zygote.returncode}): {err}\n" + "\n".join(
            f"{n}: {(logs / f'{n}.err').read_text()!r}" for n in cases))
    codes = json.loads(out)
    return {n: Result(codes[n], (logs / f"{n}.out").read_text(), (logs / f"{n}.err").read_text())
            for n in cases}


@pytest.fixture(scope="module")
def batch(tmp_path_factory, spec) -> dict[str, tuple[Case, Result]]:
    """Every exit-code case (and --validate-only), run at the same time; name -> case, result."""
    root = tmp_path_factory.mktemp("e2e_batch").resolve()
    cases = _build_cases(root, spec)
    # Usage errors never import the heavy modules: those run as plain subprocesses, in full.
    plain = {n: c for n, c in cases.items() if c.code == ExitCode.USAGE}
    with ThreadPoolExecutor(max_workers=len(plain)) as pool:
        futures = {n: pool.submit(run_pge, c.args, c.cwd) for n, c in plain.items()}
        forked = run_forked({n: c for n, c in cases.items() if n not in plain}, root / "_logs")
        results = {**{n: f.result() for n, f in futures.items()}, **forked}
    for case in cases.values():  # let the tmp clean-up remove a read-only output folder
        if case.out.exists():
            case.out.chmod(0o755)
    return {n: (cases[n], results[n]) for n in cases}


def _check_failure(batch: dict[str, tuple[Case, Result]], name: str) -> tuple[Result, str]:
    case, result = batch[name]
    line = assert_one_stderr_line(result, case.code)
    for needle in case.names:
        assert needle in line, f"{needle!r} not named in {line!r}"
    assert_failure_summary(result, case.code, line)
    assert_no_products(case.out)
    return result, line


@pytest.mark.parametrize("name", ["usage_no_argument", "usage_unknown_option"])
def test_exit_2_usage(batch, name):
    _check_failure(batch, name)


@pytest.mark.parametrize("name", ["runconfig_not_json", "runconfig_missing_key",
                                  "runconfig_unknown_key", "runconfig_threshold_out_of_range",
                                  "runconfig_file_missing"])
def test_exit_3_run_configuration(batch, name):
    _check_failure(batch, name)


@pytest.mark.parametrize("name", ["input_radiance_header_missing", "input_radiance_truncated",
                                  "input_observation_other_size"])
def test_exit_4_input(batch, name):
    _check_failure(batch, name)


@pytest.mark.parametrize("name", ["ancillary_weights_checksum", "ancillary_irradiance_missing"])
def test_exit_5_ancillary(batch, name):
    _check_failure(batch, name)


def test_exit_6_device_missing(batch):
    torch = pytest.importorskip("torch")
    if torch.cuda.device_count() > 99:
        pytest.skip("this machine really has a cuda:99")
    _check_failure(batch, "processing_device_missing")


def test_exit_7_output_folder_under_a_regular_file(batch):
    _check_failure(batch, "output_under_a_file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_exit_7_output_folder_not_writable(batch):
    _check_failure(batch, "output_not_writable")


@pytest.mark.skipif(signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
                    reason="SIGINT is ignored in this process tree (background job)")
def test_exit_8_sigint_removes_scratch(batch):
    _check_failure(batch, "interrupted_sigint")


def test_exit_8_sigterm_removes_scratch(batch):
    _check_failure(batch, "interrupted_sigterm")


def test_exit_1_unexpected_error_in_process(tmp_path, spec, monkeypatch, capsys, restore_logging):
    from l2b_mask.algorithm import inference

    acq = generate_acquisition(tmp_path / "in", lines=LINES, samples=SAMPLES, seed=SEED)
    rc = write_config(tmp_path / "rc.json", config(acq, tmp_path, spec))

    def boom(self, *args, **kwargs):
        return 1 / 0

    monkeypatch.setattr(inference.SceneInference, "blocks", boom)
    code = pge.cli.main([str(rc)])
    captured = capsys.readouterr()
    assert code == ExitCode.UNEXPECTED == 1
    assert captured.err.count("\n") == 1 and captured.err.endswith("\n"), captured.err
    line = captured.err.rstrip("\n")
    assert line.startswith("unexpected error: ZeroDivisionError")
    summary = json.loads(captured.out.splitlines()[-1])
    assert summary == {"status": "failure", "exit_code": 1, "error": line}
    assert_no_products(tmp_path / "out")


def test_interrupt_inside_an_except_exception_block_still_exits_8(
        tmp_path, spec, monkeypatch, capsys, restore_logging):
    import dataclasses

    from l2b_mask.products import table
    from pge import outputs
    from pge.errors import InterruptedRun

    acq = generate_acquisition(tmp_path / "in", lines=8, samples=8, seed=SEED)
    rc = write_config(tmp_path / "rc.json", config(acq, tmp_path, spec))

    def read_interrupted(path, table):  # what the handler does when SIGTERM lands during the read
        raise InterruptedRun(signal.SIGTERM)

    # the ENVI read-back, inside its `except Exception` that makes unreadable an output failure
    rows = tuple(dataclasses.replace(row, check=table._read_back(read_interrupted, "envi_data"))
                 if row.key == "envi" else row for row in outputs.DATA_PRODUCTS)
    assert rows != outputs.DATA_PRODUCTS
    monkeypatch.setattr(outputs, "DATA_PRODUCTS", rows)
    code = pge.cli.main([str(rc)])
    err = capsys.readouterr().err
    assert_no_products(tmp_path / "out")
    assert code == ExitCode.INTERRUPTED, err


def test_in_process_log_events_follow_stdout(tmp_path, spec, capsys, restore_logging):
    """An in-process caller that redirects stdout gets the log events there too, also after
    load_config has reconfigured logging at the configured level."""
    acq = generate_acquisition(tmp_path / "in", lines=8, samples=8, seed=SEED)
    rc = write_config(tmp_path / "rc.json", config(
        acq, tmp_path, spec, ancillary_files={"irradiance": "no_such_irr.npy"}))
    code = pge.cli.main([str(rc)])
    out = capsys.readouterr().out.splitlines()
    assert code == ExitCode.ANCILLARY
    events = [json.loads(line)["event"] for line in out[:-1]]
    assert "run_configuration" in events and "run_failed" in events, events


# ---------------------------------------------------------------------------------------------
# Other entry points


@pytest.fixture(scope="module")
def side_runs(tmp_path_factory) -> dict[str, Result]:
    """--print-schema, --version and --help (none of them imports the PGE's heavy modules)."""
    root = tmp_path_factory.mktemp("e2e_side")
    args = {"schema": ["--print-schema"], "version": ["--version"], "help": ["--help"]}
    with ThreadPoolExecutor(max_workers=len(args)) as pool:
        futures = {k: pool.submit(run_pge, a, root) for k, a in args.items()}
        return {k: f.result() for k, f in futures.items()}


def test_print_schema_equals_the_committed_schema(side_runs):
    result = side_runs["schema"]
    assert result.code == 0 and result.stderr == "", str(result)
    committed = (PROJECT / "run_configs" / "schema.json").read_text()
    assert json.loads(result.stdout) == json.loads(committed)
    assert result.stdout.strip() == committed.strip()


def test_version_prints_the_package_version(side_runs):
    result = side_runs["version"]
    assert result.code == 0 and result.stderr == "", str(result)
    assert result.stdout.strip() == importlib.metadata.version("l2b-mask-pge")


def test_validate_only_passes_and_writes_nothing(batch):
    case, result = batch["validate_only"]
    assert result.code == 0 and result.stderr == "", str(result)
    assert result.summary == {"status": "valid", "exit_code": 0}
    events = [e["event"] for e in result.events]
    assert "inputs_valid" in events and "ancillary_valid" in events
    assert "validation_passed" in events
    assert "step_started" in events and not any(
        e.get("step") == "run" for e in result.events)
    assert_no_products(case.out)


def test_help_exits_0_silently(side_runs):
    result = side_runs["help"]
    assert result.code == 0, str(result)
    assert result.stderr == ""
    assert result.stdout.startswith("usage: l2b-mask-pge")
    assert "exit codes" in result.stdout
