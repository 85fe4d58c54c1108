"""One row of the layer table is enough for a new layer (issue 19): a toy cirrus flag added to
a test-only table is written into the ENVI product, the netCDF, its own orthorectified
GeoTIFF, the browse and the layer statistics, and read back and checked, with no other edit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from l2b_mask.errors import OutputError
from l2b_mask.inputs.glt import read_glt
from l2b_mask.inputs.location import read_location
from l2b_mask.products.browse import overlays_of
from l2b_mask.products.envi import read_envi_layers
from l2b_mask.products.layers import (
    FLAG_COG_OPTIONS,
    LAYERS,
    BrowseColour,
    Layer,
    OrthoFile,
    flag_values_only,
    layer,
    prepare,
)
from l2b_mask.products.netcdf import read_netcdf_layers
from l2b_mask.products.summary import layer_summary
from l2b_mask.products.table import DATA_PRODUCTS, ProductContent, data_products
from l2b_mask.synthetic.scene import generate_acquisition

gdal = pytest.importorskip("osgeo.gdal")
LINES, SAMPLES = 12, 10
CIRRUS = Layer("cirrus", "cirrus flag", "Cirrus Flag", "cirrus_flag", np.dtype(np.uint8), 255,
               "Cirrus flag (toy)", "thematicClassification", flag_values_only((0, 1)),
               "other than 0, 1 and 255", flag_values=(0, 1), flag_meanings="clear cirrus",
               ortho=OrthoFile("ortho_cirrus", "_ortho_cirrus.tif", FLAG_COG_OPTIONS),
               browse=BrowseColour((0.0, 255.0, 255.0), 0.5, "cirrus"))
TOY = (*LAYERS, CIRRUS)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Every data product of the toy table, written and read back through its rows."""
    folder = tmp_path_factory.mktemp("toy_layer")
    acq = generate_acquisition(folder / "in", lines=LINES, samples=SAMPLES, seed=11)
    rng = np.random.default_rng(0)
    valid = acq.truth != 0
    probability = np.where(valid, rng.uniform(0, 1, valid.shape), np.nan).astype(np.float32)
    flag = np.where(valid, probability > 0.5, 255).astype(np.uint8)
    cirrus = np.where(valid, acq.truth == 4, 255).astype(np.uint8)
    cirrus[0, :3] = (0, 1, 1)  # some cirrus whatever the scene holds
    layers = prepare({"flag": flag, "probability": probability, "cirrus": cirrus}, TOY)
    content = ProductContent(layers, {}, {}, {"title": "toy"}, acq.radiance,
                             read_location(acq.location, (LINES, SAMPLES)),
                             read_glt(acq.glt, (LINES, SAMPLES)))
    rows = data_products(TOY)
    paths = {key: folder / f"toy{suffix}" for row in rows for key, suffix in row.files}
    for row in rows:
        if row.needs_layer is None or layers.made(row.needs_layer):
            row.write(content, paths)
            row.check(content, paths)  # read back and compared: OutputError otherwise
    return layers, paths, content


def test_the_default_table_is_untouched():
    assert "cirrus" not in {row.name for row in LAYERS}
    assert "ortho_cirrus" not in {key for row in DATA_PRODUCTS for key, _ in row.files}


def test_toy_layer_in_the_envi_product(written):
    layers, paths, _ = written
    header = paths["envi_header"].read_text()
    assert "Cirrus Flag" in header and "cirrus flag" in header  # band name, description
    back = read_envi_layers(paths["envi_data"], TOY)
    assert np.array_equal(back.cirrus, layers.cirrus) and back.cirrus[0, 1] == 1
    with pytest.raises(OutputError, match="expected 4 float32 bands"):
        read_envi_layers(paths["envi_data"])  # the default table knows one band less


def test_toy_layer_in_the_netcdf(written):
    from netCDF4 import Dataset

    layers, paths, _ = written
    assert np.array_equal(read_netcdf_layers(paths["netcdf"], TOY).cirrus, layers.cirrus)
    with Dataset(paths["netcdf"]) as ds:
        var = ds["cirrus_flag"]
        assert var.flag_meanings == "clear cirrus" and var.long_name == "Cirrus flag (toy)"
        assert var.coordinates == "/location/lon /location/lat"
        assert list(ds["sensor_band_parameters/mask_bands"][:])[-1] == "Cirrus Flag"


def test_toy_layer_in_its_orthorectified_geotiff(written):
    layers, paths, content = written
    ds = gdal.Open(str(paths["ortho_cirrus"]))
    band = ds.GetRasterBand(1)
    assert band.GetDescription() == "Cirrus Flag" and band.GetNoDataValue() == 255
    assert ds.GetMetadata()["flag_meanings"] == "clear cirrus"
    assert np.array_equal(band.ReadAsArray(), content.glt.resample(layers.cirrus, 255))
    ds = None
    assert paths["ortho_flag"].is_file() and paths["ortho_buffer"].is_file()


def test_toy_layer_in_the_browse_and_the_statistics(written):
    layers, paths, _ = written
    drawn = [colour for _, colour in overlays_of(layers)]
    assert drawn == [layer("flag").browse, CIRRUS.browse]  # the shadow was not made
    assert paths["browse"].is_file()
    stats = layer_summary(layers)
    cirrus = layers.cirrus[layers.cirrus != 255]
    assert stats["cirrus_flag"]["pixels_with_value"] == cirrus.size
    assert stats["cirrus_flag"]["percent_cirrus"] == pytest.approx(100 * cirrus.mean())
    assert stats["cloud_shadow"]["pixels_with_value"] == 0  # not made: no value anywhere


def test_a_changed_layer_fails_the_read_back(written):
    layers, paths, content = written
    changed = dict(layers.arrays)
    changed["cirrus"] = np.where(layers.cirrus == 1, 0, layers.cirrus).astype(np.uint8)
    other = ProductContent(prepare({k: v for k, v in changed.items() if k != "shadow"}, TOY),
                           {}, {}, {}, content.radiance, content.location, content.glt)
    envi = next(row for row in data_products(TOY) if row.key == "envi")
    with pytest.raises(OutputError, match="cirrus flag differs"):
        envi.check(other, paths)


def test_layer_values_are_checked_when_given():
    flag = np.zeros((2, 2), np.uint8)
    probability = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="cirrus flag holds values other than 0, 1 and 255"):
        prepare({"flag": flag, "probability": probability, "cirrus": flag + 2}, TOY)
    with pytest.raises(ValueError, match="no such layer"):
        prepare({"flag": flag, "probability": probability, "cirrus": flag})
    with pytest.raises(ValueError, match="buffer distance holds values"):
        prepare({"flag": flag, "probability": probability,
                 "buffer_distance": np.full((2, 2), -0.5, np.float32)})
    made = prepare({"flag": np.array([[255, 1], [0, 1]], np.uint8), "probability": probability,
                    "shadow": np.array([[0, 0], [1, 255]], np.uint8)})
    assert made.shadow.tolist() == [[255, 0], [1, 255]]  # no flag value: no shadow value
    assert np.isnan(made.probability[0, 0]) and made.absent == {"buffer_distance"}


def test_units_agree_across_formats():
    # one units field per layer: the netCDF attribute and the GeoTIFF tag are the same words
    for row in LAYERS:
        assert row.attributes().get("units") == row.ortho_metadata().get("units"), row.name
    assert layer("buffer_distance").units == "1"


def test_every_layer_row_is_complete():
    names = [row.name for row in LAYERS]
    assert len(set(names)) == len(names) and LAYERS[0].required
    for row in LAYERS:
        assert row.dtype in (np.dtype(np.uint8), np.dtype(np.float32)), row.name
        assert (row.flag_values is None) == (row.flag_meanings is None), row.name
        if row.flag_values is not None:
            assert len(row.flag_values) == len(row.flag_meanings.split()), row.name
        assert row.ortho is None or Path(row.ortho.suffix).suffix == ".tif"
