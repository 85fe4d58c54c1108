"""The data products, one row each: the files a product kind writes, the switch that turns it
on, its format, how it is written and how it is read back.

A new data product is one row here (and its writer and reader in their own module); the file
names, the run configuration's output switches, the write and read-back steps and the granule
record's file formats all come from this table. Every row is written from one value,
`ProductContent`, so the products cannot disagree about what they hold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from l2b_mask.algorithm.geometry import ground_spacing
from l2b_mask.errors import OutputError
from l2b_mask.inputs.glt import Glt
from l2b_mask.inputs.location import LocationArrays
from l2b_mask.products.browse import check_browse, write_browse_png
from l2b_mask.products.envi import Layers, check_beyond, read_envi_layers, write_envi_product
from l2b_mask.products.netcdf import read_netcdf_layers, write_netcdf_product
from l2b_mask.products.ortho import (
    BUFFER_LAYER,
    SHADOW_LAYER,
    check_ortho,
    check_ortho_layer,
    write_ortho_geotiff,
    write_ortho_layer,
)


@dataclass(frozen=True)
class ProductContent:
    """What every data product of one acquisition is written from."""

    probability: np.ndarray  # (lines, samples) float32, NaN without value
    flag: np.ndarray  # (lines, samples) uint8: 0 clear, 1 cloud, 255 without value
    envi_header: Mapping[str, Any]  # extra ENVI header keys (the caller's conventions)
    netcdf_base_attrs: Mapping[str, Any]  # the caller's conventions (EMIT's for the PGE)
    netcdf_attrs: Mapping[str, Any]  # per-run global attributes, merged over the base
    radiance: Path  # the browse image is drawn from it
    location: LocationArrays | None = None
    glt: Glt | None = None
    buffer_distance: np.ndarray | None = None  # (lines, samples) float32, -9999 without value
    shadow: np.ndarray | None = None  # (lines, samples) uint8 1/0/255; None: no shadow made

    def beyond(self) -> tuple[np.ndarray, np.ndarray]:
        """Buffer distance (-9999) and shadow (255) as every format stores them: a layer not
        given has no value anywhere, nor has a pixel without a flag value."""
        return check_beyond(self.flag, self.buffer_distance, self.shadow)


Paths = Mapping[str, Path]


@dataclass(frozen=True)
class DataProduct:
    """One kind of data product."""

    key: str
    files: tuple[tuple[str, str], ...]  # (file key, suffix after the product stem)
    switch: str  # the output option that turns it on
    formats: tuple[str, ...]  # the granule record's format of each file
    write: Callable[[ProductContent, Paths], None]
    check: Callable[[ProductContent, Paths], None]  # read back; OutputError when it differs
    needs_glt: bool = False
    needs_shadow: bool = False  # nothing to write when the acquisition has no shadow layer


def check_arrays(path: Path, layers: Layers, content: ProductContent) -> None:
    """A product read back holds exactly the computed layers (OutputError)."""
    flag, probability = layers.flag, layers.probability
    want_flag, want_prob = content.flag, content.probability
    if flag.shape != want_flag.shape or probability.shape != want_prob.shape:
        raise OutputError(path, f"read back as {flag.shape}, expected {want_flag.shape}")
    no_value = np.isnan(want_prob)
    if not np.array_equal(np.isnan(probability), no_value):
        raise OutputError(path, "pixels without a value differ from those computed")
    if not np.array_equal(flag, want_flag):
        raise OutputError(path, "cloud flag differs from the one computed")
    values = probability[~no_value]
    if not np.array_equal(values, want_prob[~no_value]):
        raise OutputError(path, "cloud probability differs from the one computed")
    if values.size and (values.min() < 0 or values.max() > 1):
        raise OutputError(path, "cloud probability outside [0, 1]")
    want_buffer, want_shadow = content.beyond()
    if not np.array_equal(layers.buffer_distance, want_buffer):
        raise OutputError(path, "cloud buffer distance differs from the one computed")
    if not np.array_equal(layers.shadow, want_shadow):
        raise OutputError(path, "cloud shadow flag differs from the one computed")


def _read_back(reader: Callable[[Path], Layers], key: str
               ) -> Callable[[ProductContent, Paths], None]:
    def check(content: ProductContent, paths: Paths) -> None:
        path = paths[key]
        try:
            layers = reader(path)
        except Exception as exc:  # noqa: BLE001 - a product that does not read back is an output failure
            raise OutputError(path, f"product does not read back ({exc})") from None
        check_arrays(path, layers, content)
    return check


def _write_envi(c: ProductContent, p: Paths) -> None:
    write_envi_product(p["envi_data"], c.probability, c.flag, c.envi_header,
                       buffer_distance=c.buffer_distance, shadow=c.shadow)


def _write_netcdf(c: ProductContent, p: Paths) -> None:
    write_netcdf_product(p["netcdf"], c.probability, c.flag, base_attrs=c.netcdf_base_attrs,
                         global_attrs=c.netcdf_attrs, location=c.location, glt=c.glt,
                         buffer_distance=c.buffer_distance, shadow=c.shadow)


def _write_browse(c: ProductContent, p: Paths) -> None:
    spacing = (None if c.location is None
               else ground_spacing(c.location.lon, c.location.lat).mean_m)  # as the buffer's
    write_browse_png(p["browse"], c.radiance, c.flag, shadow=c.shadow, pixel_size_m=spacing)


def _write_ortho(c: ProductContent, p: Paths) -> None:
    assert c.glt is not None  # rows with needs_glt run only with a GLT
    write_ortho_geotiff(p["ortho_flag"], p["ortho_probability"], c.flag, c.probability, c.glt)
    write_ortho_layer(p["ortho_buffer"], c.beyond()[0], BUFFER_LAYER, c.glt)


def _check_ortho(c: ProductContent, p: Paths) -> None:
    assert c.glt is not None
    check_ortho(p["ortho_flag"], p["ortho_probability"], c.flag, c.probability, c.glt)
    check_ortho_layer(p["ortho_buffer"], c.beyond()[0], BUFFER_LAYER, c.glt)


def _write_ortho_shadow(c: ProductContent, p: Paths) -> None:
    assert c.glt is not None and c.shadow is not None  # needs_glt, needs_shadow
    write_ortho_layer(p["ortho_shadow"], c.beyond()[1], SHADOW_LAYER, c.glt)


def _check_ortho_shadow(c: ProductContent, p: Paths) -> None:
    assert c.glt is not None and c.shadow is not None
    check_ortho_layer(p["ortho_shadow"], c.beyond()[1], SHADOW_LAYER, c.glt)


DATA_PRODUCTS: tuple[DataProduct, ...] = (
    DataProduct("envi", (("envi_data", ".img"), ("envi_header", ".hdr")), "write_envi",
                ("ENVI", "ASCII"), _write_envi, _read_back(read_envi_layers, "envi_data")),
    DataProduct("netcdf", (("netcdf", ".nc"),), "write_netcdf", ("NETCDF-4",), _write_netcdf,
                _read_back(read_netcdf_layers, "netcdf")),
    DataProduct("browse", (("browse", ".png"),), "write_browse", ("PNG",), _write_browse,
                lambda c, p: check_browse(p["browse"])),
    DataProduct("ortho", (("ortho_flag", "_ortho.tif"), ("ortho_probability", "_ortho_prob.tif"),
                          ("ortho_buffer", "_ortho_buffer.tif")),
                "write_ortho", ("GeoTIFF", "GeoTIFF", "GeoTIFF"), _write_ortho, _check_ortho,
                needs_glt=True),
    DataProduct("ortho_shadow", (("ortho_shadow", "_ortho_shadow.tif"),), "write_ortho",
                ("GeoTIFF",), _write_ortho_shadow, _check_ortho_shadow, needs_glt=True,
                needs_shadow=True),
)
