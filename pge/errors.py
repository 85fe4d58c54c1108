"""The PGE wrapper's own failures and the one stderr line an operator reads.

The exit-code table and the exception-to-code mapping live in `l2b_mask.errors` (shared with
the scientists' command); this module adds the wrapper's failures (run configuration,
interruption) and `one_line`, the only function that words a failure for stderr.
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Sequence
from pathlib import Path

from l2b_mask.errors import (
    ExitCode,
    L2BMaskError,
    OutputError,
    UsageError,
    exit_code_for,
    markdown_table,
    text_table,
)

__all__ = ["ExitCode", "OutputProductError", "UsageError", "exit_code_for", "markdown_table",
           "text_table"]


# Cap of the stderr line. A run configuration's error list is not cut at this length: the
# operator needs every bad field from one run, so it gets the far larger cap below (only a
# pathological file, megabytes of key names, ever reaches it).
ONE_LINE_MAX = 500
RUNCONFIG_LINE_MAX = 100_000


class PgeError(L2BMaskError):
    """A failure the PGE wrapper reports on purpose, with the file at fault.

    `exit_code` may be overridden per instance for the rare wrapper check that has no
    dedicated subclass.
    """

    def __init__(self, path: Path | str | None, problem: str, *,
                 exit_code: ExitCode | None = None) -> None:
        if exit_code is not None:
            self.exit_code = ExitCode(exit_code)  # type: ignore[misc]  # instance override
        super().__init__(path, problem)


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


# The PGE's output failures are the library's: one class, exit 7.
OutputProductError = OutputError


class InterruptedRun(BaseException):
    """SIGTERM/SIGINT arrived; raised from the handler so clean-up runs on the way out.

    A BaseException, like KeyboardInterrupt: the signal lands wherever the main thread is, and
    an `except Exception` on the way (a reader, a library) must not turn it into another error.
    """

    exit_code = ExitCode.INTERRUPTED
    path = None

    def __init__(self, signal: int | str) -> None:
        self.signal_name = signal_name(signal)
        self.problem = f"received {self.signal_name}; run stopped"
        super().__init__(self.problem)

    def __str__(self) -> str:
        return self.problem


def signal_name(signal: int | str) -> str:
    """'SIGTERM' for 15; names pass through; 'signal N' for a number with no name."""
    if isinstance(signal, str):
        return signal
    try:
        return _signal.Signals(signal).name
    except ValueError:
        return f"signal {int(signal)}"


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
    anticipated = isinstance(exc, PgeError | InterruptedRun | L2BMaskError)
    if not anticipated:
        name = type(exc).__name__
        message = f"{name}: {message}" if message else name
    line = f"{code.label}: {message}"
    limit = line_limit(exc)
    if cut and len(line) > limit:
        line = line[: limit - 3] + "..."
    return line
