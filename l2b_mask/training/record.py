"""training.json: what a trained model came from, so that a release can be traced and redone.

The settings, the data (each file's sha256), the scene lists, the software versions and the
timings: enough to say which run made a weights file and to run it again.
"""

from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from l2b_mask.spec import ModelSpec, sha256_of

PACKAGES = ("l2b-mask-pge", "torch", "numpy", "h5py", "scikit-learn", "schedulefree", "scipy")


@dataclass(frozen=True)
class TrainInputs:
    """The files a training run reads and the folder it writes: what its record traces."""

    datasets: tuple[Path, ...]
    train_csv: Path
    test_csv: Path
    outdir: Path
    spec: Path | None = None
    resume: bool = False


def software_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def training_record(*, inputs: TrainInputs, spec: ModelSpec, settings: dict[str, Any],
                    digests: list[dict[str, Any]], counts: dict[str, int], bands: int,
                    device: torch.device, rows: list[dict[str, Any]], epoch_seconds: list[float],
                    run_seconds: float, resumed: dict[str, int] | None,
                    weights: Path) -> dict[str, Any]:
    """The training.json document."""
    return {
        "weights": weights.name,
        "weights_sha256": sha256_of(weights),
        "settings": settings,
        "model_spec": {"path": str(spec.path), "name": spec.name, "version": spec.version,
                       "embed_dim": spec.embed_dim, "num_heads": spec.num_heads,
                       "ff_dim": spec.ff_dim, "num_layers": spec.num_layers,
                       "drop_ranges_nm": [list(r) for r in spec.drop_ranges_nm]},
        "datasets": digests,
        "train_csv": str(inputs.train_csv),
        "test_csv": str(inputs.test_csv),
        "bands": bands,
        "counts": counts,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "software": software_versions(),
        "epochs": rows,
        "timings_s": {"epochs": epoch_seconds, "training": sum(epoch_seconds),
                      "this_run": run_seconds},
        "resumed_from": resumed,
    }
