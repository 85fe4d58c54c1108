"""`l2b-mask-release`: turn trained weights and their evaluation into files the PGE runs.

Writes `DIR/spectf_cloud_vX.Y.Z.toml` (the model specification: version, architecture, drop
ranges, threshold, sha256 of weights and irradiance) and, in the layout of the official
files, `DIR/spectf_cloud/vX.Y.Z/weights.pt` and `DIR/spectf_cloud/irr.npy`. It refuses weights
that do not load strictly into the architecture and an evaluation made of other weights: a
release is only ever what was measured. Everything is staged in a hidden folder in DIR, checked
by loading it as the PGE will, then moved into place, the specification last.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from l2b_mask.algorithm.model import load_model
from l2b_mask.errors import AncillaryError, InputProductError, OutputError, UsageError
from l2b_mask.spec import ModelSpec, sha256_of, verify_sha256
from l2b_mask.training.files import ensure_folder

VERSION = re.compile(r"\d+\.\d+\.\d+")
#: what a release reads from the evaluation report
REPORT_FIELDS = (("weights_sha256",), ("best", "f1", "threshold"), ("metrics", "f1"),
                 ("baselines", "l2a_rule", "f1"), ("n",), ("threshold",))
SPEC_TEMPLATE = """\
{comment}
[model]
name = "{s.name}"
version = "{s.version}"
embed_dim = {s.embed_dim}
num_heads = {s.num_heads}
ff_dim = {s.ff_dim}
num_layers = {s.num_layers}
aggregation = "{s.aggregation}"
residual = {residual}
layer_norm_eps = {s.layer_norm_eps!r}
wavelength_offset_nm = {s.wavelength_offset_nm!r}
wavelength_scale_nm = {s.wavelength_scale_nm!r}

[bands]
drop_ranges_nm = {drop_ranges}

[decision]
threshold = {s.threshold!r}
comparison = "{s.comparison}"

[ancillary]
weights = "{weights}"
weights_sha256 = "{s.weights_sha256}"
irradiance = "{irradiance}"
irradiance_sha256 = "{s.irradiance_sha256}"
"""


def spec_toml(spec: ModelSpec, weights: str, irradiance: str, comment: str = "") -> str:
    """A model specification's TOML text, which `ModelSpec.load` reads back to `spec` (with
    the files at `weights` and `irradiance`, relative to the TOML's folder unless absolute).
    Written from a template: TOML writers drop the comments that say where a release came
    from."""
    ranges = "[" + ", ".join(f"[{float(lo)!r}, {float(hi)!r}]" for lo, hi in spec.drop_ranges_nm)
    return SPEC_TEMPLATE.format(
        s=spec, comment="".join(f"# {line}\n" for line in comment.splitlines()),
        residual=str(spec.residual).lower(), drop_ranges=ranges + "]", weights=weights,
        irradiance=irradiance)


@dataclass(frozen=True)
class ReleaseSettings:
    weights: Path
    evaluation: Path
    version: str
    out: Path
    threshold: float | None = None
    spec: Path | None = None  # the architecture, drop ranges and irradiance to release with

    def __post_init__(self) -> None:
        if not VERSION.fullmatch(self.version):
            raise UsageError(f"--version must be X.Y.Z (digits), not {self.version!r}")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise UsageError(f"--threshold {self.threshold} is not strictly between 0 and 1")


def read_evaluation(path: Path) -> dict:
    """The report.json of l2b-mask-evaluate, with the fields a release needs."""
    try:
        report = json.loads(path.read_text())
        for keys in REPORT_FIELDS:
            node = report
            for key in keys:
                node = node[key]
        sha, best = report["weights_sha256"], report["best"]["f1"]["threshold"]
    except FileNotFoundError:
        raise InputProductError(path, "evaluation report not found") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputProductError(path, f"not an l2b-mask-evaluate report ({exc!r})") from None
    if not isinstance(sha, str) or not isinstance(best, int | float):
        raise InputProductError(path, "weights_sha256 or best.f1.threshold has the wrong type")
    return report


def release_comment(settings: ReleaseSettings, report: dict) -> str:
    """Where the release came from, for the head of its specification."""
    auc = report["metrics"].get("roc_auc")
    return (f"SpecTf cloud model v{settings.version}, released "
            f"{datetime.now(UTC):%Y-%m-%d} by l2b-mask-release.\n"
            f"Weights: {settings.weights}\n"
            f"Evaluation: {settings.evaluation}: {report['n']} test spectra, F1 "
            f"{report['metrics']['f1']:.4f} at threshold {report['threshold']:.2f}, ROC AUC "
            f"{'n/a' if auc is None else f'{auc:.4f}'}; the L2A rule's F1 on the same spectra "
            f"{report['baselines']['l2a_rule']['f1']:.4f}.\n")


def _check_inputs(settings: ReleaseSettings) -> tuple[ModelSpec, dict, str, float]:
    base = ModelSpec.load(settings.spec)
    verify_sha256(base.irradiance_path, base.irradiance_sha256, "solar irradiance")
    load_model(base, settings.weights)  # strict: keys, shapes, finite floats
    report = read_evaluation(settings.evaluation)
    sha = sha256_of(settings.weights)
    if report["weights_sha256"].lower() != sha:
        raise AncillaryError(settings.weights, f"sha256 {sha} is not that of the weights "
                             f"evaluated in {settings.evaluation} ({report['weights_sha256']})")
    threshold = settings.threshold if settings.threshold is not None \
        else float(report["best"]["f1"]["threshold"])
    if not 0.0 < threshold < 1.0:
        raise UsageError(f"the evaluation's best-F1 threshold {threshold} is not strictly "
                         "between 0 and 1: give --threshold")
    return base, report, sha, threshold


def release(settings: ReleaseSettings) -> Path:
    """Write the release; returns the path of the new model specification."""
    base, report, sha, threshold = _check_inputs(settings)
    out = ensure_folder(settings.out)
    spec_path = out / f"{base.name}_v{settings.version}.toml"
    weights_rel = Path(base.name) / f"v{settings.version}" / "weights.pt"
    irr_rel = Path(base.name) / "irr.npy"
    for p in (spec_path, out / weights_rel):
        if p.exists():
            raise OutputError(p, "already exists: a released version is never overwritten")
    if (out / irr_rel).exists():
        verify_sha256(out / irr_rel, base.irradiance_sha256, "solar irradiance")
    released = replace(base, version=settings.version, threshold=threshold, weights_sha256=sha)
    text = spec_toml(released, weights_rel.as_posix(), irr_rel.as_posix(),
                     release_comment(settings, report))
    with tempfile.TemporaryDirectory(dir=out, prefix=".release-") as tmp:
        stage = Path(tmp)
        try:
            (stage / weights_rel).parent.mkdir(parents=True)
            shutil.copyfile(settings.weights, stage / weights_rel)
            shutil.copyfile(base.irradiance_path, stage / irr_rel)
            (stage / spec_path.name).write_text(text)
        except OSError as exc:
            raise OutputError(out, f"cannot write the release ({exc.strerror or exc})") from None
        staged = ModelSpec.load(stage / spec_path.name)
        verify_sha256(staged.weights_path, staged.weights_sha256, "model weights")
        verify_sha256(staged.irradiance_path, staged.irradiance_sha256, "solar irradiance")
        load_model(staged)
        try:
            (out / weights_rel).parent.mkdir(parents=True, exist_ok=True)
            (stage / weights_rel).replace(out / weights_rel)
            if not (out / irr_rel).exists():
                (stage / irr_rel).replace(out / irr_rel)
            (stage / spec_path.name).replace(spec_path)
        except OSError as exc:
            raise OutputError(out, f"cannot move the release into place ({exc})") from None
    return spec_path
