"""GeoTIFFs in raw instrument geometry, as the published deployment script writes them.

For scientists' direct runs: a uint8 cloud flag (255 = no value) and, on request, a float32
probability (-9999 = no value), LZW-compressed and tiled so large scenes open quickly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from l2b_mask.errors import OutputError
from l2b_mask.nodata import FLAG_NO_VALUE, FLOAT_NO_VALUE

FLAG_NODATA = FLAG_NO_VALUE
PROBABILITY_NODATA = FLOAT_NO_VALUE
_OPTIONS = ["COMPRESS=LZW", "TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256"]


def write_raw_geotiff(path: Path | str, array: np.ndarray, nodata: float,
                      description: str) -> None:
    from osgeo import gdal

    gdal.UseExceptions()
    types = {np.dtype(np.uint8): gdal.GDT_Byte, np.dtype(np.float32): gdal.GDT_Float32}
    if array.dtype not in types or array.ndim != 2:
        raise ValueError(f"expected a 2-D uint8 or float32 array, not {array.dtype} {array.shape}")
    p = Path(path)
    try:
        ds = gdal.GetDriverByName("GTiff").Create(str(p), array.shape[1], array.shape[0], 1,
                                                  types[array.dtype], _OPTIONS)
        band = ds.GetRasterBand(1)
        band.SetNoDataValue(nodata)
        band.SetDescription(description)
        band.WriteArray(array)
        ds.FlushCache()
        ds = None
    except RuntimeError as exc:
        p.unlink(missing_ok=True)
        raise OutputError(p, f"cannot write GeoTIFF ({exc})") from None


def write_flag_and_probability(path: Path | str, flag: np.ndarray,
                               probability: np.ndarray | None) -> list[Path]:
    """`path` gets the flag; `<stem>_prob.tif` beside it the probability, when given."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(p.parent, f"cannot create output folder ({exc.strerror})") from None
    written = [p]
    write_raw_geotiff(p, flag, FLAG_NODATA, "Cloud Flag")
    if probability is not None:
        prob_path = p.with_name(p.stem + "_prob" + (p.suffix or ".tif"))
        write_raw_geotiff(prob_path, np.where(np.isnan(probability), PROBABILITY_NODATA,
                                              probability).astype(np.float32),
                          PROBABILITY_NODATA, "Cloud Probability")
        written.append(prob_path)
    return written
