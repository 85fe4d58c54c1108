"""The evaluation's arithmetic: the F-score grid, best thresholds, calibration, the L2A rule."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import fbeta_score, precision_score, roc_auc_score

from l2b_mask.training import metrics


@pytest.fixture(scope="module")
def scored():
    """Noisy probabilities, some of them exactly on grid thresholds (the >= edge)."""
    rng = np.random.default_rng(3)
    cloud = rng.random(3000) < 0.4
    p = np.where(cloud, rng.beta(5, 2, cloud.size), rng.beta(2, 5, cloud.size)).astype(np.float32)
    p[:300] = np.round(p[:300], 2)
    return cloud, p


@pytest.mark.parametrize("key", list(metrics.BETAS))
def test_fscore_grid_is_sklearn_fbeta_at_every_threshold_with_ge(scored, key):
    cloud, p = scored
    beta = metrics.BETAS[key]
    expected = [fbeta_score(cloud, p >= t, beta=beta, zero_division=0) for t in metrics.THRESHOLDS]
    assert np.allclose(metrics.fscore_curves(cloud, p)[key], expected, rtol=0, atol=1e-12)


def test_threshold_grid_is_0_to_1_by_0_01():
    assert metrics.THRESHOLDS.size == 101
    assert metrics.THRESHOLDS[0] == 0.0 and metrics.THRESHOLDS[-1] == 1.0
    assert np.allclose(np.diff(metrics.THRESHOLDS), 0.01)


def test_best_threshold_is_the_first_maximum():
    curves = {k: np.zeros(101) for k in metrics.BETAS}
    curves["f1"][[40, 60]] = 0.9
    curves["f0_5"][70] = 0.8
    best = metrics.best_thresholds(curves)
    assert best["f1"] == {"threshold": 0.4, "value": 0.9}
    assert best["f0_5"] == {"threshold": 0.7, "value": 0.8}
    assert set(best) == {"f1", "f0_5", "f0_25"}


def test_scores_block_matches_sklearn(scored):
    cloud, p = scored
    got = metrics.at_threshold(cloud, p, 0.51)
    assert set(got) == {"accuracy", "precision", "recall", "fpr", "f1", "f0_5", "f0_25", "f0_1",
                        "average_precision", "roc_auc"}
    decided = p >= 0.51
    assert got["precision"] == pytest.approx(precision_score(cloud, decided))
    assert got["roc_auc"] == pytest.approx(roc_auc_score(cloud, p))
    assert got["fpr"] == pytest.approx(np.sum(decided & ~cloud) / np.sum(~cloud))
    assert got["f0_1"] == pytest.approx(fbeta_score(cloud, decided, beta=0.1))


def test_single_class_metrics_are_null():
    got = metrics.scores(np.zeros(5, bool), np.zeros(5, bool), np.zeros(5))
    assert got["roc_auc"] is None and got["average_precision"] is None and got["fpr"] == 0.0


def test_calibration_bins_agree_with_sklearn_and_ece_by_hand():
    rng = np.random.default_rng(5)
    p = rng.random(4000) * 0.999 + 0.0005  # no value on a bin edge
    cloud = rng.random(p.size) < p ** 1.3
    cal = metrics.calibration(cloud, p)
    observed, predicted = calibration_curve(cloud, p, n_bins=10)
    bins = [b for b in cal["bins"] if b["count"]]
    assert np.allclose([b["observed_frequency"] for b in bins], observed)
    assert np.allclose([b["mean_predicted"] for b in bins], predicted)
    assert sum(b["count"] for b in cal["bins"]) == p.size
    ece = sum(b["count"] / p.size * abs(b["mean_predicted"] - b["observed_frequency"]) for b in bins)
    assert cal["ece"] == pytest.approx(ece)


def test_over_and_under_confidence_directions():
    # Bin 0.9-1.0: predicts 0.95, 80% cloud -> over-confident by 0.15.
    # Bin 0.0-0.1: predicts 0.05, 2% cloud -> over-confident by 0.03 (surer of clear than due).
    # Bin 0.6-0.7: predicts 0.65, 90% cloud -> under-confident by 0.25.
    p = np.repeat([0.95, 0.05, 0.65], 100)
    cloud = np.concatenate([np.arange(100) < 80, np.arange(100) < 2, np.arange(100) < 90])
    cal = metrics.calibration(cloud, p)
    assert cal["max_overconfidence"] == pytest.approx(0.15)
    assert cal["max_underconfidence"] == pytest.approx(0.25)
    assert [b["count"] for b in cal["bins"]] == [100, 0, 0, 0, 0, 0, 100, 0, 0, 100]
    assert cal["bins"][1]["mean_predicted"] is None


# ---------------------------------------------------------------------------------------------
# The L2A rule at its edges, on hand-made spectra

BANDS = np.array([400.0, 447.0, 454.0, 1000.0, 1249.0, 1262.0, 1376.0, 1385.0, 1651.0, 2000.0])
I450, I1250, I1380, I1650 = 1, 4, 6, 8  # the nearest bands: 447 (not 454), 1249, 1376, 1651


def _spectrum(r450=0.3, r1250=0.5, r1650=0.3, r1380=0.0, decoys=0.0) -> np.ndarray:
    x = np.full(BANDS.size, decoys, np.float32)
    x[[I450, I1250, I1650, I1380]] = [r450, r1250, r1650, r1380]
    return x


@pytest.mark.parametrize(("spectrum", "cloud"), [
    (_spectrum(), True),
    (_spectrum(r450=0.28), False),              # each test is strictly above its threshold
    (_spectrum(r450=np.nextafter(np.float32(0.28), np.float32(1))), True),
    (_spectrum(r1250=0.46), False),
    (_spectrum(r1250=0.4601), True),
    (_spectrum(r1650=0.22), False),
    (_spectrum(r1650=0.2201), True),
    (_spectrum(r450=0.1, r1380=0.1), False),    # cirrus: strictly above 0.1
    (_spectrum(r450=0.1, r1380=0.1001), True),  # cirrus alone is enough
    (_spectrum(r450=0.1, decoys=1.0), False),   # bright neighbours are not the rule's bands
])
def test_l2a_rule_as_written(spectrum, cloud):
    assert metrics.l2a_rule(spectrum[None, :], BANDS).tolist() == [cloud]


def test_l2a_rule_uses_nearest_bands():
    assert [metrics.nearest_band(BANDS, w) for w in (450, 1250, 1380, 1650)] == [I450, I1250, I1380,
                                                                                  I1650]
