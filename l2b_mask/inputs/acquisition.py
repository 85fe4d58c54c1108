"""One acquisition's inputs opened and checked, whichever format they came in, behind one
interface: the scene (radiance + observation), who the acquisition is (EMIT identity, flight
line, LP DAAC name), when (the time coverage the radiance states), where (location and GLT)
and the mean sun.

The formats keep these facts in different places. An ENVI radiance names its acquisition in
its file name and states its times in EMIT header keys; it carries no location, which comes
from the LOC and GLT files when they are given. An LP DAAC radiance granule names it in its
`flight_line` attribute and its own file name, states its times in `time_coverage_start` /
`_end`, and carries the location and the GLT in its `location` group: a real EMIT L1B
granule always does, so a granule without that group, or without part of it, is a malformed
input unless a separate location file is given (a given file wins over the group). Those
differences are settled here, once (`_envi_facts`, `_granule_facts`, `_location_sources`);
callers ask `Acquisition`, never check which format they hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from l2b_mask.algorithm.geometry import check_location_geometry
from l2b_mask.errors import InputProductError
from l2b_mask.inputs.daac import GLT_VARIABLES, LOCATION_GROUP, LOCATION_VARIABLES, DaacGranule
from l2b_mask.inputs.daac_names import DaacName, parse_daac_name
from l2b_mask.inputs.emit_names import EmitIdentity, parse_flight_line, parse_identity
from l2b_mask.inputs.envi import EnviHeader
from l2b_mask.inputs.formats import read_glt_file, read_location_file
from l2b_mask.inputs.glt import Glt
from l2b_mask.inputs.location import LocationArrays
from l2b_mask.inputs.observation import ObservationGeometry, read_observation
from l2b_mask.inputs.scene import ACQUISITION_START_KEY, ACQUISITION_STOP_KEY, Scene

EMIT_TIME = "%Y-%m-%dT%H:%M:%S%z"


@dataclass(frozen=True)
class RadianceFacts:
    """What the radiance says of its acquisition, in whichever format it came."""

    identity: EmitIdentity | None  # from the EMIT file name, or the granule's `flight_line`
    daac_name: DaacName | None  # the radiance granule's LP DAAC name, when it has one
    flight_line: str | None  # `emit<date>t<time>_o<orbit>_s<segment>`
    time_coverage: tuple[object, object]  # (start, stop) as the radiance states them, or None
    carrier: DaacGranule | None = None  # the granule whose `location` group is the location


@dataclass(frozen=True)
class Acquisition:
    """The opened, checked inputs of one acquisition."""

    scene: Scene
    facts: RadianceFacts
    location: LocationArrays | None
    glt: Glt | None
    observation: ObservationGeometry  # the observation file, read once for the whole run

    @property
    def shape(self) -> tuple[int, int]:
        return self.scene.lines, self.scene.samples

    @property
    def identity(self) -> EmitIdentity | None:
        return self.facts.identity

    @property
    def daac_name(self) -> DaacName | None:
        return self.facts.daac_name

    @property
    def daac_scene(self) -> int | None:
        """The LP DAAC's scene counter within the orbit (UMM-G SCENE), from the granule name."""
        return int(self.daac_name.scene) if self.daac_name is not None else None

    @property
    def flight_line(self) -> str | None:
        return self.facts.flight_line

    @property
    def time_coverage(self) -> tuple[object, object]:
        """The acquisition (start, stop) as the radiance states them: the ENVI header's EMIT
        keys or the granule's `time_coverage_start` / `_end`, None where absent."""
        return self.facts.time_coverage

    @property
    def acquisition_start(self) -> datetime | None:
        """The radiance header's start time, else the EMIT file name's."""
        if self.scene.acquisition_start is not None:
            return self.scene.acquisition_start
        return self.identity.start_time if self.identity is not None else None


def open_acquisition(radiance: Path | str, observation: Path | str,
                     location: Path | str | None = None,
                     glt: Path | str | None = None) -> Acquisition:
    """Every input opened and checked: the scene (every header and size check), the identity
    and time range, the location and GLT against the scene's size (`location` / `glt`: files
    given apart from the radiance, ENVI or granule; a radiance granule's own `location` group
    otherwise), the location's geometry (it must be that of an EMIT swath: the cloud buffer and
    shadow are computed from it), then the observation file read once (`read_observation`: the
    mean solar angles, the Earth-Sun sums, the angle planes the run needs)."""
    scene = Scene.open(radiance, observation)
    rdn = scene.radiance_header
    facts = (_granule_facts(rdn) if isinstance(rdn, DaacGranule)
             else _envi_facts(rdn, Path(radiance)))
    _check_time_range(scene, facts.identity)
    location_file, glt_file = _location_sources(facts.carrier, location, glt)
    shape = (scene.lines, scene.samples)
    arrays = None
    if location_file is not None:  # read (and its size checked) before the GLT
        arrays = read_location_file(location_file, shape)
        check_location_geometry(location_file, arrays.lon, arrays.lat, arrays.elev, shape)
    lookup = read_glt_file(glt_file, shape) if glt_file is not None else None
    return Acquisition(scene, facts, arrays, lookup, read_observation(scene))


def _envi_facts(header: EnviHeader, radiance: Path) -> RadianceFacts:
    """An ENVI radiance: the identity in its file name, the times in its EMIT header keys."""
    identity = parse_identity(radiance)
    times = (header.meta.get(ACQUISITION_START_KEY), header.meta.get(ACQUISITION_STOP_KEY))
    return RadianceFacts(identity, None, identity.flight_line if identity else None, times)


def _granule_facts(granule: DaacGranule) -> RadianceFacts:
    """A radiance granule: its name's fields and the identity of its `flight_line` attribute,
    which must agree on the acquisition time and the orbit (else one of the two is not this
    granule's); the times in `time_coverage_start` / `_end`."""
    name = parse_daac_name(granule.path)
    identity = None
    if granule.flight_line:
        version = (granule.product_version or "")[-2:]  # "V001" -> "01"
        identity = parse_flight_line(granule.flight_line, _granule_build(granule),
                                     version if version.isdigit() else "01")
    if name is not None and identity is not None and (
            name.start_time, name.short_orbit) != (identity.start_time, identity.orbit):
        raise InputProductError(granule.path, f"the file name's time and orbit ({name.orbit}) "
                                              f"are not those of its 'flight_line' "
                                              f"{granule.flight_line}")
    flight_line = granule.flight_line or (identity.flight_line if identity else None)
    times = (granule.meta.get("time_coverage_start"), granule.meta.get("time_coverage_end"))
    return RadianceFacts(identity, name, flight_line, times, carrier=granule)


def _granule_build(granule: DaacGranule) -> str:
    """The ENVI name's 4-digit build, which EMIT's 6-digit `software_build_version` starts with
    ("0000" when the granule does not say: only ENVI-named products carry the build)."""
    text = str(granule.meta.get("software_build_version", "")).strip()
    return text[:4] if re.fullmatch(r"\d{4}(\d{2})?", text) else "0000"


def _location_sources(carrier: DaacGranule | None, location: Path | str | None,
                      glt: Path | str | None) -> tuple[Path | None, Path | None]:
    """(location file, GLT file) to read. Files given win. Without a location file, a radiance
    granule's `location` group must hold the location (lon, lat, elev) and, unless a GLT file
    is given, the GLT (glt_x, glt_y): every EMIT L1B granule does. With a location file given,
    the granule's GLT is used where it has one (none otherwise: an ENVI radiance)."""
    location_file = Path(location) if location is not None else None
    glt_file = Path(glt) if glt is not None else None
    if carrier is None:
        return location_file, glt_file
    if location_file is not None:
        return location_file, glt_file or (carrier.path if carrier.has_glt else None)
    needed = LOCATION_VARIABLES + (GLT_VARIABLES if glt_file is None else ())
    missing = [name for name in needed if name not in carrier.location_variables]
    if missing:
        raise InputProductError(carrier.path, _missing_location(carrier, missing))
    return carrier.path, glt_file or carrier.path


def _missing_location(granule: DaacGranule, missing: list[str]) -> str:
    what = (f"no '{LOCATION_GROUP}' group" if not granule.location_variables
            else f"no '{LOCATION_GROUP}/" + f"', '{LOCATION_GROUP}/".join(missing) + "'")
    return (f"radiance granule has {what}, which every EMIT L1B radiance granule carries "
            "(malformed, unless a location file is given apart)")


def _check_time_range(scene: Scene, identity: EmitIdentity | None) -> None:
    """The acquisition's stop must not precede its start: the granule's temporal extent would be
    reversed. `Scene` compares the two header times; this covers a start that only the EMIT
    file name gives."""
    if scene.acquisition_start is not None or identity is None or scene.acquisition_stop is None:
        return
    if scene.acquisition_stop < identity.start_time:
        raise InputProductError(
            scene.radiance_header.header_path,
            f"'emit acquisition stop time' {scene.acquisition_stop.strftime(EMIT_TIME)} is "
            f"before the acquisition start {identity.start_time.strftime(EMIT_TIME)} (from the "
            "file name)")
