"""EMIT file names of the inputs: the identity of an acquisition in an SDS (ENVI) file name.

Users' tools and the campaign pair files by it; the LP DAAC's granule names are in
`daac_names`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

# emit<YYYYMMDD>t<HHMMSS>_o<orbit5>_s<scene3>: the flight line (netCDF `flight_line`)
_FLIGHT_LINE = r"(?P<acq>emit(?P<stamp>\d{8}t\d{6}))_o(?P<orbit>\d{5})_s(?P<scene>\d{3})"
# <flight line>_<level>_<prod>_b<build4>_v<ver2>
# The level is matched loosely (l1b, l2a, ...) so an L2A input still yields an identity.
_EMIT_NAME = re.compile(
    _FLIGHT_LINE + r"_(?P<level>l\d[a-z]?)_(?P<prod>[a-z0-9]+)"
    r"_b(?P<build>\d{4})_v(?P<version>\d{2})"
)
_STRIPPED_SUFFIXES = (".hdr", ".img")


@dataclass(frozen=True)
class EmitIdentity:
    """Who an acquisition is, as its EMIT file name says."""

    acquisition_id: str  # "emit20240302t005829"
    start_time: datetime  # aware, UTC
    orbit: str  # 5 digits, as in the name (the short orbit)
    scene: str  # 3 digits (orbit segment)
    build: str  # 4 digits
    version: str  # 2 digits

    @property
    def flight_line(self) -> str:
        """`<acq>_o<orbit>_s<scene>`: the 31 characters EMIT puts in netCDF `flight_line`."""
        return f"{self.acquisition_id}_o{self.orbit}_s{self.scene}"


def bare_name(path: Path | str) -> str:
    """The file name without `.hdr` and `.img` (either or both, as in `x.img.hdr`)."""
    name = Path(path).name
    for suffix in _STRIPPED_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def parse_identity(path: Path | str) -> EmitIdentity | None:
    """The identity in an EMIT product name, or None when the name is not one.

    A name that looks right but holds an impossible date (month 13) is not an EMIT name.
    """
    match = _EMIT_NAME.fullmatch(bare_name(path))
    return None if match is None else _identity(match, match["build"], match["version"])


def parse_flight_line(flight_line: str, build: str, version: str) -> EmitIdentity | None:
    """The identity of a flight line (`emit<date>t<time>_o<orbit>_s<segment>`, as an LP DAAC
    granule's `flight_line` attribute holds it) with the `build` and `version` the caller knows
    from elsewhere; None when the text is not a flight line."""
    match = re.fullmatch(_FLIGHT_LINE, flight_line.strip())
    return None if match is None else _identity(match, build, version)


def _identity(match: re.Match[str], build: str, version: str) -> EmitIdentity | None:
    try:
        start = datetime.strptime(match["stamp"], "%Y%m%dt%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return EmitIdentity(acquisition_id=match["acq"], start_time=start, orbit=match["orbit"],
                        scene=match["scene"], build=build, version=version)
