"""The optional orthorectified product: every layer on the GLT grid, as COGs.

Each grid cell takes the swath pixel its GLT entry names (nearest neighbour by construction:
the GLT is the resampling, nothing is interpolated). Two cloud-optimised GeoTIFFs, because a
GeoTIFF has one data type and one nodata value for all its bands: the flag stays uint8 with
nodata 255 and the probability float32 with nodata -9999, as in every other product, instead
of both becoming float32 with one shared nodata.

- the flag file: band 1 "Cloud Flag", uint8, 0 clear, 1 cloud, 255 no value;
- the probability file: band 1 "Cloud Probability", float32 in [0, 1], -9999 no value;
- the buffer file: band 1 "Cloud Buffer Distance", float32 pixels of the instrument grid
  (0 cloud, -1 beyond reach), -9999 no value;
- the shadow file: band 1 "Cloud Shadow Flag", uint8, 0 not shadow, 1 shadow, 255 no value.

Both: EPSG:4326, the GLT's geotransform, DEFLATE (with the floating-point predictor for the
probability), 512 x 512 tiles, overviews by nearest neighbour (so every overview value is a
real flag or model value), written by GDAL's COG driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l2b_mask.errors import OutputError
from l2b_mask.inputs.glt import Glt
from l2b_mask.nodata import FLAG_NO_VALUE, FLOAT_NO_VALUE
from l2b_mask.products.envi import check_pair
from l2b_mask.products.geotiff import write_geotiff

PROBABILITY_NODATA = FLOAT_NO_VALUE
FLAG_DESCRIPTION = "Cloud Flag"
PROBABILITY_DESCRIPTION = "Cloud Probability"
BUFFER_DESCRIPTION = "Cloud Buffer Distance"
SHADOW_DESCRIPTION = "Cloud Shadow Flag"
_COMMON = ["BLOCKSIZE=512", "OVERVIEWS=AUTO", "RESAMPLING=NEAREST", "BIGTIFF=IF_SAFER"]
_FLAG_OPTIONS = ["COMPRESS=DEFLATE", "LEVEL=6", *_COMMON]
_PROBABILITY_OPTIONS = ["COMPRESS=DEFLATE", "LEVEL=6", "PREDICTOR=YES", *_COMMON]


def orthorectify(flag: np.ndarray, probability: np.ndarray,
                 glt: Glt) -> tuple[np.ndarray, np.ndarray]:
    """(flag uint8 with 255, probability float32 with -9999) on the GLT grid."""
    prob, mask = check_pair(probability, flag)
    prob_out = np.where(np.isnan(prob), np.float32(PROBABILITY_NODATA), prob).astype(np.float32)
    return glt.resample(mask, FLAG_NO_VALUE), glt.resample(prob_out, np.float32(PROBABILITY_NODATA))


_COMMON_METADATA = {"AREA_OR_POINT": "Area", "SOURCE_GRID": "EMIT GLT (nearest: each cell shows the "
                                                            "swath pixel its GLT entry names)"}


@dataclass(frozen=True)
class OrthoLayer:
    """How one single-layer COG is written: its band description, nodata, options, tags."""

    description: str
    nodata: float | int
    options: list[str]
    metadata: dict[str, str]


BUFFER_LAYER = OrthoLayer(BUFFER_DESCRIPTION, PROBABILITY_NODATA, _PROBABILITY_OPTIONS,
                          {"units": "pixels", "comment": "0 cloud, -1 beyond the reach of a "
                           "cloud's shadow, else the distance to the nearest cloud pixel in "
                           "pixels of the instrument grid"})
SHADOW_LAYER = OrthoLayer(SHADOW_DESCRIPTION, FLAG_NO_VALUE, _FLAG_OPTIONS,
                          {"flag_values": "0 1", "flag_meanings": "not_shadow shadow"})


def write_ortho_layer(path: Path | str, swath: np.ndarray, layer: OrthoLayer, glt: Glt) -> None:
    """One swath layer (`BUFFER_LAYER` or `SHADOW_LAYER`, its nodata already set) as a COG on
    the GLT grid; a failure leaves no file behind (`OutputError`)."""
    grid = glt.resample(swath, layer.nodata)
    try:
        write_geotiff(path, grid, layer.nodata, layer.description, cog=True,
                      options=layer.options, geotransform=glt.geotransform,
                      metadata={**_COMMON_METADATA, **layer.metadata})
    except OutputError as exc:
        detail = exc.problem.removeprefix("cannot write GeoTIFF ")
        raise OutputError(Path(path), f"cannot write orthorectified GeoTIFF {detail}") from None


def check_ortho_layer(path: Path, swath: np.ndarray, layer: OrthoLayer, glt: Glt) -> None:
    """The GeoTIFF holds exactly the swath layer resampled through the GLT (OutputError)."""
    _compare(path, glt.resample(swath, layer.nodata))


def _compare(path: Path, want: np.ndarray) -> None:
    from osgeo import gdal

    try:
        ds = gdal.Open(str(path))
        got = ds.GetRasterBand(1).ReadAsArray()
        ds = None
    except Exception as exc:  # noqa: BLE001 - unreadable is an output failure
        raise OutputError(path, f"product does not read back ({exc})") from None
    if not np.array_equal(got, want):
        raise OutputError(path, "orthorectified values differ from the swath product's")


def write_ortho_geotiff(flag_path: Path | str, probability_path: Path | str, flag: np.ndarray,
                        probability: np.ndarray, glt: Glt) -> None:
    """Write the orthorectified flag and probability as two COGs.

    `flag` (uint8, 255 no value) and `probability` (float32, NaN no value) are the swath
    arrays the other products hold; `glt` is `read_glt(...)` of the acquisition. A failure
    leaves neither file behind (`OutputError`).
    """
    paths = (Path(flag_path), Path(probability_path))
    ortho_flag, ortho_prob = orthorectify(flag, probability, glt)
    common = _COMMON_METADATA
    try:
        write_geotiff(paths[0], ortho_flag, FLAG_NO_VALUE, FLAG_DESCRIPTION, cog=True,
                      options=_FLAG_OPTIONS, geotransform=glt.geotransform,
                      metadata={**common, "flag_values": "0 1", "flag_meanings": "clear cloud"})
        write_geotiff(paths[1], ortho_prob, PROBABILITY_NODATA, PROBABILITY_DESCRIPTION, cog=True,
                      options=_PROBABILITY_OPTIONS, geotransform=glt.geotransform,
                      metadata={**common, "units": "1", "valid_range": "0 1"})
    except OutputError as exc:
        for p in paths:
            p.unlink(missing_ok=True)
        detail = exc.problem.removeprefix("cannot write GeoTIFF ")
        raise OutputError(paths[0], f"cannot write orthorectified GeoTIFF {detail}") from None


def check_ortho(flag_path: Path, probability_path: Path, flag: np.ndarray,
                probability: np.ndarray, glt: Glt) -> None:
    """The GeoTIFFs hold exactly the swath product resampled through the GLT (OutputError)."""
    expected = orthorectify(flag, probability, glt)
    for path, want in ((flag_path, expected[0]), (probability_path, expected[1])):
        _compare(path, want)
