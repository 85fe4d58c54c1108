"""The run-configuration template: everything of a PGE run configuration but the acquisition.

The template is a run configuration without `input_files` and `output.directory`, which the
campaign sets per acquisition (and `output.overwrite`, which it sets to true). It is validated
once, by `pge.runconfig` itself, with placeholder inputs, so a template that passes here yields
run configurations the PGE accepts; relative paths resolve against the template's folder and
every generated run configuration is written out in full (defaults spelled out, paths
absolute) so it stands alone as the record of the run.

Its ancillary files are checked up front too (model specification readable, weights and
irradiance present with the checksums the specification pins): a wrong weights path would
otherwise fail every acquisition of the archive one by one with exit 5.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from campaign.errors import CampaignExit, ProblemsError
from campaign.inventory import Acquisition
from l2b_mask.errors import AncillaryError
from l2b_mask.spec import ModelSpec, sha256_of
from pge.errors import RunConfigError
from pge.runconfig import RunConfig

# Placeholders only let pge.runconfig validate the rest; the GLT one lets a template ask for
# `output.write_ortho` (an acquisition without a GLT then fails on its own, with exit 3).
_PLACEHOLDER_INPUTS = {"radiance": "campaign_placeholder_l1b_rdn.img",
                       "observation": "campaign_placeholder_l1b_obs.img",
                       "glt": "campaign_placeholder_l1b_glt.img"}
_PLACEHOLDER_OUTPUT = "campaign_placeholder_output"


class TemplateError(ProblemsError):
    """The template is unusable (campaign exit 3)."""

    exit_code = CampaignExit.TEMPLATE


@dataclass(frozen=True)
class Template:
    path: Path
    config: RunConfig  # validated, paths resolved, with placeholder inputs and output folder
    spec_path: Path
    ancillary_sha256: dict[str, str] = field(default_factory=dict)

    @property
    def product_version(self) -> str:
        return self.config.output.product_version

    @property
    def device(self) -> str:
        return self.config.processing.device

    @property
    def threads(self) -> int | None:
        return self.config.processing.threads

    def runconfig(self, acquisition: Acquisition, product_dir: Path | str, *,
                  threads: int | None = None) -> dict[str, Any]:
        """The full run configuration of one acquisition (JSON-ready). `output.overwrite` is
        true: the campaign runs the PGE only where the product is absent or not valid (or
        with --force), and one campaign at a time holds the output root."""
        data = self.config.model_dump(mode="json")
        data["input_files"] = {k: v for k, v in acquisition.inputs().items() if v is not None}
        data["output"]["directory"] = str(Path(product_dir).absolute())
        data["output"]["overwrite"] = True
        data["ancillary_files"]["model_spec"] = str(self.spec_path)
        if threads is not None:
            data["processing"]["threads"] = int(threads)
        return data


def _read_object(path: Path) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise TemplateError(path, f"not valid JSON: duplicate key {key!r}")
            out[key] = value
        return out

    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TemplateError(path, "template not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(path, f"template unreadable ({exc})") from None
    try:
        data = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise TemplateError(path, f"not valid JSON: {exc.msg} at line {exc.lineno} column "
                                  f"{exc.colno}") from None
    if not isinstance(data, dict):
        raise TemplateError(path, "top level must be a JSON object")
    return data


def load_template(path: Path | str) -> Template:
    """Read and validate a template and check its ancillary files; TemplateError otherwise."""
    p = Path(path).absolute()
    data = _read_object(p)
    problems = []
    if "input_files" in data:
        problems.append("input_files: set by the campaign per acquisition; remove it from the "
                        "template")
    output = data.get("output", {})
    if isinstance(output, dict):
        if "directory" in output:
            problems.append("output.directory: set by the campaign (<output root>/products/"
                            "<acquisition>); remove it from the template")
    probe = dict(data)
    probe["input_files"] = _PLACEHOLDER_INPUTS
    probe["output"] = {**output, "directory": _PLACEHOLDER_OUTPUT} if isinstance(output, dict) \
        else output
    try:
        config = RunConfig.from_dict(probe, p.parent, source=p)
    except RunConfigError as exc:
        problems += exc.errors
        config = None
    if problems or config is None:
        raise TemplateError(p, problems)
    return _with_ancillary(p, config)


def _with_ancillary(path: Path, config: RunConfig) -> Template:
    anc = config.ancillary_files
    try:
        spec = ModelSpec.load(anc.spec_path())
    except AncillaryError as exc:
        raise TemplateError(path, f"ancillary_files.model_spec: {exc}") from None
    problems, digests = [], {}
    for key, file, expected in (("model_weights", anc.model_weights, spec.weights_sha256),
                                ("irradiance", anc.irradiance, spec.irradiance_sha256)):
        try:
            digests[key] = sha256_of(file)
        except OSError as exc:
            problems.append(f"ancillary_files.{key}: {file}: unreadable ({exc.strerror})")
            continue
        if digests[key] != expected:
            problems.append(f"ancillary_files.{key}: {file}: sha256 {digests[key]} differs from "
                            f"{expected} pinned by {spec.path}")
    if problems:
        raise TemplateError(path, problems)
    digests["model_spec"] = sha256_of(spec.path)
    return Template(path=path, config=config, spec_path=Path(spec.path).absolute(),
                    ancillary_sha256=digests)


def describe(template: Template) -> Mapping[str, Any]:
    """What the campaign report records about the template."""
    return {"path": str(template.path), "sha256": sha256_of(template.path),
            "product_version": template.product_version,
            "ancillary_sha256": template.ancillary_sha256}
