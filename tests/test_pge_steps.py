"""The PGE lifecycle one step at a time, in-process: what each step fills in, leaves on disk and
refuses. The end-to-end behaviour through the console script is in test_pge_e2e.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from l2b_mask.bands import kept_bands
from l2b_mask.errors import InputProductError
from pge.sds.files import product_files
from l2b_mask.synthetic import SyntheticAcquisition, emit_wavelengths, generate_acquisition
from pge import lifecycle
from pge.errors import ExitCode, OutputProductError, RunConfigError, exit_code_for
from pge.lifecycle import PgeRun
from pge.runconfig import RunConfig

# in-process runs reconfigure structlog and the root logger: conftest puts them back
pytestmark = pytest.mark.usefixtures("restore_logging")

LINES, SAMPLES = 16, 16
SEED = 5
STEM = "emit20240302t005829_o06201_s000_l2b_mask_b0106_v01"
PREPROCESS_STEPS = ("load_config", "prepare_output", "validate_inputs", "validate_ancillary")
PUBLISH_ORDER = ("envi_data", "envi_header", "netcdf", "browse", "metadata", "ummg", "provenance",
                 "log")


@pytest.fixture
def runs():
    """Every run a test makes is cleaned up afterwards (scratch, log file, locks), pass or fail."""
    made: list[PgeRun] = []
    yield made
    for run in made:
        lifecycle.cleanup(run)


@pytest.fixture
def acq(tmp_path) -> SyntheticAcquisition:
    return generate_acquisition(tmp_path / "in", lines=LINES, samples=SAMPLES, seed=SEED)


@pytest.fixture
def make_run(tmp_path, spec, acq, runs):
    """A PgeRun on the test's acquisition; `sections` are merged over the run configuration."""

    def make(name: str = "rc.json", text_transform=None, **sections: dict[str, Any]) -> PgeRun:
        cfg: dict[str, Any] = {
            "input_files": {k: str(getattr(acq, k).relative_to(tmp_path))
                            for k in ("radiance", "observation", "location", "glt")},
            "ancillary_files": {"model_weights": str(spec.weights_path),
                                "irradiance": str(spec.irradiance_path)},
            "output": {"directory": "out"},
            "processing": {"device": "cpu"},
        }
        for section, values in sections.items():
            cfg.setdefault(section, {}).update(values)
        text = json.dumps(cfg, indent=2) + "\n"
        path = tmp_path / name
        if text_transform is not None:
            path.write_bytes(text_transform(text))
        else:
            path.write_text(text)
        run = PgeRun(runconfig_path=path, run_command="test")
        runs.append(run)
        return run

    return make


def _staged_run(run: PgeRun) -> PgeRun:
    """Pre-process, infer and write the products into scratch."""
    lifecycle.preprocess(run)
    lifecycle.infer(run)
    lifecycle.write_products(run)
    return run


def _finish(run: PgeRun) -> None:
    """The post-process steps after write_products, up to and including publish."""
    lifecycle.validate_products(run)
    lifecycle.write_metadata(run)
    lifecycle.write_granule_metadata(run)
    lifecycle.write_provenance(run)
    lifecycle.publish(run)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------------------------------------
# Pre-process


def test_load_config_reads_and_resolves_without_touching_disk(make_run, tmp_path, acq):
    run = make_run()
    lifecycle.load_config(run)
    cfg = run.config
    assert isinstance(cfg, RunConfig)
    assert cfg.input_files.radiance == tmp_path / "in" / acq.radiance.name
    assert cfg.input_files.radiance.is_absolute()
    assert cfg.output.directory == tmp_path / "out"
    assert cfg.output.overwrite is False
    assert run.config_bytes == (tmp_path / "rc.json").read_bytes()
    # Nothing is created by reading the configuration.
    assert not (tmp_path / "out").exists()
    assert run.stem == "" and run.scratch is None and run.staged is None


def test_load_config_refuses_an_invalid_configuration(make_run):
    run = make_run(algorithm={"threshold": 1.5})
    with pytest.raises(RunConfigError) as err:
        lifecycle.load_config(run)
    assert err.value.exit_code == ExitCode.RUNCONFIG
    assert "algorithm.threshold" in str(err.value) and "rc.json" in str(err.value)
    assert run.config is None


def test_prepare_output_makes_folder_hidden_scratch_and_log(make_run, tmp_path):
    run = make_run()
    lifecycle.load_config(run)
    lifecycle.prepare_output(run)
    out = tmp_path / "out"
    assert out.is_dir()
    assert run.stem == STEM
    assert run.final == product_files(STEM, out)
    scratch = run.scratch
    assert scratch is not None and scratch.is_dir()
    assert scratch.parent == out
    assert scratch.name.startswith(f".{STEM}.") and scratch.name.endswith(".scratch")
    assert run.staged == product_files(STEM, scratch)
    # The log is open in scratch from here on, starting with the run configuration event.
    first = json.loads(run.staged.log.read_text().splitlines()[0])
    assert first["event"] == "run_configuration" and first["product"] == STEM
    assert not any(p.exists() for p in run.final.all())

    lifecycle.cleanup(run)
    assert not scratch.exists()
    assert _entries(out) == []  # nothing left behind, hidden or not
    lifecycle.cleanup(run)  # a second clean-up is harmless


def test_prepare_output_refuses_an_existing_product(make_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    existing = out / f"{STEM}.nc"
    existing.write_bytes(b"an older product")
    run = make_run()
    lifecycle.load_config(run)
    with pytest.raises(OutputProductError) as err:
        lifecycle.prepare_output(run)
    assert err.value.exit_code == ExitCode.OUTPUT
    assert err.value.path == existing
    assert "overwrite" in str(err.value)
    assert run.scratch is None
    lifecycle.cleanup(run)
    assert _entries(out) == [existing.name]
    assert existing.read_bytes() == b"an older product"


def test_prepare_output_uses_a_configured_scratch_directory(make_run, tmp_path):
    elsewhere = tmp_path / "fast_disk" / "scratch"
    run = make_run(output={"scratch_directory": "fast_disk/scratch"})
    lifecycle.load_config(run)
    lifecycle.prepare_output(run)
    assert run.scratch is not None and run.scratch.parent == elsewhere
    assert run.scratch.name.startswith(f".{STEM}.")
    assert run.staged == product_files(STEM, run.scratch)
    assert run.final == product_files(STEM, tmp_path / "out")
    assert not any(p.name.endswith(".scratch") for p in (tmp_path / "out").iterdir())
    lifecycle.cleanup(run)
    assert not run.scratch.exists()


def test_validate_inputs_opens_the_scene(make_run):
    run = make_run()
    lifecycle.load_config(run)
    lifecycle.prepare_output(run)
    lifecycle.validate_inputs(run)
    scene = run.scene
    assert scene is not None
    assert (scene.lines, scene.samples) == (LINES, SAMPLES)
    assert scene.radiance_header.bands == 285
    assert scene.observation_header.bands == 11


def test_validate_inputs_refuses_a_location_of_another_size(make_run, tmp_path):
    other = generate_acquisition(tmp_path / "other", lines=LINES - 2, samples=SAMPLES, seed=SEED)
    run = make_run(input_files={"location": str(other.location.relative_to(tmp_path))})
    lifecycle.load_config(run)
    lifecycle.prepare_output(run)
    with pytest.raises(InputProductError) as err:
        lifecycle.validate_inputs(run)
    assert exit_code_for(err.value) == ExitCode.INPUT
    assert err.value.path == other.location.with_suffix(".hdr")


def test_validate_ancillary_takes_the_threshold_from_the_spec(make_run, spec):
    run = make_run()
    lifecycle.preprocess(run)
    assert run.spec is not None and run.spec.version == spec.version
    assert run.spec.path == spec.path
    assert run.threshold == spec.threshold
    inference = run.inference
    assert inference is not None
    assert inference.cloud_model.device.type == "cpu"
    assert inference.cloud_model.precision == "float32"
    wl, _ = emit_wavelengths()
    assert inference.bands.size == kept_bands(wl, spec.drop_ranges_nm).size == 268
    assert 0.98 < inference.earth_sun_au < 1.02
    assert set(run.timings_s) == set(PREPROCESS_STEPS)
    assert all(t >= 0 for t in run.timings_s.values())


def test_validate_ancillary_takes_the_threshold_from_the_config(make_run, spec):
    run = make_run(algorithm={"threshold": 0.3, "comparison": ">="})
    lifecycle.preprocess(run)
    assert run.threshold == 0.3 != spec.threshold
    assert run.config.algorithm.comparison == ">="


# ---------------------------------------------------------------------------------------------
# Run and post-process


def test_write_products_then_validate_products_accepts_them(make_run):
    run = _staged_run(make_run())
    assert run.probability is not None and run.probability.shape == (LINES, SAMPLES)
    valid = ~np.isnan(run.probability)
    assert valid.any() and not valid.all()
    assert np.array_equal(run.flag[~valid], np.full((~valid).sum(), 255, np.uint8))
    assert np.array_equal(run.flag[valid] == 1, run.probability[valid] > run.threshold)
    assert run.staged.envi_data.is_file() and run.staged.envi_header.is_file()
    assert run.staged.netcdf.is_file()
    assert not any(p.exists() for p in run.final.all())  # nothing published yet
    lifecycle.validate_products(run)


def _valid_pixel(run: PgeRun) -> tuple[int, int]:
    line, sample = np.argwhere(~np.isnan(run.probability))[0]
    return int(line), int(sample)


def _flip_envi_byte(run: PgeRun, band: int, byte: int) -> None:
    """XOR one byte of the float32 value of `band` at the first valid pixel (BIL layout)."""
    line, sample = _valid_pixel(run)
    offset = ((line * 2 + band) * SAMPLES + sample) * 4 + byte
    data = bytearray(run.staged.envi_data.read_bytes())
    data[offset] ^= 0x01
    run.staged.envi_data.write_bytes(bytes(data))


def test_validate_products_detects_a_changed_probability_in_the_envi_product(make_run):
    run = _staged_run(make_run())
    _flip_envi_byte(run, band=1, byte=0)  # least significant byte of the probability
    with pytest.raises(OutputProductError) as err:
        lifecycle.validate_products(run)
    assert err.value.exit_code == ExitCode.OUTPUT
    assert err.value.path == run.staged.envi_data
    assert str(run.staged.envi_data) in str(err.value)


def test_validate_products_detects_a_changed_flag_in_the_envi_product(make_run):
    run = _staged_run(make_run())
    _flip_envi_byte(run, band=0, byte=0)  # 1.0 -> 1.0000001, 0.0 -> 1.4e-45
    with pytest.raises(OutputProductError) as err:
        lifecycle.validate_products(run)
    assert err.value.path == run.staged.envi_data


def test_validate_products_detects_a_changed_netcdf_product(make_run):
    from netCDF4 import Dataset

    run = _staged_run(make_run())
    line, sample = _valid_pixel(run)
    with Dataset(run.staged.netcdf, "a") as ds:
        var = ds["cloud_probability"]
        var.set_auto_maskandscale(False)
        var[line, sample] = np.float32(1.0) - var[line, sample]
    with pytest.raises(OutputProductError) as err:
        lifecycle.validate_products(run)
    assert err.value.path == run.staged.netcdf


def test_publish_moves_every_product_into_place(make_run, tmp_path):
    run = _staged_run(make_run())
    _finish(run)
    out = tmp_path / "out"
    final = run.final.as_dict()
    assert run.published == [final[k] for k in PUBLISH_ORDER]
    for path in run.published:
        assert path.is_file() and path.parent == out
    # Nothing staged is left in scratch: every file was moved, not copied.
    staged_names = {p.name for p in run.staged.all()}
    assert not [p for p in run.scratch.rglob("*") if p.name in staged_names]
    scratch = run.scratch
    lifecycle.cleanup(run)
    assert not scratch.exists()
    assert _entries(out) == sorted(p.name for p in run.published)
    # The products read back and agree with their provenance where they now live.
    record = json.loads(run.final.provenance.read_text())
    for key in ("envi_data", "envi_header", "netcdf", "metadata"):
        assert record["outputs"][key]["path"] == str(final[key].resolve())
        assert record["outputs"][key]["sha256"] == _sha256(final[key])


def test_publish_from_a_scratch_directory_elsewhere(make_run, tmp_path):
    run = _staged_run(make_run(output={"scratch_directory": "fast_disk/scratch"}))
    assert run.scratch.parent == tmp_path / "fast_disk" / "scratch"
    _finish(run)
    scratch = run.scratch
    lifecycle.cleanup(run)
    assert not scratch.exists()
    out = tmp_path / "out"
    assert _entries(out) == sorted(run.final.as_dict()[k].name for k in PUBLISH_ORDER)
    record = json.loads(run.final.provenance.read_text())
    for key in ("envi_data", "envi_header", "netcdf", "metadata"):
        assert record["outputs"][key]["path"] == str(run.final.as_dict()[key].resolve())
        assert record["outputs"][key]["sha256"] == _sha256(run.final.as_dict()[key])
    assert record["outputs"]["log"]["path"] == str(run.final.log.resolve())


def test_envi_only_publishes_no_netcdf(make_run, tmp_path):
    run = _staged_run(make_run(output={"write_netcdf": False}))
    assert not run.staged.netcdf.exists()
    _finish(run)
    lifecycle.cleanup(run)
    out = tmp_path / "out"
    assert _entries(out) == sorted(run.final.as_dict()[k].name for k in PUBLISH_ORDER
                                   if k != "netcdf")
    record = json.loads(run.final.provenance.read_text())
    assert "netcdf" not in record["outputs"]
    meta = json.loads(run.final.metadata.read_text())
    assert "netcdf" not in meta["files"]


def test_cleanup_before_anything_is_harmless(tmp_path):
    run = PgeRun(runconfig_path=tmp_path / "rc.json", run_command="test")
    lifecycle.cleanup(run)
    assert list(tmp_path.iterdir()) == []


def test_provenance_hashes_the_run_configuration_file_as_it_is(make_run, tmp_path):
    run = make_run(text_transform=lambda text: text.replace("\n", "\r\n").encode())
    lifecycle.execute(run)
    record = json.loads(run.final.provenance.read_text())["run_configuration"]
    raw = (tmp_path / "rc.json").read_bytes()
    assert record["sha256"] == hashlib.sha256(raw).hexdigest()
    assert record["text"].encode() == raw
