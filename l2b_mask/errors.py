"""Typed failures of the science library.

Each names the file at fault and the problem in words an operator can act on. The library
never decides exit codes: the PGE maps these types to its catalogue in one place.
"""

from __future__ import annotations

from pathlib import Path


class L2BMaskError(Exception):
    """Base of every failure the library reports on purpose."""

    def __init__(self, path: Path | str | None, problem: str) -> None:
        self.path = Path(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class InputProductError(L2BMaskError):
    """An input product (radiance, observation, location, GLT) is missing or malformed."""


class AncillaryError(L2BMaskError):
    """An ancillary file (weights, irradiance, model specification) is missing or wrong."""


class ProcessingError(L2BMaskError):
    """The computation itself failed: device unavailable, out of memory after retries."""


class OutputError(L2BMaskError):
    """A product could not be written or does not read back as written."""
