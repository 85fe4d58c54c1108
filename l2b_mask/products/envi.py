"""The ENVI product: one float32 BIL band per layer of the layer table (`layers.LAYERS`), in
its order: 1 the cloud flag, 2 the cloud probability, 3 the cloud buffer distance (pixels; 0
cloud, -1 beyond reach), 4 the cloud shadow flag (1 shadow, 0 not).

Float32 for every band keeps the EMIT working-product convention (float bands, -9999 where a
pixel has no value) so EMIT tools and GDAL read it like every other EMIT ENVI product.
Blocks of lines are written as inference produces them; the header is written last, once
every line is on disk, so a header never describes a binary that is incomplete.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from l2b_mask.errors import InputProductError, OutputError
from l2b_mask.inputs.envi import EnviReader, raster_header, read_header, write_header
from l2b_mask.nodata import FLOAT_NO_VALUE
from l2b_mask.products.layers import LAYERS, Layer, Layers, prepare

NODATA = FLOAT_NO_VALUE
DESCRIPTION_HEAD = "EMIT L2B cloud mask (SpecTf): "
_DTYPE = np.dtype("<f4")
# Keys the writer owns; taking them from `header_extra` would let a caller corrupt the layout.
_OWNED_KEYS = frozenset({
    "description", "samples", "lines", "bands", "header offset", "file type", "data type",
    "interleave", "byte order", "data ignore value", "band names",
})


def band_names(table: tuple[Layer, ...] = LAYERS) -> list[str]:
    return [row.band_name for row in table]


def description(table: tuple[Layer, ...] = LAYERS) -> str:
    return DESCRIPTION_HEAD + ", ".join(row.what for row in table)


def _header_path(data_path: Path) -> Path:
    return data_path.with_suffix(".hdr")


class EnviProductWriter:
    """Writes the ENVI product block by block; `close()` checks coverage and writes the header.

    Blocks may come in any order (positioned writes), but every line must be written once
    before `close()`. Used as a context manager, an exception discards the partial binary.
    """

    def __init__(self, data_path: Path | str, lines: int, samples: int,
                 header_extra: Mapping[str, Any] | None = None,
                 table: tuple[Layer, ...] = LAYERS) -> None:
        if lines <= 0 or samples <= 0:
            raise ValueError(f"lines and samples must be positive, not {lines} x {samples}")
        extra = dict(header_extra or {})
        clash = sorted(k for k in extra if k.strip().lower() in _OWNED_KEYS)
        if clash:
            raise ValueError(f"header_extra may not set keys the writer owns: {clash}")
        self.data_path = Path(data_path)
        self.header_path = _header_path(self.data_path)
        if self.header_path == self.data_path:
            raise ValueError(f"the data file may not end in .hdr: {self.data_path}")
        self.lines = lines
        self.samples = samples
        self.table = table
        self._extra = extra
        self._written = np.zeros(lines, bool)
        self._line_bytes = len(table) * samples * _DTYPE.itemsize
        self._fd: int | None = None
        try:
            self._fd = os.open(self.data_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.ftruncate(self._fd, lines * self._line_bytes)  # full size now: blocks in any order
        except OSError as exc:
            self.abort()
            raise OutputError(self.data_path, f"cannot create ENVI product ({exc.strerror})") from None

    def __enter__(self) -> EnviProductWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write_block(self, start: int, layers: Mapping[str, Any] | Layers) -> None:
        """Lines [start, start + n) of every layer, (n, samples) arrays by layer name (the
        probability NaN, the others their table no-value where none); a layer not given is
        -9999 throughout."""
        if self._fd is None:
            raise ValueError("the writer is closed")
        if not isinstance(layers, Layers):
            layers = prepare(layers, self.table)
        n, samples = layers.shape
        if samples != self.samples:
            raise ValueError(f"block has {samples} samples, the product {self.samples}")
        if start < 0 or start + n > self.lines:
            raise ValueError(f"lines [{start}, {start + n}) outside 0..{self.lines}")
        bil = np.empty((n, len(self.table), samples), _DTYPE)
        for band, (row, array) in enumerate(layers.rows()):
            bil[:, band, :] = np.where(row.no_value(array), NODATA, array)
        data = bil.tobytes()
        position = start * self._line_bytes
        try:
            done = 0
            while done < len(data):
                done += os.pwrite(self._fd, data[done:], position + done)
        except OSError as exc:
            raise OutputError(self.data_path, f"write failed ({exc.strerror})") from None
        self._written[start:start + n] = True

    def header(self) -> dict[str, Any]:
        """The header keys in file order: description, layout, nodata, band names, extras."""
        meta: dict[str, Any] = {"description": description(self.table)}
        meta.update(raster_header(self.lines, self.samples, len(self.table), np.float32, "bil"))
        meta["data ignore value"] = int(NODATA)
        meta["band names"] = band_names(self.table)
        meta.update(self._extra)
        return meta

    def close(self) -> None:
        """Finish: every line must have been written; then the header goes down."""
        if self._fd is None:
            return
        missing = np.flatnonzero(~self._written)
        if missing.size:
            self.abort()
            raise OutputError(self.data_path, f"{missing.size} of {self.lines} lines were never "
                                              f"written (first: {int(missing[0])})")
        try:
            os.close(self._fd)
            self._fd = None
            write_header(self.header_path, self.header())
        except OSError as exc:
            raise OutputError(self.header_path, f"cannot finish ENVI product ({exc.strerror})") from None

    def abort(self) -> None:
        """Close without a header and remove the partial binary."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.data_path.unlink(missing_ok=True)


def write_envi_product(data_path: Path | str, probability: np.ndarray, flag: np.ndarray,
                       header_extra: Mapping[str, Any] | None = None, *,
                       table: tuple[Layer, ...] = LAYERS, **layers: np.ndarray | None) -> None:
    """Write a whole (lines, samples) probability and flag, and the other layers of `table`
    by name (`buffer_distance=`, `shadow=`; a layer not given: -9999 throughout)."""
    write_envi_layers(data_path, prepare({"probability": probability, "flag": flag, **layers},
                                         table), header_extra)


def write_envi_layers(data_path: Path | str, layers: Layers,
                      header_extra: Mapping[str, Any] | None = None) -> None:
    """Write checked layers (`layers.prepare`) as the ENVI product."""
    lines, samples = layers.shape
    with EnviProductWriter(data_path, lines, samples, header_extra, layers.table) as writer:
        writer.write_block(0, layers)


def read_envi_product(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(flag uint8 with 255, probability float32 with NaN) where no value."""
    layers = read_envi_layers(path)
    return layers.flag, layers.probability


def read_envi_layers(path: Path | str, table: tuple[Layer, ...] = LAYERS) -> Layers:
    """Every band of the ENVI product, in the in-memory conventions: the writer's inverse.
    A band holding a value its layer may not hold is an OutputError."""
    try:
        header = read_header(path)
    except InputProductError as exc:
        raise OutputError(exc.path, exc.problem) from None
    if header.bands != len(table) or header.dtype.newbyteorder("=") != np.float32:
        raise OutputError(header.header_path, f"expected {len(table)} float32 bands, found "
                                              f"{header.bands} of {header.dtype}")
    with EnviReader(header) as reader:
        cube = reader.read_lines(0, header.lines, dtype=np.float32)
    no_value = np.zeros(cube.shape[:2], bool)
    for band, row in enumerate(table):
        if row.required:
            no_value |= cube[:, :, band] == NODATA
    arrays = {}
    for band, row in enumerate(table):
        values = cube[:, :, band]
        own = values == NODATA
        if not row.accepts(values[~own & ~no_value]).all():
            raise OutputError(header.data_path,
                              f"{row.band_name} band holds values {row.accepts_text}")
        arrays[row.name] = np.where(no_value | own, row.memory_fill, values).astype(row.dtype)
    return Layers(arrays, table)
