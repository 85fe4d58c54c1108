"""The PGE run one step at a time, in-process: what each step returns, leaves on disk and
refuses. The end-to-end behaviour through the console script is in test_pge_e2e.py."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from l2b_mask.algorithm.bands import kept_bands
from l2b_mask.errors import InputProductError
from l2b_mask.products.table import ProductContent
from l2b_mask.synthetic.scene import SyntheticAcquisition, emit_wavelengths, generate_acquisition
from pge import logging as pge_logging
from pge import run as pge_run
from pge.ancillary import Model
from pge.errors import ExitCode, OutputProductError, RunConfigError, exit_code_for
from pge.facts import Masks, ProductFacts, product_facts
from pge.inputs import Inputs
from pge.locking import acquire_acquisition_lock
from pge.outputs import (
    Plan,
    RunRecord,
    content,
    plan_outputs,
    validate_products,
    write_granule_metadata,
    write_metadata,
    write_products,
    write_provenance,
    write_stac_item,
)
from pge.publish import Workspace, publish
from pge.runconfig import RunConfig
from pge.sds.files import product_files

# in-process runs reconfigure structlog and the root logger: conftest puts them back
pytestmark = pytest.mark.usefixtures("restore_logging")

LINES, SAMPLES = 16, 16
SEED = 5
STEM = "emit20240302t005829_o06201_s000_l2b_mask_b0106_v01"
PREPROCESS_STEPS = ("load_config", "prepare_output", "validate_inputs", "validate_ancillary")
PUBLISH_ORDER = ("envi_data", "envi_header", "netcdf", "browse", "metadata", "ummg", "stac",
                 "provenance", "log")


def _close(ws: Workspace) -> None:
    """What `pge.run.execute` does whatever happened: close the log, then the workspace."""
    pge_logging.close_file()
    ws.close()


@pytest.fixture
def workspaces():
    """Every workspace a test opens is closed afterwards (scratch, log file, locks), pass or
    fail."""
    made: list[Workspace] = []
    yield made
    for ws in made:
        _close(ws)


@pytest.fixture
def acq(tmp_path) -> SyntheticAcquisition:
    return generate_acquisition(tmp_path / "in", lines=LINES, samples=SAMPLES, seed=SEED)


@pytest.fixture
def make_config(tmp_path, spec, acq):
    """A run configuration file on the test's acquisition; `sections` are merged over it."""

    def make(name: str = "rc.json", text_transform=None, **sections: dict[str, Any]) -> Path:
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
        return path

    return make


@pytest.fixture
def prepared(workspaces):
    """load_config then prepare_output; the workspace is closed after the test."""

    def prepare(path: Path) -> tuple[RunConfig, Workspace]:
        cfg = pge_run.load_config(path).config
        ws = pge_run.prepare_output(cfg, path)
        workspaces.append(ws)
        return cfg, ws

    return prepare


@dataclass(frozen=True)
class Staged:
    """What the steps up to write_products returned: everything the later steps take."""

    runconfig: Path
    raw: bytes
    steps: pge_run.Steps
    cfg: RunConfig
    ws: Workspace
    inputs: Inputs
    model: Model
    masks: Masks
    facts: ProductFacts
    plan: Plan
    product: ProductContent


@pytest.fixture
def staged_run(workspaces):
    """Pre-process, infer and write the products into scratch."""

    def stage(path: Path) -> Staged:
        steps, guard = pge_run.Steps(), pge_run.Guard()
        try:
            loaded, ws, inputs, model = pge_run.preprocess(steps, path, guard)
            cfg, raw = loaded.config, loaded.raw
        finally:
            if guard.workspace is not None:
                workspaces.append(guard.workspace)
        masks = pge_run.infer(cfg, inputs, model)
        facts = product_facts(cfg, ws.stem, "test", inputs, model, masks)
        plan = plan_outputs(cfg, facts)
        product = content(cfg, facts, inputs, masks)
        write_products(plan, product, ws.staged)
        return Staged(path, raw, steps, cfg, ws, inputs, model, masks, facts, plan, product)

    return stage


def _finish(s: Staged) -> list[Path]:
    """The post-process steps after write_products, up to and including publish; the published
    paths."""
    validate_products(s.plan, s.product, s.ws.staged)
    write_metadata(s.plan, s.facts, s.ws.staged)
    write_granule_metadata(s.cfg, s.plan, s.facts, s.inputs, s.masks, s.ws.staged)
    write_stac_item(s.cfg, s.plan, s.facts, s.inputs, s.masks, s.model, s.ws.staged)
    record = RunRecord(s.runconfig, s.raw, s.steps.started, s.steps.timings_s,
                       s.masks.batch_size)
    write_provenance(s.cfg, s.plan, s.facts, s.model, record, s.ws.staged, s.ws.final)
    pge_logging.close_file()  # as postprocess does: the log is published closed
    return publish(s.ws, s.plan.keys)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------------------------------------
# Pre-process


def test_load_config_reads_and_resolves_without_touching_disk(make_config, tmp_path, acq):
    loaded = pge_run.load_config(make_config())
    cfg, raw = loaded.config, loaded.raw
    assert isinstance(cfg, RunConfig)
    assert cfg.input_files.radiance == tmp_path / "in" / acq.radiance.name
    assert cfg.input_files.radiance.is_absolute()
    assert cfg.output.directory == tmp_path / "out"
    assert cfg.output.overwrite is False
    assert raw == (tmp_path / "rc.json").read_bytes()
    # Nothing is created by reading the configuration: no output folder, no scratch, no log.
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.rglob("*.scratch")) and not list(tmp_path.rglob("*.log"))


def test_load_config_refuses_an_invalid_configuration(make_config, tmp_path):
    with pytest.raises(RunConfigError) as err:
        pge_run.load_config(make_config(algorithm={"threshold": 1.5}))
    assert err.value.exit_code == ExitCode.RUNCONFIG
    assert "algorithm.threshold" in str(err.value) and "rc.json" in str(err.value)
    assert not (tmp_path / "out").exists()  # refused before anything is made


def test_prepare_output_makes_folder_hidden_scratch_and_log(make_config, prepared, tmp_path):
    _, ws = prepared(make_config())
    out = tmp_path / "out"
    assert out.is_dir()
    assert ws.stem == STEM
    assert ws.final == product_files(STEM, out)
    scratch = ws.scratch
    assert scratch is not None and scratch.is_dir()
    assert scratch.parent == out
    assert scratch.name.startswith(f".{STEM}.") and scratch.name.endswith(".scratch")
    assert ws.staged == product_files(STEM, scratch)
    # The log is open in scratch from here on, starting with the run configuration event.
    first = json.loads(ws.staged.log.read_text().splitlines()[0])
    assert first["event"] == "run_configuration" and first["product"] == STEM
    assert not any(p.exists() for p in ws.final.all())

    _close(ws)
    assert not scratch.exists()
    assert _entries(out) == []  # nothing left behind, hidden or not
    _close(ws)  # a second clean-up is harmless


def test_prepare_output_refuses_an_existing_product(make_config, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    existing = out / f"{STEM}.nc"
    existing.write_bytes(b"an older product")
    path = make_config()
    cfg = pge_run.load_config(path).config
    with pytest.raises(OutputProductError) as err:
        pge_run.prepare_output(cfg, path)
    assert err.value.exit_code == ExitCode.OUTPUT
    assert err.value.path == existing
    assert "overwrite" in str(err.value)
    # The refusing step returned no workspace to clean up, so it leaves nothing itself: no
    # scratch, no lock file, and the lock released.
    assert _entries(out) == [existing.name]
    assert existing.read_bytes() == b"an older product"
    acquire_acquisition_lock(out, STEM).release()


def test_prepare_output_uses_a_configured_scratch_directory(make_config, prepared, tmp_path):
    elsewhere = tmp_path / "fast_disk" / "scratch"
    _, ws = prepared(make_config(output={"scratch_directory": "fast_disk/scratch"}))
    assert ws.scratch is not None and ws.scratch.parent == elsewhere
    assert ws.scratch.name.startswith(f".{STEM}.")
    assert ws.staged == product_files(STEM, ws.scratch)
    assert ws.final == product_files(STEM, tmp_path / "out")
    assert not any(p.name.endswith(".scratch") for p in (tmp_path / "out").iterdir())
    _close(ws)
    assert not ws.scratch.exists()


def test_validate_inputs_opens_the_scene(make_config, prepared):
    cfg, _ = prepared(make_config())
    scene = pge_run.validate_inputs(cfg).scene
    assert scene is not None
    assert (scene.lines, scene.samples) == (LINES, SAMPLES)
    assert scene.radiance_header.bands == 285
    assert scene.observation_header.bands == 11


def test_validate_inputs_refuses_a_location_of_another_size(make_config, prepared, tmp_path):
    other = generate_acquisition(tmp_path / "other", lines=LINES - 2, samples=SAMPLES, seed=SEED)
    cfg, _ = prepared(make_config(
        input_files={"location": str(other.location.relative_to(tmp_path))}))
    with pytest.raises(InputProductError) as err:
        pge_run.validate_inputs(cfg)
    assert exit_code_for(err.value) == ExitCode.INPUT
    assert err.value.path == other.location.with_suffix(".hdr")
    assert (f"location is {LINES - 2} lines x {SAMPLES} samples but the radiance is {LINES} x "
            f"{SAMPLES}") in str(err.value)


def test_validate_ancillary_takes_the_threshold_from_the_spec(make_config, spec, workspaces):
    steps, guard = pge_run.Steps(), pge_run.Guard()
    _, ws, _, model = pge_run.preprocess(steps, make_config(), guard)
    workspaces.append(ws)
    assert guard.workspace is ws  # the signal handler sees the workspace once it is open
    assert model.spec is not None and model.spec.version == spec.version
    assert model.spec.path == spec.path
    assert model.decision.threshold == spec.threshold
    assert model.decision.comparison == spec.comparison
    inference = model.inference
    assert inference is not None
    assert inference.cloud_model.device.type == "cpu"
    assert inference.cloud_model.precision == "float32"
    wl, _ = emit_wavelengths()
    assert inference.bands.size == kept_bands(wl, spec.drop_ranges_nm).size == 268
    assert 0.98 < inference.earth_sun_au < 1.02
    assert set(steps.timings_s) == set(PREPROCESS_STEPS)
    assert all(t >= 0 for t in steps.timings_s.values())


def test_validate_ancillary_takes_the_threshold_from_the_config(make_config, spec, workspaces):
    guard = pge_run.Guard()
    loaded, ws, _, model = pge_run.preprocess(
        pge_run.Steps(), make_config(algorithm={"threshold": 0.3, "comparison": ">="}), guard)
    cfg = loaded.config
    workspaces.append(ws)
    assert model.decision.threshold == 0.3 != spec.threshold
    assert model.decision.comparison == cfg.algorithm.comparison == ">="
    assert model.decision.source == "run configuration"


# ---------------------------------------------------------------------------------------------
# Run and post-process


def test_write_products_then_validate_products_accepts_them(make_config, staged_run):
    s = staged_run(make_config())
    probability, flag = s.masks.probability, s.masks.flag
    assert probability is not None and probability.shape == (LINES, SAMPLES)
    valid = ~np.isnan(probability)
    assert valid.any() and not valid.all()
    assert np.array_equal(flag[~valid], np.full((~valid).sum(), 255, np.uint8))
    assert np.array_equal(flag[valid] == 1, probability[valid] > s.model.decision.threshold)
    staged = s.ws.staged
    assert staged.envi_data.is_file() and staged.envi_header.is_file()
    assert staged.netcdf.is_file()
    assert not any(p.exists() for p in s.ws.final.all())  # nothing published yet
    assert validate_products(s.plan, s.product, staged) == [
        staged[k].name for k in ("envi_data", "envi_header", "netcdf", "browse")]


def _valid_pixel(s: Staged) -> tuple[int, int]:
    line, sample = np.argwhere(~np.isnan(s.masks.probability))[0]
    return int(line), int(sample)


def _flip_envi_byte(s: Staged, band: int, byte: int) -> None:
    """XOR one byte of the float32 value of `band` at the first valid pixel (BIL layout)."""
    line, sample = _valid_pixel(s)
    offset = ((line * 2 + band) * SAMPLES + sample) * 4 + byte
    data = bytearray(s.ws.staged.envi_data.read_bytes())
    data[offset] ^= 0x01
    s.ws.staged.envi_data.write_bytes(bytes(data))


def test_validate_products_detects_a_changed_probability_in_the_envi_product(make_config,
                                                                             staged_run):
    s = staged_run(make_config())
    _flip_envi_byte(s, band=1, byte=0)  # least significant byte of the probability
    with pytest.raises(OutputProductError) as err:
        validate_products(s.plan, s.product, s.ws.staged)
    assert err.value.exit_code == ExitCode.OUTPUT
    assert err.value.path == s.ws.staged.envi_data
    assert str(s.ws.staged.envi_data) in str(err.value)


def test_validate_products_detects_a_changed_flag_in_the_envi_product(make_config, staged_run):
    s = staged_run(make_config())
    _flip_envi_byte(s, band=0, byte=0)  # 1.0 -> 1.0000001, 0.0 -> 1.4e-45
    with pytest.raises(OutputProductError) as err:
        validate_products(s.plan, s.product, s.ws.staged)
    assert err.value.path == s.ws.staged.envi_data


def test_validate_products_detects_a_changed_netcdf_product(make_config, staged_run):
    from netCDF4 import Dataset

    s = staged_run(make_config())
    line, sample = _valid_pixel(s)
    with Dataset(s.ws.staged.netcdf, "a") as ds:
        var = ds["cloud_probability"]
        var.set_auto_maskandscale(False)
        var[line, sample] = np.float32(1.0) - var[line, sample]
    with pytest.raises(OutputProductError) as err:
        validate_products(s.plan, s.product, s.ws.staged)
    assert err.value.path == s.ws.staged.netcdf


def test_publish_moves_every_product_into_place(make_config, staged_run, tmp_path):
    s = staged_run(make_config())
    ws = s.ws
    published = _finish(s)
    out = tmp_path / "out"
    final = ws.final.as_dict()
    assert published == [final[k] for k in PUBLISH_ORDER]
    for path in published:
        assert path.is_file() and path.parent == out
    # Nothing staged is left in scratch: every file was moved, not copied.
    staged_names = {p.name for p in ws.staged.all()}
    assert not [p for p in ws.scratch.rglob("*") if p.name in staged_names]
    scratch = ws.scratch
    _close(ws)
    assert not scratch.exists()
    assert _entries(out) == sorted(p.name for p in published)
    # The products read back and agree with their provenance where they now live.
    record = json.loads(ws.final.provenance.read_text())
    for key in ("envi_data", "envi_header", "netcdf", "metadata"):
        assert record["outputs"][key]["path"] == str(final[key].resolve())
        assert record["outputs"][key]["sha256"] == _sha256(final[key])


def test_publish_from_a_scratch_directory_elsewhere(make_config, staged_run, tmp_path):
    s = staged_run(make_config(output={"scratch_directory": "fast_disk/scratch"}))
    ws = s.ws
    assert ws.scratch.parent == tmp_path / "fast_disk" / "scratch"
    _finish(s)
    scratch = ws.scratch
    _close(ws)
    assert not scratch.exists()
    out = tmp_path / "out"
    assert _entries(out) == sorted(ws.final.as_dict()[k].name for k in PUBLISH_ORDER)
    record = json.loads(ws.final.provenance.read_text())
    for key in ("envi_data", "envi_header", "netcdf", "metadata"):
        assert record["outputs"][key]["path"] == str(ws.final.as_dict()[key].resolve())
        assert record["outputs"][key]["sha256"] == _sha256(ws.final.as_dict()[key])
    assert record["outputs"]["log"]["path"] == str(ws.final.log.resolve())


def test_envi_only_publishes_no_netcdf(make_config, staged_run, tmp_path):
    s = staged_run(make_config(output={"write_netcdf": False}))
    ws = s.ws
    assert not ws.staged.netcdf.exists()
    _finish(s)
    _close(ws)
    out = tmp_path / "out"
    assert _entries(out) == sorted(ws.final.as_dict()[k].name for k in PUBLISH_ORDER
                                   if k != "netcdf")
    record = json.loads(ws.final.provenance.read_text())
    assert "netcdf" not in record["outputs"]
    meta = json.loads(ws.final.metadata.read_text())
    assert "netcdf" not in meta["files"]


def test_cleanup_before_anything_is_harmless(tmp_path):
    """A run that fails before it has a workspace (here: no run configuration) cleans up
    nothing and leaves nothing."""
    with pytest.raises(RunConfigError):
        pge_run.execute(tmp_path / "rc.json", "test")
    assert list(tmp_path.iterdir()) == []


def test_provenance_hashes_the_run_configuration_file_as_it_is(make_config, tmp_path):
    make_config(text_transform=lambda text: text.replace("\n", "\r\n").encode())
    result = pge_run.execute(tmp_path / "rc.json", "test")
    assert result is not None
    record = json.loads(result.published["provenance"].read_text())["run_configuration"]
    raw = (tmp_path / "rc.json").read_bytes()
    assert record["sha256"] == hashlib.sha256(raw).hexdigest()
    assert record["text"].encode() == raw
