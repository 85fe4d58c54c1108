"""GeoTIFFs in raw instrument geometry, as the published deployment script writes them.

For scientists' direct runs: a uint8 cloud flag (255 = no value) and, on request, a float32
probability (-9999 = no value), LZW-compressed and tiled so large scenes open quickly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from l2b_mask.errors import OutputError
from l2b_mask.nodata import FLAG_NO_VALUE, FLOAT_NO_VALUE

FLAG_NODATA = FLAG_NO_VALUE
PROBABILITY_NODATA = FLOAT_NO_VALUE
_OPTIONS = ["COMPRESS=LZW", "TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256"]


def write_geotiff(path: Path | str, array: np.ndarray, nodata: float, description: str, *,
                  options: list[str] | None = None, geotransform: tuple[float, ...] | None = None,
                  metadata: dict[str, str] | None = None, cog: bool = False) -> None:
    """One band, uint8 or float32, with its nodata and description: the one GeoTIFF writer.

    Raw instrument geometry without `geotransform`; with it, EPSG:4326 on that grid. `cog`
    writes through GDAL's COG driver (tiles and overviews as `options` say). A failure leaves no
    file behind (`OutputError`).
    """
    from osgeo import gdal, osr

    gdal.UseExceptions()  # GDAL errors become RuntimeError
    types = {np.dtype(np.uint8): gdal.GDT_Byte, np.dtype(np.float32): gdal.GDT_Float32}
    if array.dtype not in types or array.ndim != 2:
        raise ValueError(f"expected a 2-D uint8 or float32 array, not {array.dtype} {array.shape}")
    p = Path(path)
    rows, cols = array.shape
    ds: Any = None
    band: Any = None
    out: Any = None
    try:
        if cog:
            ds = gdal.GetDriverByName("MEM").Create("", cols, rows, 1, types[array.dtype])
        else:
            ds = gdal.GetDriverByName("GTiff").Create(str(p), cols, rows, 1, types[array.dtype],
                                                      options or _OPTIONS)
        if geotransform is not None:
            srs = osr.SpatialReference()
            srs.ImportFromEPSG(4326)
            ds.SetGeoTransform(list(geotransform))
            ds.SetSpatialRef(srs)
        band = ds.GetRasterBand(1)
        band.SetNoDataValue(nodata)
        band.SetDescription(description)
        band.WriteArray(array)
        if metadata:
            ds.SetMetadata(metadata)
        if cog:
            out = gdal.GetDriverByName("COG").CreateCopy(str(p), ds, strict=1, options=options or [])
            if out is None:
                raise RuntimeError(gdal.GetLastErrorMsg() or "COG driver returned nothing")
            out.FlushCache()
            out = None
        ds.FlushCache()
        ds = None
        return
    except (RuntimeError, OSError) as exc:
        failure = str(exc)  # the exception (and the GDAL frames holding the dataset) ends here
    with _quiet_gdal():  # closing a dataset whose write failed makes GDAL report again
        ds = band = out = None
    p.unlink(missing_ok=True)
    raise OutputError(p, f"cannot write GeoTIFF ({failure})")


@contextmanager
def _quiet_gdal() -> Iterator[None]:
    """GDAL errors neither raised nor printed: a dataset released (flushed) after a failed
    write would otherwise print its error to stderr as an 'Exception ignored'."""
    from osgeo import gdal

    gdal.DontUseExceptions()
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        yield
    finally:
        gdal.PopErrorHandler()
        gdal.UseExceptions()


def write_flag_and_probability(path: Path | str, flag: np.ndarray,
                               probability: np.ndarray | None) -> list[Path]:
    """`path` gets the flag; `<stem>_prob.tif` beside it the probability, when given."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(p.parent, f"cannot create output folder ({exc.strerror})") from None
    written = [p]
    write_geotiff(p, flag, FLAG_NODATA, "Cloud Flag")
    if probability is not None:
        prob_path = p.with_name(p.stem + "_prob" + (p.suffix or ".tif"))
        write_geotiff(prob_path, np.where(np.isnan(probability), PROBABILITY_NODATA,
                                              probability).astype(np.float32),
                          PROBABILITY_NODATA, "Cloud Probability")
        written.append(prob_path)
    return written
