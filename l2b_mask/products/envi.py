"""The ENVI product: 4-band float32 BIL: 1 the cloud flag, 2 the cloud probability, 3 the cloud
buffer distance (pixels; 0 cloud, -1 beyond reach), 4 the cloud shadow flag (1 shadow, 0 not).

Float32 for both bands keeps the EMIT working-product convention (float bands, -9999 where a
pixel has no value) so EMIT tools and GDAL read it like every other EMIT ENVI product.
Blocks of lines are written as inference produces them; the header is written last, once
every line is on disk, so a header never describes a binary that is incomplete.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from l2b_mask.errors import InputProductError, OutputError
from l2b_mask.inputs.envi import EnviReader, raster_header, read_header, write_header
from l2b_mask.nodata import FLAG_NO_VALUE, FLOAT_NO_VALUE

NODATA = FLOAT_NO_VALUE
BAND_NAMES = ("Cloud Flag", "Cloud Probability", "Cloud Buffer Distance", "Cloud Shadow Flag")
DESCRIPTION = ("EMIT L2B cloud mask (SpecTf): cloud flag, cloud probability, cloud buffer "
               "distance, cloud shadow flag")
SHADOW_VALUES = (0, 1)  # not shadow, shadow; FLAG_NO_VALUE where none (or no shadow made)
# The buffer distance's special values; every other value with a value is a distance > 0.
BUFFER_CLOUD, BUFFER_BEYOND_REACH = 0.0, -1.0
_DTYPE = np.dtype("<f4")
# Keys the writer owns; taking them from `header_extra` would let a caller corrupt the layout.
_OWNED_KEYS = frozenset({
    "description", "samples", "lines", "bands", "header offset", "file type", "data type",
    "interleave", "byte order", "data ignore value", "band names",
})


def check_pair(probability: np.ndarray, flag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated copies: (float32 probability with NaN, uint8 flag with 255) where no value.

    A pixel has no value when either input says so (NaN probability or flag 255); both
    outputs then say it, so the two bands or variables can never disagree.
    """
    probability = np.asarray(probability)
    flag = np.asarray(flag)
    if probability.ndim != 2 or probability.shape != flag.shape:
        raise ValueError(
            f"probability {probability.shape} and flag {flag.shape} must be the same 2-D shape"
        )
    if not np.issubdtype(probability.dtype, np.floating):
        raise ValueError(f"probability must be floating point, not {probability.dtype}")
    if not (np.issubdtype(flag.dtype, np.integer) or flag.dtype == np.bool_):
        raise ValueError(f"flag must be an integer array, not {flag.dtype}")
    prob = probability.astype(np.float32, copy=True)
    no_value = np.isnan(prob) | (flag == FLAG_NO_VALUE)
    bad_flag = ~no_value & (flag != 0) & (flag != 1)
    if bad_flag.any():
        raise ValueError(f"flag holds values other than 0, 1 and {FLAG_NO_VALUE}: "
                         f"{np.unique(np.asarray(flag)[bad_flag])[:5].tolist()}")
    valid = prob[~no_value]
    if valid.size and not (np.isfinite(valid).all() and valid.min() >= 0.0 and valid.max() <= 1.0):
        raise ValueError("probability holds values outside [0, 1] (use NaN for 'no value')")
    out_flag = flag.astype(np.uint8)
    out_flag[no_value] = FLAG_NO_VALUE
    prob[no_value] = np.nan
    return prob, out_flag


def check_beyond(flag: np.ndarray, buffer_distance: np.ndarray | None,
                 shadow: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Validated copies of the buffer distance (float32, -9999 no value) and the shadow flag
    (uint8, 255 no value) for a checked `flag`: a layer not given has no value anywhere, and
    a pixel without a flag value has none in either layer."""
    no_value = flag == FLAG_NO_VALUE
    if buffer_distance is None:
        buffer = np.full(flag.shape, NODATA, np.float32)
    else:
        buffer = np.array(buffer_distance, np.float32)
        if buffer.shape != flag.shape:
            raise ValueError(f"buffer distance {buffer.shape} differs from the flag's {flag.shape}")
        ok = (buffer == NODATA) | (buffer == BUFFER_BEYOND_REACH) | (buffer >= BUFFER_CLOUD)
        if not (ok & np.isfinite(buffer)).all():
            raise ValueError("buffer distance holds values other than >= 0, -1 and -9999")
    if shadow is None:
        out_shadow = np.full(flag.shape, FLAG_NO_VALUE, np.uint8)
    else:
        out_shadow = np.array(shadow, np.uint8)
        if out_shadow.shape != flag.shape or not np.array_equal(out_shadow, shadow):
            raise ValueError("shadow must be an integer array of the flag's shape")
        if not np.isin(out_shadow, (*SHADOW_VALUES, FLAG_NO_VALUE)).all():
            raise ValueError(f"shadow holds values other than 0, 1 and {FLAG_NO_VALUE}")
    buffer[no_value] = NODATA
    out_shadow[no_value] = FLAG_NO_VALUE
    return buffer, out_shadow


def _header_path(data_path: Path) -> Path:
    return data_path.with_suffix(".hdr")


class EnviProductWriter:
    """Writes the ENVI product block by block; `close()` checks coverage and writes the header.

    Blocks may come in any order (positioned writes), but every line must be written once
    before `close()`. Used as a context manager, an exception discards the partial binary.
    """

    def __init__(self, data_path: Path | str, lines: int, samples: int,
                 header_extra: Mapping[str, Any] | None = None) -> None:
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
        self._extra = extra
        self._written = np.zeros(lines, bool)
        self._line_bytes = len(BAND_NAMES) * samples * _DTYPE.itemsize
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

    def write_block(self, start: int, probability_block: np.ndarray, flag_block: np.ndarray,
                    buffer_block: np.ndarray | None = None,
                    shadow_block: np.ndarray | None = None) -> None:
        """Lines [start, start + n) from (n, samples) probability (NaN), flag (255), buffer
        distance (-9999) and shadow (255); a layer not given is -9999 throughout."""
        if self._fd is None:
            raise ValueError("the writer is closed")
        prob, flag = check_pair(probability_block, flag_block)
        buffer, shadow = check_beyond(flag, buffer_block, shadow_block)
        n, samples = prob.shape
        if samples != self.samples:
            raise ValueError(f"block has {samples} samples, the product {self.samples}")
        if start < 0 or start + n > self.lines:
            raise ValueError(f"lines [{start}, {start + n}) outside 0..{self.lines}")
        bil = np.empty((n, len(BAND_NAMES), samples), _DTYPE)
        bil[:, 0, :] = flag
        bil[:, 1, :] = prob
        bil[:, 2, :] = buffer
        bil[:, 3, :] = np.where(shadow == FLAG_NO_VALUE, NODATA, shadow)
        bil[np.broadcast_to((flag == FLAG_NO_VALUE)[:, None, :], bil.shape)] = NODATA
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
        meta: dict[str, Any] = {"description": DESCRIPTION}
        meta.update(raster_header(self.lines, self.samples, len(BAND_NAMES), np.float32, "bil"))
        meta["data ignore value"] = int(NODATA)
        meta["band names"] = list(BAND_NAMES)
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
                       buffer_distance: np.ndarray | None = None,
                       shadow: np.ndarray | None = None) -> None:
    """Write a whole (lines, samples) probability, flag, buffer distance and shadow as the ENVI
    product (a layer not given: -9999 throughout)."""
    probability = np.asarray(probability)
    if probability.ndim != 2:
        raise ValueError(f"probability must be (lines, samples), not {probability.shape}")
    lines, samples = probability.shape
    with EnviProductWriter(data_path, lines, samples, header_extra) as writer:
        writer.write_block(0, probability, flag, buffer_distance, shadow)


def read_envi_product(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(flag uint8 with 255, probability float32 with NaN) where no value."""
    layers = read_envi_layers(path)
    return layers.flag, layers.probability


@dataclass(frozen=True)
class Layers:
    """Every layer of a product as read back, in the writers' in-memory conventions."""

    flag: np.ndarray  # uint8, 255 no value
    probability: np.ndarray  # float32, NaN no value
    buffer_distance: np.ndarray  # float32, -9999 no value
    shadow: np.ndarray  # uint8, 255 no value


def read_envi_layers(path: Path | str) -> Layers:
    """The four bands of the ENVI product: the writer's inverse."""
    try:
        header = read_header(path)
    except InputProductError as exc:
        raise OutputError(exc.path, exc.problem) from None
    if header.bands != len(BAND_NAMES) or header.dtype.newbyteorder("=") != np.float32:
        raise OutputError(header.header_path, f"expected {len(BAND_NAMES)} float32 bands, found "
                                              f"{header.bands} of {header.dtype}")
    with EnviReader(header) as reader:
        cube = reader.read_lines(0, header.lines, dtype=np.float32)
    flag_band, prob = cube[:, :, 0], np.ascontiguousarray(cube[:, :, 1])
    no_value = (flag_band == NODATA) | (prob == NODATA)
    if not np.isin(flag_band[~no_value], (0.0, 1.0)).all():
        raise OutputError(header.data_path, "Cloud Flag band holds values other than 0, 1 and -9999")
    shadow_band = cube[:, :, 3]
    if not np.isin(shadow_band, (0.0, 1.0, NODATA)).all():
        raise OutputError(header.data_path,
                          "Cloud Shadow Flag band holds values other than 0, 1 and -9999")
    flag = np.where(no_value, FLAG_NO_VALUE, flag_band).astype(np.uint8)
    prob[no_value] = np.nan
    shadow = np.where(shadow_band == NODATA, FLAG_NO_VALUE, shadow_band).astype(np.uint8)
    return Layers(flag, prob, np.ascontiguousarray(cube[:, :, 2]), shadow)
