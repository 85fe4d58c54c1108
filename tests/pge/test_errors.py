"""The exit-code catalogue: each failure type lands on exactly one code, worded on one line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from l2b_mask.errors import (
    AncillaryError,
    InputProductError,
    L2BMaskError,
    OutputError,
    ProcessingError,
)
from pge.errors import (
    ONE_LINE_MAX,
    ExitCode,
    InterruptedRun,
    OutputProductError,
    PgeError,
    RunConfigError,
    UsageError,
    exit_code_for,
    markdown_table,
    one_line,
    text_table,
)


def test_exit_code_values_are_the_contract():
    assert {c.name: c.value for c in ExitCode} == {
        "SUCCESS": 0, "UNEXPECTED": 1, "USAGE": 2, "RUNCONFIG": 3, "INPUT": 4, "ANCILLARY": 5,
        "PROCESSING": 6, "OUTPUT": 7, "INTERRUPTED": 8,
    }


def test_every_code_has_a_label_and_a_one_line_meaning():
    for code in ExitCode:
        assert code.label == code.label.lower() and "\n" not in code.label
        assert code.meaning and "\n" not in code.meaning
    assert ExitCode.INPUT.label == "input product invalid"


def test_tables_list_every_code():
    md, text = markdown_table(), text_table()
    for code in ExitCode:
        assert f"| {code.value} | {code.label} | {code.meaning} |" in md
        assert code.meaning in text
    assert len(md.splitlines()) == len(ExitCode) + 2


class OutOfMemoryError(RuntimeError):
    """Stand-in for torch.cuda.OutOfMemoryError without importing torch."""


OutOfMemoryError.__module__ = "torch.cuda"


@pytest.mark.parametrize(("exc", "code"), [
    (PgeError(None, "x", exit_code=ExitCode.INPUT), 4),
    (RunConfigError("/r.json", ["a: b"]), 3),
    (UsageError("no run configuration given"), 2),
    (OutputProductError("/o/p.nc", "exists"), 7),
    (InterruptedRun(signal.SIGTERM), 8),
    (InputProductError("/i/rdn.hdr", "bad"), 4),
    (AncillaryError("/a/w.pt", "sha256 mismatch"), 5),
    (ProcessingError(None, "CUDA not available"), 6),
    (OutputError("/o/p.nc", "read-back differs"), 7),
    (MemoryError(), 6),
    (OutOfMemoryError("CUDA out of memory"), 6),
    (KeyboardInterrupt(), 8),
    (L2BMaskError(None, "base class on its own"), 1),
    (ZeroDivisionError("division by zero"), 1),
    (RuntimeError("boom"), 1),
    (SystemExit(3), 1),
])
def test_exit_code_for(exc, code):
    assert exit_code_for(exc) == code
    assert isinstance(exit_code_for(exc), ExitCode)
    line = one_line(exc)
    assert "\n" not in line
    assert line.startswith(ExitCode(code).label + ": ")


def test_pge_error_default_code_is_unexpected():
    assert exit_code_for(PgeError(None, "x")) == ExitCode.UNEXPECTED


def test_pge_error_str_with_and_without_path():
    err = OutputProductError(Path("/out/x.nc"), "already exists and overwrite is false")
    assert str(err) == "/out/x.nc: already exists and overwrite is false"
    assert err.path == Path("/out/x.nc") and err.problem.startswith("already")
    assert str(UsageError("missing argument")) == "missing argument"
    assert UsageError("missing argument").path is None


def test_runconfig_error_lists_every_error():
    err = RunConfigError("/c/run.json", ["a.b: Field required", "c: Extra inputs"])
    assert err.errors == ["a.b: Field required", "c: Extra inputs"]
    assert str(err) == "/c/run.json: a.b: Field required; c: Extra inputs"
    assert RunConfigError(None, "not valid JSON").errors == ["not valid JSON"]


@pytest.mark.parametrize(("sig", "name"), [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT"),
                                           (15, "SIGTERM"), ("SIGTERM", "SIGTERM")])
def test_interrupted_run_names_the_signal(sig, name):
    err = InterruptedRun(sig)
    assert err.signal_name == name and name in str(err)
    assert one_line(err) == f"interrupted: received {name}; run stopped"


def test_one_line_names_the_path_and_collapses_newlines():
    err = InputProductError("/in/scene_rdn.hdr", "header lacks\n  'wavelength'\r\n(see log)")
    line = one_line(err)
    assert line == "input product invalid: /in/scene_rdn.hdr: header lacks 'wavelength' (see log)"


def test_one_line_unexpected_names_the_type():
    assert one_line(ZeroDivisionError("division by zero")) == (
        "unexpected error: ZeroDivisionError: division by zero")
    assert one_line(MemoryError()) == "processing failed: MemoryError"
    assert one_line(KeyboardInterrupt()) == "interrupted: KeyboardInterrupt"


def test_one_line_truncated_but_not_for_run_configuration_errors():
    long = OutputProductError("/o/p.nc", "x" * 2000)
    line = one_line(long)
    assert len(line) <= ONE_LINE_MAX and line.endswith("...") and "/o/p.nc" in line
    assert one_line(long, cut=False).endswith("x" * 100)
    # Every error of a run configuration is reported at once: the list is never cut.
    err = RunConfigError("/r.json", [f"field{i}: Field required" for i in range(200)])
    line = one_line(err)
    assert "\n" not in line and not line.endswith("...") and "/r.json" in line
    assert all(f"field{i}: Field required" in line for i in range(200))


def test_runconfig_error_structured_field_errors():
    err = RunConfigError("/c/run.json", ["a.b: Field required", "output.x: Extra inputs: no",
                                         ("c.d", "Input should be a valid boolean"), "no colon"])
    assert err.field_errors == [
        {"field": "a.b", "message": "Field required"},
        {"field": "output.x", "message": "Extra inputs: no"},
        {"field": "c.d", "message": "Input should be a valid boolean"},
        {"field": None, "message": "no colon"},
    ]
    assert err.errors[2] == "c.d: Input should be a valid boolean"
    assert RunConfigError(None, "not valid JSON: x: y").field_errors == [
        {"field": None, "message": "not valid JSON: x: y"}]


# ---------------------------------------------------------------------------------------------
# Through the console script: a run configuration with many errors gets all of them reported.

# 22 bad fields, each named by its dotted path: wrong types, values out of range, bad patterns,
# unknown keys at every level, and missing required ones.
_BAD_FIELDS = {
    "input_files.observation": "Field required",
    "input_files.radiance": "Input should be a string",
    "input_files.extra_input": "Extra inputs are not permitted",
    "ancillary_files.model_weights": "Field required",
    "ancillary_files.irradiance": "Path should not be empty",
    "ancillary_files.unknown_ancillary": "Extra inputs are not permitted",
    "output.overwrite": "Input should be a valid boolean",
    "output.product_version": "String should match pattern",
    "output.write_netcdf": "Input should be a valid boolean",
    "output.write_envi": "Input should be a valid boolean",
    "output.write_browse": "Input should be a valid boolean",
    "output.write_ummg": "Input should be a valid boolean",
    "output.typo_key": "Extra inputs are not permitted",
    "algorithm.threshold": "Input should be less than 1",
    "algorithm.comparison": "Input should be '>' or '>='",
    "processing.device": "String should match pattern",
    "processing.precision": "Input should be 'float32'",
    "processing.batch_size": "Input should be greater than or equal to 1",
    "processing.lines_per_block": "Input should be greater than or equal to 1",
    "processing.threads": "Input should be less than or equal to 1024",
    "log_level": "Input should be 'debug'",
    "pge.software_build_version": "String should match pattern",
    "not_a_section": "Extra inputs are not permitted",
}


def _many_errors_config(folder: Path) -> Path:
    config = {
        "input_files": {"radiance": 7, "extra_input": "x.img"},
        "ancillary_files": {"irradiance": "  ", "unknown_ancillary": 1},
        "output": {"directory": "out", "overwrite": "yes", "product_version": "1",
                   "write_netcdf": "no", "write_envi": 2, "write_browse": "true",
                   "write_ummg": [], "typo_key": True},
        "algorithm": {"threshold": 1.5, "comparison": "<"},
        "processing": {"device": "tpu", "precision": "float16", "batch_size": 0,
                       "lines_per_block": -1, "threads": 100000},
        "log_level": "verbose",
        "pge": {"software_build_version": "has spaces!"},
        "not_a_section": {},
    }
    path = folder / "bad_runconfig.json"
    path.write_text(json.dumps(config))
    return path


def _console_script(name: str) -> str:
    script = Path(sys.executable).parent / name
    if not script.is_file():
        pytest.skip(f"console script {name} not installed next to {sys.executable}")
    return str(script)


def test_many_runconfig_errors_all_reported_by_the_console_script(tmp_path):
    assert len(_BAD_FIELDS) >= 20
    rc = _many_errors_config(tmp_path)
    proc = subprocess.run([_console_script("l2b-mask-pge"), str(rc)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == ExitCode.RUNCONFIG, proc.stderr
    # stderr: exactly one line, naming the file and every bad field with its message
    assert proc.stderr.endswith("\n") and proc.stderr.count("\n") == 1, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith(f"run configuration invalid: {rc}: ")
    assert not line.endswith("...")
    for field, message in _BAD_FIELDS.items():
        assert f"{field}: {message}" in line, (field, line)
    # stdout: the log events, then the summary with the whole message
    lines = proc.stdout.splitlines()
    summary = json.loads(lines[-1])
    assert summary["status"] == "failure" and summary["exit_code"] == 3
    assert summary["error"] == line
    events = [json.loads(x) for x in lines[:-1]]
    failed = [e for e in events if e.get("event") == "run_failed"]
    assert len(failed) == 1, events
    event = failed[0]
    assert event["error"] == line and event["runconfig"] == str(rc)
    logged = {e["field"]: e["message"] for e in event["errors"]}
    assert len(event["errors"]) == len(logged) == len(_BAD_FIELDS)
    for field, message in _BAD_FIELDS.items():
        assert message in logged[field], (field, logged)


def test_many_runconfig_errors_all_reported_by_the_check_command(tmp_path):
    rc = _many_errors_config(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "pge.runconfig", "--check", str(rc)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == ExitCode.RUNCONFIG, proc.stderr
    assert proc.stderr.count("\n") == 1 and not proc.stderr.strip().endswith("...")
    for field, message in _BAD_FIELDS.items():
        assert f"{field}: {message}" in proc.stderr, field
