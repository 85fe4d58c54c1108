"""One PGE run as named steps, each taking what it needs and returning a frozen result.

load_config -> prepare_output -> validate_inputs -> validate_ancillary -> run ->
beyond_cloud -> write_products -> validate_products -> write_metadata -> write_granule_metadata ->
write_stac_item -> write_provenance -> publish. Each step is timed and logged; a failure names the step it
happened in; a full disk anywhere is an output failure with its cause. Nothing here computes
science: it calls `l2b_mask` for that.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from l2b_mask.algorithm.beyond_cloud import (
    BeyondCloud,
    beyond_cloud,
    reflectance_bands_needed,
    sun_view_angles,
)
from l2b_mask.products.browse import browse_bands
from l2b_mask.products.summary import layer_summary
from pge import logging as pge_logging
from pge.diagnosis import largest_file_bound, output_failure
from pge.facts import Masks, ProductFacts, product_facts
from pge.inputs import Inputs, open_inputs
from pge.outputs import (
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
from pge.publish import Workspace, open_workspace, publish, verify_staged
from pge.runconfig import ConfigFile, RunConfig
from pge.sds.naming import product_stem

if TYPE_CHECKING:  # torch comes with these: imported by the steps that load the model (below)
    from l2b_mask.algorithm.inference import ProbabilityBlock
    from pge.ancillary import Model

PROGRESS_EVERY_S = 10.0
T = TypeVar("T")


@dataclass
class Guard:
    """What the signal handler may look at: the workspace once open (a signal after the
    publication committed no longer stops the run)."""

    workspace: Workspace | None = None

    @property
    def interruptible(self) -> bool:
        return self.workspace is None or self.workspace.interruptible


@dataclass(frozen=True)
class RunResult:
    stem: str
    published: dict[str, Path]
    fraction_percent: float


@dataclass
class Steps:
    """Times and logs the steps of one run; the only state shared between them."""

    pixels: int | None = None
    where: Path | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    @contextmanager
    def step(self, name: str, *, writes: bool = False) -> Iterator[None]:
        log = pge_logging.get_logger()
        with output_failure(self.where, largest_file_bound(self.pixels), writes=writes):
            log.info("step_started", step=name)
            t0 = time.perf_counter()
            yield
            self.timings_s[name] = time.perf_counter() - t0
            log.info("step_finished", step=name, seconds=round(self.timings_s[name], 3))

    def run(self, name: str, fn: Callable[..., T], *args: Any, writes: bool = False) -> T:
        with self.step(name, writes=writes):
            return fn(*args)


def load_config(source: Path | ConfigFile) -> ConfigFile:
    """The run configuration, read once (`l2b-mask-pge` reads it before torch loads and hands
    it over; given a path, it is read here), then logging started at its level."""
    loaded = source if isinstance(source, ConfigFile) else ConfigFile.read(source)
    pge_logging.configure(loaded.config.log_level, console=sys.stdout)
    return loaded


def prepare_output(cfg: RunConfig, runconfig_path: Path) -> Workspace:
    """The workspace (lock, leftovers recovered, scratch), and the log opened in scratch."""
    out = cfg.output.directory
    files = cfg.input_files
    inputs = [p for p in (files.radiance, files.observation, files.location, files.glt) if p]
    stem = product_stem(files.radiance, cfg.output.product_version)
    ws = open_workspace(stem, out, cfg.output.scratch_directory,
                        overwrite=cfg.output.overwrite, inputs=inputs)
    try:  # the workspace is not the caller's yet: a failure here (a full disk) undoes it
        pge_logging.open_file(ws.staged.log)
        pge_logging.get_logger().info(
            "run_configuration", path=str(runconfig_path), product=stem, output=str(out),
            scratch=str(ws.scratch), overwrite=cfg.output.overwrite)
    except BaseException:
        pge_logging.close_file()
        ws.close()
        raise
    return ws


def validate_inputs(cfg: RunConfig) -> Inputs:
    inputs = open_inputs(cfg.input_files, need_glt=bool(cfg.output.glt_switches()))
    scene = inputs.scene
    pge_logging.get_logger().info(
        "inputs_valid", lines=scene.lines, samples=scene.samples,
        bands=scene.radiance_header.bands, observation_bands=scene.observation_header.bands)
    return inputs


def validate_ancillary(cfg: RunConfig, inputs: Inputs) -> Model:
    # torch is imported here, not at start-up: it is most of a start (about 1.2 of 1.7 s of
    # imports), which a run stopped by its configuration or inputs (exit 2-4) need not pay
    from pge.ancillary import load_model

    keep = reflectance_bands_needed(cfg.algorithm.beyond_cloud(), inputs.location is not None)
    # the browse image's bands are kept from the model's stream: the radiance is read once
    rgb = browse_bands(inputs.scene.radiance_header) if "browse" in cfg.output.product_keys() else []
    model = load_model(cfg, inputs.scene, keep, inputs.observation, rgb)
    p = model.processing
    pge_logging.get_logger().info(
        "ancillary_valid", model_version=p["model_version"], device=p["device"],
        precision=p["precision"], implementation=p["implementation"], threads=p["torch_threads"],
        threshold=model.decision.threshold, comparison=model.decision.comparison,
        decision_source=model.decision.source,
        model_bands=p["model_bands"], earth_sun_distance_au=p["earth_sun_distance_au"])
    return model


def infer(cfg: RunConfig, inputs: Inputs, model: Model) -> Masks:
    """Stream the scene through the model, logging progress with rate and ETA."""
    from l2b_mask.algorithm.inference import no_value_error

    scene, log = inputs.scene, pge_logging.get_logger()
    t0 = last = time.perf_counter()
    done = {"valid": 0, "not_finite": 0}

    def progress(block: ProbabilityBlock) -> None:
        nonlocal last
        done["valid"] += int(np.count_nonzero(~np.isnan(block.probability)))
        done["not_finite"] += block.radiance_not_finite
        now = time.perf_counter()
        if now - last < PROGRESS_EVERY_S and block.stop != scene.lines:
            return
        last = now
        rate = block.stop * scene.samples / (now - t0) if now > t0 else 0.0
        remaining = (scene.lines - block.stop) * scene.samples
        log.info("inference_progress", lines_done=block.stop, lines_total=scene.lines,
                 pixels_per_s=round(rate, 1), eta_s=round(remaining / rate, 1) if rate else None,
                 pixels_with_value=done["valid"])

    ran = model.inference.run_keeping(cfg.processing.lines_per_block, on_block=progress)
    probability = ran.probability
    if done["not_finite"]:
        log.warning("radiance_not_finite", pixels=done["not_finite"],
                    detail="pixels with NaN or Inf radiance in a model band have no value")
    if not np.isfinite(probability).any():
        raise no_value_error(scene, observation=inputs.observation)
    if ran.batch_size != model.inference.cloud_model.batch_size:
        log.warning("batch_size_reduced", configured=model.inference.cloud_model.batch_size,
                    ran=ran.batch_size, detail="the device ran out of memory")
    return Masks.of(probability, model.decision, ran.reflectance, batch_size=ran.batch_size,
                    browse_radiance=ran.radiance)


def make_beyond_cloud(cfg: RunConfig, inputs: Inputs, masks: Masks) -> BeyondCloud:
    """The cloud buffer distance and cloud shadow of the flag (the library computes them)."""
    log = pge_logging.get_logger()
    kept = masks.reflectance
    result = beyond_cloud(masks.flag, sun_view_angles(inputs.observation), inputs.location,
                          cfg.algorithm.beyond_cloud(),
                          kept.planes() if kept is not None else None,
                          kept.wavelengths_nm.tolist() if kept is not None else ())
    sp, counts = result.spacing, result.fractions()
    if inputs.location is None:
        log.warning("nominal_pixel_size", pixel_size_m=sp.mean_m, detail=sp.method)
    log.info("beyond_cloud", pixel_size_m=round(sp.mean_m, 3), pixel_size_method=sp.method,
             buffered_percent_of_valid=round(counts["buffered_percent_of_valid"], 4),
             shadow_made=result.shadow is not None,
             shadow_percent_of_valid=(None if counts["shadow_percent_of_valid"] is None
                                      else round(counts["shadow_percent_of_valid"], 4)))
    return result


def preprocess(steps: Steps, source: Path | ConfigFile, guard: Guard
               ) -> tuple[ConfigFile, Workspace, Inputs, Model]:
    loaded = steps.run("load_config", load_config, source)
    cfg = loaded.config
    steps.where = cfg.output.directory
    with steps.step("prepare_output"):
        # handed to the clean-up inside the step: its own last log line may fail (full disk)
        ws = guard.workspace = prepare_output(cfg, loaded.path)
    steps.where = ws.scratch
    inputs = steps.run("validate_inputs", validate_inputs, cfg)
    steps.pixels = inputs.scene.lines * inputs.scene.samples
    model = steps.run("validate_ancillary", validate_ancillary, cfg, inputs)
    return loaded, ws, inputs, model


def postprocess(steps: Steps, cfg: RunConfig, ws: Workspace, facts: ProductFacts,
                inputs: Inputs, model: Model, masks: Masks, record: RunRecord,
                beyond: BeyondCloud | None = None) -> list[Path]:
    log = pge_logging.get_logger()
    plan = plan_outputs(cfg, facts, beyond)
    for key, reason in plan.skipped.items():
        log.warning("granule_metadata_skipped" if key == "ummg" else "output_skipped",
                    output=key, reason=reason)
    product = content(cfg, facts, inputs, masks, beyond)
    f = masks.fraction
    steps.run("write_products", write_products, plan, product, ws.staged, writes=True)
    log.info("products_written", cloud_fraction_percent=round(f.percent_of_valid, 4),
             pixels_with_value=f.valid_pixels, pixels=f.total_pixels,
             layers=layer_summary(product.layers))
    checked = steps.run("validate_products", validate_products, plan, product, ws.staged,
                        writes=True)
    log.info("products_valid", files=checked)
    steps.run("write_metadata", write_metadata, plan, facts, ws.staged, writes=True)
    if "ummg" in plan.keys:
        ummg = steps.run("write_granule_metadata", write_granule_metadata, cfg, plan, facts,
                         inputs, masks, ws.staged, writes=True)
        log.info("granule_metadata_written", granule_ur=ummg["GranuleUR"],
                 cloud_cover=ummg["CloudCover"])
    if "stac" in plan.keys:
        item = steps.run("write_stac_item", write_stac_item, cfg, plan, facts, inputs, masks,
                         model, ws.staged, writes=True)
        log.info("stac_item_written", item_id=item["id"])
    log.info("run_finished", product=ws.stem,
             timings_s={k: round(v, 3) for k, v in steps.timings_s.items()},
             cloud_fraction_percent=round(f.percent_of_valid, 4))
    with steps.step("write_provenance", writes=True):
        write_provenance(cfg, plan, facts, model, record, ws.staged, ws.final)
        verify_staged(ws)
        log.info("staged_product_verified", folder=str(ws.scratch))
    pge_logging.close_file()
    with output_failure(ws.out, largest_file_bound(steps.pixels), writes=True):
        return publish(ws, plan.keys)


def execute(source: Path | ConfigFile, run_command: str, guard: Guard | None = None, *,
            validate_only: bool = False) -> RunResult | None:
    """The whole run of the run configuration `source` (already read, or the path to read it
    from); None with `validate_only` (inputs and ancillary checked, nothing made)."""
    guard = guard or Guard()
    steps = Steps()
    try:
        loaded, ws, inputs, model = preprocess(steps, source, guard)
        cfg = loaded.config
        if validate_only:
            return None
        masks = steps.run("run", infer, cfg, inputs, model)
        beyond = steps.run("beyond_cloud", make_beyond_cloud, cfg, inputs, masks)
        facts = product_facts(cfg, ws.stem, run_command, inputs, model, masks, beyond=beyond)
        record = RunRecord(loaded.path, loaded.raw, steps.started, steps.timings_s,
                           masks.batch_size)
        published = postprocess(steps, cfg, ws, facts, inputs, model, masks, record, beyond)
        by_path = {path: key for key, path in ws.final.paths.items()}
        return RunResult(ws.stem, {by_path[p]: p for p in published},
                         round(masks.fraction.percent_of_valid, 4))
    finally:
        pge_logging.close_file()
        if guard.workspace is not None:
            guard.workspace.close()
