"""Write every file of the product in scratch and read each back, by walking the product
table; then the records the SDS adds: metadata, the UMM-G granule record, the STAC Item,
provenance."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from l2b_mask.algorithm.beyond_cloud import BeyondCloud
from l2b_mask.inputs.location import location_bounds
from l2b_mask.products.layers import layer, prepare
from l2b_mask.products.table import DATA_PRODUCTS, ProductContent
from pge import provenance
from pge.facts import Masks, ProductFacts
from pge.inputs import Inputs, input_paths
from pge.runconfig import RunConfig
from pge.sds.files import RECORD_KEYS, ProductFiles
from pge.sds.stac import ItemFacts, build_item, write_item
from pge.sds.ummg import (
    build_ummg,
    cloud_cover_percent,
    day_night_flag,
    granule_ur,
    swath_polygon,
    write_ummg,
)

if TYPE_CHECKING:  # an annotation only: pge.ancillary brings torch
    from pge.ancillary import Model


@dataclass(frozen=True)
class Plan:
    """Which product files this run writes, and those asked for that it cannot make, with why."""

    keys: list[str]  # file keys, provenance and log aside, in table order
    skipped: dict[str, str] = field(default_factory=dict)


def plan_outputs(cfg: RunConfig, facts: ProductFacts, beyond: BeyondCloud | None = None) -> Plan:
    """The configured product files, less a granule record without an acquisition time, and
    less the files that need a layer that was not made (the layer itself is then skipped too,
    under its netCDF variable's name: the data files hold it as no value throughout)."""
    skipped: dict[str, str] = {}
    if cfg.output.write_ummg and facts.start_time is None:
        skipped["ummg"] = ("the radiance has no EMIT name and its header no 'emit acquisition "
                           "start time': a granule record needs the acquisition time")
    if facts.start_time is None:
        skipped["stac"] = ("the radiance has no EMIT name and its header no 'emit acquisition "
                           "start time': a STAC Item needs the acquisition time")
    for name, reason in layers_not_made(beyond).items():
        skipped[layer(name).variable] = reason
        for row in DATA_PRODUCTS:
            if row.needs_layer == name and cfg.output.switched_on(row.switch):
                skipped.update({key: reason for key, _ in row.files})
    return Plan([k for k in cfg.output.product_keys() if k not in skipped], skipped)


def layers_not_made(beyond: BeyondCloud | None) -> dict[str, str]:
    """The layers the science did not make this run, with why."""
    if beyond is not None and beyond.shadow_missing is not None:
        return {"shadow": beyond.shadow_missing}
    return {}


def content(cfg: RunConfig, facts: ProductFacts, inputs: Inputs, masks: Masks,
            beyond: BeyondCloud | None = None) -> ProductContent:
    """What every data product is written from: the layers by their table names, checked once."""
    arrays = {"flag": masks.flag, "probability": masks.probability,
              "buffer_distance": beyond.buffer_distance if beyond else None,
              "shadow": beyond.shadow if beyond else None}
    return ProductContent(
        layers=prepare(arrays), envi_header=facts.emit_header,
        netcdf_base_attrs=facts.netcdf_base, netcdf_attrs=facts.netcdf_attrs,
        radiance=inputs.scene.radiance_header, browse_radiance=masks.browse_radiance,
        location=inputs.location, glt=inputs.glt)


def _rows(plan: Plan) -> list:
    return [row for row in DATA_PRODUCTS if row.files[0][0] in plan.keys]


def write_products(plan: Plan, product: ProductContent, staged: ProductFiles) -> None:
    """Every data product the plan names, written from one content."""
    for row in _rows(plan):
        row.write(product, staged.paths)


def validate_products(plan: Plan, product: ProductContent, staged: ProductFiles) -> list[str]:
    """Read each data product back and compare it with what was computed; the names checked."""
    checked = []
    for row in _rows(plan):
        row.check(product, staged.paths)
        checked += [staged[key].name for key, _ in row.files]
    return checked


def write_metadata(plan: Plan, facts: ProductFacts, staged: ProductFiles) -> None:
    meta = {**facts.metadata, "files": {k: staged[k].name for k in plan.keys}}
    staged.metadata.write_text(json.dumps(meta, indent=2) + "\n")


def write_granule_metadata(cfg: RunConfig, plan: Plan, facts: ProductFacts, inputs: Inputs,
                           masks: Masks, staged: ProductFiles) -> dict[str, Any]:
    """The UMM-G record the DAAC ingests: the data files (checksummed as staged), cloud cover,
    time, extent from the GLT grid or the located pixels, day or night."""
    fraction = masks.fraction
    data = [staged[k] for k in plan.keys if k not in RECORD_KEYS]
    data.sort(key=lambda p: p.suffix != ".nc")  # the netCDF, when written, is the granule's file
    loc, glt = inputs.location, inputs.glt
    bounds = glt.grid_bounds() if glt is not None else (
        location_bounds(loc) if loc is not None else None)
    polygon = swath_polygon(loc.lon, loc.lat) if loc is not None else None
    sun = inputs.observation
    record = build_ummg(
        product_version=cfg.output.product_version,
        identity=inputs.identity, daac_scene=inputs.daac_scene, files=data,
        cloud_cover_percent=cloud_cover_percent(fraction),
        bounds=bounds, polygon=polygon, pge_name=cfg.pge.pge_name,
        pge_version=facts.emit_header["emit pge version"], production_time=facts.created,
        start_time=facts.start_time, end_time=facts.stop_time,
        day_night=day_night_flag(sun.mean_solar_zenith),
        solar_zenith=sun.mean_solar_zenith, solar_azimuth=sun.mean_solar_azimuth,
        software_build_version=cfg.pge.software_build_version,
        software_delivery_version=facts.emit_header["emit pge version"],
        cloud_model_version=facts.emit_header["cloud model version"])
    write_ummg(staged.ummg, record)
    return record


def write_stac_item(cfg: RunConfig, plan: Plan, facts: ProductFacts, inputs: Inputs,
                    masks: Masks, model: Model, staged: ProductFiles) -> dict[str, Any]:
    """The STAC Item (`pge/sds/stac.py`): every file of the plan and the provenance and log,
    the footprint and box as in the granule record, the same cloud cover."""
    loc, glt = inputs.location, inputs.glt
    bounds = glt.grid_bounds() if glt is not None else (
        location_bounds(loc) if loc is not None else None)
    assert facts.start_time is not None  # plan_outputs skips the Item without it
    item_facts = ItemFacts(
        item_id=(granule_ur(inputs.identity, cfg.output.product_version, inputs.daac_scene)
                 if inputs.identity is not None else facts.stem),
        start=facts.start_time, end=facts.stop_time, created=facts.created,
        cloud_cover_percent=cloud_cover_percent(masks.fraction),
        cloud_percent_of_valid=masks.fraction.percent_of_valid,
        software={cfg.pge.pge_name: facts.emit_header["emit pge version"],
                  "SpecTf cloud model": facts.emit_header["cloud model version"]},
        cloud_model_version=facts.emit_header["cloud model version"],
        threshold=model.decision.threshold,
        bounds=bounds, polygon=swath_polygon(loc.lon, loc.lat) if loc is not None else ())
    files = {k: staged[k] for k in (*plan.keys, "provenance", "log") if k != "stac"}
    item = build_item(item_facts, files, glt)
    write_item(staged.stac, item)
    return item


@dataclass(frozen=True)
class RunRecord:
    """What the provenance says of the run besides the files."""

    runconfig_path: Path
    runconfig_bytes: bytes
    started: datetime
    timings_s: dict[str, float]
    batch_size: int | None  # what the model ran at (the configured size, or less after an OOM)


def write_provenance(cfg: RunConfig, plan: Plan, facts: ProductFacts, model: Model,
                     run: RunRecord, staged: ProductFiles, final: ProductFiles) -> None:
    """Checksums are taken in scratch; the record names the files where they will live."""
    processing = {**model.processing, "batch_size": run.batch_size,
                  "batch_size_configured": cfg.processing.batch_size,
                  "lines_per_block": cfg.processing.lines_per_block,
                  "threshold": model.decision.threshold,
                  "threshold_comparison": model.decision.comparison}
    anc = cfg.ancillary_files
    record = provenance.build_record(
        runconfig_path=run.runconfig_path, runconfig_bytes=run.runconfig_bytes,
        run_command=facts.run_command, inputs=input_paths(cfg.input_files),
        ancillary={"model_weights": anc.model_weights, "irradiance": anc.irradiance,
                   "model_spec": model.spec.path},
        outputs={k: staged[k] for k in plan.keys}, processing=processing,
        timings_s=run.timings_s, started=run.started.isoformat(),
        finished=datetime.now(UTC).isoformat())
    record["product_generation"]["creation_time"] = facts.created.isoformat()
    folder = final.folder.resolve()  # the folder, never a link where a product goes
    for key in plan.keys:
        record["outputs"][key]["path"] = str(folder / final[key].name)
    record["outputs"]["log"] = {"path": str(folder / final.log.name)}
    if plan.skipped:
        record["skipped_outputs"] = dict(plan.skipped)
    staged.provenance.write_text(json.dumps(record, indent=2) + "\n")
