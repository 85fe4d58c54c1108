"""Open every input of a run (radiance, observation, location, GLT) and make every input check
the PGE adds to the library's, in one place, before anything is computed or written."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from l2b_mask.errors import InputProductError
from l2b_mask.inputs.envi import read_header
from l2b_mask.inputs.glt import Glt, read_glt
from l2b_mask.inputs.location import LocationArrays, read_location
from l2b_mask.inputs.scene import Scene, mean_solar_angles
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

    @property
    def shape(self) -> tuple[int, int]:
        return self.scene.lines, self.scene.samples

    @property
    def acquisition_start(self) -> datetime | None:
        """The radiance header's start time, else the EMIT file name's."""
        if self.scene.acquisition_start is not None:
            return self.scene.acquisition_start
        return self.identity.start_time if self.identity is not None else None


def open_inputs(files: InputFiles) -> Inputs:
    """Every input opened and checked: the scene (every header and size check), the time range,
    the location and GLT against the scene's size, the mean solar angles."""
    scene = Scene.open(files.radiance, files.observation)
    identity = parse_identity(files.radiance)
    _check_time_range(scene, identity)
    if files.location is not None:
        _check_location_size(files.location, scene)
    glt = read_glt(files.glt, (scene.lines, scene.samples)) if files.glt is not None else None
    location = None
    if files.location is not None:
        location = read_location(files.location, (scene.lines, scene.samples))
    zenith, azimuth = mean_solar_angles(files.observation)
    return Inputs(scene, identity, location, glt, zenith, azimuth)


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
    """Header and binary of every input file given, keyed for the provenance record."""
    out: dict[str, Path] = {}
    for key in ("radiance", "observation", "location", "glt"):
        path = getattr(files, key)
        if path is not None:
            header = read_header(path)
            out[f"{key}_header"], out[f"{key}_data"] = header.header_path, header.data_path
    return out
