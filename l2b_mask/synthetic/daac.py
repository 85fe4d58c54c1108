"""A synthetic acquisition (ENVI, from `l2b_mask.synthetic.scene`) rewritten as LP DAAC L1B granules.

Tests and the demo need the same acquisition in both forms users meet: the SDS's ENVI rasters
and the DAAC's netCDF-4 granules `EMIT_L1B_RAD_001_<YYYYMMDDTHHMMSS>_<YY><orbit5>_<scene3>.nc`
and `EMIT_L1B_OBS_...`. The granules get the DAAC layout (see `l2b_mask.inputs.daac`):
radiance and observation pixel-interleaved and chunked by lines, the `location` group with
lon/lat/elev and the zlib GLT, the global attributes EMIT writes. The ENVI rasters are read by
blocks of lines, so memory stays bounded whatever the scene length.

The DAAC stores wavelengths and FWHM as float32 and the observation as float32, while ENVI
headers hold text and the SDS's observation is float64: `write_float32_spectral_header`
rewrites the ENVI header with the float32 values, so the two paths can be held to bit-for-bit
equality (with an observation generated as float32).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from l2b_mask.inputs.daac import (
    BAND_GROUP,
    DAAC_FILL,
    GLT_VARIABLES,
    LOCATION_GROUP,
    LOCATION_VARIABLES,
    ORTHO_DIMS,
    SWATH_DIMS,
)
from l2b_mask.inputs.daac_names import DaacName
from l2b_mask.inputs.emit_names import parse_identity
from l2b_mask.inputs.envi import EnviHeader, EnviReader, read_header, write_header
from l2b_mask.inputs.glt import GLT_FILL, WGS84_WKT, parse_map_info
from l2b_mask.synthetic.scene import SyntheticAcquisition

FORMATS = ("envi", "daac", "both")
_SWATH = {"RAD": ("radiance", "Radiance Data", "uW/cm^2/SR/nm"),
          "OBS": ("obs", "Observation Data", None)}
_LOCATION = (("lon", "Longitude (WGS-84)", "degrees east"),
             ("lat", "Latitude (WGS-84)", "degrees north"),
             ("elev", "Surface Elevation", "m"))
_GLT = (("glt_x", "GLT Sample Lookup"), ("glt_y", "GLT Line Lookup"))
ALL_LOCATION = LOCATION_VARIABLES + GLT_VARIABLES  # what an EMIT L1B granule's group holds


@dataclass(frozen=True)
class DaacGranulePaths:
    """The two granules of one acquisition; the radiance's `location` group is the LOC + GLT."""

    radiance: Path
    observation: Path


def _blocks(total: int, step: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, step):
        yield start, min(start + step, total)


def daac_name(acq: SyntheticAcquisition, daac_scene: int = 1) -> DaacName:
    """The RAD granule's name fields for an EMIT-named synthetic acquisition."""
    identity = parse_identity(acq.radiance)
    if identity is None:
        raise ValueError(f"{acq.radiance.name} is not an EMIT L1B name")
    if not 1 <= daac_scene <= 999:
        raise ValueError(f"daac_scene must be 1..999, not {daac_scene}")
    orbit = f"{identity.start_time.year % 100:02d}{identity.orbit}"
    return DaacName(kind="RAD", version=f"0{identity.version}", start_time=identity.start_time,
                    orbit=orbit, scene=f"{daac_scene:03d}")


def _global_attributes(rdn: EnviHeader, glt: EnviHeader, kind: str, build: str) -> dict[str, Any]:
    identity = parse_identity(rdn.data_path)
    assert identity is not None  # checked by daac_name
    info = parse_map_info(glt.meta["map info"], glt.header_path)
    gt = info.geotransform
    west, north = gt[0], gt[3]
    east, south = gt[0] + glt.samples * gt[1], gt[3] + glt.lines * gt[5]
    title = {"RAD": "At-Sensor Calibrated Radiance Data", "OBS": "Observation Data"}[kind]
    return {
        "ncei_template_version": "NCEI_NetCDF_Swath_Template_v2.0",
        "title": f"EMIT L1B {title} 60 m V0{identity.version} (synthetic)",
        "summary": "Synthetic EMIT-like L1B granule written by l2b_mask for tests and demos.",
        "Conventions": "CF-1.63, ACDD-1.3",
        "instrument": "EMIT",
        "platform": "ISS",
        "naming_authority": "LPDAAC",
        "flight_line": identity.flight_line,
        "time_coverage_start": str(rdn.meta["emit acquisition start time"]).strip(),
        "time_coverage_end": str(rdn.meta["emit acquisition stop time"]).strip(),
        "software_build_version": build,
        "product_version": f"V0{identity.version}",
        "day_night_flag": "Day",
        "westernmost_longitude": west, "easternmost_longitude": east,
        "southernmost_latitude": south, "northernmost_latitude": north,
        "spatialResolution": gt[1],
        "spatial_ref": WGS84_WKT,
        "geotransform": np.asarray(gt, np.float64),
    }


def _swath(ds: Any, kind: str, header: EnviHeader, chunk_lines: int | None,
           lines_per_block: int) -> None:
    """The swath variable, (downtrack, crosstrack, bands) float32, in chunks of whole lines or
    contiguous (`chunk_lines` None, as EMIT's own writer leaves it)."""
    name, long_name, units = _SWATH[kind]
    if chunk_lines is None:
        storage: dict[str, Any] = {"contiguous": True}
        step = lines_per_block
    else:
        chunks = (min(chunk_lines, header.lines), header.samples, header.bands)
        storage = {"chunksizes": chunks}
        # whole chunks per write: a partial chunk would be read back and rewritten
        step = max(1, lines_per_block // chunks[0]) * chunks[0]
    var = ds.createVariable(name, "f4", SWATH_DIMS, fill_value=np.float32(DAAC_FILL), **storage)
    var.long_name = long_name
    if units:
        var.units = units
    var.set_auto_maskandscale(False)
    with EnviReader(header) as reader:
        for start, stop in _blocks(header.lines, step):
            var[start:stop, :, :] = reader.read_lines(start, stop, dtype=np.float32)


def _band_parameters(ds: Any, kind: str, header: EnviHeader) -> None:
    group = ds.createGroup(BAND_GROUP)
    if kind == "RAD":
        for name, key, long_name in (("wavelengths", "wavelength", "Wavelength Centers"),
                                     ("fwhm", "fwhm", "Full Width at Half Max")):
            var = group.createVariable(name, "f4", ("bands",), fill_value=np.float32(DAAC_FILL))
            var.setncatts({"long_name": long_name, "units": "nm"})
            var[:] = np.asarray(header.float_list(key), np.float32)
        return
    var = group.createVariable("observation_bands", str, ("bands",))
    var.long_name = "Observation Band Names"
    for i, band_name in enumerate(header.string_list("band names") or []):
        var[i] = band_name


def _location(ds: Any, loc: EnviHeader, glt: EnviHeader, lines_per_block: int,
              keep: tuple[str, ...] = ALL_LOCATION) -> None:
    """The `location` group with the variables of `keep` (none: no group)."""
    if not keep:
        return
    group = ds.createGroup(LOCATION_GROUP)
    with EnviReader(loc) as reader:
        variables = []
        for name, long_name, units in _LOCATION:
            if name not in keep:
                continue
            var = group.createVariable(name, "f8", SWATH_DIMS[:2], fill_value=DAAC_FILL)
            var.setncatts({"long_name": long_name, "units": units})
            variables.append(var)
        for start, stop in _blocks(loc.lines, lines_per_block):
            block = reader.read_lines(start, stop, [0, 1, 2], np.float64)
            for var in variables:
                var[start:stop, :] = block[:, :, LOCATION_VARIABLES.index(var.name)]
    rows_per_block = max(1, lines_per_block * loc.samples // max(1, glt.samples))
    with EnviReader(glt) as reader:
        variables = []
        for name, long_name in _GLT:
            if name not in keep:
                continue
            var = group.createVariable(name, "i4", ORTHO_DIMS, fill_value=np.int32(GLT_FILL),
                                       compression="zlib", complevel=9,
                                       chunksizes=(min(rows_per_block, glt.lines), glt.samples))
            var.setncatts({"long_name": long_name, "units": "pixel location"})
            variables.append(var)
        for start, stop in _blocks(glt.lines, rows_per_block):
            block = reader.read_lines(start, stop, [0, 1], np.int32)
            for var in variables:
                var[start:stop, :] = block[:, :, GLT_VARIABLES.index(var.name)]


def _write_granule(path: Path, kind: str, swath: EnviHeader, headers: dict[str, EnviHeader],
                   build: str, chunk_lines: int | None, lines_per_block: int,
                   location: tuple[str, ...] = ALL_LOCATION) -> None:
    from netCDF4 import Dataset

    tmp = path.with_name(path.name + ".part")
    try:
        with Dataset(tmp, "w", format="NETCDF4") as ds:
            ds.setncatts(_global_attributes(headers["rdn"], headers["glt"], kind, build))
            for name, size in zip(SWATH_DIMS, (swath.lines, swath.samples, swath.bands), strict=True):
                ds.createDimension(name, size)
            for name, size in zip(ORTHO_DIMS, (headers["glt"].lines, headers["glt"].samples),
                                  strict=True):
                ds.createDimension(name, size)
            _band_parameters(ds, kind, swath)
            _swath(ds, kind, swath, chunk_lines, lines_per_block)
            _location(ds, headers["loc"], headers["glt"], lines_per_block, location)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_daac_granules(
    acq: SyntheticAcquisition, out_dir: Path | str | None = None, *, daac_scene: int = 1,
    chunk_lines: int | None = 64, lines_per_block: int = 256,
    software_build_version: str | None = None, radiance_location: tuple[str, ...] = ALL_LOCATION,
) -> DaacGranulePaths:
    """Write the acquisition's RAD and OBS granules (beside the ENVI files by default).

    `daac_scene` is the DAAC's scene counter in the name (1-based); `chunk_lines` the lines
    per netCDF chunk of the swath variables (None: contiguous); `lines_per_block` bounds the
    lines held in memory while copying.
    `software_build_version` defaults to the ENVI name's 4-digit build followed by "00" (EMIT
    stamps a 6-digit build).
    `radiance_location`: the variables of the RAD granule's `location` group (EMIT writes all
    five; fewer, or none for no group, make the malformed granules that tests refuse).
    """
    if set(radiance_location) - set(ALL_LOCATION):
        raise ValueError(f"radiance_location names variables outside {ALL_LOCATION}: "
                         f"{radiance_location}")
    if (chunk_lines is not None and chunk_lines < 1) or lines_per_block < 1:
        raise ValueError(f"chunk_lines and lines_per_block must be positive: {chunk_lines}, "
                         f"{lines_per_block}")
    name = daac_name(acq, daac_scene)
    identity = parse_identity(acq.radiance)
    assert identity is not None
    headers = {"rdn": read_header(acq.radiance), "obs": read_header(acq.observation),
               "loc": read_header(acq.location), "glt": read_header(acq.glt)}
    folder = Path(out_dir) if out_dir is not None else acq.radiance.parent
    folder.mkdir(parents=True, exist_ok=True)
    build = software_build_version or f"{identity.build}00"
    paths = DaacGranulePaths(radiance=folder / name.file_name("RAD"),
                             observation=folder / name.file_name("OBS"))
    _write_granule(paths.radiance, "RAD", headers["rdn"], headers, build, chunk_lines,
                   lines_per_block, tuple(radiance_location))
    _write_granule(paths.observation, "OBS", headers["obs"], headers, build, chunk_lines,
                   lines_per_block)
    return paths


def write_float32_spectral_header(radiance: Path | str) -> None:
    """Rewrite the ENVI radiance header's `wavelength` and `fwhm` as the float32 values a DAAC
    granule stores, each written so that it reads back as exactly that value."""
    header = read_header(radiance)
    meta = dict(header.meta)
    for key in ("wavelength", "fwhm"):
        values = header.float_list(key)
        if values is None:
            raise ValueError(f"{header.header_path} has no '{key}'")
        meta[key] = [repr(float(v)) for v in values.astype(np.float32)]
    write_header(header.header_path, meta)


def _envi_paths(acq: SyntheticAcquisition) -> list[Path]:
    rasters = (acq.radiance, acq.observation, acq.location, acq.glt)
    return [p for raster in rasters for p in (raster, raster.with_suffix(".hdr"))]


def write_formats(acq: SyntheticAcquisition, fmt: str, *, float32_header: bool = False,
                  daac_scene: int = 1) -> dict[str, str]:
    """The `l2b-mask-synthetic --format` step: the paths to report over the ENVI ones.

    'envi' adds nothing; 'both' adds `daac_radiance` and `daac_observation`; 'daac' replaces
    every path by a granule (the radiance granule carries the location and the GLT) and
    removes the ENVI files.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    if float32_header:
        write_float32_spectral_header(acq.radiance)
    if fmt == "envi":
        return {}
    granules = write_daac_granules(acq, daac_scene=daac_scene)
    if fmt == "both":
        return {"daac_radiance": str(granules.radiance),
                "daac_observation": str(granules.observation)}
    for path in _envi_paths(acq):
        path.unlink()
    rad = str(granules.radiance)
    return {"radiance": rad, "observation": str(granules.observation), "location": rad, "glt": rad}
