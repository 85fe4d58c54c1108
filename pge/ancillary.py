"""The model specification, weights and irradiance checked, and the model loaded on its
device for the scene: everything the run step needs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from l2b_mask.algorithm.inference import CloudModel, InferenceSettings, SceneInference
from l2b_mask.inputs.observation import ObservationGeometry
from l2b_mask.inputs.scene import Scene
from l2b_mask.spec import DecisionRule, ModelSpec, verify_sha256
from pge.runconfig import RunConfig


@dataclass(frozen=True)
class Model:
    """The loaded model, ready to stream the scene."""

    spec: ModelSpec
    inference: SceneInference
    decision: DecisionRule  # resolved once: every step and record of the run uses this one

    @property
    def processing(self) -> dict[str, object]:
        """What ran, for the log and the provenance record."""
        cloud = self.inference.cloud_model
        return {"device": str(cloud.device), "precision": cloud.precision,
                "implementation": cloud.model.implementation(cloud.device),
                "torch_threads": torch.get_num_threads(), "model_version": self.spec.version,
                "earth_sun_distance_au": self.inference.earth_sun_au,
                "model_bands": int(self.inference.bands.size)}


def load_model(cfg: RunConfig, scene: Scene, keep_reflectance_nm: Sequence[float] = (),
               observation: ObservationGeometry | None = None,
               keep_radiance_bands: Sequence[int] = ()) -> Model:
    """Model specification, weights and irradiance checksums, the model on its device, the
    scene's constants (bands, irradiance, Earth-Sun distance); the inference keeps the
    reflectance of the bands nearest `keep_reflectance_nm` for the science after the model and
    the radiance of `keep_radiance_bands` for the browse image, and takes the observation
    file's values from `observation` when it was read already."""
    anc = cfg.ancillary_files
    spec = ModelSpec.load(anc.spec_path())
    verify_sha256(anc.model_weights, spec.weights_sha256, "model weights")
    verify_sha256(anc.irradiance, spec.irradiance_sha256, "solar irradiance")
    if cfg.processing.threads is not None:
        torch.set_num_threads(cfg.processing.threads)
    p = cfg.processing
    settings = InferenceSettings(device=p.device, precision=p.precision, batch_size=p.batch_size,
                                 lines_per_block=p.lines_per_block)
    cloud = CloudModel.load(spec, settings, anc.model_weights, verify_checksum=False)
    inference = SceneInference(scene, cloud, anc.irradiance, verify_checksum=False,
                               keep_reflectance_nm=keep_reflectance_nm, observation=observation,
                               keep_radiance_bands=keep_radiance_bands)
    return Model(spec, inference, cfg.algorithm.decision(spec))
