"""Open every input of a run (radiance, observation, location, GLT) and make every input check
the PGE adds to the library's, in one place, before anything is computed or written.

The inputs are the SDS's ENVI rasters or the LP DAAC's netCDF granules. With granules the
radiance granule's `location` group is the location and the GLT, unless the run configuration
names `location` / `glt` files (they win); the acquisition's identity (flight line, orbit,
segment) comes from the granule's `flight_line` attribute and the DAAC scene counter from its
name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from l2b_mask.algorithm.geometry import check_location_geometry
from l2b_mask.errors import InputProductError
from l2b_mask.inputs.daac import DaacGranule, read_granule_glt, read_granule_location
from l2b_mask.inputs.daac_names import DaacName, parse_daac_name
from l2b_mask.inputs.emit_names import parse_flight_line
from l2b_mask.inputs.envi import read_header
from l2b_mask.inputs.formats import is_netcdf
from l2b_mask.inputs.glt import Glt, read_glt
from l2b_mask.inputs.location import LocationArrays, read_location
from l2b_mask.inputs.scene import ACQUISITION_START_KEY, ACQUISITION_STOP_KEY, Scene, mean_solar_angles
from pge.runconfig import InputFiles
from pge.sds.naming import EmitIdentity, parse_identity

EMIT_TIME = "%Y-%m-%dT%H:%M:%S%z"


@dataclass(frozen=True)
class Inputs:
    """The opened, checked inputs of one acquisition."""

    scene: Scene
    identity: EmitIdentity | None  # from the radiance's EMIT file name, when it has one
    location: LocationArrays | None
    glt: Glt | None
    mean_solar_zenith: float | None
    mean_solar_azimuth: float | None
    daac_name: DaacName | None = None  # the radiance granule's LP DAAC name, when it has one

    @property
    def shape(self) -> tuple[int, int]:
        return self.scene.lines, self.scene.samples

    @property
    def daac_scene(self) -> int | None:
        """The LP DAAC's scene counter within the orbit (UMM-G SCENE), from the granule name."""
        return int(self.daac_name.scene) if self.daac_name is not None else None

    @property
    def flight_line(self) -> str | None:
        """`emit<date>t<time>_o<orbit>_s<segment>`: the granule's attribute, else the name's."""
        rdn = self.scene.radiance_header
        if isinstance(rdn, DaacGranule) and rdn.flight_line:
            return rdn.flight_line
        return self.identity.flight_line if self.identity is not None else None

    @property
    def time_coverage(self) -> tuple[object, object]:
        """The acquisition (start, stop) as the radiance states them: the ENVI header's EMIT
        keys or the granule's `time_coverage_start` / `_end`, None where absent."""
        rdn = self.scene.radiance_header
        keys = (("time_coverage_start", "time_coverage_end") if isinstance(rdn, DaacGranule)
                else (ACQUISITION_START_KEY, ACQUISITION_STOP_KEY))
        return rdn.meta.get(keys[0]), rdn.meta.get(keys[1])

    @property
    def acquisition_start(self) -> datetime | None:
        """The radiance header's start time, else the EMIT file name's."""
        if self.scene.acquisition_start is not None:
            return self.scene.acquisition_start
        return self.identity.start_time if self.identity is not None else None


def open_inputs(files: InputFiles, need_glt: bool = False) -> Inputs:
    """Every input opened and checked: the scene (every header and size check), the time range,
    the location and GLT against the scene's size (`need_glt`: the run cannot do without one),
    the location's geometry (it must be that of an EMIT swath: the cloud buffer and shadow are
    computed from it), the mean solar angles."""
    scene = Scene.open(files.radiance, files.observation)
    daac_name, identity = _identity(files.radiance, scene)
    _check_time_range(scene, identity)
    shape = (scene.lines, scene.samples)
    rdn = scene.radiance_header
    glt_file, location_file = files.glt, files.location
    if isinstance(rdn, DaacGranule):  # the radiance granule's location group, unless named
        glt_file = glt_file or (rdn.path if rdn.has_glt else None)
        location_file = location_file or (rdn.path if rdn.has_location else None)
    if location_file is not None and not is_netcdf(location_file):
        _check_location_size(location_file, scene)
    glt = location = None
    if glt_file is not None:
        glt = (read_granule_glt if is_netcdf(glt_file) else read_glt)(glt_file, shape)
    if location_file is not None:
        read = read_granule_location if is_netcdf(location_file) else read_location
        location = read(location_file, shape)
        check_location_geometry(location_file, location.lon, location.lat, location.elev, shape)
    if need_glt and glt is None:
        raise InputProductError(files.radiance, "the orthorectified outputs need a GLT: the "
                                                "granule has no 'location/glt_x', 'glt_y' and "
                                                "input_files.glt is not given")
    zenith, azimuth = mean_solar_angles(files.observation)
    return Inputs(scene, identity, location, glt, zenith, azimuth, daac_name)


def _identity(radiance: Path, scene: Scene) -> tuple[DaacName | None, EmitIdentity | None]:
    """(LP DAAC name, EMIT identity) of the radiance. ENVI: the identity in its file name. A
    granule: its name's fields and the identity of its `flight_line` attribute, which must
    agree on the acquisition time and the orbit (else one of the two is not this granule's)."""
    rdn = scene.radiance_header
    if not isinstance(rdn, DaacGranule):
        return None, parse_identity(radiance)
    name = parse_daac_name(radiance)
    identity = None
    if rdn.flight_line:
        version = (rdn.product_version or "")[-2:]  # "V001" -> "01"
        identity = parse_flight_line(rdn.flight_line, _granule_build(rdn),
                                     version if version.isdigit() else "01")
    if name is not None and identity is not None and (
            name.start_time, name.short_orbit) != (identity.start_time, identity.orbit):
        raise InputProductError(rdn.path, f"the file name's time and orbit ({name.orbit}) are "
                                          f"not those of its 'flight_line' {rdn.flight_line}")
    return name, identity


def _granule_build(granule: DaacGranule) -> str:
    """The ENVI name's 4-digit build, which EMIT's 6-digit `software_build_version` starts with
    ("0000" when the granule does not say: only ENVI-named products carry the build)."""
    text = str(granule.meta.get("software_build_version", "")).strip()
    return text[:4] if re.fullmatch(r"\d{4}(\d{2})?", text) else "0000"


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


def _check_location_size(path: Path, scene: Scene) -> None:
    """A location of another size belongs to another acquisition: refused in the PGE's wording
    (the operator's stderr line), before the GLT is read."""
    header = read_header(path)
    if (header.lines, header.samples) != (scene.lines, scene.samples):
        raise InputProductError(
            header.header_path, f"location is {header.lines} x {header.samples} but the radiance "
                                f"is {scene.lines} x {scene.samples}")


def input_paths(files: InputFiles) -> dict[str, Path]:
    """Every input file given, keyed for the provenance record: an ENVI raster's header and
    binary (`<key>_header`, `<key>_data`), an LP DAAC granule itself (`<key>_granule`)."""
    out: dict[str, Path] = {}
    for key in ("radiance", "observation", "location", "glt"):
        path = getattr(files, key)
        if path is None:
            continue
        if is_netcdf(path):
            out[f"{key}_granule"] = Path(path)
        else:
            header = read_header(path)
            out[f"{key}_header"], out[f"{key}_data"] = header.header_path, header.data_path
    return out
