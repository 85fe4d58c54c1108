"""The evaluation figures (PNG, matplotlib's Agg backend: no display needed).

Reliability curve, ROC, precision-recall, and the F-scores against the threshold with the
best threshold of each marked: the figures a model team reads before releasing.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from l2b_mask.training.files import write_atomic  # noqa: E402
from l2b_mask.training.metrics import THRESHOLDS  # noqa: E402

FIGURES = ("reliability.png", "roc.png", "precision_recall.png", "fscore_threshold.png")


def _save(fig: plt.Figure, path: Path) -> Path:
    try:
        return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)


def _reliability(ax: plt.Axes, calibration: dict) -> None:
    bins = [b for b in calibration["bins"] if b["count"]]
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, label="perfect calibration")
    ax.plot([b["mean_predicted"] for b in bins], [b["observed_frequency"] for b in bins],
            "o-", label=f"model (ECE {calibration['ece']:.4f})")
    ax.set(xlabel="mean predicted P(cloud)", ylabel="observed cloud frequency",
           xlim=(0, 1), ylim=(0, 1), title="Reliability")
    ax.legend(loc="upper left")


def write_figures(folder: Path, cloud: np.ndarray, probability: np.ndarray, report: dict,
                  curves: dict[str, np.ndarray]) -> list[Path]:
    """The four figures in `folder`; returns their paths."""
    folder = Path(folder)
    paths = [folder / name for name in FIGURES]
    fig, ax = plt.subplots(figsize=(5, 5))
    _reliability(ax, report["calibration"])
    _save(fig, paths[0])

    fig, ax = plt.subplots(figsize=(5, 5))
    fpr, tpr, _ = roc_curve(cloud, probability)
    ax.plot(fpr, tpr, label=f"SpecTf (AUC {report['metrics']['roc_auc']:.4f})")
    base = report["baselines"]["l2a_rule"]
    ax.plot([base["fpr"]], [base["recall"]], "s", label="L2A rule")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right")
    _save(fig, paths[1])

    fig, ax = plt.subplots(figsize=(5, 5))
    precision, recall, _ = precision_recall_curve(cloud, probability)
    ax.plot(recall, precision, label=f"SpecTf (AP {report['metrics']['average_precision']:.4f})")
    ax.plot([base["recall"]], [base["precision"]], "s", label="L2A rule")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    ax.legend(loc="lower left")
    _save(fig, paths[2])

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, values in curves.items():
        line, = ax.plot(THRESHOLDS, values, label=key.replace("_", "."))
        if key in report["best"]:
            best = report["best"][key]
            ax.plot([best["threshold"]], [best["value"]], "o", color=line.get_color())
    ax.axvline(report["threshold"], color="0.5", ls="--", lw=1, label="threshold")
    ax.set(xlabel="threshold (P >= t is cloud)", ylabel="F-score", title="F-scores")
    ax.legend(loc="lower center", ncol=3)
    _save(fig, paths[3])
    return paths
