"""The facts of one product, computed once: its creation time, the EMIT header keys, the netCDF
attributes, the metadata record. Every file of the product takes them from here, so the ENVI
header, the netCDF, the granule record, the metadata and the provenance cannot disagree (one
creation time, to the second, in all of them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from l2b_mask.algorithm.beyond_cloud import BUFFERED_DEFINITION, BeyondCloud
from l2b_mask.inputs.scene import parse_emit_time
from l2b_mask.products.summary import CloudFraction, cloud_fraction
from l2b_mask.spec import DecisionRule
from pge.inputs import EMIT_TIME, Inputs
from pge.provenance import package_version
from pge.runconfig import RunConfig
from pge.sds.attributes import emit_global_attributes
from pge.sds.ummg import day_night_flag

if TYPE_CHECKING:  # annotations only: these bring torch, which a PGE start does not import
    from l2b_mask.algorithm.inference import KeptReflectance
    from pge.ancillary import Model


@dataclass(frozen=True)
class Masks:
    """What the model computed: the probability, the flag at the threshold and its statistics,
    the batch size it ran at, and what its one pass over the radiance kept for the steps after
    it (reflectance bands for the shadow, the browse bands' radiance)."""

    probability: np.ndarray
    flag: np.ndarray
    fraction: CloudFraction
    reflectance: KeptReflectance | None = None  # bands kept while streaming, for the shadow
    batch_size: int | None = None  # less than configured after a CUDA out-of-memory halving
    # the browse bands' radiance kept while streaming (None: the browse reads the radiance)
    browse_radiance: np.ndarray | None = None

    @classmethod
    def of(cls, probability: np.ndarray, decision: DecisionRule,
           reflectance: KeptReflectance | None = None, *, batch_size: int | None = None,
           browse_radiance: np.ndarray | None = None) -> Masks:
        flag = decision.flag(probability)
        return cls(probability, flag, cloud_fraction(flag), reflectance, batch_size, browse_radiance)


@dataclass(frozen=True)
class ProductFacts:
    """Everything the product's files say about the run, decided once."""

    stem: str
    created: datetime  # aware UTC, whole seconds
    run_command: str
    emit_header: dict[str, Any]  # EMIT ENVI header keys
    netcdf_base: dict[str, Any]  # EMIT/LP DAAC global attributes
    netcdf_attrs: dict[str, Any]  # this run's global attributes
    metadata: dict[str, Any]  # `_metadata.json`, less the file list

    @property
    def start_time(self) -> datetime | None:
        return parse_emit_time(self.emit_header["emit acquisition start time"])

    @property
    def stop_time(self) -> datetime | None:
        return parse_emit_time(self.emit_header["emit acquisition stop time"])


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime(EMIT_TIME)


def product_facts(cfg: RunConfig, stem: str, run_command: str, inputs: Inputs, model: Model,
                  masks: Masks, created: datetime | None = None,
                  beyond: BeyondCloud | None = None) -> ProductFacts:
    """The facts of this run's product; `created` defaults to now, to the second. `beyond`:
    the cloud buffer and shadow, whose settings and statistics every record states."""
    created = (created or datetime.now(UTC)).replace(microsecond=0)
    emit = _emit_header(cfg, run_command, inputs, model, masks, created)
    header_extra, attrs_extra, meta_extra = _beyond_facts(beyond) if beyond else ({}, {}, {})
    emit.update(header_extra)
    base = emit_global_attributes(product_version=cfg.output.product_version,
                                  radiance_path=cfg.input_files.radiance, date_created=created,
                                  flight_line=inputs.flight_line,
                                  day_night_flag=day_night_flag(inputs.observation.mean_solar_zenith))
    attrs = {
        "time_coverage_start": emit["emit acquisition start time"],
        "time_coverage_end": emit["emit acquisition stop time"],
        "software_build_version": emit["emit software build version"],
        "software_delivery_version": emit["emit pge version"],
        "history": f"PGE Run Command: {{{run_command}}}, "
                   f"PGE Input Files: {{{', '.join(emit['emit pge input files'])}}}",
        "cloud_threshold": model.decision.threshold,
        "cloud_threshold_comparison": model.decision.comparison,
        "cloud_model": emit["cloud model"],
        "cloud_model_version": emit["cloud model version"],
        "cloud_fraction_percent_of_valid": masks.fraction.percent_of_valid,
        "cloud_fraction_percent_of_all": masks.fraction.percent_of_all,
        **attrs_extra,
    }
    return ProductFacts(stem, created, run_command, emit, base, attrs,
                        {**_metadata(cfg, stem, inputs, model, masks, created), **meta_extra})


def _beyond_facts(beyond: BeyondCloud) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(ENVI header keys, netCDF attributes, metadata sections) of the buffer and shadow."""
    st, sp, counts = beyond.settings, beyond.spacing, beyond.fractions()
    heights = list(st.shadow_cloud_heights_m)
    made = beyond.shadow is not None
    header = {
        "cloud buffer pixel size m": round(sp.mean_m, 3),
        "cloud buffer cloud height m": st.buffer_cloud_height_m,
        "cloud shadow cloud heights m": heights,
        "cloud shadow darkness test": st.shadow_darkness_test,
        "cloud shadow made": made,
    }
    if not made:
        header["cloud shadow not made"] = beyond.shadow_missing
    attrs = {
        "cloud_buffer_pixel_size_m": sp.mean_m,
        "cloud_buffer_pixel_size_method": sp.method,
        "cloud_buffer_cloud_height_m": st.buffer_cloud_height_m,
        "cloud_buffered_percent_of_valid": counts["buffered_percent_of_valid"],
        "cloud_shadow_cloud_heights_m": np.asarray(heights, np.float64),
        "cloud_shadow_darkness_test": st.shadow_darkness_test,
        "cloud_shadow_percent_of_valid": counts["shadow_percent_of_valid"],
        "cloud_shadow_not_made": beyond.shadow_missing,
    }
    meta = {
        "cloud_buffer": {
            "pixel_size_m": sp.mean_m, "along_track_spacing_m": sp.along_track_m,
            "cross_track_spacing_m": sp.cross_track_m, "pixel_size_method": sp.method,
            "cloud_height_m": st.buffer_cloud_height_m,
            "buffered_percent_of_valid_pixels": counts["buffered_percent_of_valid"],
            "buffered_pixels": counts["buffered_pixels"], "buffered_means": BUFFERED_DEFINITION,
        },
        "cloud_shadow": {
            "made": made, "not_made_because": beyond.shadow_missing,
            "cloud_heights_m": heights, "darkness_test": st.shadow_darkness_test,
            "darkness_test_wavelengths_nm": list(beyond.darkness_wavelengths_nm),
            "shadow_percent_of_valid_pixels": counts["shadow_percent_of_valid"],
            "shadow_pixels": counts["shadow_pixels"],
        },
    }
    return header, attrs, meta


def _emit_header(cfg: RunConfig, run_command: str, inputs: Inputs, model: Model, masks: Masks,
                 created: datetime) -> dict[str, Any]:
    """The facts both formats record, keyed by their EMIT ENVI header names."""
    start, stop = inputs.time_coverage
    start = start or (_stamp(inputs.identity.start_time) if inputs.identity else None)
    files = (("radiance_file", cfg.input_files.radiance),
             ("observation_parameters_file", cfg.input_files.observation),
             ("pixel_locations_file", cfg.input_files.location),
             ("geolocation_table_file", cfg.input_files.glt),
             ("model_weights_file", cfg.ancillary_files.model_weights),
             ("solar_irradiance_file", cfg.ancillary_files.irradiance))
    return {
        "emit acquisition start time": start,
        "emit acquisition stop time": stop,
        "emit pge name": cfg.pge.pge_name,
        "emit pge version": package_version(),
        "emit pge input files": [f"{k}={v}" for k, v in files if v is not None],
        "emit pge run command": run_command,
        "emit software build version": cfg.pge.software_build_version,
        "emit documentation version": cfg.pge.documentation_version,
        "emit data product creation time": _stamp(created),
        "emit data product version": cfg.output.product_version,
        "emit acquisition cloud fraction": f"{masks.fraction.percent_of_valid:.4f}",
        "cloud threshold": model.decision.threshold,
        "cloud threshold comparison": model.decision.comparison,
        "cloud model": f"SpecTf cloud {model.spec.version}",
        "cloud model version": model.spec.version,
    }


def _metadata(cfg: RunConfig, stem: str, inputs: Inputs, model: Model, masks: Masks,
              created: datetime) -> dict[str, Any]:
    identity, fraction = inputs.identity, masks.fraction
    return {
        "product": stem,
        "product_version": cfg.output.product_version,
        "creation_time": created.isoformat(),
        "acquisition_id": identity.acquisition_id if identity else None,
        "acquisition_start_time": identity.start_time.isoformat() if identity else None,
        "lines": inputs.scene.lines,
        "samples": inputs.scene.samples,
        "model": {"name": model.spec.name, "version": model.spec.version},
        "threshold": model.decision.threshold,
        "threshold_comparison": model.decision.comparison,
        "cloud_fraction": fraction.metadata(),  # with the granule's CloudCover and why
    }
