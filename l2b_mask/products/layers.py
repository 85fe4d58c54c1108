"""The product's layers, one row each: what every format, reader and check knows of a layer.

A row gives the layer's name (its key in memory), its ENVI band name (also the netCDF
`mask_bands` entry and the GeoTIFF band description), its netCDF variable and attributes, its
data type and no-value, its units, the values it may hold (checked when written and when read
back), its orthorectified GeoTIFF and its colour in the browse. The ENVI, netCDF, ortho and
browse writers, the readers, the read-back comparison, the layer statistics and the product
table all walk `LAYERS`; a new layer is one row here (and the array that fills it).

In memory (`Layers`) every layer is a (lines, samples) array of its own `dtype` with `fill`
where the pixel has no value, except a layer with `nan_in_memory` (the probability), which
holds NaN there. A pixel without a value in a `required` layer has none in any layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from l2b_mask.nodata import FLAG_NO_VALUE, FLOAT_NO_VALUE

# GeoTIFF creation options (GDAL's COG driver): integer flags and floating-point values
FLAG_COG_OPTIONS = ("COMPRESS=DEFLATE", "LEVEL=6", "BLOCKSIZE=512", "OVERVIEWS=AUTO",
                    "RESAMPLING=NEAREST", "BIGTIFF=IF_SAFER")
FLOAT_COG_OPTIONS = ("COMPRESS=DEFLATE", "LEVEL=6", "PREDICTOR=YES", "BLOCKSIZE=512",
                     "OVERVIEWS=AUTO", "RESAMPLING=NEAREST", "BIGTIFF=IF_SAFER")


@dataclass(frozen=True)
class OrthoFile:
    """The layer's orthorectified single-band COG."""

    key: str  # the product's file key
    suffix: str  # after the product stem
    options: tuple[str, ...]  # GDAL COG creation options
    comment: str | None = None  # a `comment` metadata tag
    needs_layer: bool = False  # not written at all when the layer was not made


@dataclass(frozen=True)
class BrowseColour:
    """How the browse draws the pixels of the layer that hold `value`."""

    rgb: tuple[float, float, float]
    alpha: float
    label: str  # in the browse's legend
    value: int = 1


@dataclass(frozen=True)
class Layer:
    """One layer of the product."""

    name: str  # key in memory (`Layers.flag`), in `ProductContent` and the readers
    what: str  # its name in sentences ("cloud flag")
    band_name: str  # ENVI band name, netCDF mask_bands entry, GeoTIFF band description
    variable: str  # netCDF variable
    dtype: np.dtype  # uint8 or float32: in memory, in the netCDF and the GeoTIFF
    fill: int | float  # no value: netCDF _FillValue, GeoTIFF nodata, and in memory
    long_name: str
    content_type: str  # ACDD coverage_content_type
    accepts: Callable[[np.ndarray], np.ndarray]  # which values (of pixels with one) are allowed
    accepts_text: str  # what else it holds, for messages ("other than 0, 1 and 255")
    units: str | None = None  # UDUNITS; flags carry none (CF)
    standard_name: str | None = None
    valid_range: tuple[float, float] | None = None
    flag_values: tuple[int, ...] | None = None
    flag_meanings: str | None = None
    comment: str | None = None
    absent_comment: str | None = None  # the netCDF comment when the layer was not made
    required: bool = False  # must be given; where it has no value, no layer has one
    nan_in_memory: bool = False  # NaN in memory where the stored value is `fill`
    ortho: OrthoFile | None = None
    browse: BrowseColour | None = None

    @property
    def memory_fill(self) -> float | int:
        return np.nan if self.nan_in_memory else self.fill

    def no_value(self, array: np.ndarray) -> np.ndarray:
        """Where an in-memory array of this layer has no value."""
        return np.isnan(array) if self.nan_in_memory else array == self.fill

    def stored(self, array: np.ndarray) -> np.ndarray:
        """The in-memory array as files hold it (NaN as `fill`)."""
        if not self.nan_in_memory:
            return array
        return np.where(np.isnan(array), self.dtype.type(self.fill), array).astype(self.dtype)

    def from_stored(self, array: np.ndarray) -> np.ndarray:
        """A stored array (`fill` where no value) in the in-memory convention."""
        out = np.asarray(array).astype(self.dtype)
        if self.nan_in_memory:
            out[out == self.fill] = np.nan
        return out

    def attributes(self, made: bool = True) -> dict[str, Any]:
        """The netCDF variable's attributes (CF and ACDD), in file order."""
        attrs: dict[str, Any] = {"long_name": self.long_name,
                                 "standard_name": self.standard_name, "units": self.units}
        if self.valid_range is not None:
            attrs["valid_range"] = np.array(self.valid_range, self.dtype)
        if self.flag_values is not None:
            attrs["flag_values"] = np.array(self.flag_values, self.dtype)
        attrs["flag_meanings"] = self.flag_meanings
        attrs["coverage_content_type"] = self.content_type
        attrs["comment"] = self.comment if made or self.absent_comment is None else self.absent_comment
        return {k: v for k, v in attrs.items() if v is not None}

    def ortho_metadata(self) -> dict[str, str]:
        """The GeoTIFF's metadata tags: the same units, range and flag meanings as the netCDF."""
        tags = {"units": self.units,
                "valid_range": _words(self.valid_range), "flag_values": _words(self.flag_values),
                "flag_meanings": self.flag_meanings,
                "comment": self.ortho.comment if self.ortho is not None else None}
        return {k: v for k, v in tags.items() if v is not None}

    def checked(self, array: Any, shape: tuple[int, ...]) -> np.ndarray:
        """A validated in-memory copy of a given array of this layer (ValueError)."""
        a = np.asarray(array)
        if a.shape != shape:
            raise ValueError(f"{self.what} {a.shape} and the other layers {shape} must be the "
                             f"same 2-D shape")
        if self.nan_in_memory and not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{self.what} must be floating point, not {a.dtype}")
        own_no_value = np.isnan(a) if self.nan_in_memory else a == self.fill
        values = a[~own_no_value]
        if values.size and not self.accepts(values).all():
            raise ValueError(f"{self.what} holds values {self.accepts_text}: "
                             f"{np.unique(values[~self.accepts(values)])[:5].tolist()}")
        out = a.astype(self.dtype)
        if self.dtype.kind == "u" and not np.array_equal(out, a):
            raise ValueError(f"{self.what} must be an integer array, not {a.dtype}")
        return out


def _words(values: tuple[float, ...] | None) -> str | None:
    return None if values is None else " ".join(f"{v:g}" for v in values)


def flag_values_only(values: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda a: np.isin(a, values)


def within(lo: float, hi: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda a: np.isfinite(a) & (a >= lo) & (a <= hi)


def _distance_or_beyond(a: np.ndarray) -> np.ndarray:
    return np.isfinite(a) & ((a == BUFFER_BEYOND_REACH) | (a >= BUFFER_CLOUD))


# The buffer distance's special values; every other value with a value is a distance > 0.
BUFFER_CLOUD, BUFFER_BEYOND_REACH = 0.0, -1.0
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
_U1, _F4 = np.dtype(np.uint8), np.dtype(np.float32)

LAYERS: tuple[Layer, ...] = (
    Layer("flag", "cloud flag", "Cloud Flag", "cloud_mask", _U1, FLAG_NO_VALUE,
          "Cloud mask (SpecTf)", "thematicClassification", flag_values_only((0, 1)),
          "other than 0, 1 and 255", standard_name="cloud_binary_mask",  # CF: 1 where cloud, 0 elsewhere
          flag_values=(0, 1), flag_meanings="clear cloud", required=True,
          ortho=OrthoFile("ortho_flag", "_ortho.tif", FLAG_COG_OPTIONS),
          # magenta: stands out against white cloud and natural ground
          browse=BrowseColour((255.0, 0.0, 255.0), 0.5, "cloud")),
    Layer("probability", "cloud probability", "Cloud Probability", "cloud_probability", _F4,
          FLOAT_NO_VALUE, "Cloud probability (SpecTf)", "modelResult", within(0.0, 1.0),
          "outside [0, 1] (use NaN for 'no value')", units="1",
          valid_range=(0.0, 1.0), required=True, nan_in_memory=True,
          ortho=OrthoFile("ortho_probability", "_ortho_prob.tif", FLOAT_COG_OPTIONS)),
    # UDUNITS has no pixel: the distance is a count of pixel widths, dimensionless ("1"), and
    # says so in its long name and comment (netCDF and GeoTIFF alike).
    Layer("buffer_distance", "cloud buffer distance", "Cloud Buffer Distance",
          "cloud_buffer_distance", _F4, FLOAT_NO_VALUE,
          "Cloud buffer distance in pixels of the instrument grid", "auxiliaryInformation",
          _distance_or_beyond, "other than >= 0, -1 and -9999", units="1", comment=BUFFER_COMMENT,
          ortho=OrthoFile("ortho_buffer", "_ortho_buffer.tif", FLOAT_COG_OPTIONS,
                          comment="0 cloud, -1 beyond the reach of a cloud's shadow, else the "
                                  "distance to the nearest cloud pixel in pixels of the "
                                  "instrument grid")),
    Layer("shadow", "cloud shadow flag", "Cloud Shadow Flag", "cloud_shadow", _U1, FLAG_NO_VALUE,
          "Cloud shadow flag", "thematicClassification", flag_values_only((0, 1)),
          "other than 0, 1 and 255", flag_values=(0, 1), flag_meanings="not_shadow shadow",
          comment=SHADOW_COMMENT, absent_comment=SHADOW_NOT_MADE,
          ortho=OrthoFile("ortho_shadow", "_ortho_shadow.tif", FLAG_COG_OPTIONS,
                          needs_layer=True),
          # amber: visible on the dark ground a shadow covers; stronger than the cloud's:
          # amber at 50 % over dark ground reads as olive
          browse=BrowseColour((255.0, 191.0, 0.0), 0.7, "cloud shadow")),
)


def layer(name: str, table: tuple[Layer, ...] = LAYERS) -> Layer:
    """The row of `name`."""
    for row in table:
        if row.name == name:
            return row
    raise KeyError(f"no layer {name!r} in the table ({[r.name for r in table]})")


@dataclass(frozen=True, eq=False)
class Layers(Mapping[str, np.ndarray]):
    """Every layer of one product in the in-memory conventions, by name (`layers.flag`,
    `layers["shadow"]`), with the table that describes them and the layers not made."""

    arrays: Mapping[str, np.ndarray]
    table: tuple[Layer, ...] = LAYERS
    absent: frozenset[str] = field(default_factory=frozenset)

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["arrays"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.arrays[self.table[0].name].shape

    def made(self, name: str) -> bool:
        return name not in self.absent

    def no_value(self) -> np.ndarray:
        """Where the pixel has no value: where any required layer has none."""
        out = np.zeros(self.shape, bool)
        for row in self.table:
            if row.required:
                out |= row.no_value(self.arrays[row.name])
        return out

    def rows(self) -> Iterator[tuple[Layer, np.ndarray]]:
        return ((row, self.arrays[row.name]) for row in self.table)


def prepare(arrays: Mapping[str, Any], table: tuple[Layer, ...] = LAYERS) -> Layers:
    """Checked copies of the given layers (ValueError): a layer not given (or None) has no
    value anywhere, and a pixel without a value in a required layer has none in any layer,
    so the formats cannot disagree about it."""
    unknown = sorted(set(arrays) - {row.name for row in table})
    if unknown:
        raise ValueError(f"no such layer: {unknown} (the table has {[r.name for r in table]})")
    if arrays.get(table[0].name) is None:
        raise ValueError(f"the {table[0].what} is required")
    first = np.asarray(arrays[table[0].name])
    if first.ndim != 2:
        raise ValueError(f"{table[0].what} must be (lines, samples), not {first.shape}")
    out: dict[str, np.ndarray] = {}
    absent = set()
    for row in table:
        given = arrays.get(row.name)
        if given is None:
            if row.required:
                raise ValueError(f"the {row.what} is required")
            absent.add(row.name)
            out[row.name] = np.full(first.shape, row.memory_fill, row.dtype)
        else:
            out[row.name] = row.checked(given, first.shape)
    layers = Layers(out, table, frozenset(absent))
    no_value = layers.no_value()
    for row, array in layers.rows():
        array[no_value] = row.memory_fill
    return layers
