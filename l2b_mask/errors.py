"""Typed failures and the one exit-code table of the PGE and the scientists' command.

Each failure names the file at fault and the problem in words an operator can act on, and
carries the exit code it ends a run with: the orchestration retries, alerts or gives up by that
code alone, so a failure lands on exactly one code and the table lives here, once. The
campaign driver has its own codes with its own meanings (`campaign.errors`).
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path
from typing import ClassVar


class ExitCode(IntEnum):
    """Process exit status of `l2b-mask-pge` and `l2b-mask`; the values are a contract."""

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
        return _TABLE[self][0]

    @property
    def meaning(self) -> str:
        """One sentence for the README tables and `--help`."""
        return _TABLE[self][1]


_TABLE: dict[ExitCode, tuple[str, str]] = {
    ExitCode.SUCCESS: ("success", "Products written and validated."),
    ExitCode.UNEXPECTED: ("unexpected error",
                          "A bug or an unforeseen condition; the traceback is in the log."),
    ExitCode.USAGE: ("usage error",
                     "Bad command line (unknown option, missing run configuration argument)."),
    ExitCode.RUNCONFIG: ("run configuration invalid",
                         "Run configuration unreadable, not JSON, or with invalid fields "
                         "(all of them are listed)."),
    ExitCode.INPUT: ("input product invalid",
                     "An input product (radiance, observation, location, GLT) is missing or "
                     "malformed."),
    ExitCode.ANCILLARY: ("ancillary file invalid",
                         "An ancillary file (weights, irradiance, model specification) is "
                         "missing, has the wrong checksum or the wrong shapes."),
    ExitCode.PROCESSING: ("processing failed",
                          "The computation failed: device unavailable, out of memory after "
                          "retries."),
    ExitCode.OUTPUT: ("output failed",
                      "A product could not be written, fails validation, or already exists "
                      "and overwrite is off."),
    ExitCode.INTERRUPTED: ("interrupted",
                           "SIGTERM or SIGINT received; partial outputs were removed."),
}


class L2BMaskError(Exception):
    """Base of every failure the library reports on purpose."""

    exit_code: ClassVar[ExitCode] = ExitCode.UNEXPECTED

    def __init__(self, path: Path | str | None, problem: str) -> None:
        self.path = Path(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class UsageError(L2BMaskError):
    """A command line or setting is wrong; there is no file at fault."""

    exit_code = ExitCode.USAGE

    def __init__(self, problem: str) -> None:
        super().__init__(None, problem)


class InputProductError(L2BMaskError):
    """An input product (radiance, observation, location, GLT) is missing or malformed."""

    exit_code = ExitCode.INPUT


class AncillaryError(L2BMaskError):
    """An ancillary file (weights, irradiance, model specification) is missing or wrong."""

    exit_code = ExitCode.ANCILLARY


class ProcessingError(L2BMaskError):
    """The computation itself failed: device unavailable, out of memory after retries."""

    exit_code = ExitCode.PROCESSING


class OutputError(L2BMaskError):
    """A product could not be written or does not read back as written."""

    exit_code = ExitCode.OUTPUT


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or torch's OutOfMemoryError (a RuntimeError), matched by name so that
    callers need not import torch."""
    return isinstance(exc, MemoryError) or any(
        t.__name__ == "OutOfMemoryError" and t.__module__.startswith("torch")
        for t in type(exc).__mro__)


def exit_code_for(exc: BaseException) -> ExitCode:
    """The one mapping from an exception to the process exit code."""
    code = getattr(exc, "exit_code", None)
    if isinstance(code, ExitCode):
        return code
    if is_out_of_memory(exc):
        return ExitCode.PROCESSING
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    return ExitCode.UNEXPECTED


def markdown_table(codes: list[ExitCode] | None = None) -> str:
    """The exit-code table as Markdown (the README's tables are tested against it)."""
    rows = ["| Code | Name | Meaning |", "|---:|---|---|"]
    rows += [f"| {c.value} | {c.label} | {c.meaning} |" for c in (codes or list(ExitCode))]
    return "\n".join(rows) + "\n"


def text_table(codes: list[ExitCode] | None = None) -> str:
    """The exit-code table as plain text, for `--help` epilogues."""
    codes = codes or list(ExitCode)
    width = max(len(c.label) for c in codes)
    return "\n".join(f"  {c.value}  {c.label:<{width}}  {c.meaning}" for c in codes) + "\n"
