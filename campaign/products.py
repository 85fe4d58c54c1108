"""Is an acquisition's product there, complete and current? The campaign's skip rule.

A product is `valid` when it passes the PGE's own check (`pge.manifest.product_problem`:
the provenance parses and every output it records matches the file beside it), the
provenance accounts for every file the run configuration writes (`Output.product_keys()`),
the PGE log is there (published last, after the
provenance), and, unless the caller passes no fingerprint, it was made with the settings the
campaign would use now (see `fingerprint`). A product with no file at all is `absent`.
Anything in between (a provenance missing after a crash mid-publish, a truncated or edited
file, a product of another model or with other output switches) is `invalid`, with the
reason: the campaign remakes it.

The files are looked up where the campaign puts them (`product_files(stem, folder)`), not at
the absolute paths the provenance recorded, so an output root that was moved still validates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pge.errors import RunConfigError
from pge.manifest import product_problem
from pge.runconfig import RunConfig
from pge.sds.files import product_files

ABSENT, VALID, INVALID = "absent", "valid", "invalid"
# The ancillary files whose checksums decide a product (as recorded by the provenance, and as
# `campaign.template` computes them); other entries a future PGE may record are not compared.
ANCILLARY_KEYS = ("model_weights", "irradiance", "model_spec")


@dataclass(frozen=True)
class ProductState:
    status: str  # ABSENT, VALID or INVALID
    reason: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # product files present, by key
    cloud_fraction_percent: float | None = None


def fingerprint(config: RunConfig, ancillary_sha256: Mapping[str, str]) -> dict[str, Any]:
    """What decides the science and the set of files of a product: input names, ancillary
    checksums, the decision rule, every output setting (version, formats, browse, UMM-G,
    ortho), precision and identification. Compute settings (device, threads, batch and block
    sizes), folders and `overwrite` are left out: they do not change the product, and the
    campaign itself sets threads and overwrite (always true) per run."""
    inputs = config.input_files
    return {
        "inputs": {k: (Path(v).name if v is not None else None)
                   for k, v in (("radiance", inputs.radiance), ("observation", inputs.observation),
                                ("location", inputs.location), ("glt", inputs.glt))},
        "ancillary_sha256": {k: ancillary_sha256.get(k) for k in ANCILLARY_KEYS},
        "algorithm": config.algorithm.model_dump(mode="json"),
        "output": config.output.model_dump(
            mode="json", exclude={"directory", "scratch_directory", "overwrite"}),
        "precision": config.processing.precision,
        "pge": config.pge.model_dump(mode="json"),
    }


def fingerprint_of_record(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fingerprint of the run a provenance record describes; None if it cannot be read."""
    try:
        text = record["run_configuration"]["text"]
        config = RunConfig.from_dict(json.loads(text), "/")
        ancillary = {k: record["ancillary"][k]["sha256"] for k in ANCILLARY_KEYS
                     if k in record["ancillary"]}
    except (KeyError, TypeError, ValueError, RunConfigError):
        return None
    return fingerprint(config, ancillary)


def differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


def product_state(stem: str, folder: Path | str, product_keys: Sequence[str],
                  expected_fingerprint: Mapping[str, Any] | None = None) -> ProductState:
    """The state of `stem`'s product in `folder`. `product_keys`: the files the run
    configuration writes (`Output.product_keys()`), each of which the provenance must record
    (or name as skipped, with the PGE's reason); `expected_fingerprint`: the settings it must
    have been made with (None: not compared). The checksums are checked by the PGE's own rule."""
    files = product_files(stem, folder)
    present = {k: str(p) for k, p in files.as_dict().items() if p.exists()}
    if not present:
        return ProductState(ABSENT)

    def invalid(reason: str) -> ProductState:
        return ProductState(INVALID, reason, present)

    problem = product_problem(files)
    if problem is not None:
        return invalid(problem)
    record = json.loads(files.provenance.read_text(encoding="utf-8"))
    accounted = set(record["outputs"]) | set(record.get("skipped_outputs") or {})
    missing = [k for k in product_keys if k not in accounted]
    if missing:
        return invalid(f"provenance records no {', '.join(missing)} (made with other output switches)")
    if "log" not in present:
        return invalid("PGE log missing (the run stopped while publishing)")
    if expected_fingerprint is not None:
        made = fingerprint_of_record(record)
        if made is None:
            return invalid("provenance run configuration unreadable with this software")
        changed = differences(made, expected_fingerprint)
        if changed:
            return invalid(f"made with a different run configuration ({', '.join(changed[:5])})")
    return ProductState(VALID, None, present, _cloud_fraction(files.metadata))


def _cloud_fraction(metadata: Path) -> float | None:
    try:
        value = json.loads(metadata.read_text())["cloud_fraction"]["percent_of_valid_pixels"]
        value = float(value)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None if math.isnan(value) else round(value, 4)
