"""The data products, one row each: the files a product kind writes, the output switch that
turns it on, its format, how it is written and how it is read back.

A new data product is one row here (and its writer and reader in their own module); the file
names, the run configuration's output switches, the write and read-back steps and the granule
record's file formats all come from this table. Every row is written from one value,
`ProductContent`, whose layers (`layers.LAYERS`) every format walks, so the products cannot
disagree about what they hold. The orthorectified rows come from the layer table too: one row
for the layers always written, one per layer whose file needs the layer made (the shadow).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from l2b_mask.algorithm.geometry import ground_spacing
from l2b_mask.errors import OutputError
from l2b_mask.inputs.formats import Raster
from l2b_mask.inputs.glt import Glt
from l2b_mask.inputs.location import LocationArrays
from l2b_mask.products.browse import check_browse, overlays_of, write_browse_png
from l2b_mask.products.envi import read_envi_layers, write_envi_layers
from l2b_mask.products.layers import LAYERS, Layer, Layers
from l2b_mask.products.netcdf import NetcdfExtras, read_netcdf_layers, write_netcdf_layers
from l2b_mask.products.ortho import check_ortho_layer, write_ortho_layers


@dataclass(frozen=True)
class ProductContent:
    """What every data product of one acquisition is written from."""

    layers: Layers  # checked, `layers.prepare`: the flag, probability, buffer, shadow, ...
    envi_header: Mapping[str, Any]  # extra ENVI header keys (the caller's conventions)
    netcdf_base_attrs: Mapping[str, Any]  # the caller's conventions (EMIT's for the PGE)
    netcdf_attrs: Mapping[str, Any]  # per-run global attributes, merged over the base
    radiance: Path | Raster  # the browse image is drawn from it (its path, or as opened)
    location: LocationArrays | None = None
    glt: Glt | None = None
    # the radiance of the browse bands (`browse.browse_bands`) as the caller's stream read them,
    # (lines, samples, 3) float32: then the browse does not read the radiance again
    browse_radiance: np.ndarray | None = None


Paths = Mapping[str, Path]


@dataclass(frozen=True)
class DataProduct:
    """One kind of data product."""

    key: str
    files: tuple[tuple[str, str], ...]  # (file key, suffix after the product stem)
    switch: str  # the output switch (a field of the PGE's `output` settings) that turns it on
    formats: tuple[str, ...]  # the granule record's format of each file
    write: Callable[[ProductContent, Paths], None]
    check: Callable[[ProductContent, Paths], None]  # read back; OutputError when it differs
    needs_glt: bool = False  # written only from a GLT: a run asked for it must have one
    needs_layer: str | None = None  # nothing to write when that layer was not made


def check_arrays(path: Path, got: Layers, want: Layers) -> None:
    """A product read back holds exactly the computed layers (OutputError)."""
    for row in want.table:
        have, expected = got[row.name], want[row.name]
        if have.shape != expected.shape:
            raise OutputError(path, f"read back as {have.shape}, expected {expected.shape}")
        if row.nan_in_memory and not np.array_equal(np.isnan(have), np.isnan(expected)):
            raise OutputError(path, "pixels without a value differ from those computed")
        if not np.array_equal(have, expected, equal_nan=row.nan_in_memory):
            raise OutputError(path, f"{row.what} differs from the one computed")


def _read_back(reader: Callable[[Path, tuple[Layer, ...]], Layers], key: str
               ) -> Callable[[ProductContent, Paths], None]:
    def check(content: ProductContent, paths: Paths) -> None:
        path = paths[key]
        try:
            layers = reader(path, content.layers.table)
        except Exception as exc:  # noqa: BLE001 - a product that does not read back is an output failure
            raise OutputError(path, f"product does not read back ({exc})") from None
        check_arrays(path, layers, content.layers)
    return check


def _write_envi(c: ProductContent, p: Paths) -> None:
    write_envi_layers(p["envi_data"], c.layers, c.envi_header)


def _write_netcdf(c: ProductContent, p: Paths) -> None:
    write_netcdf_layers(p["netcdf"], c.layers, NetcdfExtras(
        c.netcdf_attrs, base_attrs=c.netcdf_base_attrs, location=c.location, glt=c.glt))


def _write_browse(c: ProductContent, p: Paths) -> None:
    spacing = (None if c.location is None
               else ground_spacing(c.location.lon, c.location.lat).mean_m)  # as the buffer's
    write_browse_png(p["browse"], c.radiance, c.layers.flag, overlays=overlays_of(c.layers),
                     pixel_size_m=spacing, browse_radiance=c.browse_radiance)


def _ortho_rows(names: list[str]) -> tuple[Callable[[ProductContent, Paths], None],
                                           Callable[[ProductContent, Paths], None]]:
    """(write, check) of the orthorectified files of the named layers."""
    def write(c: ProductContent, p: Paths) -> None:
        assert c.glt is not None  # rows that need a GLT run only with one
        write_ortho_layers(p, c.layers, names, c.glt)

    def check(c: ProductContent, p: Paths) -> None:
        assert c.glt is not None
        for row in c.layers.table:
            if row.name in names and row.ortho is not None:
                check_ortho_layer(p[row.ortho.key], row, c.layers[row.name], c.glt)
    return write, check


def ortho_products(table: tuple[Layer, ...] = LAYERS) -> tuple[DataProduct, ...]:
    """The orthorectified rows: "ortho" for every layer whose file is always written, and
    "ortho_<layer>" for each whose file needs the layer made."""
    always = [row for row in table if row.ortho is not None and not row.ortho.needs_layer]
    groups = [("ortho", always, None)] + [
        (f"ortho_{row.name}", [row], row.name) for row in table
        if row.ortho is not None and row.ortho.needs_layer]
    out = []
    for key, rows, needs in groups:
        write, check = _ortho_rows([row.name for row in rows])
        out.append(DataProduct(
            key, tuple((row.ortho.key, row.ortho.suffix) for row in rows if row.ortho),
            "write_ortho", ("GeoTIFF",) * len(rows), write, check, needs_glt=True,
            needs_layer=needs))
    return tuple(out)


def data_products(table: tuple[Layer, ...] = LAYERS) -> tuple[DataProduct, ...]:
    """Every data product of a layer table, in file order."""
    return (
        DataProduct("envi", (("envi_data", ".img"), ("envi_header", ".hdr")), "write_envi",
                    ("ENVI", "ASCII"), _write_envi, _read_back(read_envi_layers, "envi_data")),
        DataProduct("netcdf", (("netcdf", ".nc"),), "write_netcdf", ("NETCDF-4",), _write_netcdf,
                    _read_back(read_netcdf_layers, "netcdf")),
        DataProduct("browse", (("browse", ".png"),), "write_browse", ("PNG",), _write_browse,
                    lambda c, p: check_browse(p["browse"])),
        *ortho_products(table),
    )


DATA_PRODUCTS: tuple[DataProduct, ...] = data_products()
# The output switches of the data products: the PGE's `output` settings have one field each.
SWITCHES: tuple[str, ...] = tuple(dict.fromkeys(row.switch for row in DATA_PRODUCTS))
