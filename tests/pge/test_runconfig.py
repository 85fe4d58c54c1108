"""The run configuration contract: what validates, what fails, and that every failure is exit 3."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l2b_mask.spec import default_spec_path
from pge.errors import ExitCode, RunConfigError, exit_code_for
from pge.runconfig import RunConfig, json_schema, main, schema_text

RUN_CONFIGS = Path(__file__).resolve().parents[2] / "run_configs"
EXAMPLE = RUN_CONFIGS / "example.json"
SCHEMA = RUN_CONFIGS / "schema.json"


def example() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text())


def minimal() -> dict[str, Any]:
    """Only the required keys: the optional groups must fill in from defaults."""
    return {
        "input_files": {"radiance": "rdn.img", "observation": "obs.img"},
        "ancillary_files": {"model_weights": "w.pt", "irradiance": "irr.npy"},
        "output": {"directory": "out"},
    }


def errors_of(data: Any, base: Path = Path("/base")) -> list[str]:
    with pytest.raises(RunConfigError) as info:
        RunConfig.from_dict(data, base)
    assert info.value.exit_code == ExitCode.RUNCONFIG
    return info.value.errors


def with_value(dotted: str, value: Any, data: dict[str, Any] | None = None) -> dict[str, Any]:
    data = copy.deepcopy(data if data is not None else example())
    *groups, key = dotted.split(".")
    target = data
    for g in groups:
        target = target[g]
    target[key] = value
    return data


def without(dotted: str) -> dict[str, Any]:
    data = example()
    *groups, key = dotted.split(".")
    target = data
    for g in groups:
        target = target[g]
    del target[key]
    return data


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# --- the committed files -------------------------------------------------------------------

def test_example_validates_and_resolves_against_its_folder():
    config = RunConfig.from_file(EXAMPLE)
    assert config.input_files.radiance == (
        RUN_CONFIGS / "emit20240302t005829_o06201_s000_l1b_rdn_b0106_v01.img")
    assert config.ancillary_files.model_weights == (
        RUN_CONFIGS / "../ancillary/spectf_cloud/v0.1.0/weights.pt")
    assert config.ancillary_files.model_weights.resolve() == (
        RUN_CONFIGS.parent / "ancillary/spectf_cloud/v0.1.0/weights.pt")


def test_example_spells_out_every_field():
    """'Complete' means a reader sees every option; a new field must be added to the example."""
    def keys(d: dict[str, Any], prefix: str = "") -> set[str]:
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict):
                out |= keys(v, prefix + k + ".")
        return out

    assert keys(example()) == keys(json.loads(RunConfig.from_file(EXAMPLE).to_json()))


def test_committed_schema_is_current():
    assert json.loads(SCHEMA.read_text()) == json_schema(), (
        "run_configs/schema.json is stale: run "
        ".venv/bin/python -m pge.runconfig --write-schema run_configs/schema.json")
    assert SCHEMA.read_text() == schema_text()


def test_schema_has_dialect_title_and_descriptions():
    schema = json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["title"] and schema["description"]
    assert set(schema["required"]) == {"input_files", "ancillary_files", "output"}
    assert schema["additionalProperties"] is False
    for name, model in schema["$defs"].items():
        assert model["additionalProperties"] is False, name
        for field, prop in model["properties"].items():
            assert prop.get("description"), f"{name}.{field} has no description"
    for field, prop in schema["properties"].items():
        assert prop.get("description"), f"{field} has no description"


# --- paths ---------------------------------------------------------------------------------

def test_relative_paths_resolve_against_the_file_folder_absolute_stay(tmp_path, monkeypatch):
    data = minimal()
    data["input_files"]["observation"] = "/abs/obs.img"
    data["input_files"]["glt"] = "../sub/glt.img"
    data["output"]["scratch_directory"] = "/abs/scratch"
    write(tmp_path / "cfg" / "run.json", json.dumps(data))
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    config = RunConfig.from_file(Path("cfg/run.json"))
    folder = tmp_path / "cfg"
    assert config.input_files.radiance == folder / "rdn.img"
    assert config.input_files.observation == Path("/abs/obs.img")
    assert config.input_files.glt == folder / "../sub/glt.img"
    assert config.input_files.location is None
    assert config.ancillary_files.model_weights == folder / "w.pt"
    assert config.ancillary_files.irradiance == folder / "irr.npy"
    assert config.ancillary_files.model_spec is None
    assert config.output.directory == folder / "out"
    assert config.output.scratch_directory == Path("/abs/scratch")


def test_from_dict_resolves_against_base_dir():
    config = RunConfig.from_dict(minimal(), "/some/where")
    assert config.input_files.radiance == Path("/some/where/rdn.img")
    assert config.output.directory == Path("/some/where/out")


def test_paths_are_not_checked_for_existence(tmp_path):
    config = RunConfig.from_dict(minimal(), tmp_path)
    assert not config.input_files.radiance.exists()


def test_empty_path_rejected():
    assert errors_of(with_value("input_files.radiance", "")) == [
        "input_files.radiance: Path should not be empty"]
    assert errors_of(with_value("output.directory", "  ")) == [
        "output.directory: Path should not be empty"]


def test_model_spec_defaults_to_project_ancillary():
    config = RunConfig.from_dict(minimal(), "/b")
    assert config.ancillary_files.spec_path() == default_spec_path()
    config = RunConfig.from_file(EXAMPLE)
    assert config.ancillary_files.spec_path() == config.ancillary_files.model_spec


# --- defaults, coercion, canonical form -----------------------------------------------------

def test_defaults():
    config = RunConfig.from_dict(minimal(), "/b")
    assert config.algorithm.threshold is None
    assert config.algorithm.comparison is None  # the model specification's
    assert config.processing.device == "auto"
    assert config.processing.precision == "float32"
    assert config.processing.batch_size == 4096
    assert config.processing.lines_per_block == 64
    assert config.processing.threads is None
    assert config.output.overwrite is False
    assert config.output.product_version == "01"
    assert config.output.write_netcdf is True and config.output.write_envi is True
    assert config.log_level == "info"
    assert config.pge.pge_name == "l2b-mask-pge"
    assert config.pge.software_build_version == "000000"


def test_decision_falls_back_to_the_model_spec(spec):
    model = replace(spec, threshold=0.42, comparison=">=")
    rule = RunConfig.from_dict(minimal(), "/b").algorithm.decision(model)
    assert (rule.threshold, rule.comparison) == (0.42, ">=")
    assert rule.source == f"model specification v{spec.version}"
    config = RunConfig.from_dict(with_value("algorithm", {"threshold": 0.6}, minimal()), "/b")
    rule = config.algorithm.decision(model)
    assert (rule.threshold, rule.comparison) == (0.6, ">=")
    assert "threshold from the run configuration" in rule.source
    config = RunConfig.from_dict(with_value("algorithm", {"comparison": ">"}, minimal()), "/b")
    assert config.algorithm.decision(model).comparison == ">"


def test_numeric_strings_coerced():
    data = with_value("processing.batch_size", "4096")
    data = with_value("processing.lines_per_block", "32", data)
    data = with_value("algorithm.threshold", "0.5", data)
    config = RunConfig.from_dict(data, "/b")
    assert config.processing.batch_size == 4096
    assert config.processing.lines_per_block == 32
    assert config.algorithm.threshold == 0.5


@pytest.mark.parametrize("value", ["false", "true", 0, 1, "no", None])
def test_booleans_strict(value):
    assert errors_of(with_value("output.overwrite", value)) == [
        "output.overwrite: Input should be a valid boolean"]


@pytest.mark.parametrize("field", ["processing.batch_size", "processing.lines_per_block",
                                   "processing.threads", "algorithm.threshold"])
def test_boolean_is_not_a_number(field):
    assert errors_of(with_value(field, True)) == [
        f"{field}: Input should be a number, not a boolean"]


def test_to_json_is_canonical_and_round_trips():
    config = RunConfig.from_file(EXAMPLE)
    text = config.to_json()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True)
    assert RunConfig.from_dict(json.loads(text), "/elsewhere") == config  # absolute paths stay
    minimal_config = RunConfig.from_dict(minimal(), "/b")
    assert json.loads(minimal_config.to_json())["processing"]["batch_size"] == 4096


def test_frozen():
    config = RunConfig.from_file(EXAMPLE)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError for frozen fields
        config.processing.batch_size = 1  # type: ignore[misc]


# --- validation errors ---------------------------------------------------------------------

def test_every_error_reported_at_once():
    data = with_value("processing.batch_size", 0)
    del data["input_files"]["radiance"]
    data["output"]["extra_key"] = 1
    with pytest.raises(RunConfigError) as info:
        RunConfig.from_dict(data, "/b", source=Path("/cfg/run.json"))
    err = info.value
    assert sorted(err.errors) == sorted([
        "processing.batch_size: Input should be greater than or equal to 1",
        "input_files.radiance: Field required",
        "output.extra_key: Extra inputs are not permitted",
    ])
    assert exit_code_for(err) == ExitCode.RUNCONFIG
    assert str(err).startswith("/cfg/run.json: ")
    for line in err.errors:
        assert line in str(err)


@pytest.mark.parametrize("group", [None, "input_files", "ancillary_files", "output", "algorithm",
                                   "processing", "pge"])
def test_unknown_keys_rejected_at_every_level(group):
    data = example()
    target = data if group is None else data[group]
    target["typo_key"] = "x"
    location = "typo_key" if group is None else f"{group}.typo_key"
    assert errors_of(data) == [f"{location}: Extra inputs are not permitted"]


@pytest.mark.parametrize("field", [
    "input_files", "ancillary_files", "output",
    "input_files.radiance", "input_files.observation",
    "ancillary_files.model_weights", "ancillary_files.irradiance", "output.directory",
])
def test_missing_required_keys(field):
    assert errors_of(without(field)) == [f"{field}: Field required"]


@pytest.mark.parametrize("field", [
    "input_files.location", "ancillary_files.model_spec",
    "output.scratch_directory", "output.overwrite", "output.product_version",
    "output.write_netcdf", "output.write_envi", "output.write_browse", "output.write_ummg",
    "output.write_ortho", "algorithm", "algorithm.threshold",
    "algorithm.comparison", "processing", "processing.device", "processing.precision",
    "processing.batch_size", "processing.lines_per_block", "processing.threads", "log_level",
    "pge", "pge.software_build_version",
])
def test_optional_keys_may_be_omitted(field):
    RunConfig.from_dict(without(field), "/b")


def test_glt_may_be_omitted_when_no_ortho_is_asked():
    data = without("input_files.glt")
    data["output"]["write_ortho"] = False
    assert RunConfig.from_dict(data, "/b").input_files.glt is None


def test_ortho_without_a_glt_is_refused():
    data = without("input_files.glt")
    assert data["output"]["write_ortho"] is True
    [line] = errors_of(data)
    assert "output.write_ortho" in line and "input_files.glt" in line


def test_product_keys_follow_the_switches():
    out = RunConfig.from_dict(example(), "/b").output
    assert out.product_keys() == ["envi_data", "envi_header", "netcdf", "browse", "ortho_flag",
                                  "ortho_probability", "ortho_buffer", "ortho_shadow",
                                  "metadata", "ummg", "stac"]
    data = example()
    data["output"].update(write_netcdf=False, write_browse=False, write_ummg=False,
                          write_ortho=False)
    envi_only = RunConfig.from_dict(data, "/b").output
    assert envi_only.product_keys() == ["envi_data", "envi_header", "metadata", "stac"]
    data["output"].update(write_envi=False, write_netcdf=True)
    assert RunConfig.from_dict(data, "/b").output.product_keys() == ["netcdf", "metadata", "stac"]


@pytest.mark.parametrize("others", [False, True], ids=["all_off", "browse_ummg_ortho_on"])
def test_a_product_without_a_data_file_is_refused(others):
    """Neither ENVI nor netCDF: a 'product' of metadata, browse or ortho alone means nothing to
    users, and its granule record would list no data file; refused before anything runs."""
    data = example()
    data["output"].update(write_envi=False, write_netcdf=False, write_browse=others,
                          write_ummg=others, write_ortho=others)
    [line] = errors_of(data)
    assert line.startswith("output: ")
    assert "output.write_envi" in line and "output.write_netcdf" in line and "at least one" in line


def test_the_schema_states_the_data_file_rule():
    rule = json_schema()["$defs"]["Output"]["not"]
    assert set(rule["required"]) == {"write_envi", "write_netcdf"}
    assert all(rule["properties"][k] == {"const": False} for k in rule["required"])


@pytest.mark.parametrize(("field", "value", "message"), [
    ("processing.batch_size", "abc", "Input should be a valid integer"),
    ("processing.batch_size", 4.5, "Input should be a valid integer"),
    ("processing.batch_size", [], "Input should be a valid integer"),
    ("processing.batch_size", 1_000_001, "less than or equal to 1000000"),
    ("processing.lines_per_block", 0, "greater than or equal to 1"),
    ("processing.threads", 0, "greater than or equal to 1"),
    ("processing.precision", "float16", "Input should be 'float32', 'float32-fastexp' or 'bfloat16'"),
    ("processing.device", 0, "Input should be a valid string"),
    ("input_files", "rdn.img", "Input should be a valid dictionary"),
    ("input_files.radiance", 5, "Input should be a string (a path)"),
    ("input_files.radiance", None, "Input should be a string (a path)"),
    ("algorithm.comparison", "<", "Input should be '>' or '>='"),
    ("algorithm.threshold", "abc", "Input should be a valid number"),
    ("log_level", "verbose", "Input should be 'debug', 'info', 'warning' or 'error'"),
    ("output.product_version", "1", "String should match pattern"),
    ("output.product_version", 1, "Input should be a valid string"),
    ("pge.software_build_version", "", "String should match pattern"),
])
def test_wrong_types_and_values(field, value, message):
    errors = errors_of(with_value(field, value))
    assert len(errors) == 1
    assert errors[0].startswith(f"{field}: ")
    assert message in errors[0]


@pytest.mark.parametrize("threshold", [0, 1, -0.1, 1.5, 0.0, 1.0, float("nan"), float("inf")])
def test_threshold_outside_open_unit_interval_rejected(threshold):
    errors = errors_of(with_value("algorithm.threshold", threshold))
    assert len(errors) == 1 and errors[0].startswith("algorithm.threshold: ")


@pytest.mark.parametrize("threshold", [0.5, 1e-6, 0.999999, None])
def test_threshold_accepted(threshold):
    config = RunConfig.from_dict(with_value("algorithm.threshold", threshold), "/b")
    assert config.algorithm.threshold == threshold


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:12"])
def test_device_accepted(device):
    assert RunConfig.from_dict(with_value("processing.device", device), "/b").processing.device \
        == device


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu", "cuda:", "cuda:-1", "cuda:01",
                                    "CPU", " cpu", "cpu\n", "mps", "cuda:0,1", ""])
def test_device_rejected(device):
    errors = errors_of(with_value("processing.device", device))
    assert len(errors) == 1 and errors[0].startswith("processing.device: ")


# --- file-level errors ---------------------------------------------------------------------

def file_error(path: Path) -> RunConfigError:
    with pytest.raises(RunConfigError) as info:
        RunConfig.from_file(path)
    err = info.value
    assert exit_code_for(err) == ExitCode.RUNCONFIG == 3
    assert err.path == path
    assert str(path) in str(err)
    return err


def test_missing_file(tmp_path):
    assert "not found" in str(file_error(tmp_path / "absent.json"))


def test_directory_instead_of_file(tmp_path):
    assert "directory" in str(file_error(tmp_path))


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_file(tmp_path, text):
    assert "empty" in str(file_error(write(tmp_path / "run.json", text)))


def test_not_json_names_line_and_column(tmp_path):
    path = write(tmp_path / "run.json", '{\n  "input_files": {,\n}')
    message = str(file_error(path))
    assert "not valid JSON" in message and "line 2 column" in message


@pytest.mark.parametrize(("text", "kind"), [("[]", "an array"), ('"x"', "a string"),
                                           ("3", "a number"), ("null", "null")])
def test_top_level_not_an_object(tmp_path, text, kind):
    message = str(file_error(write(tmp_path / "run.json", text)))
    assert f"top level must be a JSON object, not {kind}" in message


def test_from_dict_top_level_not_an_object():
    assert errors_of([1, 2]) == ["top level must be a JSON object, not an array"]


def test_duplicate_keys_rejected(tmp_path):
    text = EXAMPLE.read_text().replace('"threshold": 0.51', '"threshold": 0.51, "threshold": 0.9')
    assert "duplicate key 'threshold'" in str(file_error(write(tmp_path / "run.json", text)))


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_rejected(tmp_path, constant):
    text = EXAMPLE.read_text().replace('"threshold": 0.51', f'"threshold": {constant}')
    assert "not valid JSON" in str(file_error(write(tmp_path / "run.json", text)))


def test_not_utf8(tmp_path):
    assert "UTF-8" in str(file_error(write(tmp_path / "run.json", b'{"a": "\xff"}')))


def test_utf8_bom_accepted(tmp_path):
    path = write(tmp_path / "run.json", "\ufeff" + json.dumps(minimal()))
    assert RunConfig.from_file(path).output.directory == tmp_path / "out"


def test_validation_errors_from_file_name_the_file(tmp_path):
    path = write(tmp_path / "run.json", json.dumps(with_value("processing.batch_size", -1)))
    err = file_error(path)
    assert err.errors == ["processing.batch_size: Input should be greater than or equal to 1"]


# --- the developer entry point ---------------------------------------------------------------

def test_main_prints_schema(capsys):
    assert main(["--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()


def test_main_writes_schema(tmp_path):
    assert main(["--write-schema", str(tmp_path / "s.json")]) == 0
    assert (tmp_path / "s.json").read_text() == schema_text()


def test_main_check(tmp_path, capsys):
    assert main(["--check", str(EXAMPLE)]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(
        RunConfig.from_file(EXAMPLE).to_json())
    bad = write(tmp_path / "bad.json", "[]")
    assert main(["--check", str(bad)]) == 3
    err = capsys.readouterr().err
    assert err.startswith("run configuration invalid: ") and str(bad) in err


# --- property: arbitrary damage is always a RunConfigError, never a crash ---------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.sampled_from(["4096", "0.5", "cuda:1", "", "..", "/", "float32", ">", "01", "info"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def containers(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        found.append(node)
        for v in node.values():
            found += containers(v)
    return found


@st.composite
def mutated_examples(draw) -> Any:
    data: Any = example()
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.integers(0, 30)) == 0:
            return draw(json_values)  # the whole document replaced
        target = draw(st.sampled_from(containers(data)))
        op = draw(st.sampled_from(["delete", "add", "replace"]))
        keys = sorted(target)
        if op == "add" or not keys:
            target[draw(st.text(max_size=12))] = draw(json_values)
        elif op == "delete":
            del target[draw(st.sampled_from(keys))]
        else:
            target[draw(st.sampled_from(keys))] = draw(json_values)
    return data


@settings(max_examples=300, deadline=None)
@given(mutated_examples())
def test_mutations_only_ever_raise_runconfig_error(data):
    try:
        config = RunConfig.from_dict(data, "/base")
    except RunConfigError as err:
        assert err.errors and all(isinstance(e, str) and e for e in err.errors)
        assert exit_code_for(err) == ExitCode.RUNCONFIG
        return
    assert RunConfig.from_dict(json.loads(config.to_json()), "/elsewhere") == config


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=mutated_examples(), garbage=st.binary(max_size=40), cut=st.integers(0, 2000))
def test_mutated_files_only_ever_raise_runconfig_error(tmp_path, document, garbage, cut):
    text = json.dumps(document).encode()
    for content in (text, text[:cut] + garbage):
        path = write(tmp_path / "run.json", content)
        try:
            RunConfig.from_file(path)
        except RunConfigError as err:
            assert str(path) in str(err)
