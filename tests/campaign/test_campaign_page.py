"""The operators' campaign page and the campaign's STAC Collection (issue 23).

Three tiny synthetic acquisitions at three places go through the real PGE (in-process), so
their footprints come from the granule records the PGE wrote; a report with them done, two
failures (with causes, codes and attempts) and one pending is written as the campaign writes
it (`Report.write`), and the page is parsed with html.parser and checked against the JSON
report written beside it.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pystac
import pytest
from stac_pydantic import Collection as PydanticCollection

import pge.cli
from campaign.html_report import BIN_EDGES, PAGE_HTML
from campaign.report import DONE, FAILED, PENDING, Entry, Report
from campaign.stac import COLLECTION_JSON, ITEM_SUFFIX, FootprintReader
from l2b_mask.synthetic.scene import generate_acquisition

pytestmark = pytest.mark.usefixtures("restore_logging")
START = datetime(2024, 3, 2, 0, 0, 0, tzinfo=UTC)
PLACES = ((-25.0, 133.0), (-24.0, 135.0), (-26.5, 131.0))


class Page(HTMLParser):
    """Tables by id (rows of data-field cells with the row's data-* attributes), images, and
    every URL the page would fetch."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, str]]] = {}
        self.images: dict[str, dict[str, str]] = {}
        self.fetches: list[str] = []
        self.tags: set[str] = set()
        self._table: str | None = None
        self._row: dict[str, str] | None = None
        self._field: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        for key in ("src", "href"):
            if key in a and not a[key].startswith("data:"):
                self.fetches.append(a[key])
        if tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = {k[5:]: v for k, v in a.items() if k.startswith("data-")}
        elif tag == "td" and self._row is not None:
            self._field = a.get("data-field")
            self._row[self._field] = ""
        elif tag == "img":
            self.images[a.get("id", "")] = a

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._field is not None:
            self._row[self._field] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._field = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if self._row:  # header rows have no data cells
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None


@pytest.fixture(scope="module")
def products(tmp_path_factory, spec) -> tuple[Path, list[str]]:
    """Three products made by the PGE under one output folder, at three places."""
    base = tmp_path_factory.mktemp("page")
    out = base / "root" / "products"
    stems = []
    for i, (lat, lon) in enumerate(PLACES):
        acq = generate_acquisition(base / f"in{i}", lines=8, samples=16, seed=i + 1,
                                   start_time=START + timedelta(minutes=i), latitude=lat,
                                   longitude=lon, cloud_fraction=0.2 + 0.3 * i)
        rc = {"input_files": {"radiance": str(acq.radiance), "observation": str(acq.observation),
                              "location": str(acq.location), "glt": str(acq.glt)},
              "ancillary_files": {"model_weights": str(spec.weights_path),
                                  "irradiance": str(spec.irradiance_path),
                                  "model_spec": str(spec.path)},
              "output": {"directory": str(out)}, "processing": {"device": "cpu"},
              "pge": {"software_build_version": "010635"}}
        (base / f"rc{i}.json").write_text(json.dumps(rc))
        assert pge.cli.main([str(base / f"rc{i}.json")]) == 0
        stems.append(_stem_of(out, i))
    return out, stems


def _stem_of(out: Path, i: int) -> str:
    stamp = (START + timedelta(minutes=i)).strftime("emit%Y%m%dt%H%M%S")
    (metadata,) = out.glob(f"{stamp}*_metadata.json")
    return metadata.name.removesuffix("_metadata.json")


def _report(root: Path, out: Path, stems: list[str]) -> Report:
    """Two products done, one pending, two failures (one of them retried)."""
    report = Report(root, {"started_utc": START.isoformat(), "finished_utc": None,
                           "output_root": str(root)})
    for stem in stems[:2]:
        meta = json.loads((out / f"{stem}_metadata.json").read_text())
        entry = Entry(stem.split("_")[0], stem, "rdn.img", None, None, None, "rc.json", str(out),
                      attempts=1, duration_s=2.5,
                      cloud_fraction_percent=meta["cloud_fraction"]["percent_of_valid_pixels"])
        report.add(entry)
        report.set_status(entry, DONE)
    report.add(Entry(stems[2].split("_")[0], stems[2], "rdn.img", None, None, None, "rc.json",
                     str(out)))  # made by the PGE but still pending in this report
    for name, code, attempts, error in (
            ("emit20240302t010500", 4, 1, "input product invalid: rdn.img: truncated <binary>"),
            ("emit20240302t010600", 6, 3, "processing failed: CUDA device cuda:7 & not found")):
        entry = Entry(name, f"{name}_o06201_s000_l2b_mask_b0106_v01", "r.img", None, None, None,
                      "rc.json", str(out), exit_code=code, error=error, attempts=attempts,
                      retries=attempts - 1, failure_log=str(out / f"{name}.log"))
        report.add(entry)
        report.set_status(entry, FAILED)
    return report


def _read(root: Path) -> tuple[Page, dict[str, Any]]:
    page = Page((root / PAGE_HTML).read_text(encoding="utf-8"))
    return page, json.loads((root / "campaign_report.json").read_text())


def test_page_agrees_with_the_json_report(products, tmp_path):
    out, stems = products
    root = out.parent
    _report(root, out, stems).write()
    page, doc = _read(root)
    assert page.fetches == [] and not {"script", "link", "iframe"} & page.tags  # no network
    counts = {r["state"]: int(r["count"]) for r in page.tables["counts"]}
    assert counts == {s: doc["totals"][s] for s in ("done", "skipped", "failed", "pending")}
    assert counts == {"done": 2, "skipped": 0, "failed": 2, "pending": 1}
    failed = {e["product_stem"]: e for e in doc["acquisitions"] if e["status"] == FAILED}
    rows = {r["stem"]: r for r in page.tables["failures"]}
    assert set(rows) == set(failed)
    for stem, row in rows.items():
        assert int(row["exit_code"]) == failed[stem]["exit_code"]
        assert row["cause"] == failed[stem]["error"]  # escaped in the HTML, the same text back
        assert int(row["attempts"]) == failed[stem]["attempts"]
        assert row["failure_log"] == failed[stem]["failure_log"]
    assert rows[next(s for s in rows if "010600" in s)]["meaning"] == "processing failed"
    clouds = [e["cloud_fraction_percent"] for e in doc["acquisitions"]
              if e["cloud_fraction_percent"] is not None]
    assert len(clouds) == 2
    hist = [int(r["count"]) for r in page.tables["cloud-histogram"]]
    assert len(hist) == len(BIN_EDGES) - 1 and sum(hist) == len(clouds)
    for value in clouds:
        assert hist[min(int(value // 10), 9)] >= 1
    for name in ("map", "histogram"):
        src = page.images[name]["src"]
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # every product the PGE made is located (the pending one too), from its granule record
    assert page.images["map"]["alt"].startswith("Footprints of 3 products")


def test_footprints_are_the_granule_records_polygons(products):
    out, stems = products
    reader = FootprintReader()
    for stem, (lat, lon) in zip(stems, PLACES, strict=True):
        footprint = reader.footprint(out, stem)
        assert footprint is not None and footprint.ring[0] == footprint.ring[-1]
        ummg = json.loads((out / f"{stem}.cmr.json").read_text())
        points = ummg["SpatialExtent"]["HorizontalSpatialDomain"]["Geometry"]["GPolygons"][0]
        if footprint.source == "ummg":
            assert footprint.ring == tuple((p["Longitude"], p["Latitude"])
                                           for p in points["Boundary"]["Points"])
        lons, lats = [p[0] for p in footprint.ring], [p[1] for p in footprint.ring]
        assert abs(sum(lats) / len(lats) - lat) < 0.5 and abs(sum(lons) / len(lons) - lon) < 0.5
        assert footprint.start.startswith((START + timedelta(minutes=stems.index(stem)))
                                          .strftime("%Y-%m-%dT%H:%M"))


def test_page_is_refreshed_with_the_report_and_written_link_safe(products, tmp_path):
    out, stems = products
    root = out.parent
    report = _report(root, out, stems)
    outside = tmp_path / "victim.html"
    outside.write_text("not the page")
    (root / PAGE_HTML).unlink(missing_ok=True)
    (root / PAGE_HTML).symlink_to(outside)  # a link planted where the page goes
    report.write()
    assert outside.read_text() == "not the page"
    assert not (root / PAGE_HTML).is_symlink() and (root / PAGE_HTML).is_file()
    pending = next(e for e in report.entries.values() if e.status == PENDING)
    report.set_status(pending, DONE)
    pending.cloud_fraction_percent = 99.0
    report.write()
    page, doc = _read(root)
    assert {r["state"]: int(r["count"]) for r in page.tables["counts"]}["done"] == 3
    assert int(page.tables["cloud-histogram"][-1]["count"]) >= 1  # the 99 % acquisition
    assert doc["totals"]["done"] == 3
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")], "no temporary left"


def _item_from_granule(out: Path, stem: str) -> dict[str, Any]:
    """A minimal STAC Item for a product that has none yet (the test's own, made from the
    granule record; the PGE's own Items are used when they exist)."""
    footprint = FootprintReader().footprint(out, stem)
    lons, lats = [p[0] for p in footprint.ring], [p[1] for p in footprint.ring]
    return {"type": "Feature", "stac_version": "1.1.0", "stac_extensions": [], "id": stem,
            "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in footprint.ring]]},
            "bbox": [min(lons), min(lats), max(lons), max(lats)],
            "properties": {"datetime": footprint.start}, "links": [],
            "assets": {"netcdf": {"href": f"./{stem}.nc", "roles": ["data"]}}}


def test_collection_links_every_product_item_on_disk_and_pystac_walks_it(products, tmp_path):
    out, stems = products
    root = out.parent
    report = _report(root, out, stems)
    report.write()
    path = root / COLLECTION_JSON
    doc = json.loads(path.read_text())
    PydanticCollection.model_validate(doc)
    on_disk = {s for s in [e.product_stem for e in report.entries.values()]
               if (out / f"{s}{ITEM_SUFFIX}").is_file()}
    assert {link["title"] for link in doc["links"] if link["rel"] == "item"} == on_disk
    bbox = doc["extent"]["spatial"]["bbox"][0]
    for lat, lon in PLACES:
        assert bbox[0] <= lon <= bbox[2] and bbox[1] <= lat <= bbox[3]
    assert doc["extent"]["temporal"]["interval"][0][0].startswith("2024-03-02T00:00")
    # once every product has its Item, the collection links them all
    for stem in stems:
        item = out / f"{stem}{ITEM_SUFFIX}"
        if not item.exists():
            item.write_text(json.dumps(_item_from_granule(out, stem)))
    report.write()
    collection = pystac.Collection.from_file(str(path))
    ids = [json.loads((out / f"{stem}{ITEM_SUFFIX}").read_text())["id"] for stem in stems]
    assert sorted(i.id for i in collection.get_items()) == sorted(ids)  # the PGE's: GranuleURs
    PydanticCollection.model_validate(json.loads(path.read_text()))
