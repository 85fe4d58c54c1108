"""The published evaluation: scikit-learn metrics, the best threshold, calibration, L2A baseline.

Conventions of the published evaluation code: P(cloud) >= t is cloud; thresholds are searched
on 0.00, 0.01, ..., 1.00; labels 2 (shadow) are clear. Metrics undefined for the data (a
single class) are None, written as null.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binned_statistic
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    fbeta_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

THRESHOLDS = np.round(np.arange(101) * 0.01, 2)
#: the F-scores reported at a threshold, by report key
BETAS = {"f1": 1.0, "f0_5": 0.5, "f0_25": 0.25, "f0_1": 0.1}
#: the F-scores whose best threshold is searched
BEST = ("f1", "f0_5", "f0_25")
CALIBRATION_BINS = 10

#: EMIT L2A cloud test on TOA reflectance (nearest bands, nm -> reflectance): cloud when all of
#: the first three exceed their threshold, or cirrus when the fourth does.
L2A_CLOUD_TESTS = ((450.0, 0.28), (1250.0, 0.46), (1650.0, 0.22))
L2A_CIRRUS_TEST = (1380.0, 0.1)


def _defined(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def scores(cloud: np.ndarray, decision: np.ndarray, score: np.ndarray) -> dict[str, float | None]:
    """The report's `metrics` block: decision-based metrics, then the threshold-free ones."""
    y, d = np.asarray(cloud).astype(bool), np.asarray(decision).astype(bool)
    tn, fp, _fn, _tp = confusion_matrix(y, d, labels=[False, True]).ravel()
    both = 0 < y.sum() < y.size
    out: dict[str, float | None] = {
        "accuracy": float(accuracy_score(y, d)),
        "precision": float(precision_score(y, d, zero_division=0)),
        "recall": float(recall_score(y, d, zero_division=0)),
        "fpr": _defined(fp / (fp + tn)) if fp + tn else None,
    }
    for key, beta in BETAS.items():
        out[key] = float(fbeta_score(y, d, beta=beta, zero_division=0))
    out["average_precision"] = float(average_precision_score(y, score)) if y.any() else None
    out["roc_auc"] = float(roc_auc_score(y, score)) if both else None
    return out


def at_threshold(cloud: np.ndarray, probability: np.ndarray, threshold: float) -> dict:
    """Metrics with P >= threshold as cloud."""
    return scores(cloud, probability >= threshold, probability)


def fscore_curves(cloud: np.ndarray, probability: np.ndarray) -> dict[str, np.ndarray]:
    """F-beta at each of THRESHOLDS (P >= t), from scikit-learn's precision-recall curve.

    precision_recall_curve gives precision and recall at every distinct score; at a grid
    threshold t the decision is that of the smallest distinct score >= t (none above: recall
    0, F 0), so one sort of the scores serves all 101 thresholds.
    """
    y = np.asarray(cloud).astype(bool)
    if not y.any():
        return {k: np.zeros(THRESHOLDS.size) for k in BETAS}
    precision, recall, thresholds = precision_recall_curve(y, probability)
    idx = np.searchsorted(thresholds, THRESHOLDS, side="left")
    p, r = precision[idx], recall[idx]
    curves = {}
    for key, beta in BETAS.items():
        b2 = beta * beta
        denominator = b2 * p + r
        with np.errstate(invalid="ignore", divide="ignore"):
            curves[key] = np.where(denominator > 0, (1 + b2) * p * r / denominator, 0.0)
    return curves


def best_thresholds(curves: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """The report's `best` block: the first grid threshold of highest F for f1, f0_5, f0_25."""
    out = {}
    for key in BEST:
        i = int(np.argmax(curves[key]))
        out[key] = {"threshold": float(THRESHOLDS[i]), "value": float(curves[key][i])}
    return out


def calibration(cloud: np.ndarray, probability: np.ndarray, bins: int = CALIBRATION_BINS) -> dict:
    """Reliability bins (equal width on [0, 1]), expected calibration error and the largest
    over- and under-confidence.

    Per bin: the mean predicted P(cloud), the observed cloud frequency and the count (empty
    bins have null means). A bin is over-confident when its mean prediction lies further from
    0.5 than the observed frequency (the model is surer than it should be), under-confident
    when nearer; the amounts are |mean predicted - observed|. ECE = sum of count/n times that.
    """
    y = np.asarray(cloud).astype(np.float64)
    p = np.asarray(probability, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    means = binned_statistic(p, [p, y], statistic="mean", bins=edges).statistic
    counts = binned_statistic(p, p, statistic="count", bins=edges).statistic.astype(int)
    rows, ece, over, under = [], 0.0, 0.0, 0.0
    for k in range(bins):
        count = int(counts[k])
        mean_p, observed = (float(means[0][k]), float(means[1][k])) if count else (None, None)
        rows.append({"lower": float(edges[k]), "upper": float(edges[k + 1]),
                     "mean_predicted": mean_p, "observed_frequency": observed, "count": count})
        if count:
            gap = abs(mean_p - observed)
            ece += count / p.size * gap
            if abs(mean_p - 0.5) > abs(observed - 0.5):
                over = max(over, gap)
            else:
                under = max(under, gap)
    return {"bins": rows, "ece": ece, "max_overconfidence": over, "max_underconfidence": under}


def nearest_band(bands_nm: np.ndarray, wavelength_nm: float) -> int:
    return int(np.argmin(np.abs(np.asarray(bands_nm, np.float64) - wavelength_nm)))


def l2a_rule(spectra: np.ndarray, bands_nm: np.ndarray) -> np.ndarray:
    """Cloud by the EMIT L2A rule on TOA reflectance, as written: every comparison strict and
    made in float32, the spectra's type, so a value stored as exactly the threshold is not above
    it."""
    x = np.asarray(spectra, np.float32)

    def above(test: tuple[float, float]) -> np.ndarray:
        wavelength, limit = test
        return x[:, nearest_band(bands_nm, wavelength)] > np.float32(limit)

    cloud = np.logical_and.reduce([above(t) for t in L2A_CLOUD_TESTS])
    return cloud | above(L2A_CIRRUS_TEST)


def evaluation_metrics(cloud: np.ndarray, probability: np.ndarray, threshold: float) -> dict:
    """`metrics`, `best` and `calibration` of the report, and the F curves for the figures."""
    curves = fscore_curves(cloud, probability)
    return {"metrics": at_threshold(cloud, probability, threshold),
            "best": best_thresholds(curves), "calibration": calibration(cloud, probability),
            "curves": curves}
