"""ENVI rasters: header parsing, validation, block reads, and header writing.

Headers are parsed with `spectral`; the binary is read with explicit positioned reads of one
block of lines at a time, so memory stays bounded by the block whatever the scene length and
no page of the file stays mapped after its block is done.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

from l2b_mask.errors import InputProductError

# ENVI "data type" codes and the numpy types they name.
ENVI_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.uint8),
    2: np.dtype(np.int16),
    3: np.dtype(np.int32),
    4: np.dtype(np.float32),
    5: np.dtype(np.float64),
    12: np.dtype(np.uint16),
    13: np.dtype(np.uint32),
    14: np.dtype(np.int64),
    15: np.dtype(np.uint64),
}
ENVI_CODES: dict[np.dtype, int] = {v: k for k, v in ENVI_DTYPES.items()}
INTERLEAVES = ("bil", "bip", "bsq")
_BINARY_SUFFIXES = ("", ".img", ".dat", ".bin", ".raw")


def resolve_pair(path: Path | str) -> tuple[Path, Path]:
    """Return (header, binary) for a path to either one.

    EMIT names the pair `x.hdr` / `x.img`; plain ENVI also uses `x` / `x.hdr` and `x.img.hdr`.
    """
    p = Path(path)
    if p.suffix.lower() == ".hdr":
        header = p
        stem = str(p.with_suffix(""))
        candidates = [Path(stem + s) for s in _BINARY_SUFFIXES]
        binary = next((c for c in candidates if c.is_file()), candidates[0])
    else:
        binary = p
        candidates = [p.with_suffix(".hdr"), Path(str(p) + ".hdr")]
        header = next((c for c in candidates if c.is_file()), candidates[0])
    if not header.is_file():
        raise InputProductError(header, "ENVI header not found")
    if not binary.is_file():
        raise InputProductError(binary, "ENVI binary file not found beside its header")
    return header, binary


def _parse_header_text(header: Path) -> dict[str, Any]:
    from spectral.io import envi as spy_envi

    try:
        raw = spy_envi.read_envi_header(str(header))
    except Exception as exc:  # spectral raises several bare types for bad headers
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputProductError(header, f"unreadable ENVI header ({detail})") from None
    return {str(k).strip().lower(): v for k, v in raw.items()}


def _int_key(meta: Mapping[str, Any], key: str, header: Path, default: int | None = None) -> int:
    if key not in meta:
        if default is not None:
            return default
        raise InputProductError(header, f"ENVI header has no '{key}'")
    try:
        value = int(str(meta[key]).strip())
    except ValueError:
        raise InputProductError(header, f"ENVI header '{key}' is not an integer: {meta[key]!r}") from None
    return value


@dataclass(frozen=True)
class EnviHeader:
    """The facts of one ENVI raster that reading it needs, checked for consistency."""

    header_path: Path
    data_path: Path
    lines: int
    samples: int
    bands: int
    dtype: np.dtype  # with its byte order
    interleave: str
    offset: int
    meta: dict[str, Any] = field(repr=False)

    @property
    def data_type_code(self) -> int:
        return ENVI_CODES[self.dtype.newbyteorder("=")]

    @property
    def nodata(self) -> float | None:
        value = self.meta.get("data ignore value")
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if value is None:
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise InputProductError(
                self.header_path, f"'data ignore value' is not a number: {value!r}"
            ) from None

    def float_list(self, key: str) -> np.ndarray | None:
        """A numeric list key as float64, or None when absent."""
        value = self.meta.get(key)
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        try:
            return np.array([float(str(v).strip()) for v in items if str(v).strip()], float)
        except ValueError:
            raise InputProductError(self.header_path, f"'{key}' holds a value that is not a number") from None

    def string_list(self, key: str) -> list[str] | None:
        value = self.meta.get(key)
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        return [str(v).strip() for v in items]


def read_header(path: Path | str) -> EnviHeader:
    """Parse and validate the header of an ENVI raster given by either of its two paths."""
    header, binary = resolve_pair(path)
    meta = _parse_header_text(header)
    lines = _int_key(meta, "lines", header)
    samples = _int_key(meta, "samples", header)
    bands = _int_key(meta, "bands", header)
    for key, value in (("lines", lines), ("samples", samples), ("bands", bands)):
        if value <= 0:
            raise InputProductError(header, f"'{key}' must be positive, found {value}")
    code = _int_key(meta, "data type", header)
    if code not in ENVI_DTYPES:
        raise InputProductError(header, f"unsupported ENVI data type {code}")
    byte_order = _int_key(meta, "byte order", header, default=0)
    if byte_order not in (0, 1):
        raise InputProductError(header, f"'byte order' must be 0 or 1, found {byte_order}")
    dtype = ENVI_DTYPES[code].newbyteorder("<" if byte_order == 0 else ">")
    interleave = str(meta.get("interleave", "")).strip().lower()
    if interleave not in INTERLEAVES:
        raise InputProductError(header, f"unknown interleave {meta.get('interleave')!r} (bil, bip or bsq)")
    offset = _int_key(meta, "header offset", header, default=0)
    if offset < 0:
        raise InputProductError(header, f"'header offset' must not be negative, found {offset}")
    expected = offset + lines * samples * bands * dtype.itemsize
    actual = binary.stat().st_size
    if actual != expected:
        kind = "truncated" if actual < expected else "longer than its header says"
        raise InputProductError(
            binary,
            f"binary is {kind}: {actual} bytes, header implies {expected} "
            f"({lines} lines x {samples} samples x {bands} bands x {dtype.itemsize} bytes"
            f"{f' + {offset} offset' if offset else ''})",
        )
    return EnviHeader(header, binary, lines, samples, bands, dtype, interleave, offset, meta)


class LineReader:
    """What every input reader (ENVI, LP DAAC granule) shares: blocks of lines as C-contiguous
    (lines, samples, bands) arrays from `read_lines`, one band from them, and a context manager
    that closes the file."""

    lines: int

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError

    def read_lines(self, start: int, stop: int, bands: Sequence[int] | np.ndarray | None = None,
                   dtype: np.dtype | type = np.float32) -> np.ndarray:
        raise NotImplementedError

    def read_band(self, start: int, stop: int, band: int, dtype: np.dtype | type = np.float64) -> np.ndarray:
        """One band of lines [start, stop) as (lines, samples)."""
        return self.read_lines(start, stop, [band], dtype)[:, :, 0]

    def check_range(self, start: int, stop: int) -> None:
        if not 0 <= start < stop <= self.lines:
            raise ValueError(f"line range [{start}, {stop}) outside 0..{self.lines}")


class EnviReader(LineReader):
    """Reads blocks of lines of an ENVI raster as (lines, samples, bands) arrays.

    Pixel-major blocks are what the model consumes (one spectrum per pixel), so the
    interleave is resolved here once and nowhere else.
    """

    def __init__(self, header: EnviHeader) -> None:
        self.header = header
        self.lines = header.lines
        self._fd: int | None = None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _read_into(self, buffer: np.ndarray, position: int) -> np.ndarray:
        """Fill `buffer` (C-contiguous) with the file's bytes from `position`; returns it."""
        if self._fd is None:
            self._fd = os.open(self.header.data_path, os.O_RDONLY)
        view = memoryview(buffer).cast("B")
        done = 0
        while done < view.nbytes:
            got = os.preadv(self._fd, [view[done:]], position + done)
            if got == 0:
                raise InputProductError(self.header.data_path, "binary ended early while reading")
            done += got
        return buffer

    def read_lines(
        self, start: int, stop: int, bands: Sequence[int] | np.ndarray | None = None,
        dtype: np.dtype | type = np.float32,
    ) -> np.ndarray:
        """Lines [start, stop) as a C-contiguous (lines, samples, bands) array in `dtype`."""
        self.check_range(start, stop)
        h = self.header
        n = stop - start
        item = h.dtype.itemsize
        wanted = np.arange(h.bands) if bands is None else np.asarray(bands, dtype=np.intp)
        out = np.empty((n, h.samples, wanted.size), dtype)
        if h.interleave == "bsq":
            plane = h.lines * h.samples * item
            one = np.empty((n, h.samples), h.dtype)
            for j, b in enumerate(wanted):
                out[:, :, j] = self._read_into(one, h.offset + int(b) * plane + start * h.samples * item)
            return out
        line_bytes = h.samples * h.bands * item
        if h.interleave == "bil":
            cube = self._read_into(np.empty((n, h.bands, h.samples), h.dtype), h.offset + start * line_bytes)
            # one line at a time: the band selection and the transposition stay in cache
            for i in range(n):
                line = cube[i] if bands is None else cube[i].take(wanted, axis=0)
                np.copyto(out[i], line.T, casting="unsafe")
            return out
        cube = self._read_into(np.empty((n, h.samples, h.bands), h.dtype), h.offset + start * line_bytes)
        np.copyto(out, cube if bands is None else cube[:, :, wanted], casting="unsafe")
        return out


# ---------------------------------------------------------------------------------------------
# Writing headers


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        if any(c in value for c in "{}"):
            raise ValueError(f"ENVI header values cannot hold braces: {value!r}")
        return "{" + value + "}" if "," in value else value
    if isinstance(value, Iterable):
        return "{" + ", ".join(_format_scalar(v) for v in value) + "}"
    return _format_scalar(value)


def _format_scalar(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, float | np.floating):
        # shortest text that reads back as the same value of its own precision
        return np.format_float_positional(value, trim="-")
    return str(value)


def format_header(meta: Mapping[str, Any]) -> str:
    """ENVI header text; keys in the order given, strings with commas braced."""
    lines = ["ENVI"]
    for key, value in meta.items():
        if value is None:
            continue
        if key == "description" and isinstance(value, str):
            if any(c in value for c in "{}"):
                raise ValueError(f"ENVI description cannot hold braces: {value!r}")
            lines.append(f"description = {{{value}}}")
        else:
            lines.append(f"{key} = {_format_value(value)}")
    return "\n".join(lines) + "\n"


def raster_header(
    lines: int, samples: int, bands: int, dtype: np.dtype | type, interleave: str = "bil",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The structural keys of an ENVI raster of `dtype` (its byte order), followed by `extra`."""
    dt = np.dtype(dtype)
    code = ENVI_CODES.get(dt.newbyteorder("="))
    if code is None:
        raise ValueError(f"no ENVI data type for {dt}")
    meta: dict[str, Any] = {
        "samples": samples,
        "lines": lines,
        "bands": bands,
        "header offset": 0,
        "file type": "ENVI Standard",
        "data type": code,
        "interleave": interleave,
        "byte order": 1 if dt.byteorder == ">" or (dt.byteorder == "=" and not np.little_endian) else 0,
    }
    meta.update(extra or {})
    return meta


def write_header(path: Path | str, meta: Mapping[str, Any]) -> None:
    Path(path).write_text(format_header(meta))
