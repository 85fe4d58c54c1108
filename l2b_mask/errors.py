"""Typed failures and the one exit-code table of the PGE and the scientists' command.

Each failure names the file at fault and the problem in words an operator can act on, and
carries the exit code it ends a run with: the orchestration retries, alerts or gives up by that
code alone, so a failure lands on exactly one code and the table lives here, once. The
campaign driver has its own codes with its own meanings (`campaign.errors`).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from pathlib import Path
from typing import ClassVar


class DescribedCode(IntEnum):
    """An exit-code enum whose members carry their label (the opening of the operator's stderr
    line) and meaning (one sentence for the README tables and `--help`) with their value:
    `NAME = (value, label, meaning)`."""

    label: str
    meaning: str

    def __new__(cls, value: int, label: str, meaning: str) -> DescribedCode:
        member = int.__new__(cls, value)
        member._value_ = value
        member.label, member.meaning = label, meaning
        return member


class ExitCode(DescribedCode):
    """Process exit status of `l2b-mask-pge` and `l2b-mask`; the values are a contract."""

    SUCCESS = (0, "success", "Products written and validated.")
    UNEXPECTED = (1, "unexpected error",
                  "A bug or an unforeseen condition; the traceback is in the log.")
    USAGE = (2, "usage error",
             "Bad command line (unknown option, missing run configuration argument).")
    RUNCONFIG = (3, "run configuration invalid",
                 "Run configuration unreadable, not JSON, or with invalid fields "
                 "(all of them are listed).")
    INPUT = (4, "input product invalid",
             "An input product (radiance, observation, location, GLT) is missing or "
             "malformed.")
    ANCILLARY = (5, "ancillary file invalid",
                 "An ancillary file (weights, irradiance, model specification) is "
                 "missing, has the wrong checksum or the wrong shapes.")
    PROCESSING = (6, "processing failed",
                  "The computation failed: device unavailable, out of memory after "
                  "retries.")
    OUTPUT = (7, "output failed",
              "A product could not be written, fails validation, or already exists "
              "and overwrite is off.")
    INTERRUPTED = (8, "interrupted",
                   "SIGTERM or SIGINT received; partial outputs were removed.")


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


Meanings = Mapping[DescribedCode, str]


def markdown_table(codes: list[DescribedCode] | None = None,
                   meanings: Meanings | None = None) -> str:
    """The exit-code table as Markdown (the README's tables are tested against it).

    `meanings`: a command's own words for what the codes mean to it (the members' own
    meanings are the PGE's); a code it does not name keeps the member's."""
    words = meanings or {}
    rows = ["| Code | Name | Meaning |", "|---:|---|---|"]
    rows += [f"| {c.value} | {c.label} | {words.get(c, c.meaning)} |"
             for c in (codes or list(ExitCode))]
    return "\n".join(rows) + "\n"


def text_table(codes: list[DescribedCode] | None = None,
               meanings: Meanings | None = None) -> str:
    """The exit-code table as plain text, for `--help` epilogues; `meanings` as in
    `markdown_table`."""
    codes, words = codes or list(ExitCode), meanings or {}
    width = max(len(c.label) for c in codes)
    return "\n".join(f"  {c.value}  {c.label:<{width}}  {words.get(c, c.meaning)}"
                     for c in codes) + "\n"
