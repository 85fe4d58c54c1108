"""One PGE run as named steps: pre-process, run, post-process.

Each step takes the run's state (`PgeRun`), does one job and records its time, so each can be
tested alone and a failure names the step it happened in. Everything is written in scratch
and moved into the output folder only after it has been read back and validated; nothing
here computes science, it calls `l2b_mask` for that.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from l2b_mask.envi import read_header
from l2b_mask.errors import InputProductError
from l2b_mask.inference import CloudModel, InferenceSettings, SceneInference, cloud_flag
from l2b_mask.products.envi import read_envi_product, write_envi_product
from l2b_mask.products.naming import ProductFiles, parse_identity, product_files, product_stem
from l2b_mask.products.netcdf import (
    emit_global_attributes,
    read_location,
    read_netcdf_product,
    write_netcdf_product,
)
from l2b_mask.products.summary import CloudFraction, cloud_fraction
from l2b_mask.scene import Scene
from l2b_mask.spec import ModelSpec, verify_sha256
from pge import logging as pge_logging
from pge import provenance
from pge.errors import OutputProductError
from pge.runconfig import RunConfig

EMIT_TIME = "%Y-%m-%dT%H:%M:%S%z"
PROGRESS_EVERY_S = 10.0


@dataclass
class PgeRun:
    """The state of one run, filled in step by step."""

    runconfig_path: Path
    run_command: str
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    timings_s: dict[str, float] = field(default_factory=dict)
    config: RunConfig | None = None
    config_text: str = ""
    stem: str = ""
    scratch: Path | None = None
    staged: ProductFiles | None = None
    final: ProductFiles | None = None
    scene: Scene | None = None
    spec: ModelSpec | None = None
    threshold: float = 0.0
    inference: SceneInference | None = None
    probability: np.ndarray | None = None
    flag: np.ndarray | None = None
    fraction: CloudFraction | None = None
    published: list[Path] = field(default_factory=list)

    @property
    def log(self) -> Any:
        return pge_logging.get_logger()


@contextmanager
def step(run: PgeRun, name: str) -> Iterator[None]:
    """Time a step and log its start and end."""
    run.log.info("step_started", step=name)
    t0 = time.perf_counter()
    yield
    run.timings_s[name] = time.perf_counter() - t0
    run.log.info("step_finished", step=name, seconds=round(run.timings_s[name], 3))


# --------------------------------------------------------------------------------------------
# Pre-process


def load_config(run: PgeRun) -> None:
    """Read and validate the run configuration, then start logging at its level."""
    run.config = RunConfig.from_file(run.runconfig_path)
    run.config_text = run.runconfig_path.read_text(encoding="utf-8")
    pge_logging.configure(run.config.log_level)


def prepare_output(run: PgeRun) -> None:
    """Output folder usable, no product in the way (unless overwrite), scratch ready, log open."""
    cfg = run.config
    assert cfg is not None
    out = cfg.output.directory
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputProductError(out, f"cannot create output folder ({exc.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputProductError(out, "output folder is not writable")
    run.stem = product_stem(cfg.input_files.radiance, cfg.output.product_version)
    run.final = product_files(run.stem, out)
    inputs = {p.resolve() for p in _input_paths(cfg).values()}
    clash = [p for p in run.final.all() if p.resolve() in inputs]
    if clash:
        raise OutputProductError(clash[0], "product name collides with an input file")
    existing = [p for p in run.final.all() if p.exists()]
    if existing and not cfg.output.overwrite:
        raise OutputProductError(
            existing[0], "product already exists; set output.overwrite to true to replace it")
    parent = cfg.output.scratch_directory or out
    try:
        parent.mkdir(parents=True, exist_ok=True)
        run.scratch = Path(tempfile.mkdtemp(prefix=f".{run.stem}.", suffix=".scratch", dir=parent))
    except OSError as exc:
        raise OutputProductError(parent, f"cannot create scratch folder ({exc.strerror})") from None
    run.staged = product_files(run.stem, run.scratch)
    pge_logging.open_file(run.staged.log)
    run.log.info("run_configuration", path=str(run.runconfig_path), product=run.stem,
                 output=str(out), scratch=str(run.scratch), overwrite=cfg.output.overwrite)


def validate_inputs(run: PgeRun) -> None:
    """Open the scene (every header and size check) and the optional geolocation files."""
    cfg = run.config
    assert cfg is not None
    run.scene = Scene.open(cfg.input_files.radiance, cfg.input_files.observation)
    for name in ("location", "glt"):
        path = getattr(cfg.input_files, name)
        if path is None:
            continue
        h = read_header(path)
        if (h.lines, h.samples) != (run.scene.lines, run.scene.samples) and name == "location":
            raise InputProductError(
                h.header_path, f"location is {h.lines} x {h.samples} but the radiance is "
                               f"{run.scene.lines} x {run.scene.samples}")
    run.log.info("inputs_valid", lines=run.scene.lines, samples=run.scene.samples,
                 bands=run.scene.radiance_header.bands,
                 observation_bands=run.scene.observation_header.bands)


def validate_ancillary(run: PgeRun) -> None:
    """Model spec, weights and irradiance checksums, the model on its device, scene constants."""
    cfg = run.config
    assert cfg is not None and run.scene is not None
    run.spec = ModelSpec.load(cfg.ancillary_files.spec_path())
    anc = cfg.ancillary_files
    verify_sha256(anc.model_weights, run.spec.weights_sha256, "model weights")
    verify_sha256(anc.irradiance, run.spec.irradiance_sha256, "solar irradiance")
    if cfg.processing.threads is not None:
        torch.set_num_threads(cfg.processing.threads)
    settings = _settings(cfg)
    model = CloudModel.load(run.spec, settings, anc.model_weights, verify_checksum=False)
    run.inference = SceneInference(run.scene, model, anc.irradiance, verify_checksum=False)
    run.threshold = cfg.algorithm.threshold_for(run.spec)
    run.log.info("ancillary_valid", model_version=run.spec.version, device=str(model.device),
                 precision=model.precision, threads=torch.get_num_threads(),
                 threshold=run.threshold, comparison=cfg.algorithm.comparison,
                 model_bands=int(run.inference.bands.size),
                 earth_sun_distance_au=run.inference.earth_sun_au)


def preprocess(run: PgeRun) -> None:
    with step(run, "load_config"):
        load_config(run)
    with step(run, "prepare_output"):
        prepare_output(run)
    with step(run, "validate_inputs"):
        validate_inputs(run)
    with step(run, "validate_ancillary"):
        validate_ancillary(run)


# --------------------------------------------------------------------------------------------
# Run


def infer(run: PgeRun) -> None:
    """Stream the scene through the model, logging progress with rate and ETA."""
    cfg, inference, scene = run.config, run.inference, run.scene
    assert cfg is not None and inference is not None and scene is not None
    t0 = time.perf_counter()
    last = [t0]
    valid_done = [0]

    def progress(block: Any) -> None:
        valid_done[0] += int(np.count_nonzero(~np.isnan(block.probability)))
        now = time.perf_counter()
        if now - last[0] < PROGRESS_EVERY_S and block.stop != scene.lines:
            return
        last[0] = now
        elapsed = now - t0
        rate = block.stop * scene.samples / elapsed if elapsed > 0 else 0.0
        remaining = (scene.lines - block.stop) * scene.samples
        run.log.info("inference_progress", lines_done=block.stop, lines_total=scene.lines,
                     pixels_per_s=round(rate, 1), eta_s=round(remaining / rate, 1) if rate else None,
                     pixels_with_value=valid_done[0])

    run.probability = inference.run(cfg.processing.lines_per_block, on_block=progress)


# --------------------------------------------------------------------------------------------
# Post-process


def write_products(run: PgeRun) -> None:
    cfg, staged = run.config, run.staged
    assert cfg is not None and staged is not None and run.probability is not None
    run.flag = cloud_flag(run.probability, run.threshold, cfg.algorithm.comparison)
    run.fraction = cloud_fraction(run.flag)
    if cfg.output.write_envi:
        write_envi_product(staged.envi_data, run.probability, run.flag, _emit_common(run))
    if cfg.output.write_netcdf:
        location = (read_location(cfg.input_files.location, (run.scene.lines, run.scene.samples))
                    if cfg.input_files.location is not None else None)
        base = emit_global_attributes(product_version=cfg.output.product_version,
                                      radiance_path=cfg.input_files.radiance)
        write_netcdf_product(staged.netcdf, run.probability, run.flag, base_attrs=base,
                             global_attrs=_netcdf_attrs(run), location=location)
    run.log.info("products_written", cloud_fraction_percent=round(run.fraction.percent_of_valid, 4),
                 pixels_with_value=run.fraction.valid_pixels, pixels=run.fraction.total_pixels)


def validate_products(run: PgeRun) -> None:
    """Read each product back and compare it with what was computed."""
    cfg, staged = run.config, run.staged
    assert cfg is not None and staged is not None
    readers: list[tuple[Path, Callable[[Path], tuple[np.ndarray, np.ndarray]]]] = []
    if cfg.output.write_envi:
        readers.append((staged.envi_data, read_envi_product))
    if cfg.output.write_netcdf:
        readers.append((staged.netcdf, read_netcdf_product))
    for path, reader in readers:
        try:
            flag, probability = reader(path)
        except Exception as exc:  # a product that cannot be read back is an output failure
            raise OutputProductError(path, f"product does not read back ({exc})") from None
        _compare(path, flag, probability, run.flag, run.probability)
    run.log.info("products_valid", files=[p.name for p, _ in readers])


def _compare(path: Path, flag: np.ndarray, probability: np.ndarray, expected_flag: np.ndarray,
             expected_probability: np.ndarray) -> None:
    if flag.shape != expected_flag.shape or probability.shape != expected_probability.shape:
        raise OutputProductError(path, f"read back as {flag.shape}, expected {expected_flag.shape}")
    no_value = np.isnan(expected_probability)
    if not np.array_equal(np.isnan(probability), no_value):
        raise OutputProductError(path, "pixels without a value differ from those computed")
    if not np.array_equal(flag, expected_flag):
        raise OutputProductError(path, "cloud flag differs from the one computed")
    values = probability[~no_value]
    if not np.array_equal(values, expected_probability[~no_value]):
        raise OutputProductError(path, "cloud probability differs from the one computed")
    if values.size and (values.min() < 0 or values.max() > 1):
        raise OutputProductError(path, "cloud probability outside [0, 1]")


def write_metadata(run: PgeRun) -> None:
    cfg, staged, fraction, spec = run.config, run.staged, run.fraction, run.spec
    assert cfg is not None and staged is not None and fraction is not None and spec is not None
    identity = parse_identity(cfg.input_files.radiance)
    meta = {
        "product": run.stem,
        "product_version": cfg.output.product_version,
        "acquisition_id": identity.acquisition_id if identity else None,
        "acquisition_start_time": identity.start_time.isoformat() if identity else None,
        "lines": run.scene.lines,
        "samples": run.scene.samples,
        "model": {"name": spec.name, "version": spec.version},
        "threshold": run.threshold,
        "threshold_comparison": cfg.algorithm.comparison,
        "cloud_fraction": {
            "percent_of_valid_pixels": fraction.percent_of_valid,
            "percent_of_all_pixels": fraction.percent_of_all,
            "cloudy_pixels": fraction.cloudy_pixels,
            "pixels_with_value": fraction.valid_pixels,
            "pixels": fraction.total_pixels,
        },
        "files": {k: p.name for k, p in _written(run, staged).items()},
    }
    staged.metadata.write_text(json.dumps(meta, indent=2) + "\n")


def write_provenance(run: PgeRun) -> None:
    cfg, staged = run.config, run.staged
    assert cfg is not None and staged is not None and run.inference is not None
    outputs = {k: run.final.as_dict()[k] for k in _written(run, staged)}
    record = provenance.build_record(
        runconfig_path=run.runconfig_path, runconfig_text=run.config_text,
        run_command=run.run_command, inputs=_input_paths(cfg),
        ancillary=_ancillary_paths(run),
        outputs={k: staged.as_dict()[k] for k in outputs},
        processing={"device": str(run.inference.cloud_model.device),
                    "precision": run.inference.cloud_model.precision,
                    "batch_size": cfg.processing.batch_size,
                    "lines_per_block": cfg.processing.lines_per_block,
                    "torch_threads": torch.get_num_threads(),
                    "threshold": run.threshold, "threshold_comparison": cfg.algorithm.comparison,
                    "model_version": run.spec.version,
                    "earth_sun_distance_au": run.inference.earth_sun_au,
                    "model_bands": int(run.inference.bands.size)},
        timings_s=run.timings_s, started=run.started.isoformat(),
        finished=datetime.now(UTC).isoformat())
    # Checksums were taken in scratch; the record names the files where they will live.
    for key, path in outputs.items():
        record["outputs"][key]["path"] = str(path.resolve())
    record["outputs"]["log"] = {"path": str(run.final.log.resolve())}
    staged.provenance.write_text(json.dumps(record, indent=2) + "\n")


def publish(run: PgeRun) -> None:
    """Move the validated files into the output folder, provenance and log last."""
    staged, final = run.staged, run.final
    assert staged is not None and final is not None
    pge_logging.close_file()
    order = [*(k for k in _written(run, staged)), "provenance", "log"]
    for key in order:
        _move(staged.as_dict()[key], final.as_dict()[key])
        run.published.append(final.as_dict()[key])


def postprocess(run: PgeRun) -> None:
    with step(run, "write_products"):
        write_products(run)
    with step(run, "validate_products"):
        validate_products(run)
    with step(run, "write_metadata"):
        write_metadata(run)
    run.log.info("run_finished", product=run.stem,
                 timings_s={k: round(v, 3) for k, v in run.timings_s.items()},
                 cloud_fraction_percent=round(run.fraction.percent_of_valid, 4))
    with step(run, "write_provenance"):
        write_provenance(run)
    publish(run)


def cleanup(run: PgeRun) -> None:
    """Remove scratch, whatever happened; close the log file first."""
    pge_logging.close_file()
    if run.scratch is not None and run.scratch.exists():
        shutil.rmtree(run.scratch, ignore_errors=True)


def execute(run: PgeRun) -> None:
    try:
        preprocess(run)
        with step(run, "run"):
            infer(run)
        postprocess(run)
    finally:
        cleanup(run)


# --------------------------------------------------------------------------------------------
# Helpers


def _settings(cfg: RunConfig) -> InferenceSettings:
    p = cfg.processing
    return InferenceSettings(device=p.device, precision=p.precision, batch_size=p.batch_size,
                             lines_per_block=p.lines_per_block)


def _input_paths(cfg: RunConfig) -> dict[str, Path]:
    files = {"radiance": cfg.input_files.radiance, "observation": cfg.input_files.observation,
             "location": cfg.input_files.location, "glt": cfg.input_files.glt}
    out: dict[str, Path] = {}
    for key, path in files.items():
        if path is None:
            continue
        header = read_header(path)
        out[f"{key}_header"], out[f"{key}_data"] = header.header_path, header.data_path
    return out


def _ancillary_paths(run: PgeRun) -> dict[str, Path]:
    anc = run.config.ancillary_files
    return {"model_weights": anc.model_weights, "irradiance": anc.irradiance,
            "model_spec": run.spec.path}


def _written(run: PgeRun, staged: ProductFiles) -> dict[str, Path]:
    """The product files of this run other than provenance and log, as staged."""
    cfg = run.config
    keys = (["envi_data", "envi_header"] if cfg.output.write_envi else []) + (
        ["netcdf"] if cfg.output.write_netcdf else []) + ["metadata"]
    return {k: staged.as_dict()[k] for k in keys}


def _move(src: Path, dst: Path) -> None:
    """Atomic within a filesystem; across filesystems, copy beside the target then rename."""
    try:
        src.replace(dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise OutputProductError(dst, f"cannot move product into place ({exc.strerror})") from None
        tmp = dst.with_name(f".{dst.name}.part")
        try:
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
        except OSError as exc2:
            tmp.unlink(missing_ok=True)
            raise OutputProductError(dst, f"cannot copy product into place ({exc2.strerror})") from None


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime(EMIT_TIME)


def _emit_common(run: PgeRun) -> dict[str, Any]:
    """The facts both formats record, keyed by their EMIT ENVI header names."""
    cfg, spec = run.config, run.spec
    identity = parse_identity(cfg.input_files.radiance)
    rdn_meta = run.scene.radiance_header.meta
    start = rdn_meta.get("emit acquisition start time") or (
        _timestamp(identity.start_time) if identity else None)
    inputs = [f"{k}={v}" for k, v in (
        ("radiance_file", cfg.input_files.radiance),
        ("observation_parameters_file", cfg.input_files.observation),
        ("pixel_locations_file", cfg.input_files.location),
        ("geolocation_table_file", cfg.input_files.glt),
        ("model_weights_file", cfg.ancillary_files.model_weights),
        ("solar_irradiance_file", cfg.ancillary_files.irradiance)) if v is not None]
    return {
        "emit acquisition start time": start,
        "emit acquisition stop time": rdn_meta.get("emit acquisition stop time"),
        "emit pge name": cfg.pge.pge_name,
        "emit pge version": provenance.package_version(),
        "emit pge input files": inputs,
        "emit pge run command": run.run_command,
        "emit software build version": cfg.pge.software_build_version,
        "emit documentation version": cfg.pge.documentation_version,
        "emit data product creation time": _timestamp(datetime.now(UTC)),
        "emit data product version": cfg.output.product_version,
        "emit acquisition cloud fraction": f"{run.fraction.percent_of_valid:.4f}",
        "cloud threshold": run.threshold,
        "cloud threshold comparison": cfg.algorithm.comparison,
        "cloud model": f"SpecTf cloud {spec.version}",
        "cloud model version": spec.version,
    }


def _netcdf_attrs(run: PgeRun) -> dict[str, Any]:
    emit = _emit_common(run)
    return {
        "time_coverage_start": emit["emit acquisition start time"],
        "time_coverage_end": emit["emit acquisition stop time"],
        "software_build_version": emit["emit software build version"],
        "software_delivery_version": emit["emit pge version"],
        "history": f"PGE Run Command: {{{run.run_command}}}, "
                   f"PGE Input Files: {{{', '.join(emit['emit pge input files'])}}}",
        "cloud_threshold": run.threshold,
        "cloud_threshold_comparison": emit["cloud threshold comparison"],
        "cloud_model": emit["cloud model"],
        "cloud_model_version": emit["cloud model version"],
        "cloud_fraction_percent_of_valid": run.fraction.percent_of_valid,
        "cloud_fraction_percent_of_all": run.fraction.percent_of_all,
    }
