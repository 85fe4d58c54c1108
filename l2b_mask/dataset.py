"""Products as xarray Datasets: `open_product` for the files, `swath_dataset` for arrays.

Every layer comes out as float32 with NaN where the pixel has no value (the files' 255 and
-9999 markers), as `xarray.open_dataset` would mask them; the two flags keep their CF
`flag_values` / `flag_meanings`, so `ds.cloud_mask == 1` reads as before. Longitude and
latitude are coordinates: 2-D on the swath (`downtrack`, `crosstrack`), or 1-D on the GLT grid
(`lat`, `lon`, cell centres) with `ortho=True`, where each grid cell takes the swath pixel its
GLT entry names (as NASA's emit_tools applies a GLT: nothing interpolated, NaN where no pixel).

The netCDF product carries its location and GLT; an ENVI product is given them
(`location=`, `glt=`: the L1B LOC and GLT files, ENVI or the radiance granule).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from l2b_mask.errors import InputProductError
from l2b_mask.inputs.formats import is_netcdf
from l2b_mask.inputs.glt import Glt
from l2b_mask.inputs.location import LOC_FILL, LOCATION_BANDS, LocationArrays
from l2b_mask.products.envi import read_envi_layers
from l2b_mask.products.layers import LAYERS, Layers
from l2b_mask.products.netcdf import DIMS

if TYPE_CHECKING:
    import xarray as xr

ORTHO_DIMS = ("lat", "lon")
# Not carried over: the fill is NaN in the Dataset, the coordinates are real, and a valid
# range would make xarray's decoders mask the flags' floats.
_DROPPED_ATTRS = frozenset({"_FillValue", "coordinates", "valid_range"})
# ENVI header keys that describe the binary's layout, not the product: not attributes.
_ENVI_LAYOUT = frozenset({"samples", "lines", "bands", "header offset", "file type", "data type",
                          "interleave", "byte order", "data ignore value", "band names"})


def as_nan(values: np.ndarray, no_value: float) -> np.ndarray:
    """float32 copy with NaN where the array holds its no-value marker (or is not finite)."""
    out = np.array(values, np.float32)
    out[(out == np.float32(no_value)) | ~np.isfinite(out)] = np.nan
    return out


def _coordinate(values: np.ndarray) -> np.ndarray:
    out = np.array(values, np.float64)
    out[(out == LOC_FILL) | ~np.isfinite(out)] = np.nan
    return out


def swath_dataset(layers: Mapping[str, np.ndarray], *, location: LocationArrays | None = None,
                  attrs: Mapping[str, Any] | None = None,
                  layer_attrs: Mapping[str, Mapping[str, Any]] | None = None) -> xr.Dataset:
    """A Dataset on the swath from (lines, samples) layers keyed by the layer table's names
    (`flag`, `probability`, `buffer_distance`, `shadow`; those absent are left out), in the
    table's in-memory conventions (its fill, or NaN, without value), each under its netCDF
    variable's name with the table's attributes, or `layer_attrs[variable]` (a file's) when
    given; lon, lat (and elev) from `location`."""
    import xarray as xr

    data_vars = {}
    for row in LAYERS:
        if row.name in layers:
            given = (layer_attrs or {}).get(row.variable) or row.attributes()
            data_vars[row.variable] = xr.Variable(
                DIMS, as_nan(layers[row.name], row.fill),
                {k: v for k, v in given.items() if k not in _DROPPED_ATTRS})
    coords = {}
    if location is not None:
        for name, _band, long_name, units, standard_name in LOCATION_BANDS:
            var_attrs = {"long_name": long_name, "units": units}
            if standard_name:
                var_attrs["standard_name"] = standard_name
            target = coords if name in ("lon", "lat") else data_vars
            target[name] = xr.Variable(DIMS, _coordinate(getattr(location, name)), var_attrs)
    return xr.Dataset(data_vars, coords=coords, attrs=dict(attrs or {}))


def orthorectified(swath: xr.Dataset, glt: Glt) -> xr.Dataset:
    """Every swath variable on the GLT grid, 1-D lat/lon of the cell centres, NaN where the
    GLT names no pixel; the grid's geotransform and CRS in the attributes."""
    import xarray as xr

    rows, cols = glt.shape
    gt = glt.geotransform
    lon = gt[0] + (np.arange(cols) + 0.5) * gt[1]
    lat = gt[3] + (np.arange(rows) + 0.5) * gt[5]
    data_vars = {}
    for name, var in swath.variables.items():
        if var.dims != DIMS or name in ("lon", "lat"):
            continue
        data_vars[name] = xr.Variable(ORTHO_DIMS, glt.resample(np.asarray(var.values), np.nan),
                                      var.attrs)
    coords = {"lat": ("lat", lat, {"standard_name": "latitude", "units": "degrees_north"}),
              "lon": ("lon", lon, {"standard_name": "longitude", "units": "degrees_east"})}
    attrs = {**swath.attrs, "geotransform": np.asarray(gt, np.float64),
             "spatial_ref": glt.crs_wkt}
    if glt.epsg is not None:
        attrs["crs"] = f"EPSG:{glt.epsg}"
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _netcdf_parts(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]], bool, bool]:
    """(global attributes, each layer's attributes, has a location group, has a GLT)."""
    from netCDF4 import Dataset

    from l2b_mask.inputs.daac import LOCATION_GROUP

    try:
        with Dataset(path, "r") as ds:
            attrs = {k: ds.getncattr(k) for k in ds.ncattrs()}
            per_layer = {row.variable: {k: ds[row.variable].getncattr(k)
                                        for k in ds[row.variable].ncattrs()}
                         for row in LAYERS if row.variable in ds.variables}
            group = ds.groups.get(LOCATION_GROUP)
            has_location = group is not None and "lon" in group.variables
            has_glt = group is not None and "glt_x" in group.variables
    except OSError as exc:
        raise InputProductError(path, f"not a readable netCDF product ({exc})") from None
    return attrs, per_layer, has_location, has_glt


def _location(path: Path | str, shape: tuple[int, int]) -> LocationArrays:
    from l2b_mask.inputs.daac import read_granule_location
    from l2b_mask.inputs.location import read_location

    return (read_granule_location if is_netcdf(path) else read_location)(path, shape)


def _glt(path: Path | str, shape: tuple[int, int]) -> Glt:
    from l2b_mask.inputs.daac import read_granule_glt
    from l2b_mask.inputs.glt import read_glt

    return (read_granule_glt if is_netcdf(path) else read_glt)(path, shape)


def _envi_attrs(path: Path) -> dict[str, Any]:
    from l2b_mask.inputs.envi import read_header

    meta = read_header(path).meta
    return {k.replace(" ", "_"): v if isinstance(v, str | int | float) else str(v)
            for k, v in meta.items() if k.lower() not in _ENVI_LAYOUT}


def open_product(path: Path | str, ortho: bool = False, *, location: Path | str | None = None,
                 glt: Path | str | None = None) -> xr.Dataset:
    """One of our products as an xarray Dataset: the netCDF (`.nc`) or the ENVI product
    (`.hdr` or `.img`). `location` / `glt` name the L1B LOC / GLT for an ENVI product (or
    replace the netCDF's own). `ortho=True` puts every layer on the GLT grid (a GLT needed).
    A file that is not one of our products raises `InputProductError` naming it."""
    p = Path(path)
    if is_netcdf(p):
        from l2b_mask.products.netcdf import read_netcdf_layers

        attrs, per_layer, has_location, has_glt = _netcdf_parts(p)
        layers = _wrap(p, read_netcdf_layers)
        location = location or (p if has_location else None)
        glt = glt or (p if has_glt else None)
    else:
        layers = _wrap(p, read_envi_layers)
        attrs, per_layer = _envi_attrs(p), {}
    shape = layers.shape
    loc = _location(location, shape) if location is not None else None
    swath = swath_dataset(layers, location=loc, attrs=attrs, layer_attrs=per_layer)
    if not ortho:
        return swath
    if glt is None:
        raise InputProductError(p, "ortho=True needs a GLT: the product has none and no glt= "
                                   "was given")
    return orthorectified(swath, _glt(glt, shape))


def _wrap(path: Path, reader: Any) -> Layers:
    """The reader's layers; its OutputError (it was written to check our own writes) becomes
    an input error here: the file is what the caller gave."""
    from l2b_mask.errors import OutputError

    try:
        return reader(path)
    except OutputError as exc:
        raise InputProductError(exc.path or path, exc.problem) from None
