"""The run configuration: the JSON file the orchestration writes for each PGE run.

The models are the contract. They only check form (types, ranges, patterns, unknown keys),
never whether a file exists: the PGE checks inputs and ancillary files in its own step so
that a missing radiance exits 4 and a missing weights file exits 5, not 3.

Coercion rules, on purpose:
- numbers are lax: the orchestration's templating may write "4096" or "0.5" as strings, and
  those are accepted; a boolean is never accepted as a number (true is not a batch size);
- booleans are strict: only JSON true/false, since lax pydantic would read "off", "n", 0 or
  "0" as false, and a mistyped `overwrite` must fail loudly instead;
- relative paths resolve against the folder of the run configuration file, in `from_file`
  (or against `base_dir` in `from_dict`), not against the working directory;
- duplicate keys and the non-JSON constants NaN/Infinity are rejected when parsing.

Regenerate the committed schema after changing a model:
    .venv/bin/python -m pge.runconfig --write-schema run_configs/schema.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from l2b_mask.algorithm.beyond_cloud import BeyondCloudSettings
from l2b_mask.algorithm.cloud_buffer import DEFAULT_CLOUD_HEIGHT_M
from l2b_mask.algorithm.cloud_shadow import DEFAULT_CLOUD_HEIGHTS_M, MAX_CLOUD_HEIGHT_M, validate_height_range
from l2b_mask.products.table import DATA_PRODUCTS
from l2b_mask.spec import DecisionRule, ModelSpec, default_spec_path
from pge.errors import RunConfigError, one_line
from pge.sds.files import enabled_keys

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_TITLE = "EMIT L2B cloud mask PGE run configuration"
SCHEMA_DESCRIPTION = (
    "One JSON object per PGE run. Relative paths resolve against the folder of the run "
    "configuration file. Existence of files is not part of this schema: the PGE checks inputs "
    "(exit 4) and ancillary files (exit 5) itself."
)
_RELATIVE = " Relative paths resolve against the run configuration file's folder."


def _not_bool(value: Any) -> Any:
    """Lax pydantic reads true as 1; a boolean where a number belongs is always a mistake."""
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "Input should be a number, not a boolean")
    return value


def _path_string(value: Any) -> Any:
    """A path is a non-empty string: Path("") is ".", which would silently name the run
    configuration's own folder, and pydantic's own wording for a non-string is obscure."""
    if isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("path_type", "Input should be a string (a path)")
    if not value.strip():
        raise PydanticCustomError("empty_path", "Path should not be empty")
    return value


Number = BeforeValidator(_not_bool)
FilePath = Annotated[Path, BeforeValidator(_path_string)]
# Constraints come before the validator so they reach the JSON schema as JSON Schema keywords.
Threshold = Annotated[float, Field(gt=0.0, lt=1.0, allow_inf_nan=False), Number]
CloudHeight = Annotated[float, Field(ge=0.0, le=MAX_CLOUD_HEIGHT_M, allow_inf_nan=False), Number]
# torch crashes (SIGSEGV) when asked for ~100000 threads: bound it where configs are checked.
ThreadCount = Annotated[int, Field(ge=1, le=1024), Number]


class _Model(BaseModel):
    """Frozen, unknown keys rejected: a misspelt optional key must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class InputFiles(_Model):
    radiance: FilePath = Field(
        description="EMIT L1B radiance: the ENVI binary (.img) or its header (.hdr), or the LP "
                    "DAAC granule EMIT_L1B_RAD_001_<time>_<orbit>_<scene>.nc as downloaded (told "
                    "apart by content). A granule names the product EMIT_L2B_MASK_..." + _RELATIVE)
    observation: FilePath = Field(
        description="EMIT L1B observation geometry, same lines and samples as the radiance and "
                    "in the same format: ENVI (.img or .hdr) with an ENVI radiance, the LP DAAC "
                    "granule EMIT_L1B_OBS_...nc of the same acquisition with a granule." + _RELATIVE)
    location: FilePath | None = Field(
        None, description="EMIT L1B location (ENVI LOC, or a granule with a 'location' group); "
                          "optional, copied into the product's geolocation when given; its "
                          "ground spacing gives the cloud buffer's pixel size (else the nominal "
                          "60 m) and the cloud shadow needs it (not made without). Omitted with a "
                          "radiance granule: its 'location' group is used, and a granule without "
                          "it (or without lon, lat, elev, glt_x or glt_y) is refused as "
                          "malformed (exit 4)." + _RELATIVE)
    glt: FilePath | None = Field(
        None, description="EMIT L1B geometry lookup table (ENVI GLT, or a granule with "
                          "'location/glt_x', 'glt_y'); optional, used for the orthorectified "
                          "outputs when given. Omitted with a radiance granule: its 'location' "
                          "group's GLT is used." + _RELATIVE)


class AncillaryFiles(_Model):
    model_weights: FilePath = Field(
        description="SpecTf weights file (.pt); its sha256 must match the model "
                    "specification." + _RELATIVE)
    irradiance: FilePath = Field(
        description="Solar irradiance table (.npy) for top-of-atmosphere reflectance; its sha256 "
                    "must match the model specification." + _RELATIVE)
    model_spec: FilePath | None = Field(
        None, description="Model specification TOML; omitted means the default one in the "
                          "project's ancillary/ folder." + _RELATIVE)

    def spec_path(self) -> Path:
        """The specification to load: the configured one, else the project default."""
        return self.model_spec if self.model_spec is not None else default_spec_path()


class Output(_Model):
    # The rule of `_a_data_file`, for schema-driven tools: not both data formats switched off.
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"not": {
        "required": ["write_envi", "write_netcdf"],
        "properties": {"write_envi": {"const": False}, "write_netcdf": {"const": False}}}})

    directory: FilePath = Field(
        description="Folder that receives the products; created if absent." + _RELATIVE)
    scratch_directory: FilePath | None = Field(
        None, description="Folder for intermediate files; omitted means a temporary folder "
                          "inside the output directory, removed at the end." + _RELATIVE)
    overwrite: StrictBool = Field(
        False, description="Replace products that already exist; when false an existing "
                           "product is an output error (exit 7). JSON true/false only.")
    product_version: str = Field(
        "01", pattern=r"^[0-9]{2}$",
        description="Two-digit product version written into file names and metadata.")
    write_netcdf: StrictBool = Field(
        True, description="Write the NetCDF product. JSON true/false only. At least one of "
                          "write_netcdf and write_envi must be true.")
    write_envi: StrictBool = Field(
        True, description="Write the ENVI products. JSON true/false only. At least one of "
                          "write_envi and write_netcdf must be true.")
    write_browse: StrictBool = Field(
        True, description="Write the browse image (<product>.png: true colour with the cloud "
                          "mask drawn over it, longest side at most 1000 px).")
    write_ummg: StrictBool = Field(
        True, description="Write the granule metadata for the DAAC (<product>.cmr.json, NASA "
                          "UMM-G: cloud cover, extent, files with SHA-512).")
    write_ortho: StrictBool = Field(
        False, description="Also write the mask, probability, buffer distance and (with a "
                           "location file) shadow resampled to the GLT grid as cloud-optimised "
                           "GeoTIFFs (<product>_ortho.tif, _ortho_prob.tif, _ortho_buffer.tif, "
                           "_ortho_shadow.tif; EPSG:4326); needs input_files.glt.")

    @model_validator(mode="after")
    def _a_data_file(self) -> Output:
        # Browse, ortho and metadata are views of or facts about the mask; without the mask
        # itself (ENVI or netCDF) a "product" is meaningless to users and has no granule file.
        if not (self.write_envi or self.write_netcdf):
            raise PydanticCustomError(
                "no_data_file", "at least one of output.write_envi / output.write_netcdf must be "
                                "true: a product needs a data file (browse, ortho and metadata "
                                "alone are not a product)")
        return self

    def product_keys(self) -> list[str]:
        """The product files these settings write, provenance and log aside, from the product
        table: one list, so the PGE and the campaign agree on what a complete product is."""
        return enabled_keys(self.model_dump())

    def switched_on(self, switch: str) -> bool:
        """Whether the output switch a product table row names is on; a name that is no field
        here is an error, never a product silently left out."""
        if switch not in type(self).model_fields:
            raise KeyError(f"the product table names output switch {switch!r}, which is not a "
                           "field of the run configuration's output settings")
        return bool(getattr(self, switch))

    def glt_switches(self) -> list[str]:
        """The switches on whose products are made from a GLT (the product table's
        `needs_glt`): with any, the run needs one."""
        return list(dict.fromkeys(row.switch for row in DATA_PRODUCTS
                                  if row.needs_glt and self.switched_on(row.switch)))


class Algorithm(_Model):
    threshold: Threshold | None = Field(
        None, description="Cloud probability threshold, strictly between 0 and 1; omitted or null "
                    "means the model specification's ([decision] threshold).")
    comparison: Literal[">", ">="] | None = Field(
        None, description="Decision rule: '>' flags cloud where P(cloud) > threshold (the "
                          "ATBD rule); '>=' where P(cloud) >= threshold; omitted or null means "
                          "the model specification's ([decision] comparison).")
    buffer_cloud_height_m: Annotated[float, Field(gt=0.0, le=MAX_CLOUD_HEIGHT_M,
                                                  allow_inf_nan=False), Number] = Field(
        DEFAULT_CLOUD_HEIGHT_M,
        description="Cloud-top height H (metres) of the cloud buffer distance's reach "
                    "tan(solar zenith) x H / pixel size: pixels at least that far from every "
                    "cloud pixel get -1 (ATBD 8.1). Greater than 0, at most 20000.")
    shadow_cloud_heights_m: Annotated[list[CloudHeight], Field(min_length=2, max_length=2)] = Field(
        default_factory=lambda: list(DEFAULT_CLOUD_HEIGHTS_M),
        description="[min, max] cloud-top heights (metres) over which each cloud pixel's shadow "
                    "is swept (ATBD 8.2); 0 <= min <= max <= 20000 (min = max sweeps one "
                    "height).")
    shadow_darkness_test: StrictBool = Field(
        True, description="Keep only the swept shadow pixels that are also darker than the clear "
                          "ground of their kind around them (ATBD 8.2); false gives the pure "
                          "geometric shadow. JSON true/false only.")

    @field_validator("shadow_cloud_heights_m")
    @classmethod
    def _height_range(cls, value: list[float]) -> list[float]:
        try:
            return list(validate_height_range(value))
        except ValueError as exc:
            raise PydanticCustomError("height_range", str(exc)) from None

    def beyond_cloud(self) -> BeyondCloudSettings:
        """The cloud buffer and shadow settings, as the library takes them."""
        return BeyondCloudSettings(self.buffer_cloud_height_m,
                                   tuple(self.shadow_cloud_heights_m),  # type: ignore[arg-type]
                                   self.shadow_darkness_test)

    def decision(self, spec: ModelSpec) -> DecisionRule:
        """The decision rule in force, resolved once: the model specification's threshold and
        comparison, each unless this configuration sets its own."""
        return spec.decision(self.threshold, self.comparison, "run configuration")


class Processing(_Model):
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda|cuda:(0|[1-9][0-9]*))$",
        description="'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'. Whether "
                    "the device exists is checked when the model loads (exit 6), not here.")
    precision: Literal["float32", "float32-fastexp", "bfloat16"] = Field(
        "float32", description="Arithmetic of the model forward pass: 'float32' (the reference; "
                               "the compiled CPU kernel when available), 'float32-fastexp' (a "
                               "cheaper exponential, max |dP| ~3e-4), 'bfloat16' (16-bit products: "
                               "on CPUs with AVX-512 VNNI/BF16 the mixed-precision kernel, int16 "
                               "projections and Q.K^T with bfloat16 P.V, ~1.6x float32; elsewhere "
                               "bfloat16 attention products in torch, meant for GPUs). Max |dP| "
                               "0.022-0.034 and 1 flag flip in 1847 on the reference scene.")
    batch_size: Annotated[int, Number] = Field(
        4096, ge=1, le=1_000_000, description="Spectra per forward pass.")
    lines_per_block: Annotated[int, Number] = Field(
        64, ge=1, le=100_000,
        description="Scene lines read and processed at a time; bounds memory use.")
    threads: ThreadCount | None = Field(
        None, description="CPU threads for torch; omitted means torch's default.")


class PgeInfo(_Model):
    pge_name: str = Field(
        "l2b-mask-pge", min_length=1, max_length=64,
        description="Name of the PGE, recorded in product metadata.")
    software_build_version: str = Field(
        "000000", pattern=r"^[A-Za-z0-9._-]{1,32}$",
        description="Build identifier of the delivered software (e.g. '010635'), recorded in "
                    "product metadata.")
    documentation_version: str = Field(
        "EMIT L2B Cloud Mask ATBD", min_length=1, max_length=200,
        description="Algorithm document the product follows, recorded in product metadata.")


class RunConfig(_Model):
    """One PGE run: what to read, where to write, and how to compute."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, title=SCHEMA_TITLE,
        json_schema_extra={"description": SCHEMA_DESCRIPTION})

    input_files: InputFiles = Field(description="Input products of the scene.")
    ancillary_files: AncillaryFiles = Field(description="Model files delivered with the PGE.")
    output: Output = Field(description="Where and what to write.")
    algorithm: Algorithm = Field(
        default_factory=Algorithm, description="Decision rule (defaults follow the model) and "
                                               "the cloud buffer and shadow settings.")
    processing: Processing = Field(
        default_factory=Processing, description="Compute settings; they do not change results "
                                                "beyond the chosen precision.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest level of log records emitted.")
    pge: PgeInfo = Field(
        default_factory=PgeInfo, description="Identification recorded in product metadata.")

    @model_validator(mode="after")
    def _ortho_needs_glt(self) -> RunConfig:
        # A radiance granule (.nc) carries its GLT: `pge.inputs` checks that it has one.
        granule = self.input_files.radiance.suffix.lower() == ".nc"
        switches = self.output.glt_switches()
        if switches and self.input_files.glt is None and not granule:
            raise PydanticCustomError(
                "ortho_needs_glt", "output.{switch} is true but input_files.glt is not given "
                                   "(the orthorectified grid is the GLT's)",
                {"switch": switches[0]})
        return self

    @classmethod
    def from_file(cls, path: Path | str) -> RunConfig:
        """Read, parse and validate a run configuration; any problem is a RunConfigError."""
        return cls.read(path)[0]

    @classmethod
    def read(cls, path: Path | str) -> tuple[RunConfig, bytes]:
        """The validated configuration and the file's bytes as read (once), for provenance."""
        p = Path(path)
        raw = _read_bytes(p)
        return cls.from_dict(_parse_json_object(raw, p), p.parent, source=p), raw

    @classmethod
    def from_dict(cls, data: Any, base_dir: Path | str, *,
                  source: Path | str | None = None) -> RunConfig:
        """Validate already-parsed JSON; relative paths resolve against `base_dir`.

        `source` only names the file in error messages.
        """
        if not isinstance(data, dict):
            raise RunConfigError(source, f"top level must be a JSON object, not {_kind(data)}")
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            raise RunConfigError(source, _describe(exc)) from None
        return config.with_paths_resolved(base_dir)

    def with_paths_resolved(self, base_dir: Path | str) -> RunConfig:
        """A copy with every relative path joined to `base_dir` (made absolute).

        The joined path is not normalised or symlink-resolved: input names must stay as the
        orchestration staged them.
        """
        return _resolve(self, Path(base_dir).absolute())

    def to_json(self) -> str:
        """Canonical dump (sorted keys, every default spelled out) for provenance."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True)


@dataclass(frozen=True)
class ConfigFile:
    """A run configuration file read once: the bytes the provenance hashes are the bytes the
    configuration was parsed from (a second read could see another file, or nothing at all
    from a pipe)."""

    path: Path
    raw: bytes
    config: RunConfig

    @classmethod
    def read(cls, path: Path | str) -> ConfigFile:
        """Read, parse and validate; any problem is a RunConfigError."""
        config, raw = RunConfig.read(path)
        return cls(Path(path), raw, config)


def _resolve(model: BaseModel, base: Path) -> Any:
    changes: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            changes[name] = _resolve(value, base)
        elif isinstance(value, Path) and not value.is_absolute():
            changes[name] = base / value
    return model.model_copy(update=changes)


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Python's json keeps the last of repeated keys; an operator's edit could vanish unseen."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise RunConfigError(path, "run configuration not found") from None
    except IsADirectoryError:
        raise RunConfigError(path, "run configuration is a directory, not a file") from None
    except OSError as exc:
        raise RunConfigError(path, f"run configuration unreadable ({exc.strerror})") from None


def _parse_json_object(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RunConfigError(path, f"run configuration is not UTF-8 text ({exc.reason} at "
                                   f"byte {exc.start})") from None
    if not text.strip():
        raise RunConfigError(path, "run configuration is empty")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise RunConfigError(path, f"not valid JSON: {exc.msg} at line {exc.lineno} column "
                                   f"{exc.colno}") from None
    except _DuplicateKey as exc:
        raise RunConfigError(path, f"not valid JSON: duplicate key {exc.args[0]!r}") from None
    except (ValueError, RecursionError) as exc:
        raise RunConfigError(path, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RunConfigError(path, f"top level must be a JSON object, not {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    """JSON's name for a parsed value, for messages an operator reads."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _describe(exc: ValidationError) -> list[tuple[str, str]]:
    """Every validation error as (dotted.location, message), in field order: pairs, so that a
    key of the user's holding ': ' cannot be mistaken for the end of its location."""
    return [(".".join(str(part) for part in err["loc"]) or "(top level)", err["msg"])
            for err in exc.errors(include_url=False)]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the run configuration, for the orchestration and editors."""
    schema = RunConfig.model_json_schema()
    return {"$schema": SCHEMA_DIALECT, "title": SCHEMA_TITLE,
            "description": SCHEMA_DESCRIPTION, **schema}


def schema_text() -> str:
    """The exact text of the committed schema file (so a test can compare byte for byte)."""
    return json.dumps(json_schema(), indent=2) + "\n"


def write_schema(path: Path | str) -> None:
    Path(path).write_text(schema_text())


def main(argv: list[str] | None = None) -> int:
    """Small developer entry: print or write the schema, or check a run configuration."""
    parser = argparse.ArgumentParser(prog="python -m pge.runconfig", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--schema", action="store_true", help="print the JSON Schema")
    group.add_argument("--write-schema", metavar="PATH", help="write the JSON Schema to PATH")
    group.add_argument("--check", metavar="RUNCONFIG",
                       help="validate a run configuration and print it in canonical form")
    args = parser.parse_args(argv)
    if args.schema:
        sys.stdout.write(schema_text())
    elif args.write_schema:
        write_schema(args.write_schema)
    else:
        try:
            config = RunConfig.from_file(args.check)
        except RunConfigError as exc:
            print(one_line(exc), file=sys.stderr)
            return int(exc.exit_code)
        print(config.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
