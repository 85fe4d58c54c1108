"""The netCDF-4 delivery product, laid out the way EMIT's netCDF products are.

Root: dimensions `downtrack` (lines) x `crosstrack` (samples) and one variable per layer of the
layer table (`layers.LAYERS`: `cloud_mask` (uint8 flag), `cloud_probability` (float32),
`cloud_buffer_distance` (float32, pixels) and `cloud_shadow` (uint8 flag)), with the table's
attributes. Group `sensor_band_parameters` with `mask_bands`, the names of the layers (the
ENVI product's band names): NASA's EMIT tools open every EMIT netCDF with that group.
Optional group `location` with `lon`, `lat`, `elev` on the
root dimensions, under EMIT's names so GDAL's EMIT support and EMIT users' code find them.
Optional GLT: root dimensions `ortho_y` x `ortho_x` and `location/glt_x`, `location/glt_y`
(int32, 1-based, `_FillValue` 0), with the grid's `geotransform` and `spatial_ref` (WKT) as
global attributes. Whenever location or GLT is given, the bounding box goes in EMIT's
(`westernmost_longitude`, ...) and ACDD's (`geospatial_lon_min`, ...) attributes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from l2b_mask.errors import OutputError
from l2b_mask.inputs.glt import GLT_FILL, Bounds, Glt
from l2b_mask.inputs.location import LOC_FILL, LOCATION_BANDS, LocationArrays, location_bounds
from l2b_mask.nodata import FLOAT_NO_VALUE
from l2b_mask.products.layers import LAYERS, Layer, Layers, prepare

DIMS = ("downtrack", "crosstrack")
ORTHO_DIMS = ("ortho_y", "ortho_x")
BAND_GROUP = "sensor_band_parameters"
BAND_VARIABLE = "mask_bands"
BAND_DIM = "bands"
LOCATION_GROUP = "location"
GLT_VARIABLES = ("glt_x", "glt_y")
COORDINATES = f"/{LOCATION_GROUP}/lon /{LOCATION_GROUP}/lat"
FLOAT_FILL = FLOAT_NO_VALUE
# CF 2.3 recommends names of letters, digits and underscores, starting with a letter; names
# beginning with "_" are reserved for the library (_FillValue) and are set only here.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_LINES_PER_CHUNK = 256
_TIME_ATTRS = frozenset({"date_created", "time_coverage_start", "time_coverage_end"})


# ---------------------------------------------------------------------------------------------
# Attributes


def iso_utc(value: datetime | str) -> str:
    """`YYYY-MM-DDTHH:MM:SSZ`; strings in EMIT's header form (`...+0000`) are normalised."""
    if isinstance(value, str):
        text = value.strip()
        for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"):
            try:
                value = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        else:
            try:
                value = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return text  # not a time we understand: keep the caller's words
    if value.tzinfo is None:
        raise ValueError(f"time {value!r} has no time zone; pass an aware (UTC) datetime")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def geospatial_attributes(*, glt: Glt | None = None,
                          location: LocationArrays | None = None) -> dict[str, Any]:
    """Georeferencing global attributes, EMIT's and ACDD's, from the GLT and/or the location.

    The box is the GLT grid's outer edges when there is a GLT (as EMIT writes it), otherwise
    that of the located pixel centres. With a GLT also `geotransform` (GDAL order, of the GLT
    grid, not of the swath), `spatial_ref` (WKT) and `spatialResolution` (degrees).
    """
    attrs: dict[str, Any] = {}
    bounds = glt.grid_bounds() if glt is not None else (
        location_bounds(location) if location is not None else None)
    if bounds is not None:
        attrs.update({
            "westernmost_longitude": bounds.west, "easternmost_longitude": bounds.east,
            "southernmost_latitude": bounds.south, "northernmost_latitude": bounds.north,
            "geospatial_lon_min": bounds.west, "geospatial_lon_max": bounds.east,
            "geospatial_lat_min": bounds.south, "geospatial_lat_max": bounds.north,
            "geospatial_lon_units": "degrees_east", "geospatial_lat_units": "degrees_north",
            "geospatial_bounds": bounds_wkt(bounds), "geospatial_bounds_crs": "EPSG:4326",
        })
    if glt is not None:
        attrs["spatialResolution"] = float(glt.resolution[0])
        attrs["spatial_ref"] = glt.crs_wkt
        attrs["geotransform"] = np.asarray(glt.geotransform, np.float64)
    return attrs


def bounds_wkt(bounds: Bounds) -> str:
    """The box as an ACDD `geospatial_bounds` WKT polygon (lon lat, counter-clockwise)."""
    w, s, e, n = bounds.west, bounds.south, bounds.east, bounds.north
    points = [(w, s), (e, s), (e, n), (w, n), (w, s)]
    return "POLYGON((" + ", ".join(f"{x!r} {y!r}" for x, y in points) + "))"


def netcdf_value(value: Any) -> str | int | float | np.ndarray | None:
    """An attribute value netCDF can store: str, number or 1-D number array; None to skip.

    bool -> 0/1, paths -> str, datetimes -> ISO UTC; mappings, nested sequences and lists of
    non-numbers -> JSON text (unambiguous, and readable by every netCDF tool, unlike NC_STRING
    arrays).
    """
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, np.integer | np.floating):
        return value  # keeps its width (a float32 stays NC_FLOAT)
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, float):
        return value
    if isinstance(value, Mapping):
        return json.dumps({str(k): v for k, v in value.items()}, default=_json_default)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return netcdf_value(value.item())
    if isinstance(value, np.ndarray) and value.ndim > 1:
        return json.dumps(value.tolist(), default=_json_default)  # keep the structure
    if isinstance(value, np.ndarray | Sequence):
        items = list(value)
        if not items:
            return ""
        if all(isinstance(v, int | float | np.integer | np.floating) and
               not isinstance(v, bool | np.bool_) for v in items):
            array = np.asarray(items)
            return array if array.dtype.kind in "iuf" else np.asarray(items, np.float64)
        if all(isinstance(v, bool | np.bool_) for v in items):
            return np.asarray(items, np.int8)
        return json.dumps(items, default=_json_default)
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime):
        return iso_utc(value)
    return str(value)


def _checked_attrs(attrs: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in attrs.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"{where}: attribute name {name!r} is not CF-style "
                             "(letters, digits, underscores; starting with a letter)")
        if name in _TIME_ATTRS and isinstance(value, str | datetime):
            value = iso_utc(value)  # ACDD wants ISO 8601; EMIT headers say "...+0000"
        converted = netcdf_value(value)
        if converted is not None:
            out[name] = converted
    return out


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class _Storage:
    """How every 2-D variable is stored: compressed, in chunks of whole lines."""

    complevel: int
    chunks: tuple[int, int]

    def kwargs(self) -> dict[str, Any]:
        return {"compression": "zlib", "complevel": self.complevel, "shuffle": True,
                "chunksizes": self.chunks}


def _add_variable(group: Any, name: str, dtype: str, fill: Any, data: np.ndarray,
                  attrs: Mapping[str, Any], storage: _Storage) -> None:
    var = group.createVariable(name, dtype, DIMS, fill_value=fill, **storage.kwargs())
    var.setncatts(dict(attrs))
    var.set_auto_maskandscale(False)  # values are written exactly as prepared
    var[:] = data


def _add_band_names(ds: Any, table: tuple[Layer, ...]) -> None:
    """`sensor_band_parameters/mask_bands`: the layers' names, as the ENVI product's bands."""
    ds.createDimension(BAND_DIM, len(table))  # on the root, as EMIT's products have it
    group = ds.createGroup(BAND_GROUP)
    var = group.createVariable(BAND_VARIABLE, str, (BAND_DIM,))
    var.setncatts({"long_name": "Names of the product's layers (the ENVI product's band names)",
                   "coverage_content_type": "referenceInformation"})
    var[:] = np.array([row.band_name for row in table], dtype=object)


def _location_group(ds: Any) -> Any:
    return ds.groups.get(LOCATION_GROUP) or ds.createGroup(LOCATION_GROUP)


def _add_location(ds: Any, location: LocationArrays, extra: Mapping[str, Mapping[str, Any]],
                  storage: _Storage) -> None:
    group = _location_group(ds)
    for name, _band, long_name, units, standard_name in LOCATION_BANDS:
        data = np.asarray(getattr(location, name), np.float64)
        data = np.where(np.isfinite(data), data, LOC_FILL)
        attrs: dict[str, Any] = {"long_name": long_name, "units": units}
        if standard_name:
            attrs["standard_name"] = standard_name
        attrs.update(extra.get(f"{LOCATION_GROUP}/{name}", {}))
        _add_variable(group, name, "f8", np.float64(LOC_FILL), data, attrs, storage)


# (variable, Glt field, long_name)
_GLT_BANDS = (("glt_x", "sample", "GLT Sample Lookup"), ("glt_y", "line", "GLT Line Lookup"))


def _add_glt(ds: Any, glt: Glt, extra: Mapping[str, Mapping[str, Any]], complevel: int) -> None:
    """`location/glt_x`, `glt_y` on the root `ortho_y` x `ortho_x`, exactly as read."""
    rows, cols = glt.shape
    ds.createDimension(ORTHO_DIMS[0], rows)
    ds.createDimension(ORTHO_DIMS[1], cols)
    group = _location_group(ds)
    chunks = (min(rows, _LINES_PER_CHUNK), cols)
    for name, field_name, long_name in _GLT_BANDS:
        var = group.createVariable(name, "i4", ORTHO_DIMS, fill_value=np.int32(GLT_FILL),
                                   compression="zlib", complevel=complevel, shuffle=True,
                                   chunksizes=chunks)
        attrs: dict[str, Any] = {"long_name": long_name, "units": "pixel location",
                                 "coverage_content_type": "referenceInformation"}
        attrs.update(extra.get(f"{LOCATION_GROUP}/{name}", {}))
        var.setncatts(attrs)
        var.set_auto_maskandscale(False)
        var[:] = np.asarray(getattr(glt, field_name), np.int32)


def write_netcdf_product(
    path: Path | str, probability: np.ndarray, flag: np.ndarray, *,
    global_attrs: Mapping[str, Any],
    variable_attrs: Mapping[str, Mapping[str, Any]] | None = None,
    location: LocationArrays | None = None,
    base_attrs: Mapping[str, Any] | None = None,
    complevel: int = 4,
    glt: Glt | None = None,
    table: tuple[Layer, ...] = LAYERS,
    **layers: np.ndarray | None,
) -> None:
    """Write the netCDF-4 product of a probability, a flag and the other layers of `table` by
    name (`buffer_distance=`, `shadow=`; a layer not given is fill throughout).

    Global attributes: `base_attrs` (the caller's conventions: EMIT's for the PGE), then the
    georeferencing ones of `geospatial_attributes(glt=, location=)`, then `global_attrs`
    merged over them; a None value drops the key. `variable_attrs` adds attributes per
    variable, keyed by a layer's variable or `location/<lon|lat|elev|glt_x|glt_y>`.
    `glt` adds the lookup table (checked against the swath: it must point inside it).
    A failed write leaves no file behind. zlib level 4 by default: on a full scene of model
    probabilities level 9 (EMIT's choice) took 20x longer (5 s) for a file under 2% smaller.
    """
    checked = prepare({"probability": probability, "flag": flag, **layers}, table)
    write_netcdf_layers(path, checked, NetcdfExtras(
        global_attrs, variable_attrs or {}, location, base_attrs or {}, complevel, glt))


@dataclass(frozen=True)
class NetcdfExtras:
    """What the netCDF holds besides the layers: attributes, geolocation, GLT, compression."""

    global_attrs: Mapping[str, Any]
    variable_attrs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    location: LocationArrays | None = None
    base_attrs: Mapping[str, Any] = field(default_factory=dict)
    complevel: int = 4
    glt: Glt | None = None


def write_netcdf_layers(path: Path | str, layers: Layers, extras: NetcdfExtras) -> None:
    """Write checked layers (`layers.prepare`) and `extras` as the netCDF-4 product."""
    lines, samples = layers.shape
    if extras.location is not None and extras.location.shape != layers.shape:
        raise ValueError(f"location is {extras.location.shape}, the mask {layers.shape}")
    if not 1 <= extras.complevel <= 9:
        raise ValueError(f"complevel must be 1..9, not {extras.complevel}")
    if extras.glt is not None:
        extras.glt.check_swath(layers.shape)
    merged = dict(extras.base_attrs)
    merged.update(geospatial_attributes(glt=extras.glt, location=extras.location))
    merged.update(extras.global_attrs)
    attrs = _checked_attrs(merged, "global attributes")
    per_var = _variable_attributes(extras, layers.table)
    storage = _Storage(extras.complevel, (min(lines, _LINES_PER_CHUNK), samples))
    path = Path(path)

    from netCDF4 import Dataset

    try:
        with Dataset(path, "w", format="NETCDF4") as ds:
            ds.setncatts(attrs)
            ds.createDimension(DIMS[0], lines)
            ds.createDimension(DIMS[1], samples)
            for row, array in layers.rows():
                _add_variable(ds, row.variable, row.dtype.str[1:], row.dtype.type(row.fill),
                              row.stored(array),
                              {**row.attributes(layers.made(row.name)),
                               **per_var.get(row.variable, {})}, storage)
            _add_band_names(ds, layers.table)
            if extras.location is not None:
                _add_location(ds, extras.location, per_var, storage)
            if extras.glt is not None:
                _add_glt(ds, extras.glt, per_var, extras.complevel)
    except (OSError, RuntimeError) as exc:
        path.unlink(missing_ok=True)
        raise OutputError(path, f"cannot write netCDF product ({exc})") from None


def _variable_attributes(extras: NetcdfExtras, table: tuple[Layer, ...]
                         ) -> dict[str, dict[str, Any]]:
    """The caller's attributes per variable (checked), and the layers' `coordinates`."""
    known = {row.variable for row in table}
    known |= {f"{LOCATION_GROUP}/{name}" for name, *_ in LOCATION_BANDS}
    known |= {f"{LOCATION_GROUP}/{name}" for name in GLT_VARIABLES}
    per_var: dict[str, dict[str, Any]] = {}
    for var_name, var_attrs in extras.variable_attrs.items():
        if var_name not in known:
            raise ValueError(f"variable_attrs names unknown variable {var_name!r} "
                             f"(one of {sorted(known)})")
        per_var[var_name] = _checked_attrs(var_attrs, var_name)
    if extras.location is not None:
        # CF 1.8 group reference by absolute path: GDAL (3.5 on) then reports the lon/lat
        # arrays as the variables' GEOLOCATION and warps them without any other help.
        for row in table:
            per_var[row.variable] = {"coordinates": COORDINATES, **per_var.get(row.variable, {})}
    return per_var


def read_netcdf_product(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(flag uint8 with 255, probability float32 with NaN) where no value, for validation."""
    layers = read_netcdf_layers(path)
    return layers.flag, layers.probability


def read_netcdf_layers(path: Path | str, table: tuple[Layer, ...] = LAYERS) -> Layers:
    """Every layer as stored, in the in-memory conventions (the probability's fill as NaN)."""
    from netCDF4 import Dataset

    try:
        with Dataset(Path(path), "r") as ds:
            ds.set_auto_mask(False)
            arrays = {row.name: row.from_stored(ds[row.variable][:]) for row in table}
    except (OSError, RuntimeError, IndexError, KeyError) as exc:
        raise OutputError(path, f"netCDF product does not read back ({exc})") from None
    return Layers(arrays, table)
