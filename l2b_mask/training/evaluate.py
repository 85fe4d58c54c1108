"""`l2b-mask-evaluate`: how good a weights file is on the test scenes, in the paper's terms.

P(cloud) of every test spectrum comes from the library's own inference path (`CloudModel`:
the compiled CPU kernel where it applies, else torch, CUDA when asked), so the numbers are
those of the model as the PGE runs it. The spectra are already TOA reflectance reduced to the
model's bands, so they go to the model directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l2b_mask.algorithm.inference import CloudModel, resolve_device
from l2b_mask.algorithm.model import load_model
from l2b_mask.errors import InputProductError, UsageError
from l2b_mask.spec import ModelSpec, sha256_of
from l2b_mask.training import metrics
from l2b_mask.training.dataset import LabelledData, Split, cloud_target
from l2b_mask.training.files import ensure_folder, write_json
from l2b_mask.training.plots import write_figures
from l2b_mask.training.progress import PassProgress

EVALUATION_COMPARISON = ">="


@dataclass(frozen=True)
class EvaluationSettings:
    weights: Path
    datasets: tuple[Path, ...]
    test_csv: Path
    out: Path
    spec: Path | None = None
    threshold: float | None = None
    plots: Path | None = None
    device: str = "auto"
    precision: str = "float32"
    batch_size: int = 4096
    progress_tty: bool | None = None  # None: a bar when stderr is a terminal, else JSON lines
    progress_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise UsageError(f"--threshold {self.threshold} is not in [0, 1]")
        if self.batch_size < 1:
            raise UsageError("--batch must be positive")


@dataclass(frozen=True)
class Predictions:
    """Per test spectrum: P(cloud), the raw label (0/1/2) and the L2A rule's decision."""

    probability: np.ndarray
    labels: np.ndarray
    l2a_cloud: np.ndarray
    skipped_nonfinite: int

    @property
    def cloud(self) -> np.ndarray:
        return cloud_target(self.labels).astype(bool)


def predict_test_split(data: LabelledData, test: Split, model: CloudModel,
                       progress: Callable[[int], None] | None = None) -> Predictions:
    """Stream the test scenes through the model, block by block; `progress` is told the rows
    of each block done (skipped non-finite rows included)."""
    stream = data.stream(test)
    band_term = model.model.band_term(data.bands_nm)
    probability, labels, l2a = [], [], []
    batch_size = model.batch_size
    skipped = 0
    for spectra, block_labels in stream.blocks_in_order():
        prediction = model.predict(np.ascontiguousarray(spectra), band_term, batch_size)
        batch_size = prediction.batch_size  # a size halved for want of memory stays halved
        probability.append(prediction.probability)
        labels.append(block_labels)
        l2a.append(metrics.l2a_rule(spectra, data.bands_nm))
        if progress is not None:  # the block's selected rows, kept or skipped as non-finite
            progress(len(block_labels) + stream.skipped - skipped)
            skipped = stream.skipped

    if not probability:
        raise InputProductError(test.fid_list, "every selected spectrum holds a NaN or Inf")
    return Predictions(np.concatenate(probability), np.concatenate(labels), np.concatenate(l2a),
                       stream.skipped)


def build_report(settings: EvaluationSettings, spec: ModelSpec, model: CloudModel,
                 pred: Predictions) -> tuple[dict, dict[str, np.ndarray]]:
    """The report.json document and the F-score curves for the figures."""
    cloud = pred.cloud
    if cloud.all() or not cloud.any():
        raise InputProductError(settings.test_csv, "the test scenes hold only one class "
                                "(cloud or clear): the metrics are undefined")
    threshold = spec.threshold if settings.threshold is None else settings.threshold
    found = metrics.evaluation_metrics(cloud, pred.probability, threshold)
    report = {
        "n": int(cloud.size),
        "n_cloud": int(cloud.sum()),
        "threshold": float(threshold),
        "weights_sha256": sha256_of(settings.weights),
        "metrics": found["metrics"],
        "best": found["best"],
        "calibration": found["calibration"],
        "baselines": {"l2a_rule": metrics.scores(cloud, pred.l2a_cloud, pred.l2a_cloud)},
        "comparison": EVALUATION_COMPARISON,
        "n_shadow_as_clear": int(np.count_nonzero(pred.labels == 2)),
        "skipped_nonfinite": pred.skipped_nonfinite,
        "weights": str(settings.weights),
        "model_spec": str(spec.path),
        "model_version": spec.version,
        "datasets": [str(p) for p in settings.datasets],
        "test_csv": str(settings.test_csv),
        "inference": {"device": str(model.device), "precision": model.precision,
                      "implementation": model.model.implementation(model.device)},
    }
    return report, found["curves"]


def evaluate(settings: EvaluationSettings) -> dict:
    """Run the evaluation and write report.json (and the figures); returns the report."""
    spec = ModelSpec.load(settings.spec)
    device = resolve_device(settings.device)
    model = CloudModel(spec, load_model(spec, settings.weights), device, settings.precision,
                       settings.batch_size)
    with LabelledData(list(settings.datasets), spec) as data:
        test = data.split(settings.test_csv)
        data.check_finite(test)
        ensure_folder(settings.out.parent)
        if settings.plots is not None:
            ensure_folder(settings.plots)
        with PassProgress(test.rows, "evaluate_progress", "test spectra",
                          tty=settings.progress_tty,
                          interval_s=settings.progress_interval_s) as progress:
            pred = predict_test_split(data, test, model, progress.update)
    report, curves = build_report(settings, spec, model, pred)
    if settings.plots is not None:
        written = write_figures(settings.plots, pred.cloud, pred.probability, report, curves)
        report["plots"] = [str(p) for p in written]
    write_json(settings.out, report)
    return report
