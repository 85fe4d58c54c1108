"""The model specification: one small TOML file per model version, kept in `ancillary/`.

It is the single place for the facts that vary with the weights (dimensions, dropped band
ranges, decision rule, expected checksums), so neither code nor run configurations repeat
them. `ModelSpec.decision` resolves the decision rule in force once, the model's unless a
caller overrides it, into one `DecisionRule` that every step and record then uses.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l2b_mask.errors import AncillaryError
from l2b_mask.nodata import FLAG_NO_VALUE

COMPARISONS = (">", ">=")
DEFAULT_VERSION = "0.1.0"


MODEL_SOURCE = "model specification"


@dataclass(frozen=True)
class DecisionRule:
    """The cloud decision in force: cloud where P(cloud) `comparison` `threshold`.

    `source` says where the two came from (the model specification, or what overrode it), so
    the records can say it too. Resolved once per run (`ModelSpec.decision`), never re-read.
    """

    threshold: float
    comparison: str
    source: str = MODEL_SOURCE

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold {self.threshold} outside (0, 1)")
        if self.comparison not in COMPARISONS:
            raise ValueError(f"comparison must be one of {COMPARISONS}, not {self.comparison!r}")

    def flag(self, probability: np.ndarray) -> np.ndarray:
        """uint8 flag: 1 cloud, 0 clear, 255 where the probability is NaN (no value)."""
        probability = np.asarray(probability)
        if self.comparison == ">":
            cloudy = probability > self.threshold
        else:
            cloudy = probability >= self.threshold
        flag = cloudy.astype(np.uint8)
        flag[np.isnan(probability)] = FLAG_NO_VALUE
        return flag

    def __str__(self) -> str:
        return f"P(cloud) {self.comparison} {self.threshold} ({self.source})"


def ancillary_dir() -> Path:
    """The project's ancillary folder (override with L2B_MASK_ANCILLARY_DIR)."""
    env = os.environ.get("L2B_MASK_ANCILLARY_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "ancillary"


def default_spec_path(version: str = DEFAULT_VERSION) -> Path:
    return ancillary_dir() / f"spectf_cloud_v{version}.toml"


@dataclass(frozen=True)
class ModelSpec:
    """What a SpecTf weights file needs around it to produce a cloud mask."""

    path: Path
    name: str
    version: str
    embed_dim: int
    num_heads: int
    ff_dim: int
    num_layers: int
    aggregation: str
    residual: bool
    layer_norm_eps: float
    wavelength_offset_nm: float
    wavelength_scale_nm: float
    drop_ranges_nm: tuple[tuple[float, float], ...]
    threshold: float
    comparison: str
    weights_path: Path
    weights_sha256: str
    irradiance_path: Path
    irradiance_sha256: str

    @classmethod
    def load(cls, path: Path | str | None = None) -> ModelSpec:
        p = Path(path) if path is not None else default_spec_path()
        try:
            doc = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise AncillaryError(p, "model specification not found") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise AncillaryError(p, f"model specification unreadable ({exc})") from None
        try:
            m, b, d, a = doc["model"], doc["bands"], doc["decision"], doc["ancillary"]
            ranges = tuple((float(lo), float(hi)) for lo, hi in b["drop_ranges_nm"])
            spec = cls(
                path=p,
                name=str(m["name"]),
                version=str(m["version"]),
                embed_dim=int(m["embed_dim"]),
                num_heads=int(m["num_heads"]),
                ff_dim=int(m["ff_dim"]),
                num_layers=int(m["num_layers"]),
                aggregation=str(m["aggregation"]),
                residual=bool(m["residual"]),
                layer_norm_eps=float(m["layer_norm_eps"]),
                wavelength_offset_nm=float(m["wavelength_offset_nm"]),
                wavelength_scale_nm=float(m["wavelength_scale_nm"]),
                drop_ranges_nm=ranges,
                threshold=float(d["threshold"]),
                comparison=str(d["comparison"]),
                weights_path=(p.parent / a["weights"]),
                weights_sha256=str(a["weights_sha256"]).lower(),
                irradiance_path=(p.parent / a["irradiance"]),
                irradiance_sha256=str(a["irradiance_sha256"]).lower(),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AncillaryError(p, f"model specification lacks or mistypes {exc}") from None
        spec._check()
        return spec

    def _check(self) -> None:
        problems = []
        if self.aggregation != "max":
            problems.append(f"aggregation {self.aggregation!r} is not supported (max)")
        if self.residual:
            problems.append("residual encoder layers are not supported by this SpecTf model")
        if self.embed_dim % self.num_heads:
            problems.append("embed_dim is not a multiple of num_heads")
        if not 0.0 < self.threshold < 1.0:
            problems.append(f"threshold {self.threshold} outside (0, 1)")
        if self.comparison not in COMPARISONS:
            problems.append(f"comparison {self.comparison!r} is not one of {COMPARISONS}")
        if any(lo > hi for lo, hi in self.drop_ranges_nm):
            problems.append("a drop range has its lower bound above its upper bound")
        if problems:
            raise AncillaryError(self.path, "; ".join(problems))

    def decision(self, threshold: float | None = None, comparison: str | None = None,
                 override: str = "run configuration") -> DecisionRule:
        """The decision rule in force: the model's threshold and comparison, each unless the
        caller gives its own (`override` names where an override came from)."""
        mine = [name for name, value in (("threshold", threshold), ("comparison", comparison))
                if value is not None]
        if not mine:
            source = f"{MODEL_SOURCE} v{self.version}"
        elif len(mine) == 2:
            source = override
        else:
            source = f"{mine[0]} from the {override}, the rest from the {MODEL_SOURCE} v{self.version}"
        return DecisionRule(self.threshold if threshold is None else float(threshold),
                            self.comparison if comparison is None else comparison, source)


def file_digest(path: Path | str, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in pieces (the one file-hash loop of the project)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def sha256_of(path: Path | str) -> str:
    return file_digest(path, "sha256")


def verify_sha256(path: Path | str, expected: str, what: str) -> None:
    """Raise AncillaryError unless the file exists and has the expected sha256."""
    p = Path(path)
    if not p.is_file():
        raise AncillaryError(p, f"{what} not found")
    actual = sha256_of(p)
    if actual != expected.lower():
        raise AncillaryError(p, f"{what} sha256 mismatch: {actual}, expected {expected}")
