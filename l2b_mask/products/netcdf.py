"""The netCDF-4 delivery product, laid out the way EMIT's netCDF products are.

Root: dimensions `downtrack` (lines) x `crosstrack` (samples), `cloud_mask` (uint8 flag),
`cloud_probability` (float32), `cloud_buffer_distance` (float32, pixels) and `cloud_shadow`
(uint8 flag). Group `sensor_band_parameters` with `mask_bands`, the names of the four layers
(the ENVI product's band names): NASA's EMIT tools open every EMIT netCDF with that group.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from l2b_mask.errors import OutputError
from l2b_mask.inputs.glt import GLT_FILL, Bounds, Glt
from l2b_mask.inputs.location import LOC_FILL, LOCATION_BANDS, LocationArrays, location_bounds
from l2b_mask.nodata import FLAG_NO_VALUE, FLOAT_NO_VALUE
from l2b_mask.products.envi import BAND_NAMES, Layers, check_beyond, check_pair

DIMS = ("downtrack", "crosstrack")
ORTHO_DIMS = ("ortho_y", "ortho_x")
MASK_VARIABLE = "cloud_mask"
PROBABILITY_VARIABLE = "cloud_probability"
BUFFER_VARIABLE = "cloud_buffer_distance"
SHADOW_VARIABLE = "cloud_shadow"
LAYER_VARIABLES = (MASK_VARIABLE, PROBABILITY_VARIABLE, BUFFER_VARIABLE, SHADOW_VARIABLE)
BAND_GROUP = "sensor_band_parameters"
BAND_VARIABLE = "mask_bands"
BAND_DIM = "bands"
BUFFER_COMMENT = (
    "Euclidean distance, in pixels of the instrument grid, from the pixel to the nearest "
    "cloud-flag pixel (pixels without a value count as not cloud): 0 on cloud; -1 where that "
    "distance is at least the reach tan(solar zenith) x H / pixel size, beyond which a cloud "
    "top at height H cannot shade the pixel whatever the sun azimuth (solar zenith of the "
    "pixel; H and the pixel size in the global attributes cloud_buffer_cloud_height_m and "
    "cloud_buffer_pixel_size_m); -9999 where the pixel has no value.")
SHADOW_COMMENT = (
    "Geometric cloud shadow: clear pixels under the shadow of a cloud-flag pixel whose top is "
    "swept over the heights of the global attribute cloud_shadow_cloud_heights_m, with the "
    "darkness test when cloud_shadow_darkness_test is 1 (ATBD 8.2).")
SHADOW_NOT_MADE = ("Not computed for this acquisition (fill throughout): the global attribute "
                   "cloud_shadow_not_made says why.")
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


def _mask_attrs() -> dict[str, Any]:
    # CF flags carry no units; ACDD's content type for a class map is thematicClassification.
    return {
        "long_name": "Cloud mask (SpecTf)",
        "standard_name": "cloud_binary_mask",  # CF: 1 where cloud, 0 elsewhere
        "flag_values": np.array([0, 1], np.uint8),
        "flag_meanings": "clear cloud",
        "coverage_content_type": "thematicClassification",
    }


def _probability_attrs() -> dict[str, Any]:
    return {
        "long_name": "Cloud probability (SpecTf)",
        "units": "1",
        "valid_range": np.array([0.0, 1.0], np.float32),
        "coverage_content_type": "modelResult",
    }


def _buffer_attrs() -> dict[str, Any]:
    return {
        # UDUNITS has no pixel: the distance is a count of pixel widths, dimensionless ("1"),
        # and says so in its long name and comment.
        "long_name": "Cloud buffer distance in pixels of the instrument grid",
        "units": "1",
        "coverage_content_type": "auxiliaryInformation",
        "comment": BUFFER_COMMENT,
    }


def _shadow_attrs(made: bool) -> dict[str, Any]:
    return {
        "long_name": "Cloud shadow flag",
        "flag_values": np.array([0, 1], np.uint8),
        "flag_meanings": "not_shadow shadow",
        "coverage_content_type": "thematicClassification",
        "comment": SHADOW_COMMENT if made else SHADOW_NOT_MADE,
    }


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


def _add_band_names(ds: Any) -> None:
    """`sensor_band_parameters/mask_bands`: the layers' names, as the ENVI product's bands."""
    ds.createDimension(BAND_DIM, len(BAND_NAMES))  # on the root, as EMIT's products have it
    group = ds.createGroup(BAND_GROUP)
    var = group.createVariable(BAND_VARIABLE, str, (BAND_DIM,))
    var.setncatts({"long_name": "Names of the product's layers (the ENVI product's band names)",
                   "coverage_content_type": "referenceInformation"})
    var[:] = np.array(BAND_NAMES, dtype=object)


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
    buffer_distance: np.ndarray | None = None,
    shadow: np.ndarray | None = None,
) -> None:
    """Write the netCDF-4 product.

    Global attributes: `base_attrs` (the caller's conventions: EMIT's for the PGE), then the
    georeferencing ones of `geospatial_attributes(glt=, location=)`, then `global_attrs`
    merged over them; a None value drops the key. `variable_attrs` adds attributes per
    variable, keyed by a layer's name or `location/<lon|lat|elev|glt_x|glt_y>`. A layer of
    `buffer_distance` (-9999 no value) or `shadow` (255) not given is fill throughout.
    `glt` adds the lookup table (checked against the swath: it must point inside it).
    A failed write leaves no file behind. zlib level 4 by default: on a full scene of model
    probabilities level 9 (EMIT's choice) took 20x longer (5 s) for a file under 2% smaller.
    """
    prob, mask = check_pair(probability, flag)
    buffer, shadow_out = check_beyond(mask, buffer_distance, shadow)
    lines, samples = prob.shape
    if location is not None and location.shape != prob.shape:
        raise ValueError(f"location is {location.shape}, the mask {prob.shape}")
    if not 1 <= complevel <= 9:
        raise ValueError(f"complevel must be 1..9, not {complevel}")
    if glt is not None:
        glt.check_swath(prob.shape)
    merged = dict(base_attrs or {})
    merged.update(geospatial_attributes(glt=glt, location=location))
    merged.update(global_attrs)
    attrs = _checked_attrs(merged, "global attributes")
    known = set(LAYER_VARIABLES)
    known |= {f"{LOCATION_GROUP}/{name}" for name, *_ in LOCATION_BANDS}
    known |= {f"{LOCATION_GROUP}/{name}" for name in GLT_VARIABLES}
    per_var: dict[str, dict[str, Any]] = {}
    for var_name, var_attrs in (variable_attrs or {}).items():
        if var_name not in known:
            raise ValueError(f"variable_attrs names unknown variable {var_name!r} "
                             f"(one of {sorted(known)})")
        per_var[var_name] = _checked_attrs(var_attrs, var_name)
    if location is not None:
        # CF 1.8 group reference by absolute path: GDAL (3.5 on) then reports the lon/lat
        # arrays as the variables' GEOLOCATION and warps them without any other help.
        for name in LAYER_VARIABLES:
            per_var[name] = {"coordinates": COORDINATES, **per_var.get(name, {})}

    probability_out = np.where(np.isnan(prob), np.float32(FLOAT_FILL), prob).astype(np.float32)
    storage = _Storage(complevel, (min(lines, _LINES_PER_CHUNK), samples))
    path = Path(path)

    from netCDF4 import Dataset

    try:
        with Dataset(path, "w", format="NETCDF4") as ds:
            ds.setncatts(attrs)
            ds.createDimension(DIMS[0], lines)
            ds.createDimension(DIMS[1], samples)
            _add_variable(ds, MASK_VARIABLE, "u1", np.uint8(FLAG_NO_VALUE), mask,
                          {**_mask_attrs(), **per_var.get(MASK_VARIABLE, {})}, storage)
            _add_variable(ds, PROBABILITY_VARIABLE, "f4", np.float32(FLOAT_FILL),
                          probability_out,
                          {**_probability_attrs(), **per_var.get(PROBABILITY_VARIABLE, {})},
                          storage)
            _add_variable(ds, BUFFER_VARIABLE, "f4", np.float32(FLOAT_FILL), buffer,
                          {**_buffer_attrs(), **per_var.get(BUFFER_VARIABLE, {})}, storage)
            _add_variable(ds, SHADOW_VARIABLE, "u1", np.uint8(FLAG_NO_VALUE), shadow_out,
                          {**_shadow_attrs(shadow is not None), **per_var.get(SHADOW_VARIABLE, {})},
                          storage)
            _add_band_names(ds)
            if location is not None:
                _add_location(ds, location, per_var, storage)
            if glt is not None:
                _add_glt(ds, glt, per_var, complevel)
    except (OSError, RuntimeError) as exc:
        path.unlink(missing_ok=True)
        raise OutputError(path, f"cannot write netCDF product ({exc})") from None


def read_netcdf_product(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(flag uint8 with 255, probability float32 with NaN) where no value, for validation."""
    layers = read_netcdf_layers(path)
    return layers.flag, layers.probability


def read_netcdf_layers(path: Path | str) -> Layers:
    """The four layers as stored (fills as written; the probability's fill as NaN)."""
    from netCDF4 import Dataset

    try:
        with Dataset(Path(path), "r") as ds:
            ds.set_auto_mask(False)
            flag = np.asarray(ds[MASK_VARIABLE][:], np.uint8)
            prob = np.asarray(ds[PROBABILITY_VARIABLE][:], np.float32)
            fill = ds[PROBABILITY_VARIABLE].getncattr("_FillValue")
            buffer = np.asarray(ds[BUFFER_VARIABLE][:], np.float32)
            shadow = np.asarray(ds[SHADOW_VARIABLE][:], np.uint8)
    except (OSError, RuntimeError, IndexError, KeyError) as exc:
        raise OutputError(path, f"netCDF product does not read back ({exc})") from None
    prob[prob == fill] = np.nan
    return Layers(flag, prob, buffer, shadow)
