"""Granule metadata for NASA's Common Metadata Repository: `<product>.cmr.json` in UMM-G 1.6.5.

The shape follows what EMIT delivers for its L2A mask (granule UR, collection reference,
temporal and spatial extent, integer cloud cover, files with SHA-512 checksums, PGE version,
platform and additional attributes). `validate_ummg` checks a hand-written subset of the
UMM-G JSON Schema (required keys, types, enumerations, patterns), enough to catch a broken
record before it leaves the PGE; the DAAC validates against the full schema on ingest.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from l2b_mask.inputs.glt import Bounds
from l2b_mask.products.summary import CloudFraction
from l2b_mask.spec import file_digest
from pge.sds.files import formats as file_formats
from pge.sds.naming import EmitIdentity

UMMG_VERSION = "1.6.5"
COLLECTION_SHORT_NAME = "EMITL2BMASK"
GRANULE_UR_PREFIX = "EMIT_L2B_MASK"
_GRANULE_UR = re.compile(r"EMIT_L2B_MASK_\d{3}_\d{8}T\d{6}_\d{7}_\d{3}")


PLATFORMS = [{"ShortName": "ISS", "Instruments": [{"ShortName": "EMIT Imaging Spectrometer"}]}]
METADATA_SPECIFICATION = {"URL": f"https://cdn.earthdata.nasa.gov/umm/granule/v{UMMG_VERSION}",
                          "Name": "UMM-G", "Version": UMMG_VERSION}
# The granule's AdditionalAttributes, in record order: (UMM-G name, key of the value in
# `build_ummg`'s values); an attribute whose value is None is left out.
ADDITIONAL_ATTRIBUTES = (
    ("SOFTWARE_BUILD_VERSION", "software_build_version"),
    ("SOFTWARE_DELIVERY_VERSION", "software_delivery_version"),
    ("CLOUD_MODEL_VERSION", "cloud_model_version"),
    ("Identifier_product_doi", "doi"),
    ("Identifier_product_doi_authority", "doi_authority"),
    ("ORBIT", "orbit"),
    ("ORBIT_SEGMENT", "orbit_segment"),
    ("SCENE", "scene"),
    ("SOLAR_ZENITH", "solar_zenith"),
    ("SOLAR_AZIMUTH", "solar_azimuth"),
)


def granule_ur(identity: EmitIdentity, product_version: str, scene: int | str | None = None) -> str:
    """`EMIT_L2B_MASK_<VVV>_<YYYYMMDDTHHMMSS>_<orbit7>_<scene3>`.

    VVV is the 2-digit product version with a leading 0 ("01" -> "001"); orbit7 the 2-digit
    year of the acquisition followed by the 5-digit short orbit of the file name; scene3 the
    file name's scene unless `scene` (EMIT's DAAC scene counter, 1-based within the orbit) is
    given.
    """
    if not re.fullmatch(r"\d{2}", product_version):
        raise ValueError(f"product_version must be 2 digits, not {product_version!r}")
    scene_text = identity.scene if scene is None else f"{int(scene):03d}"
    if not re.fullmatch(r"\d{3}", scene_text):
        raise ValueError(f"scene must fit 3 digits, not {scene!r}")
    start = identity.start_time.astimezone(UTC)
    orbit7 = f"{start:%y}{identity.orbit}"
    return f"{GRANULE_UR_PREFIX}_0{product_version}_{start:%Y%m%dT%H%M%S}_{orbit7}_{scene_text}"


def sha512(path: Path | str) -> str:
    """Hex SHA-512 of a file (UMM-G's checksum)."""
    return file_digest(path, "sha512")


def cloud_cover_percent(fraction: CloudFraction) -> float:
    """EMIT's granule cloud cover: cloudy pixels and pixels without a value (nothing is seen
    there), as a percentage of all pixels, at most 100; higher than the cloud fraction of
    `_metadata.json` wherever the scene has no-value pixels (both are there, with how each
    is counted)."""
    return fraction.percent_cloud_or_no_value


def day_night_flag(mean_solar_zenith_deg: float | None) -> str:
    """UMM-G/EMIT day-night flag from the scene's mean solar zenith angle."""
    if mean_solar_zenith_deg is None or not math.isfinite(mean_solar_zenith_deg):
        return "Unspecified"
    return "Day" if mean_solar_zenith_deg < 90.0 else "Night"


def swath_polygon(lon: np.ndarray, lat: np.ndarray, fill: float = -9999.0) -> list[tuple[float, float]]:
    """A closed counter-clockwise (lon, lat) ring through the swath's four corner pixels.

    Corners are the first and last located pixels of the first and last lines that have any;
    UMM-G GPolygons must be counter-clockwise and closed. Empty when fewer than 3 corners differ.
    """
    lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    ok = np.isfinite(lon) & np.isfinite(lat) & (lon != fill) & (lat != fill)
    rows = np.flatnonzero(ok.any(axis=1))
    if rows.size == 0:
        return []
    corners: list[tuple[float, float]] = []
    for row, reverse in ((rows[0], False), (rows[-1], True)):
        cols = np.flatnonzero(ok[row])
        pair = [(float(lon[row, c]), float(lat[row, c])) for c in (cols[0], cols[-1])]
        corners.extend(reversed(pair) if reverse else pair)
    ring = list(dict.fromkeys(corners))  # drop repeats, keep order
    if len(ring) < 3:
        return []
    area2 = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:] + ring[:1], strict=True))
    if area2 < 0:
        ring.reverse()
    return [*ring, ring[0]]


def _time(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"time {value!r} has no time zone; pass an aware (UTC) datetime")
    v = value.astimezone(UTC)
    return f"{v:%Y-%m-%dT%H:%M:%S}.{v.microsecond // 1000:03d}Z"


def _file_entry(path: Path, formats: Mapping[str, str]) -> dict[str, Any]:
    return {
        "Name": path.name,
        "SizeInBytes": path.stat().st_size,
        "Format": next((f for s, f in formats.items() if path.name.endswith(s)), "Binary"),
        "Checksum": {"Value": sha512(path), "Algorithm": "SHA-512"},
    }


def build_ummg(
    *, product_version: str, identity: EmitIdentity | None, files: Sequence[Path | str],
    cloud_cover_percent: float, bounds: Bounds | None, pge_name: str, pge_version: str,
    production_time: datetime, start_time: datetime | None = None,
    end_time: datetime | None = None, day_night: str = "Unspecified",
    polygon: Sequence[tuple[float, float]] | None = None,
    solar_zenith: float | None = None, solar_azimuth: float | None = None,
    daac_scene: int | None = None, software_build_version: str | None = None,
    software_delivery_version: str | None = None, doi: str | None = None,
    cloud_model_version: str | None = None,
    granule_ur_override: str | None = None,
    collection_short_name: str = COLLECTION_SHORT_NAME,
) -> dict[str, Any]:
    """The UMM-G record of one granule, as a JSON-ready dict.

    `files` are checksummed (SHA-512) and sized from disk; the first is the granule's data
    file. `cloud_cover_percent` is rounded to an integer (EMIT: cloud % of all pixels plus
    the no-value %, capped at 100). `start_time` defaults to the identity's, `end_time` to
    `start_time`. `bounds` gives a BoundingRectangle, `polygon` ((lon, lat) ring, e.g.
    `swath_polygon`) a GPolygon. Without an EMIT identity the GranuleUR is
    `granule_ur_override` or the first file's stem, and ORBIT/SCENE attributes are left out.
    """
    if not math.isfinite(cloud_cover_percent) or not 0.0 <= cloud_cover_percent <= 100.0 + 1e-9:
        raise ValueError(f"cloud_cover_percent must be within [0, 100], not {cloud_cover_percent}")
    paths = [Path(f) for f in files]
    ur, start_time = _granule_ur_and_start(identity, product_version, daac_scene, paths,
                                           granule_ur_override, start_time)
    produced = _time(production_time)
    record: dict[str, Any] = {
        "GranuleUR": ur,
        "ProviderDates": [{"Date": produced, "Type": "Insert"}, {"Date": produced, "Type": "Update"}],
        "CollectionReference": {"ShortName": collection_short_name,
                                "Version": f"0{product_version}"},
        "DataGranule": {
            "ArchiveAndDistributionInformation": [_file_entry(p, file_formats()) for p in paths],
            "DayNightFlag": day_night,
            "ProductionDateTime": produced,
        },
        "PGEVersionClass": {"PGEName": pge_name, "PGEVersion": pge_version},
        "TemporalExtent": {"RangeDateTime": {"BeginningDateTime": _time(start_time),
                                             "EndingDateTime": _time(end_time or start_time)}},
        "Platforms": copy.deepcopy(PLATFORMS),
        "CloudCover": int(round(min(cloud_cover_percent, 100.0))),
        "MetadataSpecification": dict(METADATA_SPECIFICATION),
    }
    geometry = _geometry(bounds, polygon)
    if geometry:
        record["SpatialExtent"] = {"HorizontalSpatialDomain": {"Geometry": geometry}}
    record["AdditionalAttributes"] = additional_attributes({
        "software_build_version": software_build_version,
        "software_delivery_version": software_delivery_version,
        "cloud_model_version": cloud_model_version, "doi": doi,
        "doi_authority": "https://doi.org" if doi else None,
        **_orbit_values(identity, daac_scene),
        "solar_zenith": solar_zenith, "solar_azimuth": solar_azimuth})
    return record


def _granule_ur_and_start(identity: EmitIdentity | None, product_version: str,
                          daac_scene: int | None, paths: list[Path], override: str | None,
                          start_time: datetime | None) -> tuple[str, datetime]:
    """The GranuleUR (the override, the EMIT one, else the first file's stem) and the start
    time (the given one, else the identity's; one is needed)."""
    if not paths:
        raise ValueError("a granule needs at least one file")
    if identity is not None:
        ur = override or granule_ur(identity, product_version, daac_scene)
        start_time = start_time or identity.start_time
    else:
        ur = override or paths[0].name.split(".")[0]
    if start_time is None:
        raise ValueError("start_time is needed when the radiance has no EMIT identity")
    return ur, start_time


def _geometry(bounds: Bounds | None, polygon: Sequence[tuple[float, float]] | None
              ) -> dict[str, Any]:
    """UMM-G Geometry: a BoundingRectangle from `bounds`, a GPolygon from `polygon`."""
    geometry: dict[str, Any] = {}
    if bounds is not None:
        geometry["BoundingRectangles"] = [{
            "WestBoundingCoordinate": bounds.west, "NorthBoundingCoordinate": bounds.north,
            "EastBoundingCoordinate": bounds.east, "SouthBoundingCoordinate": bounds.south}]
    if polygon:
        geometry["GPolygons"] = [{"Boundary": {"Points": [
            {"Longitude": float(x), "Latitude": float(y)} for x, y in polygon]}}]
    return geometry


def _orbit_values(identity: EmitIdentity | None, daac_scene: int | None) -> dict[str, int]:
    """ORBIT (2-digit year and short orbit), ORBIT_SEGMENT and SCENE of an EMIT identity."""
    if identity is None:
        return {}
    return {"orbit": int(f"{identity.start_time.astimezone(UTC):%y}{identity.orbit}"),
            "orbit_segment": int(identity.scene),
            "scene": int(daac_scene) if daac_scene is not None else int(identity.scene)}


def additional_attributes(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`ADDITIONAL_ATTRIBUTES` rendered with `values`, in table order; None leaves one out."""
    return [{"Name": name, "Values": [str(values[key])]}
            for name, key in ADDITIONAL_ATTRIBUTES if values.get(key) is not None]


def write_ummg(path: Path | str, ummg: Mapping[str, Any]) -> None:
    """Write the record as indented JSON, after `validate_ummg` finds nothing wrong."""
    problems = validate_ummg(ummg)
    if problems:
        raise ValueError("UMM-G record is not valid: " + "; ".join(problems))
    Path(path).write_text(json.dumps(ummg, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# A subset of the UMM-G 1.6.5 JSON Schema, and a validator for the keywords it uses.

_DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"}
_POINT = {"type": "object", "required": ["Longitude", "Latitude"], "properties": {
    "Longitude": {"type": "number", "minimum": -180, "maximum": 180},
    "Latitude": {"type": "number", "minimum": -90, "maximum": 90}}}
UMMG_SCHEMA_SUBSET: dict[str, Any] = {
    "type": "object",
    "required": ["GranuleUR", "ProviderDates", "CollectionReference", "MetadataSpecification"],
    "properties": {
        "GranuleUR": {"type": "string", "minLength": 1, "maxLength": 250},
        "ProviderDates": {"type": "array", "minItems": 1, "maxItems": 4, "items": {
            "type": "object", "required": ["Date", "Type"], "properties": {
                "Date": _DATE,
                "Type": {"enum": ["Create", "Insert", "Update", "Delete"]}}}},
        "CollectionReference": {"type": "object", "required": ["ShortName", "Version"],
                                "properties": {"ShortName": {"type": "string", "minLength": 1},
                                               "Version": {"type": "string", "minLength": 1}}},
        "DataGranule": {"type": "object", "required": ["DayNightFlag", "ProductionDateTime"],
                        "properties": {
            "ArchiveAndDistributionInformation": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["Name"], "properties": {
                    "Name": {"type": "string", "minLength": 1},
                    "SizeInBytes": {"type": "integer", "minimum": 0},
                    "Format": {"type": "string"},
                    "Checksum": {"type": "object", "required": ["Value", "Algorithm"],
                                 "properties": {
                                     "Value": {"type": "string", "pattern": "^[0-9a-f]+$"},
                                     "Algorithm": {"enum": [
                                         "Adler-32", "BSD checksum", "Fletcher-32",
                                         "Fletcher-64", "MD5", "POSIX", "SHA-1", "SHA-2",
                                         "SHA-256", "SHA-384", "SHA-512", "SM3", "SYSV"]}}}}}},
            "DayNightFlag": {"enum": ["Day", "Night", "Both", "Unspecified"]},
            "ProductionDateTime": _DATE}},
        "PGEVersionClass": {"type": "object", "required": ["PGEName", "PGEVersion"],
                            "properties": {"PGEName": {"type": "string"},
                                           "PGEVersion": {"type": "string"}}},
        "TemporalExtent": {"type": "object", "properties": {"RangeDateTime": {
            "type": "object", "required": ["BeginningDateTime"],
            "properties": {"BeginningDateTime": _DATE, "EndingDateTime": _DATE}}}},
        "SpatialExtent": {"type": "object", "properties": {"HorizontalSpatialDomain": {
            "type": "object", "required": ["Geometry"], "properties": {"Geometry": {
                "type": "object", "properties": {
                    "BoundingRectangles": {"type": "array", "minItems": 1, "items": {
                        "type": "object",
                        "required": ["WestBoundingCoordinate", "NorthBoundingCoordinate",
                                     "EastBoundingCoordinate", "SouthBoundingCoordinate"],
                        "properties": {
                            "WestBoundingCoordinate": {"type": "number", "minimum": -180, "maximum": 180},
                            "EastBoundingCoordinate": {"type": "number", "minimum": -180, "maximum": 180},
                            "NorthBoundingCoordinate": {"type": "number", "minimum": -90, "maximum": 90},
                            "SouthBoundingCoordinate": {"type": "number", "minimum": -90, "maximum": 90}}}},
                    "GPolygons": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "required": ["Boundary"], "properties": {"Boundary": {
                            "type": "object", "required": ["Points"], "properties": {
                                "Points": {"type": "array", "minItems": 4, "items": _POINT}}}}}}}}}}}},
        "Platforms": {"type": "array", "items": {"type": "object", "required": ["ShortName"]}},
        "AdditionalAttributes": {"type": "array", "items": {
            "type": "object", "required": ["Name", "Values"], "properties": {
                "Name": {"type": "string", "minLength": 1},
                "Values": {"type": "array", "minItems": 1, "items": {"type": "string"}}}}},
        "CloudCover": {"type": "integer", "minimum": 0, "maximum": 100},
        "MetadataSpecification": {"type": "object", "required": ["URL", "Name", "Version"],
                                  "properties": {"Name": {"enum": ["UMM-G"]},
                                                 "Version": {"enum": [UMMG_VERSION]}}},
    },
}
_TYPES: dict[str, Any] = {"object": Mapping, "array": list, "string": str, "number": (int, float),
                          "integer": int}


def _validate(value: Any, schema: Mapping[str, Any], where: str, out: list[str]) -> None:
    kind = schema.get("type")
    if kind is not None:
        ok = isinstance(value, _TYPES[kind]) and not isinstance(value, bool)
        if ok and kind == "number":
            ok = math.isfinite(value)
        if not ok:
            out.append(f"{where}: expected {kind}, got {type(value).__name__}")
            return
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1 << 30):
            out.append(f"{where}: length {len(value)} out of bounds")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{where}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{where}: {value} > {schema['maximum']}")
    if isinstance(value, Mapping):
        for key in schema.get("required", []):
            if key not in value:
                out.append(f"{where}: missing required {key!r}")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _validate(value[key], sub, f"{where}.{key}", out)
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", 1 << 30):
            out.append(f"{where}: {len(value)} items out of bounds")
        if "items" in schema:
            for i, item in enumerate(value):
                _validate(item, schema["items"], f"{where}[{i}]", out)


def validate_ummg(ummg: Mapping[str, Any]) -> list[str]:
    """Problems found against `UMMG_SCHEMA_SUBSET` plus checks the schema cannot express
    (granule UR pattern when it is an EMIT one, closed polygon rings); empty when none."""
    problems: list[str] = []
    _validate(ummg, UMMG_SCHEMA_SUBSET, "$", problems)
    ur = ummg.get("GranuleUR", "")
    if isinstance(ur, str) and ur.startswith(GRANULE_UR_PREFIX) and not _GRANULE_UR.fullmatch(ur):
        problems.append(f"$.GranuleUR: {ur!r} does not match {_GRANULE_UR.pattern}")
    geometry = ummg.get("SpatialExtent", {}).get("HorizontalSpatialDomain", {}).get("Geometry", {})
    for i, poly in enumerate(geometry.get("GPolygons", []) if isinstance(geometry, Mapping) else []):
        points = poly.get("Boundary", {}).get("Points", [])
        if points and points[0] != points[-1]:
            problems.append(f"$.SpatialExtent...GPolygons[{i}]: ring is not closed")
    return problems
