"""Where each product lies on the ground, and the campaign's STAC Collection.

Footprints come from the product's own records: its STAC Item (`<stem>_stac.json`, GeoJSON
geometry) when there is one, else its UMM-G granule record (`<stem>.cmr.json`: the swath's
GPolygon, or its bounding rectangle). They are read once per file version (path, size and
modification time), so rewriting the campaign page during a long campaign does not reread an
archive's records each time.

`campaign_collection.json` is a STAC Collection (STAC 1.1) with an `item` link to every
product's STAC Item that exists on disk (relative to the output root), the spatial extent of
the footprints and the temporal extent of the acquisitions; STAC clients (`pystac`, a static
catalogue browser) then walk the campaign's products from one file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l2b_mask.atomic_file import replace_file

COLLECTION_JSON = "campaign_collection.json"
STAC_VERSION = "1.1.0"
ITEM_SUFFIX = "_stac.json"
UMMG_SUFFIX = ".cmr.json"
Ring = tuple[tuple[float, float], ...]  # closed (lon, lat) ring


@dataclass(frozen=True)
class Footprint:
    """One product's outline and acquisition time, and the record they were read from."""

    ring: Ring
    start: str | None  # ISO 8601 UTC
    end: str | None
    source: str  # "stac" or "ummg"


def _from_item(doc: Mapping[str, Any]) -> Footprint | None:
    geometry = doc.get("geometry") or {}
    if geometry.get("type") != "Polygon":
        return None
    props = doc.get("properties", {})
    ring = tuple((float(x), float(y)) for x, y, *_ in geometry["coordinates"][0])
    start = props.get("start_datetime") or props.get("datetime")
    return Footprint(ring, start, props.get("end_datetime") or start, "stac")


def _from_ummg(doc: Mapping[str, Any]) -> Footprint | None:
    geometry = doc.get("SpatialExtent", {}).get("HorizontalSpatialDomain", {}).get("Geometry", {})
    times = doc.get("TemporalExtent", {}).get("RangeDateTime", {})
    start, end = times.get("BeginningDateTime"), times.get("EndingDateTime")
    for polygon in geometry.get("GPolygons", []):
        points = polygon["Boundary"]["Points"]
        return Footprint(tuple((float(p["Longitude"]), float(p["Latitude"])) for p in points),
                         start, end, "ummg")
    for box in geometry.get("BoundingRectangles", []):
        w, e = box["WestBoundingCoordinate"], box["EastBoundingCoordinate"]
        s, n = box["SouthBoundingCoordinate"], box["NorthBoundingCoordinate"]
        return Footprint(((w, s), (e, s), (e, n), (w, n), (w, s)), start, end, "ummg")
    return None


class FootprintReader:
    """Footprints of products by stem, each record read again only when it changed."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[tuple[int, int], Footprint | None]] = {}

    def _read(self, path: Path, parse: Any) -> Footprint | None:
        try:
            st = path.stat()
        except OSError:
            self._cache.pop(path, None)
            return None
        version = (st.st_size, st.st_mtime_ns)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            footprint = parse(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            footprint = None  # a record being written, or not ours: no footprint for now
        self._cache[path] = (version, footprint)
        return footprint

    def footprint(self, product_dir: str | Path, stem: str) -> Footprint | None:
        folder = Path(product_dir)
        return (self._read(folder / f"{stem}{ITEM_SUFFIX}", _from_item)
                or self._read(folder / f"{stem}{UMMG_SUFFIX}", _from_ummg))

    def of_report(self, doc: Mapping[str, Any]) -> dict[str, Footprint]:
        """Footprints of the report's acquisitions that have one, by product stem."""
        out = {}
        for entry in doc.get("acquisitions", []):
            found = self.footprint(entry["product_dir"], entry["product_stem"])
            if found is not None:
                out[entry["product_stem"]] = found
        return out


def item_paths(doc: Mapping[str, Any]) -> dict[str, Path]:
    """The products' STAC Items that exist on disk, by stem."""
    out = {}
    for entry in doc.get("acquisitions", []):
        path = Path(entry["product_dir"]) / f"{entry['product_stem']}{ITEM_SUFFIX}"
        if path.is_file():
            out[entry["product_stem"]] = path
    return out


def _extent(footprints: Mapping[str, Footprint], started: str | None) -> dict[str, Any]:
    points = [p for f in footprints.values() for p in f.ring]
    if points:
        lons, lats = [p[0] for p in points], [p[1] for p in points]
        bbox = [min(lons), min(lats), max(lons), max(lats)]
    else:
        bbox = [-180.0, -90.0, 180.0, 90.0]  # nothing located yet
    starts = sorted(f.start for f in footprints.values() if f.start)
    ends = sorted(f.end for f in footprints.values() if f.end)
    interval = [starts[0], ends[-1]] if starts and ends else [started, None]
    return {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [interval]}}


def collection(root: Path, doc: Mapping[str, Any],
               footprints: Mapping[str, Footprint]) -> dict[str, Any]:
    """The STAC Collection of a campaign report `doc` written under `root`."""
    items = item_paths(doc)
    links = [{"rel": "item", "href": os.path.relpath(path, root), "type": "application/geo+json",
              "title": stem} for stem, path in sorted(items.items())]
    links += [{"rel": "root", "href": f"./{COLLECTION_JSON}", "type": "application/json"},
              {"rel": "self", "href": f"./{COLLECTION_JSON}", "type": "application/json"}]
    totals = doc.get("totals", {})
    started = doc.get("campaign", {}).get("started_utc")
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "id": f"l2b-mask-campaign-{root.name or 'root'}",
        "title": "EMIT L2B cloud mask: one campaign's products",
        "description": (f"The products of the campaign under {root}: {totals.get('done', 0)} "
                        f"made, {totals.get('skipped', 0)} already there, "
                        f"{totals.get('failed', 0)} failed, {totals.get('pending', 0)} pending; "
                        f"{len(items)} with a STAC Item."),
        "license": "other",
        "extent": _extent(footprints, started if isinstance(started, str) else None),
        "links": links,
    }


def write_collection(root: Path, doc: Mapping[str, Any],
                     footprints: Mapping[str, Footprint]) -> Path:
    """Write `campaign_collection.json` under `root` (whole, link-safe)."""
    text = json.dumps(collection(root, doc, footprints), indent=2) + "\n"
    return replace_file(root / COLLECTION_JSON, text.encode("utf-8"))
