"""The optional orthorectified product: each layer with an `ortho` file in the layer table
(`layers.LAYERS`) on the GLT grid, as its own cloud-optimised GeoTIFF.

Each grid cell takes the swath pixel its GLT entry names (nearest neighbour by construction:
the GLT is the resampling, nothing is interpolated). One file per layer, because a GeoTIFF has
one data type and one nodata value for all its bands: each layer keeps its own type and
no-value, as in every other product, instead of all becoming float32 with one shared nodata.

- `_ortho.tif`: band 1 "Cloud Flag", uint8, 0 clear, 1 cloud, 255 no value;
- `_ortho_prob.tif`: band 1 "Cloud Probability", float32 in [0, 1], -9999 no value;
- `_ortho_buffer.tif`: band 1 "Cloud Buffer Distance", float32 pixels of the instrument grid
  (0 cloud, -1 beyond reach), -9999 no value;
- `_ortho_shadow.tif`: band 1 "Cloud Shadow Flag", uint8, 0 not shadow, 1 shadow, 255 no value.

All: EPSG:4326, the GLT's geotransform, DEFLATE (with the floating-point predictor for float
layers), 512 x 512 tiles, overviews by nearest neighbour (so every overview value is a real
flag or model value), the layer's units, range and flag meanings as metadata tags (the
netCDF's), written by GDAL's COG driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from l2b_mask.errors import OutputError
from l2b_mask.inputs.glt import Glt
from l2b_mask.products.geotiff import write_geotiff
from l2b_mask.products.layers import LAYERS, Layer, Layers, prepare

_COMMON_METADATA = {"AREA_OR_POINT": "Area", "SOURCE_GRID": "EMIT GLT (nearest: each cell shows the "
                                                            "swath pixel its GLT entry names)"}


def ortho_grid(row: Layer, swath: np.ndarray, glt: Glt) -> np.ndarray:
    """One in-memory swath layer on the GLT grid, as the GeoTIFF stores it (`fill` no value)."""
    return glt.resample(row.stored(swath), row.dtype.type(row.fill))


def write_ortho_layer(path: Path | str, row: Layer, swath: np.ndarray, glt: Glt) -> None:
    """One swath layer (in-memory conventions) as a COG on the GLT grid; a failure leaves no
    file behind (`OutputError`)."""
    if row.ortho is None:
        raise ValueError(f"the {row.what} has no orthorectified file")
    try:
        write_geotiff(path, ortho_grid(row, swath, glt), row.fill, row.band_name, cog=True,
                      options=list(row.ortho.options), geotransform=glt.geotransform,
                      metadata={**_COMMON_METADATA, **row.ortho_metadata()})
    except OutputError as exc:
        detail = exc.problem.removeprefix("cannot write GeoTIFF ")
        raise OutputError(Path(path), f"cannot write orthorectified GeoTIFF {detail}") from None


def write_ortho_layers(paths: Mapping[str, Path], layers: Layers, names: list[str],
                       glt: Glt) -> None:
    """The named layers' COGs at `paths[row.ortho.key]`; a failure leaves none of them."""
    rows = [row for row in layers.table if row.name in names]
    try:
        for row in rows:
            assert row.ortho is not None
            write_ortho_layer(paths[row.ortho.key], row, layers[row.name], glt)
    except OutputError:
        for row in rows:
            assert row.ortho is not None
            Path(paths[row.ortho.key]).unlink(missing_ok=True)
        raise


def check_ortho_layer(path: Path, row: Layer, swath: np.ndarray, glt: Glt) -> None:
    """The GeoTIFF holds exactly the swath layer resampled through the GLT (OutputError)."""
    from osgeo import gdal

    try:
        ds = gdal.Open(str(path))
        got = ds.GetRasterBand(1).ReadAsArray()
        ds = None
    except Exception as exc:  # noqa: BLE001 - unreadable is an output failure
        raise OutputError(path, f"product does not read back ({exc})") from None
    if not np.array_equal(got, ortho_grid(row, swath, glt)):
        raise OutputError(path, "orthorectified values differ from the swath product's")


def write_ortho_geotiff(flag_path: Path | str, probability_path: Path | str, flag: np.ndarray,
                        probability: np.ndarray, glt: Glt,
                        table: tuple[Layer, ...] = LAYERS) -> None:
    """Write the orthorectified flag and probability as two COGs.

    `flag` (uint8, 255 no value) and `probability` (float32, NaN no value) are the swath
    arrays the other products hold; `glt` is `read_glt(...)` of the acquisition. A failure
    leaves neither file behind (`OutputError`).
    """
    layers = prepare({"flag": flag, "probability": probability}, table)
    keys = {row.name: row.ortho.key for row in table if row.ortho is not None}
    write_ortho_layers({keys["flag"]: Path(flag_path), keys["probability"]: Path(probability_path)},
                       layers, ["flag", "probability"], glt)
