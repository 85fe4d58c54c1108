"""The STAC Item each PGE run writes (`<product>_stac.json`): valid against the STAC 1.1.0 Item
schema bundled with pystac (nothing fetched: the network is closed for the test), a valid
stac-pydantic Item, opened by pystac with its extensions, and true to the files beside it.

The demo (`l2b-mask-demo`, ENVI and LP DAAC inputs) writes the products checked here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from l2b_mask.inputs.glt import Bounds
from pge.sds.files import PRODUCT_FILES
from pge.sds.stac import ASSET_KINDS, ItemFacts, build_item, check_item, multihash_sha256

pystac = pytest.importorskip("pystac")
stac_pydantic = pytest.importorskip("stac_pydantic")


@pytest.fixture(scope="module", params=["envi", "daac"])
def demo(request, tmp_path_factory, spec) -> Path:
    """The demo's product folder, from the SDS's ENVI inputs or the LP DAAC granules."""
    base = tmp_path_factory.mktemp(f"stac_{request.param}")
    done = subprocess.run([sys.executable, "-m", "pge.demo", "--folder", "demo", "--lines", "24",
                           "--samples", "24", "--device", "cpu", "--format", request.param],
                          cwd=base, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return base / "demo" / "products"


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to read a schema (or anything) from a URL fails the test."""
    import urllib.request

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(pystac.StacIO.default(), "read_text_from_href", refuse, raising=False)


def _item_path(folder: Path) -> Path:
    (path,) = folder.glob("*_stac.json")
    return path


def test_item_validates_offline_against_the_bundled_stac_schema(demo, offline):
    from pystac.validation.stac_validator import JsonSchemaSTACValidator

    item = json.loads(_item_path(demo).read_text())
    assert item["stac_version"] == "1.1.0"
    uri = JsonSchemaSTACValidator().validate_core(item, pystac.STACObjectType.ITEM, "1.1.0")
    assert uri and uri.endswith("item.json")
    broken = {**item, "properties": {**item["properties"], "datetime": "yesterday"}}
    with pytest.raises(pystac.errors.STACValidationError):
        JsonSchemaSTACValidator().validate_core(broken, pystac.STACObjectType.ITEM, "1.1.0")


def test_item_is_a_stac_pydantic_item(demo):
    from stac_pydantic import Item

    item = Item.model_validate_json(_item_path(demo).read_text())
    assert item.properties.datetime is not None and item.bbox is not None


def test_pystac_reads_footprint_time_cloud_cover_and_projection(demo, offline):
    from osgeo import gdal
    from pystac.extensions.eo import EOExtension
    from pystac.extensions.projection import ProjectionExtension

    path = _item_path(demo)
    item = pystac.Item.from_file(str(path))
    ummg = json.loads(next(demo.glob("*.cmr.json")).read_text())
    assert item.id == ummg["GranuleUR"]
    assert item.datetime.isoformat().startswith(
        ummg["TemporalExtent"]["RangeDateTime"]["BeginningDateTime"][:19])
    cover = EOExtension.ext(item).cloud_cover
    assert cover is not None and round(cover) == ummg["CloudCover"]
    rect = ummg["SpatialExtent"]["HorizontalSpatialDomain"]["Geometry"]["BoundingRectangles"][0]
    assert item.bbox == [rect["WestBoundingCoordinate"], rect["SouthBoundingCoordinate"],
                         rect["EastBoundingCoordinate"], rect["NorthBoundingCoordinate"]]
    ring = np.asarray(item.geometry["coordinates"][0])
    w, s, e, n = item.bbox
    assert (ring[:, 0] >= w).all() and (ring[:, 0] <= e).all() and (ring[:, 1] >= s).all()
    assert (ring[:, 1] <= n).all() and (ring[0] == ring[-1]).all()
    cogs = [k for k, a in item.assets.items() if a.media_type and "cloud-optimized" in a.media_type]
    assert set(cogs) == {"ortho_flag", "ortho_probability", "ortho_buffer", "ortho_shadow"}
    for key in cogs:
        asset = item.assets[key]
        proj = ProjectionExtension.ext(asset)
        ds = gdal.Open(str(demo / Path(asset.href).name))
        gt = ds.GetGeoTransform()
        assert proj.code == "EPSG:4326"
        assert proj.shape == [ds.RasterYSize, ds.RasterXSize]
        assert proj.transform == [gt[1], gt[2], gt[0], gt[4], gt[5], gt[3]]
        ds = None
    assert item.properties["processing:software"]["l2b-mask-pge"]
    from pystac.extensions.file import FileExtension

    # The extension versions pystac implements: its accessors read them without migration.
    assert set(item.stac_extensions) >= {ProjectionExtension.get_schema_uri(),
                                         EOExtension.get_schema_uri(),
                                         FileExtension.get_schema_uri()}
    assert FileExtension.ext(item.assets["netcdf"]).size == (demo / Path(
        item.assets["netcdf"].href).name).stat().st_size


def test_every_file_is_an_asset_with_its_checksum(demo):
    path = _item_path(demo)
    item = json.loads(path.read_text())
    files = {p.name for p in demo.iterdir() if not p.name.startswith(".")} - {path.name}
    hrefs = {a["href"] for a in item["assets"].values()}
    assert hrefs == {f"./{name}" for name in files}
    for key, asset in item["assets"].items():
        file = demo / asset["href"][2:]
        assert asset["type"] == ASSET_KINDS[key].media_type and asset["roles"]
        if key in ("provenance", "log"):  # written after the Item
            assert "file:checksum" not in asset
            continue
        assert asset["file:size"] == file.stat().st_size
        assert asset["file:checksum"] == multihash_sha256(file)
    provenance = json.loads(next(demo.glob("*_provenance.json")).read_text())
    assert "stac" in provenance["outputs"]  # checked, published and counted like every file


def test_every_product_file_has_an_asset_kind():
    assert {f.key for f in PRODUCT_FILES} - {"stac"} == set(ASSET_KINDS)


def _facts(**changes) -> ItemFacts:
    from datetime import UTC, datetime

    base = {"item_id": "x", "start": datetime(2024, 3, 2, 0, 58, 29, tzinfo=UTC), "end": None,
            "created": datetime(2025, 1, 1, tzinfo=UTC), "cloud_cover_percent": 30.2,
            "cloud_percent_of_valid": 24.6, "software": {"l2b-mask-pge": "0.1.0"},
            "cloud_model_version": "0.1.0", "threshold": 0.51}
    return ItemFacts(**{**base, **changes})


def test_item_without_location_has_null_geometry_and_no_bbox(tmp_path, offline):
    from pystac.validation.stac_validator import JsonSchemaSTACValidator

    data = tmp_path / "p.nc"
    data.write_bytes(b"x")
    item = build_item(_facts(), {"netcdf": data}, None)
    assert item["geometry"] is None and "bbox" not in item and not check_item(item)
    JsonSchemaSTACValidator().validate_core(item, pystac.STACObjectType.ITEM, "1.1.0")
    boxed = build_item(_facts(bounds=Bounds(1.0, 2.0, 3.0, 4.0)), {"netcdf": data}, None)
    assert boxed["geometry"]["coordinates"][0][0] == [1.0, 2.0] and boxed["bbox"] == [1, 2, 3, 4]
    bad = {**item, "properties": {**item["properties"], "eo:cloud_cover": 130}}
    assert check_item(bad)
