"""The decision rule is resolved once, from the model specification unless the run configuration
overrides it, and every product and record of the run uses that one rule: a model released with
'>=' flags a pixel whose probability is exactly the threshold as cloud (issue 19)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import pge.cli
from l2b_mask.algorithm.inference import CloudModel, InferenceSettings, SceneInference
from l2b_mask.inputs.scene import Scene
from l2b_mask.products.envi import read_envi_layers
from l2b_mask.products.netcdf import read_netcdf_layers
from l2b_mask.spec import DecisionRule, ModelSpec
from l2b_mask.synthetic.scene import generate_acquisition
from l2b_mask.training.release import spec_toml

LINES, SAMPLES = 12, 10


def test_rule_flags_at_the_threshold_only_with_greater_or_equal():
    p = np.array([0.25, 0.5, 0.75, np.nan], np.float32)
    assert DecisionRule(0.5, ">=").flag(p).tolist() == [0, 1, 1, 255]
    assert DecisionRule(0.5, ">").flag(p).tolist() == [0, 0, 1, 255]
    with pytest.raises(ValueError, match="comparison"):
        DecisionRule(0.5, "<")
    with pytest.raises(ValueError, match="threshold"):
        DecisionRule(1.0, ">")


def test_the_specification_decides_unless_overridden(spec):
    released = replace(spec, threshold=0.4, comparison=">=")
    rule = released.decision()
    assert (rule.threshold, rule.comparison) == (0.4, ">=")
    assert rule.source == f"model specification v{spec.version}"
    assert released.decision(comparison=">").comparison == ">"
    assert released.decision(0.6, ">", "command line").source == "command line"


def test_shipped_specifications_say_greater_than(spec):
    # the default products stay what they were: every shipped model compares with '>'
    for path in sorted(spec.path.parent.glob("spectf_cloud_v*.toml")):
        assert ModelSpec.load(path).comparison == ">", path


@pytest.fixture(scope="module")
def released(tmp_path_factory, spec):
    """A small acquisition, its probabilities, and a model released with '>=' at a threshold
    equal to one pixel's probability (as `l2b-mask-release` writes a specification)."""
    folder = tmp_path_factory.mktemp("decision")
    acq = generate_acquisition(folder / "in", lines=LINES, samples=SAMPLES, seed=4,
                               cloud_fraction=0.5)
    model = CloudModel.load(spec, InferenceSettings(device="cpu"))
    probability = SceneInference(Scene.open(acq.radiance, acq.observation), model).run(64)
    inside = np.flatnonzero(~np.isnan(probability) & (probability > 0.05) & (probability < 0.95))
    assert inside.size, "the scene has no intermediate probability"
    pixel = np.unravel_index(inside[0], probability.shape)
    threshold = float(probability[pixel])  # a float32: exactly what the product holds
    toml = folder / "spectf_cloud_v9.9.9.toml"
    toml.write_text(spec_toml(replace(spec, version="9.9.9", threshold=threshold,
                                      comparison=">="),
                              str(spec.weights_path), str(spec.irradiance_path)))
    return folder, acq, probability, pixel, threshold, toml


def _run(folder: Path, acq, spec, toml: Path, name: str, algorithm: dict) -> Path:
    out = folder / name
    cfg = {"input_files": {"radiance": str(acq.radiance), "observation": str(acq.observation)},
           "ancillary_files": {"model_weights": str(spec.weights_path),
                               "irradiance": str(spec.irradiance_path), "model_spec": str(toml)},
           "output": {"directory": str(out), "write_browse": False},
           "processing": {"device": "cpu"}, "algorithm": algorithm}
    rc = folder / f"{name}.json"
    rc.write_text(json.dumps(cfg))
    assert pge.cli.main([str(rc)]) == 0
    return out


@pytest.mark.usefixtures("restore_logging")
def test_pge_uses_the_released_comparison_everywhere(released, spec):
    folder, acq, probability, pixel, threshold, toml = released
    out = _run(folder, acq, spec, toml, "model_rule", {})
    img = next(out.glob("*.img"))
    envi, nc = read_envi_layers(img), read_netcdf_layers(img.with_suffix(".nc"))
    assert envi.flag[pixel] == nc.flag[pixel] == 1  # P == threshold, '>=': cloud
    valid = ~np.isnan(probability)
    assert np.array_equal(envi.flag[valid] == 1, probability[valid] >= threshold)
    header = img.with_suffix(".hdr").read_text()
    assert "cloud threshold comparison = >=" in header.splitlines()
    from netCDF4 import Dataset

    with Dataset(img.with_suffix(".nc")) as ds:
        assert ds.cloud_threshold_comparison == ">=" and ds.cloud_threshold == threshold
    stem = img.stem
    metadata = json.loads((out / f"{stem}_metadata.json").read_text())
    assert metadata["threshold_comparison"] == ">=" and metadata["threshold"] == threshold
    processing = json.loads((out / f"{stem}_provenance.json").read_text())["processing"]
    assert processing["threshold_comparison"] == ">="


@pytest.mark.usefixtures("restore_logging")
def test_run_configuration_overrides_the_released_comparison(released, spec):
    folder, acq, _, pixel, _, toml = released
    out = _run(folder, acq, spec, toml, "config_rule", {"comparison": ">"})
    img = next(out.glob("*.img"))
    assert read_envi_layers(img).flag[pixel] == 0  # P == threshold, '>': clear
    assert "cloud threshold comparison = >" in img.with_suffix(".hdr").read_text().splitlines()
