"""The PGE's error catalogue: the one table of exit codes and what each means.

The orchestration retries, alerts or gives up according to the exit code alone, so every
failure must land on exactly one code and the mapping must live in one place. The science
library raises its own typed errors (`l2b_mask.errors`) and never picks a code; the wrapper
raises the `PgeError` family below; `exit_code_for` is the only function that turns either
into a code, and `one_line` the only one that words it for the operator's stderr.
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import ClassVar

from l2b_mask.errors import AncillaryError, InputProductError, OutputError, ProcessingError


class ExitCode(IntEnum):
    """Process exit status of the PGE; the values are a contract with the orchestration."""

    SUCCESS = 0
    UNEXPECTED = 1
    USAGE = 2
    RUNCONFIG = 3
    INPUT = 4
    ANCILLARY = 5
    PROCESSING = 6
    OUTPUT = 7
    INTERRUPTED = 8

    @property
    def label(self) -> str:
        """Short lower-case name that opens the operator's stderr line."""
        return LABELS[self]

    @property
    def meaning(self) -> str:
        """One sentence for the README table and `--help`."""
        return MEANINGS[self]


LABELS: dict[ExitCode, str] = {
    ExitCode.SUCCESS: "success",
    ExitCode.UNEXPECTED: "unexpected error",
    ExitCode.USAGE: "usage error",
    ExitCode.RUNCONFIG: "run configuration invalid",
    ExitCode.INPUT: "input product invalid",
    ExitCode.ANCILLARY: "ancillary file invalid",
    ExitCode.PROCESSING: "processing failed",
    ExitCode.OUTPUT: "output failed",
    ExitCode.INTERRUPTED: "interrupted",
}

MEANINGS: dict[ExitCode, str] = {
    ExitCode.SUCCESS: "Products written and validated.",
    ExitCode.UNEXPECTED: "A bug or an unforeseen condition; the traceback is in the log.",
    ExitCode.USAGE: "Bad command line (unknown option, missing run configuration argument).",
    ExitCode.RUNCONFIG: "Run configuration unreadable, not JSON, or with invalid fields "
                        "(all of them are listed).",
    ExitCode.INPUT: "An input product (radiance, observation, location, GLT) is missing or "
                    "malformed.",
    ExitCode.ANCILLARY: "An ancillary file (weights, irradiance, model specification) is missing, "
                        "has the wrong checksum or the wrong shapes.",
    ExitCode.PROCESSING: "The computation failed: device unavailable, out of memory after "
                         "retries.",
    ExitCode.OUTPUT: "A product could not be written, fails validation, or already exists and "
                     "overwrite is off.",
    ExitCode.INTERRUPTED: "SIGTERM or SIGINT received; partial outputs were removed.",
}

# Cap of the stderr line. A run configuration's error list is not cut at this length: the
# operator needs every bad field from one run, so it gets the far larger cap below (only a
# pathological file, megabytes of key names, ever reaches it).
ONE_LINE_MAX = 500
RUNCONFIG_LINE_MAX = 100_000


def markdown_table() -> str:
    """The exit-code table as Markdown, so the README is generated rather than kept in step."""
    rows = ["| Code | Name | Meaning |", "|---:|---|---|"]
    rows += [f"| {c.value} | {c.label} | {c.meaning} |" for c in ExitCode]
    return "\n".join(rows) + "\n"


def text_table() -> str:
    """The exit-code table as plain text, for `--help` epilogues."""
    width = max(len(c.label) for c in ExitCode)
    return "\n".join(f"  {c.value}  {c.label:<{width}}  {c.meaning}" for c in ExitCode) + "\n"


class PgeError(Exception):
    """A failure the PGE reports on purpose; it carries its exit code and the file at fault.

    The argument order (path, problem) mirrors `l2b_mask.errors.L2BMaskError`. `exit_code`
    may be overridden per instance for the rare wrapper check that has no dedicated subclass.
    """

    exit_code: ClassVar[ExitCode] = ExitCode.UNEXPECTED

    def __init__(self, path: Path | str | None, problem: str, *,
                 exit_code: ExitCode | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.problem = problem
        if exit_code is not None:
            self.exit_code = ExitCode(exit_code)  # type: ignore[misc]  # instance override
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}" if self.path is not None else self.problem


class RunConfigError(PgeError):
    """The run configuration is unusable; `errors` lists every bad field, one string each.

    Listing them all at once spares the operator one failed run per typo. `errors` may be one
    string (a problem of the whole file: unreadable, not JSON), or a list whose items are
    '<field path>: <message>' strings (pydantic's errors, as `pge.runconfig` words them) or
    (field path, message) pairs. `field_errors` gives the same list structured, for the log.
    """

    exit_code = ExitCode.RUNCONFIG

    def __init__(self, path: Path | str | None,
                 errors: Sequence[str | tuple[str | None, str]] | str) -> None:
        self.field_errors: list[dict[str, str | None]] = []
        if isinstance(errors, str):
            self.field_errors.append({"field": None, "message": errors})
        else:
            for item in errors:
                if isinstance(item, str):
                    field, sep, message = item.partition(": ")
                    self.field_errors.append({"field": field, "message": message} if sep
                                             else {"field": None, "message": item})
                else:
                    field, message = item
                    self.field_errors.append({"field": field, "message": message})
        self.errors: list[str] = [f"{e['field']}: {e['message']}" if e["field"] is not None
                                  else str(e["message"]) for e in self.field_errors]
        super().__init__(path, "; ".join(self.errors) or "invalid run configuration")


class UsageError(PgeError):
    """The command line itself is wrong; there is no file at fault."""

    exit_code = ExitCode.USAGE

    def __init__(self, problem: str) -> None:
        super().__init__(None, problem)


class OutputProductError(PgeError):
    """A product cannot be written, fails validation, or exists and overwrite is off."""

    exit_code = ExitCode.OUTPUT


class InterruptedRun(BaseException):
    """SIGTERM/SIGINT arrived; raised from the handler so clean-up runs on the way out.

    A BaseException, like KeyboardInterrupt: the signal lands wherever the main thread is, and
    an `except Exception` on the way (a reader, a library) must not turn it into another error.
    """

    exit_code = ExitCode.INTERRUPTED
    path = None

    def __init__(self, signal: int | str) -> None:
        self.signal_name = _signal_name(signal)
        self.problem = f"received {self.signal_name}; run stopped"
        super().__init__(self.problem)

    def __str__(self) -> str:
        return self.problem


def _signal_name(signal: int | str) -> str:
    if isinstance(signal, str):
        return signal
    try:
        return _signal.Signals(signal).name
    except ValueError:
        return f"signal {int(signal)}"


def exit_code_for(exc: BaseException) -> ExitCode:
    """The one mapping from an exception to the process exit code."""
    if isinstance(exc, PgeError | InterruptedRun):
        return exc.exit_code
    if isinstance(exc, InputProductError):
        return ExitCode.INPUT
    if isinstance(exc, AncillaryError):
        return ExitCode.ANCILLARY
    if isinstance(exc, ProcessingError):
        return ExitCode.PROCESSING
    if isinstance(exc, OutputError):
        return ExitCode.OUTPUT
    if isinstance(exc, MemoryError) or _is_torch_oom(exc):
        return ExitCode.PROCESSING
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    return ExitCode.UNEXPECTED


def _is_torch_oom(exc: BaseException) -> bool:
    """torch's OutOfMemoryError is a RuntimeError, not a MemoryError; match it by name so this
    module does not import torch."""
    return any(t.__name__ == "OutOfMemoryError" and t.__module__.startswith("torch")
               for t in type(exc).__mro__)


def line_limit(exc: BaseException) -> int:
    """How long `one_line` lets the stderr line be: a run configuration's list of errors is
    never cut in practice (every bad field must be reported at once), anything else is."""
    return RUNCONFIG_LINE_MAX if isinstance(exc, RunConfigError) else ONE_LINE_MAX


def one_line(exc: BaseException, *, cut: bool = True) -> str:
    """The single stderr line for an operator: '<label>: <message>', whitespace collapsed.

    Errors we anticipated speak for themselves; anything else also names its type, since
    'division by zero' alone says nothing about where to look. With `cut` the line ends in
    '...' at `line_limit(exc)` characters; without, it is whole (the stdout JSON summary).
    """
    code = exit_code_for(exc)
    message = " ".join(str(exc).split())
    anticipated = isinstance(exc, PgeError | InterruptedRun | InputProductError | AncillaryError
                             | ProcessingError | OutputError)
    if not anticipated:
        name = type(exc).__name__
        message = f"{name}: {message}" if message else name
    line = f"{code.label}: {message}"
    limit = line_limit(exc)
    if cut and len(line) > limit:
        line = line[: limit - 3] + "..."
    return line
