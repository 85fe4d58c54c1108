"""The product's STAC Item: `<product>_stac.json`, for catalogs and STAC tools.

STAC 1.1.0, built as plain JSON (no STAC library at run time): the footprint (the swath's
corner polygon, as UMM-G's GPolygon) and bbox (as UMM-G's bounding rectangle), the acquisition
time range, every file of the product as an asset with its media type and roles (relative
hrefs: the Item sits beside the files), the orthorectified COGs with the projection extension
(v2.0.0: `proj:code`, `proj:shape`, `proj:transform`), the processing extension's software
versions and the eo extension's `eo:cloud_cover`, counted as UMM-G's `CloudCover` is (cloudy
plus no-value pixels, of all pixels) so that the same product has one cloud cover in CMR and
in STAC; `l2b_mask:cloud_percent_of_valid` is the cloudy share of the pixels with a value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from l2b_mask.inputs.glt import Bounds, Glt
from l2b_mask.spec import file_digest

STAC_VERSION = "1.1.0"
EO = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
PROJECTION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
FILE = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
PROCESSING = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
EXTENSIONS = (EO, PROJECTION, FILE, PROCESSING)

COG = "image/tiff; application=geotiff; profile=cloud-optimized"
JSON = "application/json"


@dataclass(frozen=True)
class AssetKind:
    """How one product file is described as an asset."""

    media_type: str
    roles: tuple[str, ...]
    title: str
    on_glt_grid: bool = False  # an orthorectified COG: gets the projection fields


# One row per product file key but the Item's own (pge.sds.files.PRODUCT_FILES; a test checks
# that none is missing).
ASSET_KINDS: dict[str, AssetKind] = {
    "envi_data": AssetKind("application/octet-stream", ("data", "cloud"),
                           "ENVI cloud flag, probability, buffer distance, shadow (float32 BIL)"),
    "envi_header": AssetKind("text/plain", ("metadata",), "ENVI header"),
    "netcdf": AssetKind("application/x-netcdf", ("data", "cloud"),
                        "netCDF-4 cloud mask, probability, buffer distance, shadow, location, GLT"),
    "browse": AssetKind("image/png", ("overview", "visual"), "Browse image"),
    "ortho_flag": AssetKind(COG, ("data", "cloud"), "Cloud flag on the GLT grid", True),
    "ortho_probability": AssetKind(COG, ("data", "cloud"), "Cloud probability on the GLT grid",
                                   True),
    "ortho_buffer": AssetKind(COG, ("data",), "Cloud buffer distance on the GLT grid", True),
    "ortho_shadow": AssetKind(COG, ("data", "cloud-shadow"), "Cloud shadow on the GLT grid", True),
    "metadata": AssetKind(JSON, ("metadata",), "Product metadata"),
    "ummg": AssetKind(JSON, ("metadata",), "UMM-G granule record (CMR)"),
    "provenance": AssetKind(JSON, ("metadata",), "Provenance record"),
    "log": AssetKind("text/plain", ("metadata",), "PGE log"),
}
# Written after the Item (they record or narrate it): listed without size or checksum.
LATER = ("provenance", "log")


@dataclass(frozen=True)
class ItemFacts:
    """What the Item says besides the files."""

    item_id: str
    start: datetime
    end: datetime | None
    created: datetime
    cloud_cover_percent: float  # UMM-G's count
    cloud_percent_of_valid: float
    software: Mapping[str, str]  # name -> version (processing:software)
    cloud_model_version: str
    threshold: float
    bounds: Bounds | None = None
    polygon: Sequence[tuple[float, float]] = ()  # closed (lon, lat) ring, counter-clockwise


def stac_time(value: datetime) -> str:
    """RFC 3339 UTC with a Z, as STAC wants it."""
    if value.tzinfo is None:
        raise ValueError(f"time {value!r} has no time zone; pass an aware (UTC) datetime")
    v = value.astimezone(UTC)
    return v.strftime("%Y-%m-%dT%H:%M:%S") + (f".{v.microsecond:06d}Z" if v.microsecond else "Z")


def multihash_sha256(path: Path) -> str:
    """`file:checksum`: the multihash of SHA2-256 (code 0x12, 32 bytes) in hex."""
    return "1220" + file_digest(path, "sha256")


def _geometry(facts: ItemFacts) -> tuple[dict[str, Any] | None, list[float] | None]:
    b = facts.bounds
    if b is None:
        return None, None
    ring = [list(p) for p in facts.polygon] or [
        [b.west, b.south], [b.east, b.south], [b.east, b.north], [b.west, b.north],
        [b.west, b.south]]
    return {"type": "Polygon", "coordinates": [ring]}, [b.west, b.south, b.east, b.north]


def _asset(key: str, path: Path, glt: Glt | None, described: bool) -> dict[str, Any]:
    kind = ASSET_KINDS[key]
    asset: dict[str, Any] = {"href": f"./{path.name}", "type": kind.media_type,
                             "title": kind.title, "roles": list(kind.roles)}
    if described:
        asset["file:size"] = path.stat().st_size
        asset["file:checksum"] = multihash_sha256(path)
    if kind.on_glt_grid and glt is not None:
        asset["proj:code"] = f"EPSG:{glt.epsg}" if glt.epsg is not None else None
        if glt.epsg is None:
            asset["proj:wkt2"] = glt.crs_wkt
        asset["proj:shape"] = list(glt.shape)
        gt = glt.geotransform  # GDAL order -> the affine's first two rows
        asset["proj:transform"] = [gt[1], gt[2], gt[0], gt[4], gt[5], gt[3]]
    return asset


def build_item(facts: ItemFacts, files: Mapping[str, Path], glt: Glt | None) -> dict[str, Any]:
    """The Item of one product: `files` maps every file key to its path (those in `LATER` may
    not exist yet), in table order; the others are sized and checksummed from disk."""
    geometry, bbox = _geometry(facts)
    properties: dict[str, Any] = {
        "datetime": stac_time(facts.start),
        "start_datetime": stac_time(facts.start),
        "end_datetime": stac_time(facts.end or facts.start),
        "created": stac_time(facts.created),
        "platform": "ISS",
        "instruments": ["EMIT"],
        "eo:cloud_cover": round(min(float(facts.cloud_cover_percent), 100.0), 6),
        "processing:level": "L2B",
        "processing:datetime": stac_time(facts.created),
        "processing:software": dict(facts.software),
        "l2b_mask:cloud_percent_of_valid": round(float(facts.cloud_percent_of_valid), 6),
        "l2b_mask:cloud_model_version": facts.cloud_model_version,
        "l2b_mask:threshold": float(facts.threshold),
    }
    item: dict[str, Any] = {
        "type": "Feature", "stac_version": STAC_VERSION, "stac_extensions": list(EXTENSIONS),
        "id": facts.item_id, "geometry": geometry,
    }
    if bbox is not None:
        item["bbox"] = bbox
    item["properties"] = properties
    item["links"] = []
    item["assets"] = {key: _asset(key, path, glt, key not in LATER)
                      for key, path in files.items()}
    return item


def check_item(item: Mapping[str, Any]) -> list[str]:
    """What the PGE checks before writing (the tests validate against the STAC schemas too):
    the fields every Item needs, a known asset for every file, a bbox with every geometry."""
    problems = [f"missing '{k}'" for k in ("type", "stac_version", "id", "geometry", "properties",
                                           "links", "assets") if k not in item]
    if problems:
        return problems
    if (item["geometry"] is None) != ("bbox" not in item):
        problems.append("a geometry needs a bbox and a bbox a geometry")
    if not item["properties"].get("datetime"):
        problems.append("no datetime")
    cover = item["properties"].get("eo:cloud_cover")
    if not isinstance(cover, int | float) or not 0 <= cover <= 100:
        problems.append(f"eo:cloud_cover {cover!r} is not within [0, 100]")
    problems += [f"asset {k!r} has no href" for k, a in item["assets"].items() if not a.get("href")]
    return problems


def write_item(path: Path | str, item: Mapping[str, Any]) -> None:
    """Write the Item as indented JSON after `check_item` finds nothing wrong; the file is
    created new (O_EXCL, no link followed: it goes into the run's private scratch folder)."""
    problems = check_item(item)
    if problems:
        raise ValueError("STAC Item is not valid: " + "; ".join(problems))
    data = (json.dumps(item, indent=2) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
