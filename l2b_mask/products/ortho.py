"""The optional orthorectified product: cloud flag and probability on the GLT grid, as COGs.

Each grid cell takes the swath pixel its GLT entry names (nearest neighbour by construction:
the GLT is the resampling, nothing is interpolated). Two cloud-optimised GeoTIFFs, because a
GeoTIFF has one data type and one nodata value for all its bands: the flag stays uint8 with
nodata 255 and the probability float32 with nodata -9999, as in every other product, instead
of both becoming float32 with one shared nodata.

- the flag file: band 1 "Cloud Flag", uint8, 0 clear, 1 cloud, 255 no value;
- the probability file: band 1 "Cloud Probability", float32 in [0, 1], -9999 no value.

Both: EPSG:4326, the GLT's geotransform, DEFLATE (with the floating-point predictor for the
probability), 512 x 512 tiles, overviews by nearest neighbour (so every overview value is a
real flag or model value), written by GDAL's COG driver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from l2b_mask.errors import OutputError
from l2b_mask.inputs.glt import Glt
from l2b_mask.nodata import FLAG_NO_VALUE, FLOAT_NO_VALUE
from l2b_mask.products.envi import check_pair

PROBABILITY_NODATA = FLOAT_NO_VALUE
FLAG_DESCRIPTION = "Cloud Flag"
PROBABILITY_DESCRIPTION = "Cloud Probability"
_COMMON = ["BLOCKSIZE=512", "OVERVIEWS=AUTO", "RESAMPLING=NEAREST", "BIGTIFF=IF_SAFER"]
_FLAG_OPTIONS = ["COMPRESS=DEFLATE", "LEVEL=6", *_COMMON]
_PROBABILITY_OPTIONS = ["COMPRESS=DEFLATE", "LEVEL=6", "PREDICTOR=YES", *_COMMON]


def orthorectify(flag: np.ndarray, probability: np.ndarray,
                 glt: Glt) -> tuple[np.ndarray, np.ndarray]:
    """(flag uint8 with 255, probability float32 with -9999) on the GLT grid."""
    prob, mask = check_pair(probability, flag)
    prob_out = np.where(np.isnan(prob), np.float32(PROBABILITY_NODATA), prob).astype(np.float32)
    return glt.resample(mask, FLAG_NO_VALUE), glt.resample(prob_out, np.float32(PROBABILITY_NODATA))


def _write_cog(path: Path, array: np.ndarray, nodata: float, description: str, glt: Glt,
               options: list[str], metadata: dict[str, str]) -> None:
    from osgeo import gdal, osr

    types = {np.dtype(np.uint8): gdal.GDT_Byte, np.dtype(np.float32): gdal.GDT_Float32}
    rows, cols = array.shape
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    mem: Any = gdal.GetDriverByName("MEM").Create("", cols, rows, 1, types[array.dtype])
    mem.SetGeoTransform(list(glt.geotransform))
    mem.SetSpatialRef(srs)
    band = mem.GetRasterBand(1)
    band.SetNoDataValue(nodata)
    band.SetDescription(description)
    band.WriteArray(array)
    mem.SetMetadata(metadata)
    out = gdal.GetDriverByName("COG").CreateCopy(str(path), mem, strict=1, options=options)
    if out is None:
        raise RuntimeError(gdal.GetLastErrorMsg() or "COG driver returned nothing")
    out.FlushCache()
    out = None
    mem = None


def write_ortho_geotiff(flag_path: Path | str, probability_path: Path | str, flag: np.ndarray,
                        probability: np.ndarray, glt: Glt) -> None:
    """Write the orthorectified flag and probability as two COGs.

    `flag` (uint8, 255 no value) and `probability` (float32, NaN no value) are the swath
    arrays the other products hold; `glt` is `read_glt(...)` of the acquisition. A failure
    leaves neither file behind (`OutputError`).
    """
    from osgeo import gdal

    paths = (Path(flag_path), Path(probability_path))
    ortho_flag, ortho_prob = orthorectify(flag, probability, glt)
    common = {"AREA_OR_POINT": "Area", "SOURCE_GRID": "EMIT GLT (nearest: each cell shows the "
                                                      "swath pixel its GLT entry names)"}
    gdal.UseExceptions()  # as geotiff.py: GDAL errors become RuntimeError
    try:
        _write_cog(paths[0], ortho_flag, FLAG_NO_VALUE, FLAG_DESCRIPTION, glt, _FLAG_OPTIONS,
                   {**common, "flag_values": "0 1", "flag_meanings": "clear cloud"})
        _write_cog(paths[1], ortho_prob, PROBABILITY_NODATA, PROBABILITY_DESCRIPTION,
                   glt, _PROBABILITY_OPTIONS, {**common, "units": "1", "valid_range": "0 1"})
    except (RuntimeError, OSError) as exc:
        for p in paths:
            p.unlink(missing_ok=True)
        raise OutputError(paths.flag, f"cannot write orthorectified GeoTIFF ({exc})") from None


def check_ortho(flag_path: Path, probability_path: Path, flag: np.ndarray,
                probability: np.ndarray, glt: Glt) -> None:
    """The GeoTIFFs hold exactly the swath product resampled through the GLT (OutputError)."""
    from osgeo import gdal

    expected = orthorectify(flag, probability, glt)
    for path, want in ((flag_path, expected[0]), (probability_path, expected[1])):
        try:
            ds = gdal.Open(str(path))
            got = ds.GetRasterBand(1).ReadAsArray()
            ds = None
        except Exception as exc:  # noqa: BLE001 - unreadable is an output failure
            raise OutputError(path, f"product does not read back ({exc})") from None
        if not np.array_equal(got, want):
            raise OutputError(path, "orthorectified values differ from the swath product's")
