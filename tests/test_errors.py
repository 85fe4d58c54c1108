"""The exit-code catalogue: each failure type lands on exactly one code, worded on one line."""

from __future__ import annotations

import signal
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
    LABELS,
    MEANINGS,
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
    assert set(LABELS) == set(MEANINGS) == set(ExitCode)
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


def test_one_line_truncated():
    line = one_line(RunConfigError("/r.json", [f"field{i}: Field required" for i in range(200)]))
    assert len(line) <= ONE_LINE_MAX and line.endswith("...") and "/r.json" in line
