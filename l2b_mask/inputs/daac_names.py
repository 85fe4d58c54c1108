"""LP DAAC EMIT L1B granule names: what a RAD or OBS granule's name says of its acquisition.

`EMIT_L1B_<RAD|OBS>_<VVV>_<YYYYMMDDTHHMMSS>_<YY><orbit5>_<scene3>.nc`: the acquisition start,
the 7-digit orbit (year's last two digits + the ENVI name's 5-digit orbit) and the DAAC's
1-based counter of the acquisition within the orbit. The RAD and OBS granules of one
acquisition differ only in the kind; the campaign pairs them by (time, orbit, scene), and
`l2b_mask.inputs.daac.check_same_acquisition` checks a pair by these and their content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

# EMIT_L1B_<RAD|OBS>_<VVV>_<YYYYMMDDTHHMMSS>_<YY><orbit5>_<scene3>
_DAAC_NAME = re.compile(
    r"EMIT_L1B_(?P<kind>RAD|OBS)_(?P<version>\d{3})_(?P<stamp>\d{8}T\d{6})"
    r"_(?P<orbit>\d{7})_(?P<scene>\d{3})"
)


@dataclass(frozen=True)
class DaacName:
    """What an LP DAAC L1B granule name says. `scene` is the DAAC's 1-based counter of the
    acquisition within its orbit, not the orbit segment of the ENVI name (`flight_line`)."""

    kind: str  # "RAD" or "OBS"
    version: str  # 3 digits, "001"
    start_time: datetime  # aware, UTC
    orbit: str  # 7 digits: 2-digit year + 5-digit orbit
    scene: str  # 3 digits

    @property
    def short_orbit(self) -> str:
        """The 5-digit orbit, as in the ENVI name (`_o<orbit5>_`)."""
        return self.orbit[2:]

    @property
    def acquisition(self) -> tuple[datetime, str, str]:
        """(start time, orbit, scene): equal for the RAD and OBS of one acquisition."""
        return self.start_time, self.orbit, self.scene

    def file_name(self, kind: str | None = None) -> str:
        """The granule's file name, or its `kind` ('RAD'/'OBS') counterpart's."""
        stamp = self.start_time.strftime("%Y%m%dT%H%M%S")
        return f"EMIT_L1B_{kind or self.kind}_{self.version}_{stamp}_{self.orbit}_{self.scene}.nc"


def parse_daac_name(path: Path | str) -> DaacName | None:
    """The fields of an LP DAAC L1B RAD/OBS name (with or without `.nc`), None otherwise."""
    name = Path(path).name
    match = _DAAC_NAME.fullmatch(name[:-3] if name.lower().endswith(".nc") else name)
    if match is None:
        return None
    try:
        start = datetime.strptime(match["stamp"], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return DaacName(kind=match["kind"], version=match["version"], start_time=start,
                    orbit=match["orbit"], scene=match["scene"])
