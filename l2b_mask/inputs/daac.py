"""The LP DAAC's EMIT L1B netCDF-4 granules (RAD and OBS) as inputs: recognise, check, stream.

Inside the SDS the L1B products are ENVI rasters; everyone else downloads them from the LP DAAC
as `EMIT_L1B_RAD_001_<YYYYMMDDTHHMMSS>_<YY><orbit5>_<scene3>.nc` and `EMIT_L1B_OBS_001_...nc`.
This module reads those granules behind the same interface as the ENVI readers, so the
science sees no difference: `DaacGranule` holds what `EnviHeader` holds, `DaacReader` has
`EnviReader`'s methods, and the `location` group gives the same `LocationArrays` and `Glt`.

The layout (EMIT SDS `emit-sds-l1b/output_conversion.py` with `emit-utils` `daac_converter`):
root dimensions `downtrack` (lines), `crosstrack` (samples), `bands`, `ortho_y`, `ortho_x`;
the swath variable `radiance` or `obs` (float32, downtrack x crosstrack x bands, pixel
interleaved, `_FillValue` -9999); group `sensor_band_parameters` with `wavelengths` and
`fwhm` (float32, nm) or `observation_bands` (band names); group `location` with `lon`, `lat`,
`elev` (float64, downtrack x crosstrack, -9999) and `glt_x`, `glt_y` (int32, ortho_y x ortho_x,
1-based, 0 where no pixel); global attributes `flight_line` (the ENVI name stem),
`time_coverage_start`/`_end`, `product_version`, `geotransform`, `spatial_ref`.

Every value is read as stored (`set_auto_maskandscale(False)`): fills stay -9999, as in ENVI.
Granule names are read by `l2b_mask.inputs.daac_names`; the RAD/OBS pairing check is here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from l2b_mask.errors import InputProductError
from l2b_mask.inputs.daac_names import DaacName, parse_daac_name
from l2b_mask.inputs.envi import LineReader
from l2b_mask.inputs.glt import EPSG_WGS84, GLT_FILL, WGS84_WKT, Glt, checked
from l2b_mask.inputs.l1b import (
    EMIT_RADIANCE_BANDS,
    OBS_BAND_COUNTS,
    OBS_EARTH_SUN_DISTANCE_NAME,
    OBS_SOLAR_ZENITH_NAME,
    check_same_size,
    check_spectral_axis,
    find_band,
    parse_emit_time,
)
from l2b_mask.inputs.location import LOC_FILL, LocationArrays

RADIANCE_VARIABLE = "radiance"
OBSERVATION_VARIABLE = "obs"
SWATH_DIMS = ("downtrack", "crosstrack", "bands")
ORTHO_DIMS = ("ortho_y", "ortho_x")
BAND_GROUP = "sensor_band_parameters"
LOCATION_GROUP = "location"
LOCATION_VARIABLES = ("lon", "lat", "elev")
GLT_VARIABLES = ("glt_x", "glt_y")  # sample lookup, line lookup
DAAC_FILL = -9999.0
KINDS = {RADIANCE_VARIABLE: "RAD", OBSERVATION_VARIABLE: "OBS"}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_NETCDF3_SIGNATURE = b"CDF"
_WAVELENGTH_UNITS = {"nm", "nanometers", "nanometer"}

# ---------------------------------------------------------------------------------------------
# Opening


def _reason(exc: BaseException) -> str:
    """netCDF4's words for a failure, without the file name it repeats."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__


def _signature(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(len(_HDF5_SIGNATURE))


def open_dataset(path: Path | str) -> Any:
    """A netCDF4 `Dataset` open for reading; any failure is one `InputProductError` line."""
    from netCDF4 import Dataset

    p = Path(path)
    if not p.is_file():
        raise InputProductError(p, "netCDF granule not found")
    try:
        return Dataset(p, "r")
    except OSError as exc:
        if _signature(p) == _HDF5_SIGNATURE:
            problem = (f"HDF5 file that netCDF-4 cannot open, truncated or damaged "
                       f"({p.stat().st_size} bytes; {_reason(exc)})")
        else:
            problem = f"not a netCDF-4/HDF5 file ({_reason(exc)})"
        raise InputProductError(p, problem) from None


def granule_kind(path: Path | str) -> str | None:
    """'RAD' or 'OBS' when `path` is a netCDF file holding a `radiance` or `obs` variable,
    None otherwise (ENVI files, text, missing files). Reads the first bytes, then only the
    file's metadata: cheap enough to sort a folder by."""
    p = Path(path)
    try:
        if not p.is_file() or not _signature(p).startswith((_HDF5_SIGNATURE, _NETCDF3_SIGNATURE)):
            return None
        with open_dataset(p) as ds:
            kinds = [KINDS[name] for name in KINDS if name in ds.variables]
    except (OSError, RuntimeError, ValueError, InputProductError):
        return None
    return kinds[0] if len(kinds) == 1 else None


def is_daac_granule(path: Path | str) -> bool:
    """Whether `path` is an EMIT L1B RAD or OBS netCDF granule, judged by content."""
    return granule_kind(path) is not None


# ---------------------------------------------------------------------------------------------
# The granule


@dataclass(frozen=True)
class DaacGranule:
    """The facts of one RAD or OBS granule that reading it needs, checked at open.

    `lines`, `samples`, `bands`, `dtype`, `nodata`, `meta` mean what they mean on `EnviHeader`;
    `header_path` and `data_path` are both the granule, so messages written for ENVI inputs
    name the right file.
    """

    path: Path
    kind: str  # "RAD" or "OBS"
    variable: str  # "radiance" or "obs"
    lines: int
    samples: int
    bands: int
    dtype: np.dtype
    nodata: float | None  # the swath variable's _FillValue
    wavelengths_nm: np.ndarray | None = field(default=None, repr=False)  # float32 as stored (RAD)
    fwhm_nm: np.ndarray | None = field(default=None, repr=False)  # float32 as stored (RAD)
    band_names: list[str] | None = None  # `observation_bands` (OBS)
    solar_zenith_band: int | None = None  # found by name (OBS)
    earth_sun_band: int | None = None  # found by name (OBS)
    acquisition_start: datetime | None = None  # time_coverage_start
    acquisition_stop: datetime | None = None  # time_coverage_end
    flight_line: str | None = None  # the ENVI name stem, emit<date>t<time>_o<orbit>_s<segment>
    product_version: str | None = None  # as stored, "V001"
    # which of `location/lon, lat, elev, glt_x, glt_y` the granule holds
    location_variables: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, repr=False)  # all global attributes

    @property
    def header_path(self) -> Path:
        return self.path

    @property
    def data_path(self) -> Path:
        return self.path

    @property
    def name(self) -> DaacName | None:
        return parse_daac_name(self.path)

    @property
    def has_location(self) -> bool:
        """`location/lon`, `lat`, `elev` all present."""
        return set(LOCATION_VARIABLES) <= set(self.location_variables)

    @property
    def has_glt(self) -> bool:
        """`location/glt_x`, `glt_y` both present."""
        return set(GLT_VARIABLES) <= set(self.location_variables)


def _group(ds: Any, name: str, path: Path) -> Any:
    if name not in ds.groups:
        raise InputProductError(path, f"granule has no '{name}' group")
    return ds.groups[name]


def _band_variable(group: Any, name: str, path: Path) -> Any:
    if name not in group.variables:
        raise InputProductError(path, f"granule has no '{BAND_GROUP}/{name}'")
    var = group.variables[name]
    if var.dimensions != ("bands",):
        raise InputProductError(path, f"'{BAND_GROUP}/{name}' has dimensions {var.dimensions}, "
                                      "expected ('bands',)")
    var.set_auto_maskandscale(False)
    return var


def _spectral_axis(group: Any, bands: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Wavelengths and FWHM as stored, with the ENVI path's checks and words."""
    wl_var = _band_variable(group, "wavelengths", path)
    fwhm_var = _band_variable(group, "fwhm", path)
    for var in (wl_var, fwhm_var):
        units = str(getattr(var, "units", "nm")).strip().lower()
        if units not in _WAVELENGTH_UNITS:
            raise InputProductError(path, f"'{BAND_GROUP}/{var.name}' units {units!r} are not nm")
    wl, fwhm = np.asarray(wl_var[:]), np.asarray(fwhm_var[:])
    if wl.dtype.kind != "f" or fwhm.dtype.kind != "f":
        raise InputProductError(path, f"wavelengths ({wl.dtype}) and fwhm ({fwhm.dtype}) must be "
                                      "floating point")
    check_spectral_axis(wl, fwhm, bands, path)
    return wl, fwhm


def _observation_bands(group: Any, bands: int, path: Path) -> list[str]:
    var = _band_variable(group, "observation_bands", path)
    names = [str(v).strip() for v in np.asarray(var[:], dtype=object).ravel()]
    if len(names) != bands:
        raise InputProductError(path, f"{len(names)} band names for {bands} bands")
    return names


def _swath_variable(ds: Any, path: Path) -> Any:
    present = [name for name in KINDS if name in ds.variables]
    if len(present) != 1:
        found = "both" if present else "neither"
        raise InputProductError(path, f"netCDF file holds {found} of 'radiance' and 'obs': not "
                                      "one EMIT L1B RAD or OBS granule")
    var = ds.variables[present[0]]
    if var.dimensions != SWATH_DIMS:
        raise InputProductError(path, f"'{var.name}' has dimensions {var.dimensions}, expected "
                                      f"{SWATH_DIMS}")
    if getattr(var.dtype, "kind", "") != "f":  # a string variable's dtype is `str`
        raise InputProductError(path, f"'{var.name}' must be floating point, found {var.dtype}")
    if min(var.shape) <= 0:
        raise InputProductError(path, f"'{var.name}' is empty: shape {var.shape}")
    return var


def _times(attrs: dict[str, Any], path: Path) -> tuple[datetime | None, datetime | None]:
    start_text, stop_text = attrs.get("time_coverage_start"), attrs.get("time_coverage_end")
    start, stop = parse_emit_time(start_text), parse_emit_time(stop_text)
    if start is not None and stop is not None and stop < start:
        raise InputProductError(path, f"'time_coverage_end' {stop_text} is before "
                                      f"'time_coverage_start' {start_text}")
    return start, stop


def _location_variables(ds: Any) -> tuple[str, ...]:
    """Which of the location group's five variables the granule holds (none without the group)."""
    group = ds.groups.get(LOCATION_GROUP)
    names = (*LOCATION_VARIABLES, *GLT_VARIABLES)
    return () if group is None else tuple(n for n in names if n in group.variables)


def _describe(ds: Any, path: Path, expected_radiance_bands: int | None) -> DaacGranule:
    var = _swath_variable(ds, path)
    lines, samples, bands = (int(n) for n in var.shape)
    kind = KINDS[var.name]
    band_group = _group(ds, BAND_GROUP, path)
    attrs = {name: ds.getncattr(name) for name in ds.ncattrs()}
    start, stop = _times(attrs, path)
    fill = var.getncattr("_FillValue") if "_FillValue" in var.ncattrs() else None
    granule = DaacGranule(
        path=path, kind=kind, variable=var.name, lines=lines, samples=samples, bands=bands,
        dtype=np.dtype(var.dtype), nodata=None if fill is None else float(fill),
        acquisition_start=start, acquisition_stop=stop,
        flight_line=_text(attrs.get("flight_line")),
        product_version=_text(attrs.get("product_version")),
        location_variables=_location_variables(ds), meta=attrs,
    )
    if kind == "RAD":
        if expected_radiance_bands is not None and bands != expected_radiance_bands:
            raise InputProductError(path, f"radiance has {bands} bands, expected "
                                          f"{expected_radiance_bands}")
        wl, fwhm = _spectral_axis(band_group, bands, path)
        return replace(granule, wavelengths_nm=wl, fwhm_nm=fwhm)
    if bands not in OBS_BAND_COUNTS:
        raise InputProductError(path, f"observation file has {bands} bands, expected 11 or 12")
    names = _observation_bands(band_group, bands, path)
    # With names present the positional fallback is never used: a granule always names them.
    sza = find_band(names, OBS_SOLAR_ZENITH_NAME, -1, granule)  # type: ignore[arg-type]
    esd = find_band(names, OBS_EARTH_SUN_DISTANCE_NAME, -1, granule)  # type: ignore[arg-type]
    return replace(granule, band_names=names, solar_zenith_band=sza, earth_sun_band=esd)


def _text(value: Any) -> str | None:
    return None if value is None else str(value).strip()


def open_granule(path: Path | str,
                 expected_radiance_bands: int | None = EMIT_RADIANCE_BANDS) -> DaacGranule:
    """Open and check a RAD or OBS granule, whichever it holds; nothing of the swath is read."""
    p = Path(path)
    with open_dataset(p) as ds:
        try:
            return _describe(ds, p, expected_radiance_bands)
        except (OSError, RuntimeError) as exc:  # a damaged group or attribute
            raise InputProductError(p, f"granule metadata unreadable ({_reason(exc)})") from None


def _expect(granule: DaacGranule, kind: str, role: str) -> DaacGranule:
    if granule.kind != kind:
        raise InputProductError(granule.path, f"given as the {role} but it is an EMIT L1B "
                                              f"{granule.kind} granule ('{granule.variable}')")
    return granule


def open_radiance_granule(path: Path | str,
                          expected_bands: int | None = EMIT_RADIANCE_BANDS) -> DaacGranule:
    """Open and check an `EMIT_L1B_RAD_*` granule (any name; the content decides)."""
    return _expect(open_granule(path, expected_bands), "RAD", "radiance")


def open_observation_granule(path: Path | str) -> DaacGranule:
    """Open and check an `EMIT_L1B_OBS_*` granule (any name; the content decides)."""
    return _expect(open_granule(path, None), "OBS", "observation")


def check_same_acquisition(radiance: DaacGranule, observation: DaacGranule) -> None:
    """Refuse a RAD and an OBS granule of different acquisitions or sizes.

    Compared where both say: the name's time, orbit and scene; `flight_line`;
    `time_coverage_start`/`_end`; and always the swath size.
    """
    rdn, obs = radiance, observation
    _expect(rdn, "RAD", "radiance")
    _expect(obs, "OBS", "observation")
    rdn_name, obs_name = rdn.name, obs.name
    differences = []
    if rdn_name is not None and obs_name is not None and rdn_name.acquisition != obs_name.acquisition:
        differences.append("name time/orbit/scene")
    pairs = (("flight_line", rdn.flight_line, obs.flight_line),
             ("time_coverage_start", rdn.acquisition_start, obs.acquisition_start),
             ("time_coverage_end", rdn.acquisition_stop, obs.acquisition_stop))
    differences += [what for what, a, b in pairs if a is not None and b is not None and a != b]
    if differences:
        raise InputProductError(obs.path, f"not the same acquisition as the radiance "
                                          f"{rdn.path.name} ({', '.join(differences)} differ)")
    check_same_size(rdn, obs)


# ---------------------------------------------------------------------------------------------
# Streaming


class DaacReader(LineReader):
    """Reads blocks of lines of a granule's swath variable as (lines, samples, bands) arrays.

    The same methods and results as `EnviReader`. The variable is pixel-interleaved, so a
    block of lines is one hyperslab of whole chunks; a full radiance granule (~1.8 GB) is
    never read whole. The file is opened on the first read, in the reading thread.
    """

    def __init__(self, granule: DaacGranule) -> None:
        self.granule = granule
        self.lines = granule.lines
        self._ds: Any = None
        self._var: Any = None

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()
            self._ds = self._var = None

    def _variable(self) -> Any:
        if self._var is None:
            self._ds = open_dataset(self.granule.path)
            self._var = self._ds.variables[self.granule.variable]
            self._var.set_auto_maskandscale(False)
        return self._var

    def read_lines(
        self, start: int, stop: int, bands: Any = None, dtype: np.dtype | type = np.float32,
    ) -> np.ndarray:
        """Lines [start, stop) as a C-contiguous (lines, samples, bands) array in `dtype`."""
        self.check_range(start, stop)
        g = self.granule
        try:
            block = np.asarray(self._variable()[start:stop, :, :])
        except (OSError, RuntimeError, IndexError) as exc:
            raise InputProductError(g.path, f"'{g.variable}' lines {start}-{stop} unreadable "
                                            f"({_reason(exc)})") from None
        if bands is not None:
            block = block[:, :, bands]
        return np.ascontiguousarray(block, dtype=dtype)



# ---------------------------------------------------------------------------------------------
# The location group: per-pixel location and the GLT


def _location_variable(ds: Any, name: str, dims: tuple[str, ...], path: Path) -> Any:
    group = _group(ds, LOCATION_GROUP, path)
    if name not in group.variables:
        raise InputProductError(path, f"granule has no '{LOCATION_GROUP}/{name}'")
    var = group.variables[name]
    if var.dimensions != dims:
        raise InputProductError(path, f"'{LOCATION_GROUP}/{name}' has dimensions "
                                      f"{var.dimensions}, expected {dims}")
    var.set_auto_maskandscale(False)
    return var


def read_granule_location(path: Path | str, shape: tuple[int, int] | None = None,
                          lines_per_block: int = 512) -> LocationArrays:
    """`location/lon`, `lat`, `elev` as float64 with -9999 fill, like `read_location` on the
    ENVI LOC raster. `shape` (lines, samples) of the radiance is checked as there."""
    p = Path(path)
    with open_dataset(p) as ds:
        variables = [_location_variable(ds, n, SWATH_DIMS[:2], p) for n in LOCATION_VARIABLES]
        lines, samples = (int(n) for n in variables[0].shape)
        if shape is not None and (lines, samples) != tuple(shape):
            raise InputProductError(p, f"location is {lines} lines x {samples} samples but the "
                                       f"radiance is {shape[0]} x {shape[1]}")
        out = np.empty((len(variables), lines, samples), np.float64)
        try:
            for k, var in enumerate(variables):
                fill = var.getncattr("_FillValue") if "_FillValue" in var.ncattrs() else None
                for start in range(0, lines, lines_per_block):
                    stop = min(start + lines_per_block, lines)
                    block = np.asarray(var[start:stop, :], np.float64)
                    bad = ~np.isfinite(block) if fill is None else (~np.isfinite(block) | (block == fill))
                    block[bad] = LOC_FILL
                    out[k, start:stop] = block
        except (OSError, RuntimeError) as exc:
            raise InputProductError(p, f"location unreadable ({_reason(exc)})") from None
    return LocationArrays(lon=out[0], lat=out[1], elev=out[2])


def _geotransform(ds: Any, path: Path) -> tuple[float, float, float, float, float, float]:
    if "geotransform" not in ds.ncattrs():
        raise InputProductError(path, "granule has no 'geotransform' attribute (the GLT grid "
                                      "is unknown)")
    values = np.atleast_1d(np.asarray(ds.getncattr("geotransform")))
    if values.size != 6 or values.dtype.kind not in "if" or not np.all(np.isfinite(values)):
        raise InputProductError(path, f"'geotransform' must be 6 finite numbers, not {values!r}")
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def _check_wgs84(ds: Any, path: Path) -> None:
    """Only geographic WGS-84 grids are supported, as on the ENVI path (`map info`)."""
    wkt = str(ds.getncattr("spatial_ref")) if "spatial_ref" in ds.ncattrs() else ""
    flat = wkt.upper().replace(" ", "").replace("_", "")
    geographic = flat.startswith(("GEOGCS[", "GEOGCRS[", "GEODCRS["))
    if not (geographic and "WGS84" in flat):
        shown = wkt[:60] + ("..." if len(wkt) > 60 else "")
        raise InputProductError(path, f"GLT grid 'spatial_ref' is {shown!r}; only geographic "
                                      "WGS-84 (EPSG:4326) grids are supported")


def _glt_band(var: Any, path: Path) -> np.ndarray:
    if getattr(var.dtype, "kind", "") not in ("i", "u"):
        raise InputProductError(path, f"'{LOCATION_GROUP}/{var.name}' must hold integers, not "
                                      f"{var.dtype}")
    values = np.asarray(var[:], np.int64)
    fill = var.getncattr("_FillValue") if "_FillValue" in var.ncattrs() else GLT_FILL
    if fill != GLT_FILL:  # EMIT writes -9999 as _FillValue; a cell never written means no pixel
        values[values == fill] = GLT_FILL
    if np.abs(values).max(initial=0) > np.iinfo(np.int32).max:
        raise InputProductError(path, f"'{LOCATION_GROUP}/{var.name}' exceeds the int32 range")
    return values.astype(np.int32)


def read_granule_glt(path: Path | str, swath_shape: tuple[int, int] | None = None) -> Glt:
    """`location/glt_x`, `glt_y` and the `geotransform` as a `Glt`, like `read_glt` on the
    ENVI GLT: 1-based, 0 where no pixel, checked against `swath_shape` (lines, samples)."""
    p = Path(path)
    with open_dataset(p) as ds:
        sample_var, line_var = (_location_variable(ds, n, ORTHO_DIMS, p) for n in GLT_VARIABLES)
        geotransform = _geotransform(ds, p)
        _check_wgs84(ds, p)
        try:
            sample, line = _glt_band(sample_var, p), _glt_band(line_var, p)
        except (OSError, RuntimeError) as exc:
            raise InputProductError(p, f"GLT unreadable ({_reason(exc)})") from None
    try:
        glt = Glt(sample=sample, line=line, geotransform=geotransform, crs_wkt=WGS84_WKT,
                  epsg=EPSG_WGS84, source=p)
    except ValueError as exc:
        raise InputProductError(p, f"GLT grid unusable: {exc}") from None
    return checked(glt, p, swath_shape)
