"""l2b-mask-evaluate on the official v0.1.0 weights: the report against scikit-learn on the
reference float32 torch path, its fields, figures, and what it refuses."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    fbeta_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from training_sets import make_set

from l2b_mask.algorithm.inference import CloudModel
from l2b_mask.algorithm.model import load_model
from l2b_mask.errors import ExitCode
from l2b_mask.training import cli
from l2b_mask.training.dataset import LabelledData
from l2b_mask.training.evaluate import predict_test_split
from l2b_mask.training.metrics import THRESHOLDS, l2a_rule
from l2b_mask.training.plots import FIGURES

TOLERANCE = 5e-3


@pytest.fixture(scope="module")
def full(tmp_path_factory, spec):
    """Full-band (268) spectra of 5 synthetic scenes, 3 of them for testing, a few NaN."""
    return make_set(tmp_path_factory.mktemp("evaluate"), spec.path, scenes=5, test_scenes=3,
                    pixels_per_scene=300, nan_spectra=9, seed=4)


@pytest.fixture(scope="module")
def evaluated(full, spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    code = cli.evaluate_main([str(full.dataset), "--weights", str(spec.weights_path),
                              "--test-csv", str(full.test_csv), "--out", str(out / "report.json"),
                              "--plots", str(out / "plots"), "--device", "cpu"])
    assert code == 0
    return out, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def reference(full, spec):
    """Test spectra read straight from the file, and P(cloud) of the float32 torch path."""
    with h5py.File(full.dataset, "r") as h5:
        x, labels = h5["spectra"][()], h5["labels"][()]
        test = np.isin(h5["fids"][()].astype(str), full.test_fids)
        bands = h5.attrs["bands"]
    keep = test & np.isfinite(x).all(axis=1)
    model = load_model(spec)
    with torch.inference_mode():
        p = model.forward_torch(torch.from_numpy(x[keep]), model.band_term(bands)).numpy()
    return {"x": x[keep], "labels": labels[keep], "p": p, "bands": bands,
            "skipped": int(np.sum(test & ~np.isfinite(x).all(axis=1)))}


def test_probabilities_are_the_float32_path_within_1e_4(full, spec, reference):
    cloud_model = CloudModel(spec, load_model(spec), torch.device("cpu"), "float32", 4096)
    with LabelledData([full.dataset], spec) as data:
        pred = predict_test_split(data, data.split(full.test_csv), cloud_model)
    assert np.array_equal(pred.labels, reference["labels"])
    assert np.max(np.abs(pred.probability - reference["p"])) <= 1e-4


def test_report_reproduces_sklearn_on_the_reference_probabilities(evaluated, reference, spec):
    _, report = evaluated
    cloud, p = reference["labels"] == 1, reference["p"]
    t = spec.threshold
    assert report["threshold"] == t and report["n"] == cloud.size
    assert report["n_cloud"] == int(cloud.sum()), "labels 2 (shadow) count as clear"
    assert report["n_shadow_as_clear"] == int(np.sum(reference["labels"] == 2)) > 0
    assert report["skipped_nonfinite"] == reference["skipped"] > 0
    m = report["metrics"]
    decided = p >= t
    expected = {
        "accuracy": accuracy_score(cloud, decided), "precision": precision_score(cloud, decided),
        "recall": recall_score(cloud, decided), "fpr": np.sum(decided & ~cloud) / np.sum(~cloud),
        "f1": fbeta_score(cloud, decided, beta=1), "f0_5": fbeta_score(cloud, decided, beta=0.5),
        "f0_25": fbeta_score(cloud, decided, beta=0.25),
        "f0_1": fbeta_score(cloud, decided, beta=0.1),
        "average_precision": average_precision_score(cloud, p), "roc_auc": roc_auc_score(cloud, p),
    }
    assert set(m) == set(expected)
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=TOLERANCE), key
    for key, beta in (("f1", 1), ("f0_5", 0.5), ("f0_25", 0.25)):
        grid = [fbeta_score(cloud, p >= th, beta=beta, zero_division=0) for th in THRESHOLDS]
        assert report["best"][key]["value"] == pytest.approx(max(grid), abs=TOLERANCE), key
        at_reported = grid[int(round(report["best"][key]["threshold"] * 100))]
        assert at_reported == pytest.approx(max(grid), abs=TOLERANCE), key


def test_l2a_baseline_is_the_rule_on_the_same_spectra(evaluated, reference):
    _, report = evaluated
    cloud = reference["labels"] == 1
    rule = l2a_rule(reference["x"], reference["bands"])
    base = report["baselines"]["l2a_rule"]
    assert base["f1"] == pytest.approx(fbeta_score(cloud, rule, beta=1))
    assert base["recall"] == pytest.approx(recall_score(cloud, rule))


def test_report_fields_and_figures(evaluated, spec):
    out, report = evaluated
    assert {"n", "n_cloud", "threshold", "weights_sha256", "metrics", "best", "calibration",
            "baselines"} <= set(report)
    assert report["weights_sha256"] == spec.weights_sha256
    assert set(report["best"]) == {"f1", "f0_5", "f0_25"}
    assert set(report["best"]["f1"]) == {"threshold", "value"}
    cal = report["calibration"]
    assert {"bins", "ece", "max_overconfidence", "max_underconfidence"} <= set(cal)
    assert {"mean_predicted", "observed_frequency", "count"} <= set(cal["bins"][0])
    assert sum(b["count"] for b in cal["bins"]) == report["n"]
    assert set(report["baselines"]["l2a_rule"]) == set(report["metrics"])
    assert report["inference"]["implementation"] == CloudModel(
        spec, load_model(spec), torch.device("cpu"), "float32", 1).model.implementation("cpu")
    for name in FIGURES:
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert sorted(p.name for p in out.iterdir()) == ["plots", "report.json"], "no temporary left"


def test_threshold_option_and_refusals(full, spec, tmp_path, capsys):
    base = [str(full.dataset), "--weights", str(spec.weights_path), "--test-csv",
            str(full.test_csv), "--device", "cpu"]
    assert cli.evaluate_main([*base, "--out", str(tmp_path / "r.json"), "--threshold", "0.3"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["threshold"] == 0.3
    capsys.readouterr()
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [(["--out", str(blocker / "r.json")], ExitCode.OUTPUT),
             (["--out", str(tmp_path / "x.json"), "--threshold", "1.5"], ExitCode.USAGE)]
    for extra, code in cases:
        assert cli.evaluate_main([*base, *extra]) == code
        assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "x.json").exists()
