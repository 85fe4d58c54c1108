"""`l2b-mask-release`: turn trained weights and their evaluation into files the PGE runs.

Writes `DIR/spectf_cloud_vX.Y.Z.toml` (the model specification: version, architecture, drop
ranges, threshold, sha256 of weights and irradiance) and, in the layout of the official
files, `DIR/spectf_cloud/vX.Y.Z/weights.pt` and `DIR/spectf_cloud/irr.npy`, and the STAC
model card `DIR/spectf_cloud_vX.Y.Z_stac.json` (`model_card.py`). It refuses weights that do
not load strictly into the architecture and an evaluation made of other weights: a release is
only ever what was measured. It also refuses a model whose best F1 on its own evaluation is
below the L2A rule's on the same spectra (the rule the model replaces; `--allow-worse`
releases it anyway, and the card and the specification's comment say so). Everything is staged
in a hidden folder in DIR, checked by loading it as the PGE will, then moved into place, the
specification last.
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
from l2b_mask.training.model_card import CardFiles, model_card

VERSION = re.compile(r"\d+\.\d+\.\d+")
#: what a release reads from the evaluation report
REPORT_FIELDS = (("weights_sha256",), ("best", "f1", "threshold"), ("best", "f1", "value"),
                 ("metrics", "f1"),
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
    allow_worse: bool = False  # release even when the best F1 is below the L2A rule's

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
    for keys in (("best", "f1", "value"), ("baselines", "l2a_rule", "f1")):
        value = report[keys[0]][keys[1]][keys[2]]
        if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise InputProductError(path, f"{'.'.join(keys)} is not an F1 in [0, 1] ({value!r})")
    return report


@dataclass(frozen=True)
class Comparison:
    """The model's best F1 against the L2A rule's, on the same test spectra."""

    best_f1: float
    best_threshold: float
    l2a_f1: float
    n: int

    @classmethod
    def of(cls, report: dict) -> Comparison:
        return cls(float(report["best"]["f1"]["value"]),
                   float(report["best"]["f1"]["threshold"]),
                   float(report["baselines"]["l2a_rule"]["f1"]), int(report["n"]))

    @property
    def worse(self) -> bool:
        return self.best_f1 < self.l2a_f1

    def text(self) -> str:
        verdict = "below" if self.worse else "at or above"
        return (f"best F1 {self.best_f1:.4f} (threshold {self.best_threshold:.2f}) is {verdict} "
                f"the L2A rule's F1 {self.l2a_f1:.4f} on the same {self.n} test spectra")

    def record(self, allowed_worse: bool) -> dict:
        """For the model card: the figures and whether a worse model was let through."""
        return {"best_f1": self.best_f1, "best_f1_threshold": self.best_threshold,
                "l2a_rule_f1": self.l2a_f1, "test_spectra": self.n,
                "below_l2a_rule": self.worse, "released_with_allow_worse": allowed_worse}


@dataclass(frozen=True)
class Released:
    """What a release wrote, and the comparison it was checked by."""

    spec: Path
    card: Path
    comparison: Comparison


def release_comment(settings: ReleaseSettings, report: dict) -> str:
    """Where the release came from, for the head of its specification."""
    auc = report["metrics"].get("roc_auc")
    return (f"SpecTf cloud model v{settings.version}, released "
            f"{datetime.now(UTC):%Y-%m-%d} by l2b-mask-release.\n"
            f"Weights: {settings.weights}\n"
            f"Evaluation: {settings.evaluation}: {report['n']} test spectra, F1 "
            f"{report['metrics']['f1']:.4f} at threshold {report['threshold']:.2f}, ROC AUC "
            f"{'n/a' if auc is None else f'{auc:.4f}'}; the L2A rule's F1 on the same spectra "
            f"{report['baselines']['l2a_rule']['f1']:.4f}.\n"
            f"{Comparison.of(report).text()}"
            f"{' (released with --allow-worse)' if Comparison.of(report).worse else ''}.\n")


def _check_inputs(settings: ReleaseSettings) -> tuple[ModelSpec, dict, str, float, Comparison]:
    base = ModelSpec.load(settings.spec)
    verify_sha256(base.irradiance_path, base.irradiance_sha256, "solar irradiance")
    load_model(base, settings.weights)  # strict: keys, shapes, finite floats
    report = read_evaluation(settings.evaluation)
    sha = sha256_of(settings.weights)
    if report["weights_sha256"].lower() != sha:
        raise AncillaryError(settings.weights, f"sha256 {sha} is not that of the weights "
                             f"evaluated in {settings.evaluation} ({report['weights_sha256']})")
    comparison = _check_comparison(settings, report)  # before the threshold: the deeper fault
    threshold = settings.threshold if settings.threshold is not None \
        else float(report["best"]["f1"]["threshold"])
    if not 0.0 < threshold < 1.0:
        raise UsageError(f"the evaluation's best-F1 threshold {threshold} is not strictly "
                         "between 0 and 1: give --threshold")
    return base, report, sha, threshold, comparison


def _check_comparison(settings: ReleaseSettings, report: dict) -> Comparison:
    """Refuse (AncillaryError, exit 5) a model worse than the L2A rule unless allowed."""
    comparison = Comparison.of(report)
    if comparison.worse and not settings.allow_worse:
        raise AncillaryError(settings.weights, f"{comparison.text()} ({settings.evaluation}): "
                             "not released; --allow-worse releases it anyway")
    return comparison


def release(settings: ReleaseSettings) -> Released:
    """Write the release; returns what it wrote and the comparison with the L2A rule."""
    base, report, sha, threshold, comparison = _check_inputs(settings)
    out = ensure_folder(settings.out)
    spec_path = out / f"{base.name}_v{settings.version}.toml"
    card_path = out / f"{base.name}_v{settings.version}_stac.json"
    weights_rel = Path(base.name) / f"v{settings.version}" / "weights.pt"
    irr_rel = Path(base.name) / "irr.npy"
    for p in (spec_path, card_path, out / weights_rel):
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
        model = load_model(staged)
        _write_card(stage / card_path.name, staged, spec_path.name, weights_rel, irr_rel,
                    sum(p.numel() for p in model.parameters()),
                    comparison.record(settings.allow_worse and comparison.worse))
        try:
            (out / weights_rel).parent.mkdir(parents=True, exist_ok=True)
            (stage / weights_rel).replace(out / weights_rel)
            if not (out / irr_rel).exists():
                (stage / irr_rel).replace(out / irr_rel)
            (stage / card_path.name).replace(card_path)
            (stage / spec_path.name).replace(spec_path)
        except OSError as exc:
            raise OutputError(out, f"cannot move the release into place ({exc})") from None
    return Released(spec_path, card_path, comparison)


def _write_card(path: Path, spec: ModelSpec, spec_name: str, weights_rel: Path, irr_rel: Path,
                total_parameters: int, evaluation: dict) -> None:
    """The STAC MLM model card, staged beside the specification."""
    import torch

    files = CardFiles(spec=spec_name, weights=weights_rel.as_posix(),
                      irradiance=irr_rel.as_posix(),
                      weights_size=spec.weights_path.stat().st_size,
                      irradiance_size=spec.irradiance_path.stat().st_size)
    card = model_card(spec, files, total_parameters=total_parameters,
                      framework_version=torch.__version__.split("+")[0], evaluation=evaluation,
                      released=datetime.now(UTC).replace(microsecond=0))
    try:
        path.write_text(json.dumps(card, indent=2) + "\n")
    except OSError as exc:
        raise OutputError(path, f"cannot write the model card ({exc.strerror or exc})") from None
