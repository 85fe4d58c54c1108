"""LP DAAC granules through every entry point: the PGE, the scientists' command, the library and
the campaign give the products the same acquisition's ENVI files give, under the DAAC's names;
every malformed granule stops the PGE with exit 4 and one stderr line naming the file.

One synthetic acquisition is written both ways with the granule's float32 wavelengths/FWHM in
the ENVI header and a float32 observation, so the two paths must agree bit for bit; the PGE
runs once per format (two subprocesses at once) and every assertion reads those runs.
"""

from __future__ import annotations

import io
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import small_granule
from netCDF4 import Dataset
from test_pge_e2e import BUILD_VERSION, config, run_pge, sha256, write_config

import pge.cli
from campaign import inventory
from campaign.engine import Settings, run_campaign
from l2b_mask import cli as science_cli
from l2b_mask.algorithm.inference import InferenceSettings, cloud_probability
from l2b_mask.inputs.daac_names import parse_daac_name
from l2b_mask.products.table import DATA_PRODUCTS
from l2b_mask.synthetic.daac import write_daac_granules, write_float32_spectral_header
from l2b_mask.synthetic.scene import generate_acquisition
from pge.errors import ExitCode

LINES, SAMPLES = 24, 24
SEED = 11
DAAC_SCENE = 3
START = datetime(2024, 3, 2, 0, 58, 29, tzinfo=UTC)
ENVI_STEM = "emit20240302t005829_o06201_s000_l2b_mask_b0106_v01"
DAAC_STEM = "EMIT_L2B_MASK_001_20240302T005829_2406201_003"
FLIGHT_LINE = "emit20240302t005829_o06201_s000"
# ENVI header keys that name the run rather than the data (paths, time of the run)
RUN_KEYS = {"emit pge input files", "emit pge run command", "emit data product creation time"}


def _both(folder: Path, *, exact: bool = True, lines: int = LINES, seed: int = SEED,
          start: datetime = START, daac_scene: int = DAAC_SCENE):
    """A synthetic acquisition as ENVI rasters and as granules; `exact`: the ENVI header holds
    the granule's float32 wavelengths/FWHM and the observation is float32."""
    acq = generate_acquisition(folder, lines=lines, samples=SAMPLES, seed=seed, start_time=start,
                               obs_dtype=np.float32 if exact else np.float64)
    if exact:
        write_float32_spectral_header(acq.radiance)
    return acq, write_daac_granules(acq, daac_scene=daac_scene, chunk_lines=8)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, spec) -> dict[str, Any]:
    """The PGE on the ENVI files (location and GLT files given) and on the two granules alone
    (the radiance granule is the location and GLT), ortho on, both at once."""
    base = tmp_path_factory.mktemp("daac_pge").resolve()
    acq, granules = _both(base / "in")
    configs = {
        "envi": config(acq, base, spec, out="out_envi", output={"write_ortho": True}),
        "daac": config({"radiance": granules.radiance, "observation": granules.observation},
                       base, spec, out="out_daac", output={"write_ortho": True}),
    }
    for name, cfg in configs.items():
        write_config(base / f"{name}.json", cfg)
    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(configs, pool.map(lambda n: run_pge([f"{n}.json"], base), configs),
                           strict=True))
    for result in results.values():
        assert result.code == 0, str(result)
    return {"base": base, "acq": acq, "granules": granules, "results": results,
            "envi": base / "out_envi", "daac": base / "out_daac"}


def _data_files() -> list[str]:
    """Every data file suffix of the product table (so bands added there are compared too)."""
    return [suffix for row in DATA_PRODUCTS for _, suffix in row.files]


def _arrays(path: Path) -> dict[str, np.ndarray]:
    """Every data array a product file holds, keyed by where it is."""
    if path.suffix == ".nc":
        out: dict[str, np.ndarray] = {}

        def walk(group: Any, prefix: str) -> None:
            for name, var in group.variables.items():
                var.set_auto_maskandscale(False)
                out[prefix + name] = np.asarray(var[:])
            for name, sub in group.groups.items():
                walk(sub, f"{prefix}{name}/")

        with Dataset(path) as ds:
            walk(ds, "")
        return out
    if path.suffix == ".hdr":
        from l2b_mask.inputs.envi import read_header

        meta = read_header(path.with_suffix(".img")).meta
        return {k: np.asarray(str(v)) for k, v in meta.items() if k not in RUN_KEYS}
    if path.suffix in (".tif", ".png"):
        from osgeo import gdal

        ds = gdal.Open(str(path))
        return {"bands": ds.ReadAsArray(), "geotransform": np.asarray(ds.GetGeoTransform())}
    return {"bytes": np.frombuffer(path.read_bytes(), np.uint8)}


def _assert_same_arrays(want: Path, got: Path) -> None:
    a, b = _arrays(want), _arrays(got)
    assert a.keys() == b.keys(), (want.name, sorted(a.keys() ^ b.keys()))
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, (got.name, key)
        assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), (got.name, key)


# ---------------------------------------------------------------------------------------------
# The PGE on granules: the same product, named by the DAAC


def test_daac_product_is_the_envi_product_bit_for_bit(runs):
    suffixes = _data_files()
    assert {".img", ".nc", ".png", "_ortho.tif"} <= set(suffixes)
    for suffix in suffixes:
        _assert_same_arrays(runs["envi"] / f"{ENVI_STEM}{suffix}", runs["daac"] / f"{DAAC_STEM}{suffix}")


def test_daac_product_names_have_the_envi_suffixes(runs):
    envi = sorted(p.name.removeprefix(ENVI_STEM) for p in runs["envi"].iterdir())
    daac = sorted(p.name.removeprefix(DAAC_STEM) for p in runs["daac"].iterdir())
    assert envi == daac and len(daac) >= 10
    assert all(p.name.startswith(DAAC_STEM) for p in runs["daac"].iterdir())
    assert runs["results"]["daac"].summary["products"]["netcdf"].endswith(f"{DAAC_STEM}.nc")


def test_granule_record_uses_the_daac_scene_counter(runs):
    ummg = json.loads((runs["daac"] / f"{DAAC_STEM}.cmr.json").read_text())
    envi = json.loads((runs["envi"] / f"{ENVI_STEM}.cmr.json").read_text())
    assert ummg["GranuleUR"] == DAAC_STEM
    attrs = {a["Name"]: a["Values"] for a in ummg["AdditionalAttributes"]}
    assert attrs["SCENE"] == [str(DAAC_SCENE)] and attrs["ORBIT"] == ["2406201"]
    assert attrs["ORBIT_SEGMENT"] == ["0"]  # the flight line's segment, not the DAAC counter
    assert ummg["TemporalExtent"] == envi["TemporalExtent"]
    assert ummg["TemporalExtent"]["RangeDateTime"]["BeginningDateTime"] == "2024-03-02T00:58:29.000Z"
    assert ummg["SpatialExtent"] == envi["SpatialExtent"]  # the granule's GLT and location


def test_provenance_records_the_granules_and_their_sha256(runs):
    record = json.loads((runs["daac"] / f"{DAAC_STEM}_provenance.json").read_text())
    granules = runs["granules"]
    assert set(record["inputs"]) == {"radiance_granule", "observation_granule"}
    for key, path in (("radiance_granule", granules.radiance),
                      ("observation_granule", granules.observation)):
        assert Path(record["inputs"][key]["path"]).name == path.name
        assert record["inputs"][key]["sha256"] == sha256(path)


def test_netcdf_and_header_take_time_and_flight_line_from_the_granule(runs):
    with Dataset(runs["daac"] / f"{DAAC_STEM}.nc") as d, Dataset(runs["envi"] / f"{ENVI_STEM}.nc") as e:
        assert d.flight_line == e.flight_line == FLIGHT_LINE
        for name in ("time_coverage_start", "time_coverage_end"):
            assert d.getncattr(name) == e.getncattr(name)
        assert d.time_coverage_start == "2024-03-02T00:58:29Z"
    meta = json.loads((runs["daac"] / f"{DAAC_STEM}_metadata.json").read_text())
    assert meta["product"] == DAAC_STEM and meta["acquisition_id"] == "emit20240302t005829"


# ---------------------------------------------------------------------------------------------
# The scientists' command, the library, the campaign


def test_scientists_command_on_granules_equals_envi(runs, tmp_path, capsys):
    acq, granules = runs["acq"], runs["granules"]
    outputs = {}
    for name, (rdn, obs) in {"envi": (acq.radiance, acq.observation),
                             "daac": (granules.radiance, granules.observation)}.items():
        out = tmp_path / f"{name}.tif"
        assert science_cli.main([str(rdn), str(obs), str(out), "--proba", "--device", "cpu"]) == 0
        outputs[name] = out
    for suffix in ("", "_prob"):
        _assert_same_arrays(outputs["envi"].with_name(f"envi{suffix}.tif"),
                            outputs["daac"].with_name(f"daac{suffix}.tif"))


def test_library_with_text_header_and_float64_obs_is_within_1e_5(tmp_path):
    """The SDS header writes wavelengths as text and the observation as float64; the granule
    stores float32: the irradiance convolution and the zenith differ in the last bits only."""
    acq, granules = _both(tmp_path, exact=False, lines=12)
    settings = InferenceSettings(device="cpu")
    envi = cloud_probability(acq.radiance, acq.observation, settings=settings)
    daac = cloud_probability(granules.radiance, granules.observation, settings=settings)
    assert np.array_equal(np.isnan(envi), np.isnan(daac)) and np.isfinite(envi).any()
    assert float(np.nanmax(np.abs(envi - daac))) <= 1e-5


def test_campaign_pairs_granules_and_makes_the_same_product(runs, spec, tmp_path):
    tree = tmp_path / "granules"
    tree.mkdir()
    for path in (runs["granules"].radiance, runs["granules"].observation):
        shutil.copy(path, tree / path.name)
    _, lonely = _both(tmp_path / "other", lines=8, start=START + timedelta(minutes=5))
    shutil.copy(lonely.radiance, tree / lonely.radiance.name)  # a RAD without its OBS
    found = {a.radiance.name: a for a in inventory.scan_tree(tree)}
    pair = found[runs["granules"].radiance.name]
    assert pair.observation == tree / runs["granules"].observation.name and pair.problem is None
    assert (pair.location, pair.glt) == (None, None)
    unpaired = found[lonely.radiance.name]
    assert unpaired.observation is None
    assert f"no observation granule found for this radiance (looked for {lonely.observation.name})" \
        == unpaired.problem
    template = tmp_path / "template.json"
    template.write_text(json.dumps({
        "ancillary_files": {"model_weights": str(spec.weights_path),
                            "irradiance": str(spec.irradiance_path)},
        "output": {"write_ortho": True}, "processing": {"device": "cpu"},
        "pge": {"software_build_version": BUILD_VERSION}}))
    root = tmp_path / "root"
    outcome = run_campaign(Settings(inventory=tree, template=template, output_root=root,
                                    workers=1, threads_per_pge=1, gpus=[], retry_delay_s=0.0,
                                    stdout=io.StringIO()))
    entries = {e.product_stem: e for e in outcome.report.entries.values()}
    assert entries[DAAC_STEM].status == "done", entries[DAAC_STEM]
    assert entries[inventory.Acquisition(radiance=unpaired.radiance, observation=None)
                   .product_stem()].status == "failed"
    made = {p.name.removeprefix(DAAC_STEM): p for p in root.rglob(f"{DAAC_STEM}*")
            if p.is_file()}
    for suffix in _data_files():
        _assert_same_arrays(runs["envi"] / f"{ENVI_STEM}{suffix}", made[suffix])


# ---------------------------------------------------------------------------------------------
# Malformed granules through the PGE: exit 4, one stderr line naming the file


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A valid 3 x 2 RAD/OBS pair (no location group) for the bad-input cases to spoil."""
    folder = tmp_path_factory.mktemp("tiny")
    small_granule(folder / "EMIT_L1B_RAD_001_20240302T005829_2406201_001.nc")
    small_granule(folder / "EMIT_L1B_OBS_001_20240302T005829_2406201_001.nc", "obs")
    return folder


def _bad_cases(tiny: Path, runs: dict[str, Any], folder: Path) -> dict[str, tuple[Path, Path, Path, str]]:
    """name -> (radiance, observation, the file to blame, words of its message)."""
    rad = tiny / "EMIT_L1B_RAD_001_20240302T005829_2406201_001.nc"
    obs = tiny / "EMIT_L1B_OBS_001_20240302T005829_2406201_001.nc"
    bad = folder / "EMIT_L1B_RAD_001_20240302T005829_2406201_001.nc"
    cases: dict[str, tuple[Path, Path, Path, str]] = {}

    def radiance(name: str, words: str, **kwargs: Any) -> None:
        path = folder / name / rad.name
        path.parent.mkdir()
        small_granule(path, **kwargs)
        cases[name] = (path, obs, path, words)

    radiance("bil_dimensions", "'radiance' has dimensions ('downtrack', 'bands', 'crosstrack')",
             dims=("downtrack", "bands", "crosstrack"))
    radiance("no_band_group", "granule has no 'sensor_band_parameters' group", band_vars={})
    wl, fwhm = np.linspace(381.0, 2493.0, 285), np.full(285, 8.5)
    radiance("unsorted_wavelengths", "wavelengths are not finite and strictly increasing",
             band_vars={"wavelengths": wl[::-1], "fwhm": fwhm})
    radiance("wrong_band_count", "radiance has 284 bands, expected 285", bands=284)
    obs_path = folder / "obs_dims" / obs.name
    obs_path.parent.mkdir()
    small_granule(obs_path, "obs", dims=("downtrack", "crosstrack"))
    cases["obs_dimensions"] = (rad, obs_path, obs_path, "'obs' has dimensions")
    granules = runs["granules"]
    cases["other_acquisition"] = (granules.radiance, obs, obs,
                                  f"not the same acquisition as the radiance {granules.radiance.name}")
    shorter = folder / "shorter" / obs.name  # the same names and times, 2 lines instead of 3
    shorter.parent.mkdir()
    with Dataset(shorter, "w") as ds, Dataset(obs) as src:
        ds.setncatts({k: src.getncattr(k) for k in src.ncattrs()})
        for name, size in (("downtrack", 2), ("crosstrack", 2), ("bands", 11)):
            ds.createDimension(name, size)
        ds.createVariable("obs", "f4", ("downtrack", "crosstrack", "bands"))[:] = 1.0
        group = ds.createGroup("sensor_band_parameters")
        names = group.createVariable("observation_bands", str, ("bands",))
        for i, text in enumerate(src["sensor_band_parameters/observation_bands"][:]):
            names[i] = text
    cases["different_size"] = (rad, shorter, shorter,
                               f"observation is 2 lines x 2 samples but the radiance {rad.name} is 3 x 2")
    data = granules.radiance.read_bytes()
    truncated = folder / "truncated" / granules.radiance.name
    truncated.parent.mkdir()
    truncated.write_bytes(data[: len(data) // 2])
    cases["truncated"] = (truncated, granules.observation, truncated,
                          "HDF5 file that netCDF-4 cannot open, truncated or damaged")
    bad.write_text("not a granule\n")
    cases["not_hdf5"] = (bad, obs, bad, "not a netCDF-4/HDF5 file")
    cases["rad_as_obs"] = (rad, rad, rad, "given as the observation but it is an EMIT L1B RAD")
    renamed = folder / "renamed"  # both granules named for orbit 99: not their flight line's
    renamed.mkdir()
    for path in (granules.radiance, granules.observation):
        shutil.copy(path, renamed / path.name.replace("_2406201_", "_2400099_"))
    rad99 = renamed / granules.radiance.name.replace("_2406201_", "_2400099_")
    cases["name_not_flight_line"] = (
        rad99, renamed / granules.observation.name.replace("_2406201_", "_2400099_"), rad99,
        f"the file name's time and orbit (2400099) are not those of its 'flight_line' {FLIGHT_LINE}")
    acq = runs["acq"]
    cases["mixed_formats"] = (acq.radiance, obs, obs, "a netCDF granule given with the ENVI "
                                                      f"raster {acq.radiance.name}")
    return cases


CASES = ["bil_dimensions", "no_band_group", "unsorted_wavelengths", "wrong_band_count",
         "obs_dimensions", "other_acquisition", "different_size", "truncated", "not_hdf5",
         "rad_as_obs", "mixed_formats", "name_not_flight_line"]


@pytest.fixture(scope="module")
def bad(tiny, runs, tmp_path_factory) -> dict[str, tuple[Path, Path, Path, str]]:
    return _bad_cases(tiny, runs, tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", CASES)
def test_bad_granule_stops_the_pge_with_exit_4(case, bad, spec, tmp_path, capsys, restore_logging):
    radiance, observation, blamed, words = bad[case]
    rc = write_config(tmp_path / "rc.json", config({"radiance": radiance,
                                                    "observation": observation},
                                                   tmp_path, spec))
    code = pge.cli.main([str(rc)])
    err = capsys.readouterr().err
    assert code == ExitCode.INPUT == 4, err
    assert err.count("\n") == 1 and err.startswith(f"{ExitCode.INPUT.label}: "), err
    assert str(blamed) in err and words in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_granule_without_its_location_group_is_malformed(tiny, spec, tmp_path, capsys,
                                                           restore_logging):
    """More cases (part of the group, a location file given apart) in test_granule_location."""
    rad = tiny / "EMIT_L1B_RAD_001_20240302T005829_2406201_001.nc"
    obs = tiny / "EMIT_L1B_OBS_001_20240302T005829_2406201_001.nc"
    rc = write_config(tmp_path / "rc.json", config({"radiance": rad, "observation": obs},
                                                   tmp_path, spec, output={"write_ortho": True}))
    assert pge.cli.main([str(rc)]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(rad) in err and "has no 'location' group" in err


def test_product_stem_from_the_daac_name():
    from pge.sds.naming import product_stem

    name = "EMIT_L1B_RAD_001_20220815T042838_2222704_007.nc"
    assert parse_daac_name(name) is not None
    assert product_stem(name, "02") == "EMIT_L2B_MASK_002_20220815T042838_2222704_007"
    assert product_stem("/x/my_radiance.nc") == "my_radiance_l2b_mask"


def test_demo_runs_the_pge_on_daac_granules(tmp_path, capsys, restore_logging):
    from pge import demo

    assert demo.main(["--format", "daac", "--lines", "8", "--samples", "8", "--device", "cpu",
                      "--folder", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "inputs").iterdir()) == [
        "EMIT_L1B_OBS_001_20240302T005829_2406201_001.nc",
        "EMIT_L1B_RAD_001_20240302T005829_2406201_001.nc"]
    stem = "EMIT_L2B_MASK_001_20240302T005829_2406201_001"
    assert (tmp_path / "products" / f"{stem}.nc").is_file()
    assert (tmp_path / "products" / f"{stem}_ortho.tif").is_file()
    assert json.loads((tmp_path / "runconfig.json").read_text())["input_files"].keys() == {
        "radiance", "observation"}
