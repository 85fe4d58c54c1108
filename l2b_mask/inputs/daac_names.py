"""LP DAAC EMIT L1B granule names, and whether a RAD and an OBS granule are one acquisition.

`EMIT_L1B_<RAD|OBS>_<VVV>_<YYYYMMDDTHHMMSS>_<YY><orbit5>_<scene3>.nc`: the acquisition start,
the 7-digit orbit (year's last two digits + the ENVI name's 5-digit orbit) and the DAAC's
1-based counter of the acquisition within the orbit. The RAD and OBS granules of one
acquisition differ only in the kind; the campaign pairs them by (time, orbit, scene).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from l2b_mask.errors import InputProductError
from l2b_mask.inputs.scene import check_same_size

if TYPE_CHECKING:
    from l2b_mask.inputs.daac import DaacGranule

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


def check_same_acquisition(radiance: DaacGranule, observation: DaacGranule) -> None:
    """Refuse a RAD and an OBS granule of different acquisitions or sizes.

    Compared where both say: the name's time, orbit and scene; `flight_line`;
    `time_coverage_start`/`_end`; and always the swath size.
    """
    rdn, obs = radiance, observation
    for granule, kind, role in ((rdn, "RAD", "radiance"), (obs, "OBS", "observation")):
        if granule.kind != kind:
            raise InputProductError(granule.path, f"given as the {role} but it is an EMIT L1B "
                                                  f"{granule.kind} granule ('{granule.variable}')")
    rdn_name, obs_name = parse_daac_name(rdn.path), parse_daac_name(obs.path)
    differences = []
    if rdn_name is not None and obs_name is not None and rdn_name.acquisition != obs_name.acquisition:
        differences.append("name time/orbit/scene")
    pairs = (("flight_line", rdn.flight_line, obs.flight_line),
             ("time_coverage_start", rdn.acquisition_start, obs.acquisition_start),
             ("time_coverage_end", rdn.acquisition_stop, obs.acquisition_stop))
    differences += [what for what, a, b in pairs if a is not None and b is not None and a != b]
    if differences:
        raise InputProductError(obs.path, f"not the same acquisition as the radiance "
                                          f"{rdn.path.name} ({', '.join(differences)} differ)")
    check_same_size(rdn, obs)
