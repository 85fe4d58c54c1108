"""l2b-mask-release against the L2A rule, its STAC MLM model card, and l2b-mask-evaluate's
progress (issue 23). The "worse" model is a real one, really evaluated: the official weights
with the two output logits swapped, so that P(cloud) becomes 1 - P(cloud)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pystac
import pytest
import torch
from pydantic import ValidationError
from pystac.extensions.mlm import MLMExtension
from stac_model.schema import MLModelProperties
from stac_pydantic import Item as PydanticItem
from training_sets import make_set

from l2b_mask.algorithm.model import load_model
from l2b_mask.errors import ExitCode
from l2b_mask.spec import sha256_of
from l2b_mask.training import cli
from l2b_mask.training.progress import PassProgress

MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
# Facts of the MLM extension's schema (v1.4) the card must meet, checked here offline.
MLM_REQUIRED = ("mlm:name", "mlm:architecture", "mlm:tasks", "mlm:input", "mlm:output")
MLM_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.\-\s]+[a-zA-Z0-9]$")
MLM_TASKS = {"regression", "classification", "scene-classification", "detection",
             "object-detection", "segmentation", "semantic-segmentation",
             "instance-segmentation", "panoptic-segmentation", "similarity-search",
             "generative", "image-captioning", "super-resolution"}
MLM_ACCELERATORS = {"amd64", "cuda", "xla", "amd-rocm", "intel-ipex-cpu", "intel-ipex-gpu",
                    "macos-arm", None}
ASSET_ONLY = ("mlm:artifact_type", "mlm:compile_method", "mlm:entrypoint")
DIM_NAME = re.compile(r"^[a-z-_]+$")


def mlm_problems(card: dict) -> list[str]:
    """What in `card` breaks the MLM extension's rules (empty: none)."""
    props, assets = card["properties"], card["assets"]
    problems = [f"missing {k}" for k in MLM_REQUIRED if k not in props]
    problems += [f"{k} in properties" for k in ASSET_ONLY if k in props]
    if MLM_SCHEMA not in card["stac_extensions"]:
        problems.append("MLM schema not declared")
    if not MLM_NAME.fullmatch(props.get("mlm:name", "")):
        problems.append("mlm:name pattern")
    if not set(props.get("mlm:tasks", [])) <= MLM_TASKS:
        problems.append("mlm:tasks")
    if props.get("mlm:accelerator") not in MLM_ACCELERATORS:
        problems.append("mlm:accelerator")
    if props.get("mlm:pretrained") is False and props.get("mlm:pretrained_source", 0) is not None:
        problems.append("pretrained false needs pretrained_source null")
    for item in props.get("mlm:input", []):
        problems += [f"input without {k}" for k in ("name", "bands", "input") if k not in item]
        problems += _structure(item.get("input", {}))
    for item in props.get("mlm:output", []):
        problems += [f"output without {k}" for k in ("name", "tasks", "result") if k not in item]
        problems += _structure(item.get("result", {}))
    models = [a for a in assets.values() if "mlm:model" in a.get("roles", [])]
    if not models:
        problems.append("no asset with the mlm:model role")
    for asset in assets.values():
        if ("mlm:model" in asset.get("roles", [])) != ("mlm:artifact_type" in asset):
            problems.append("mlm:artifact_type exactly on the mlm:model assets")
    return problems


def _structure(s: dict) -> list[str]:
    out = [f"structure without {k}" for k in ("shape", "dim_order", "data_type") if k not in s]
    if any(not isinstance(n, int) or n < -1 for n in s.get("shape", [])):
        out.append("shape")
    if any(not DIM_NAME.fullmatch(d) for d in s.get("dim_order", [])):
        out.append("dim_order")
    return out


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory, spec):
    """The official weights and the swapped-logit ones, each evaluated on 2 test scenes."""
    base = tmp_path_factory.mktemp("release_card")
    s = make_set(base / "set", spec.path, scenes=3, test_scenes=2, pixels_per_scene=200, seed=7)
    state = torch.load(spec.weights_path, map_location="cpu", weights_only=True)
    state["head.weight"], state["head.bias"] = state["head.weight"].flip(0), state["head.bias"].flip(0)
    worse = base / "worse.pt"
    torch.save(state, worse)
    reports = {}
    for name, weights in (("good", spec.weights_path), ("worse", worse)):
        report = base / f"{name}.json"
        assert cli.evaluate_main([str(s.dataset), "--weights", str(weights), "--test-csv",
                                  str(s.test_csv), "--out", str(report), "--device", "cpu"]) == 0
        reports[name] = (Path(weights), report, json.loads(report.read_text()))
    return s, reports


def _release(weights: Path, report: Path, out: Path, *extra: str) -> int:
    return cli.release_main(["--weights", str(weights), "--evaluation", str(report),
                             "--version", "0.9.0", "--out", str(out), *extra])


def test_a_model_worse_than_the_l2a_rule_is_refused_exit_5_in_one_line(evaluations, tmp_path,
                                                                      capsys):
    _, reports = evaluations
    weights, report, figures = reports["worse"]
    capsys.readouterr()
    assert figures["best"]["f1"]["value"] < figures["baselines"]["l2a_rule"]["f1"]
    assert _release(weights, report, tmp_path / "rel") == ExitCode.ANCILLARY == 5
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"best F1 {figures['best']['f1']['value']:.4f}" in err
    assert f"L2A rule's F1 {figures['baselines']['l2a_rule']['f1']:.4f}" in err
    assert "below" in err and "--allow-worse" in err and str(report) in err
    assert not (tmp_path / "rel").exists() or not any((tmp_path / "rel").iterdir())


def test_allow_worse_releases_it_and_says_so(evaluations, tmp_path, capsys):
    _, reports = evaluations
    weights, report, figures = reports["worse"]
    capsys.readouterr()
    # its best-F1 threshold is 0 (everything cloud): a threshold must be given as well
    assert _release(weights, report, tmp_path / "rel", "--allow-worse", "--threshold", "0.5") == 0
    out, err = capsys.readouterr()
    spec_path = tmp_path / "rel" / "spectf_cloud_v0.9.0.toml"
    assert out.strip() == str(spec_path)
    assert "below the L2A rule's" in err and "released with --allow-worse" in err
    assert "released with --allow-worse" in spec_path.read_text()  # the TOML's comment
    card = json.loads((tmp_path / "rel" / "spectf_cloud_v0.9.0_stac.json").read_text())
    record = card["properties"]["l2b_mask:evaluation"]
    assert record["below_l2a_rule"] is True and record["released_with_allow_worse"] is True
    assert record["best_f1"] == figures["best"]["f1"]["value"]
    assert record["l2a_rule_f1"] == figures["baselines"]["l2a_rule"]["f1"]


def test_model_card_is_valid_stac_mlm_and_pystac_reads_it(evaluations, tmp_path, capsys, spec):
    _, reports = evaluations
    weights, report, figures = reports["good"]
    capsys.readouterr()
    assert figures["best"]["f1"]["value"] >= figures["baselines"]["l2a_rule"]["f1"]
    assert _release(weights, report, tmp_path / "rel") == 0
    err = capsys.readouterr().err
    assert "at or above the L2A rule's F1" in err and "allow-worse" not in err
    path = tmp_path / "rel" / "spectf_cloud_v0.9.0_stac.json"
    card = json.loads(path.read_text())
    assert mlm_problems(card) == []
    PydanticItem.model_validate(card)  # the STAC Item itself (core fields, GeoJSON)
    mlm_model = MLModelProperties.model_validate(card["properties"])  # the MLM fields (stac-model)
    assert mlm_model.name == "spectf_cloud_v0.9.0" and mlm_model.pretrained is False
    assert [o.name for o in mlm_model.output] == ["cloud probability"]
    item = pystac.Item.from_file(str(path))
    mlm = MLMExtension.ext(item)
    assert mlm.mlm_name == "spectf_cloud_v0.9.0" and mlm.framework == "PyTorch"
    assert mlm.tasks == ["classification"] and mlm.architecture.startswith("SpecTf")
    assert mlm.total_parameters == sum(p.numel() for p in load_model(spec).parameters())
    assert mlm.framework_version == torch.__version__.split("+")[0]
    assert mlm.input[0].input.dim_order == ["batch", "bands"]
    assert mlm.output[0].result.data_type == "float32"
    classes = card["properties"]["mlm:output"][0]["classification:classes"]
    assert [(c["value"], c["name"]) for c in classes] == [(0, "clear"), (1, "cloud")]
    released = tomllib.loads((tmp_path / "rel" / "spectf_cloud_v0.9.0.toml").read_text())
    assert card["properties"]["mlm:hyperparameters"]["threshold"] == released["decision"]["threshold"]
    # every asset is a released file; the checksums (multihash sha2-256) are those of the files
    for key, asset in item.assets.items():
        target = Path(asset.get_absolute_href())
        assert target.is_file(), key
        if "file:checksum" in asset.extra_fields:
            assert asset.extra_fields["file:checksum"] == "1220" + sha256_of(target)
            assert asset.extra_fields["file:size"] == target.stat().st_size
    assert item.assets["weights"].roles == ["mlm:model", "mlm:weights"]


def test_a_broken_card_is_caught_by_the_checks():
    """The offline checks are not vacuous: each rule fails on a card that breaks it."""
    card = {"stac_extensions": [], "properties": {"mlm:name": "1bad", "mlm:tasks": ["guess"],
                                                  "mlm:artifact_type": "torch.save",
                                                  "mlm:pretrained": False},
            "assets": {"w": {"roles": ["data"], "mlm:artifact_type": "torch.save"}}}
    with pytest.raises(ValidationError):
        MLModelProperties.model_validate(card["properties"])
    problems = mlm_problems(card)
    for words in ("missing mlm:input", "mlm:artifact_type in properties", "not declared",
                  "name pattern", "mlm:tasks", "pretrained_source", "no asset with the mlm:model",
                  "exactly on the mlm:model"):
        assert any(words in p for p in problems), words


def test_evaluate_prints_json_progress_lines_off_a_terminal(evaluations, tmp_path, capsys):
    s, reports = evaluations
    weights, _, figures = reports["good"]
    capsys.readouterr()
    assert cli.evaluate_main([str(s.dataset), "--weights", str(weights), "--test-csv",
                              str(s.test_csv), "--out", str(tmp_path / "r.json"),
                              "--device", "cpu"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    progress = [e for e in lines if e.get("event") == "evaluate_progress"]
    assert progress and progress[-1]["spectra_done"] == progress[-1]["spectra_total"]
    assert progress[-1]["spectra_total"] == figures["n"] + figures["skipped_nonfinite"]
    assert lines[-1]["report"] == str(tmp_path / "r.json")  # the summary stays the last line


def test_pass_progress_bar_on_a_terminal_and_timed_lines_otherwise(capsys):
    with PassProgress(1000, "evaluate_progress", "test spectra", tty=True) as bar:
        for _ in range(4):
            bar.update(250)
    out, err = capsys.readouterr()
    assert out == "" and "test spectra" in err and "100%" in err
    with PassProgress(1000, "evaluate_progress", "test spectra", tty=False,
                      interval_s=0.0) as lines:
        for _ in range(4):
            lines.update(250)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["spectra_done"] for e in events] == [250, 500, 750, 1000]  # no repeat at close
