"""The STAC model card of a release: a STAC Item with the Machine Learning Model (MLM)
extension, written beside the model specification as `<name>_vX.Y.Z_stac.json`.

Model catalogues (STAC APIs, `pystac`) find and describe models by such records: what the
model is (architecture, framework, parameters), what it takes and gives (per-spectrum TOA
reflectance in, P(cloud) out, the decision threshold), and its files as assets (the weights
with the `mlm:model` role and how they were saved, the specification, the irradiance).
The evaluation the release was checked against (best F1 against the L2A rule's) is kept under
the project's own `l2b_mask:` prefix. Written as plain JSON, so releasing needs no STAC
library; the tests validate it and read it back with `pystac`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from l2b_mask.spec import ModelSpec

MLM_VERSION = "1.4.0"
STAC_VERSION = "1.1.0"
EXTENSIONS = (
    f"https://stac-extensions.github.io/mlm/v{MLM_VERSION}/schema.json",
    "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
    "https://stac-extensions.github.io/file/v2.1.0/schema.json",
)
WHOLE_EARTH = [[[-180.0, -90.0], [180.0, -90.0], [180.0, 90.0], [-180.0, 90.0],
                [-180.0, -90.0]]]
INPUT_DESCRIPTION = (
    "Top-of-atmosphere reflectance of one spectrum (EMIT L1B radiance * pi * d^2 / (E_sun * "
    "cos(solar zenith))), every band outside the specification's drop ranges; each band is "
    "also given its wavelength, so the band count may vary")


@dataclass(frozen=True)
class CardFiles:
    """The release's files, relative to the folder the card is written in."""

    spec: str
    weights: str
    irradiance: str
    weights_size: int
    irradiance_size: int


def _model_io(spec: ModelSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`mlm:input` and `mlm:output`: spectra in, P(cloud) out, cloud where P >= threshold."""
    inputs = [{
        "name": "TOA reflectance spectrum",
        "bands": [],
        "input": {"shape": [-1, -1], "dim_order": ["batch", "bands"], "data_type": "float32"},
        "description": INPUT_DESCRIPTION,
        "value_scaling": None,
        "resize_type": None,
        "pre_processing_function": None,
    }]
    outputs = [{
        "name": "cloud probability",
        "tasks": ["classification"],
        "result": {"shape": [-1, 1], "dim_order": ["batch", "class"], "data_type": "float32"},
        "description": (f"P(cloud) of each spectrum; cloud where P {spec.comparison} "
                        f"{spec.threshold!r} (the release's threshold), clear otherwise"),
        "classification:classes": [
            {"value": 0, "name": "clear", "description": "P(cloud) below the threshold"},
            {"value": 1, "name": "cloud", "description": "P(cloud) at or above the threshold"},
        ],
        "post_processing_function": None,
    }]
    return inputs, outputs


def model_card(spec: ModelSpec, files: CardFiles, *, total_parameters: int,
               framework_version: str, evaluation: dict[str, Any],
               released: datetime) -> dict[str, Any]:
    """The STAC Item (MLM) of a released model `spec` (its version and threshold those of the
    release); `evaluation` is the comparison the release was checked by."""
    inputs, outputs = _model_io(spec)
    hyper = {"embed_dim": spec.embed_dim, "num_heads": spec.num_heads, "ff_dim": spec.ff_dim,
             "num_layers": spec.num_layers, "aggregation": spec.aggregation,
             "residual": spec.residual, "layer_norm_eps": spec.layer_norm_eps,
             "wavelength_offset_nm": spec.wavelength_offset_nm,
             "wavelength_scale_nm": spec.wavelength_scale_nm,
             "drop_ranges_nm": [list(r) for r in spec.drop_ranges_nm],
             "threshold": spec.threshold}
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": list(EXTENSIONS),
        "id": f"{spec.name}_v{spec.version}",
        "geometry": {"type": "Polygon", "coordinates": WHOLE_EARTH},
        "bbox": [-180.0, -90.0, 180.0, 90.0],
        "properties": {
            "datetime": released.isoformat().replace("+00:00", "Z"),
            "title": f"SpecTf cloud model v{spec.version}",
            "description": "Per-pixel cloud screening of EMIT imaging-spectrometer spectra "
                           "(SpecTf spectral transformer), as run by the L2B cloud-mask PGE.",
            "mlm:name": f"{spec.name}_v{spec.version}",
            "mlm:architecture": "SpecTf spectral transformer",
            "mlm:tasks": ["classification"],
            "mlm:framework": "PyTorch",
            "mlm:framework_version": framework_version,
            "mlm:total_parameters": int(total_parameters),
            "mlm:pretrained": False,
            "mlm:pretrained_source": None,
            "mlm:accelerator": "amd64",
            "mlm:accelerator_constrained": False,
            "mlm:accelerator_summary": "CPU (the project's compiled kernel or torch); CUDA "
                                       "optional",
            "mlm:input": inputs,
            "mlm:output": outputs,
            "mlm:hyperparameters": hyper,
            "version": spec.version,
            "l2b_mask:evaluation": evaluation,
        },
        "links": [],
        "assets": {
            "weights": {"href": files.weights, "title": "state_dict of the model",
                        "type": "application/octet-stream; application=pytorch",
                        "roles": ["mlm:model", "mlm:weights"],
                        "mlm:artifact_type": "torch.save",
                        "file:checksum": f"1220{spec.weights_sha256}",
                        "file:size": files.weights_size},
            "specification": {"href": files.spec, "title": "model specification (TOML)",
                              "type": "application/toml", "roles": ["metadata"]},
            "irradiance": {"href": files.irradiance, "title": "solar irradiance per band",
                           "type": "application/octet-stream; application=numpy",
                           "roles": ["data"],
                           "file:checksum": f"1220{spec.irradiance_sha256}",
                           "file:size": files.irradiance_size},
        },
    }
