"""Structured logs: JSON lines into the run's log file, and to stdout from the first event.

Stdout carries the log (JSON, or readable text on a terminal) and, last, the run summary;
stderr stays silent unless the run fails, because the SDS treats any stderr as an error.
Warnings from libraries (torch, GDAL through Python warnings) are routed into the same log
instead of reaching stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import IO, Any

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


class _Sinks:
    """The last processor: renders each event once per sink and drops it."""

    def __init__(self, console: IO[str] | None, human: bool) -> None:
        self.console = console
        self.human = structlog.dev.ConsoleRenderer(colors=False) if human else None
        self.file: IO[str] | None = None
        self.file_path: Path | None = None

    def __call__(self, logger: Any, name: str, event: dict[str, Any]) -> Any:
        line = json.dumps(event, default=str, separators=(",", ":"))
        if self.file is not None:
            self.file.write(line + "\n")
            self.file.flush()
        if self.console is not None:
            text = self.human(logger, name, dict(event)) if self.human else line
            self.console.write(text + "\n")
            self.console.flush()
        raise structlog.DropEvent


_sinks: _Sinks | None = None


def configure(level: str = "info", console: IO[str] | None = sys.stdout,
              human: bool | None = None) -> None:
    """Set up structlog for this process; safe to call again (tests, reruns)."""
    global _sinks
    close_file()
    if human is None:
        human = bool(console is not None and console.isatty())
    _sinks = _Sinks(console, human)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
            _sinks,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(LEVELS[level])


def _route_stdlib(level: int) -> None:
    class _Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            structlog.get_logger(record.name).log(
                record.levelno, record.getMessage(), logger=record.name)

    root = logging.getLogger()
    root.handlers[:] = [_Forward()]
    root.setLevel(level)
    logging.captureWarnings(True)
    warnings.simplefilter("default")


def open_file(path: Path) -> None:
    """Start copying every event, as JSON, into `path` (the run's `_pge.log`)."""
    if _sinks is None:
        configure()
    assert _sinks is not None
    close_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    # never through a link, whatever folder it is asked to write in
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    _sinks.file = os.fdopen(fd, "a", encoding="utf-8")
    _sinks.file_path = path


def close_file() -> Path | None:
    """Stop writing the log file; returns its path."""
    if _sinks is None or _sinks.file is None:
        return None
    file, _sinks.file = _sinks.file, None
    path, _sinks.file_path = _sinks.file_path, None
    try:
        file.close()
    except (OSError, ValueError):  # a full disk can fail the last flush; the handle is gone
        pass
    return path


def get_logger(name: str = "l2b-mask-pge") -> Any:
    return structlog.get_logger(name)
