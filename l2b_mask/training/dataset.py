"""Labelled spectra in HDF5 files, read by chunks and split by scene.

The published data set is 7.1 million spectra (7.7 GB of float32): nothing here holds a file
whole. Each file has the datasets `spectra` (N, B) TOA reflectance already reduced to the
model's bands, `labels` (N,) 0 clear / 1 cloud / 2 cloud shadow, `fids` (N,) the scene id of
each spectrum, and the file attribute `bands` (B,) band centres in nm. A split (train or test)
is a list of scene ids: spectra are never split one by one, because neighbouring pixels of a
scene are near-duplicates. Spectra with a NaN or Inf are skipped and counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from l2b_mask.errors import InputProductError, UsageError
from l2b_mask.spec import ModelSpec

LABEL_CLEAR, LABEL_CLOUD, LABEL_SHADOW = 0, 1, 2
LABELS = (LABEL_CLEAR, LABEL_CLOUD, LABEL_SHADOW)
REQUIRED = ("spectra", "labels", "fids")
#: rows read at once: 1024 x 268 float32 is 1.1 MB
BLOCK_ROWS = 1024
#: blocks mixed in one shuffle window: 16 x 1024 spectra, 17.6 MB, whatever the file size
SHUFFLE_BLOCKS = 16
#: band centres of two files agree within this (nm)
BAND_TOLERANCE_NM = 1e-3
#: EMIT's first and last band centres (nm): a file's bands reach them but for drop ranges
EMIT_BAND_SPAN_NM = (381.0, 2493.2)
#: a stretch without band or drop range longer than this many band spacings lost a band
MISSING_BAND_SLACK = 1.05


def cloud_target(labels: np.ndarray) -> np.ndarray:
    """1 for cloud, 0 for clear and for cloud shadow, as the published training and test do."""
    return (np.asarray(labels) == LABEL_CLOUD).astype(np.int64)


def read_fid_list(path: Path | str) -> frozenset[str]:
    """Scene ids, one per line (blank lines and '#' comments ignored)."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise InputProductError(p, "scene id list not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputProductError(p, f"scene id list unreadable ({exc})") from None
    fids = frozenset(s for line in text.splitlines() if (s := line.split("#")[0].strip()))
    if not fids:
        raise InputProductError(p, "scene id list holds no scene id")
    return fids


def _decode(raw: np.ndarray) -> np.ndarray:
    """Scene ids as str, from fixed-length bytes or variable-length strings."""
    if raw.dtype.kind == "S":
        return np.char.strip(raw.astype("U"))
    return np.array([(v.decode() if isinstance(v, bytes) else str(v)).strip() for v in raw],
                    dtype=str)


@dataclass(frozen=True)
class DatasetFile:
    """One opened labelled HDF5 file whose layout has been checked."""

    path: Path
    handle: h5py.File
    rows: int
    bands_nm: np.ndarray

    def _rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of one dataset; a damaged chunk is this file's input error."""
        try:
            return np.asarray(self.handle[name][start:stop])
        except (OSError, RuntimeError, ValueError) as exc:
            raise InputProductError(self.path, f"dataset {name} rows {start}-{stop} unreadable "
                                               f"({' '.join(str(exc).split())})") from None

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Float32 spectra and the labels of rows [start, stop); labels outside 0/1/2 refused."""
        spectra = self._rows("spectra", start, stop).astype(np.float32, copy=False)
        labels = self._rows("labels", start, stop)
        bad = ~np.isin(labels, LABELS)
        if bad.any():
            row = start + int(np.flatnonzero(bad)[0])
            raise InputProductError(self.path, f"label {int(labels[bad][0])} at row {row} is not "
                                    "0 (clear), 1 (cloud) or 2 (shadow)")
        return spectra, labels.astype(np.uint8)

    def fids(self, start: int, stop: int) -> np.ndarray:
        return _decode(self._rows("fids", start, stop))


def open_dataset_file(path: Path | str) -> DatasetFile:
    """Open and check one file: the three datasets, the `bands` attribute, agreeing shapes."""
    p = Path(path)
    if not p.is_file():
        raise InputProductError(p, "labelled data set not found")
    try:
        handle = h5py.File(p, "r")
    except OSError as exc:
        raise InputProductError(p, f"not a readable HDF5 file ({exc})") from None
    try:
        missing = [name for name in REQUIRED if not isinstance(handle.get(name), h5py.Dataset)]
        if missing:
            raise InputProductError(p, f"lacks the dataset(s) {', '.join(missing)}")
        if "bands" not in handle.attrs:
            raise InputProductError(p, "lacks the file attribute 'bands' (band centres, nm)")
        spectra, labels, fids = (handle[n] for n in REQUIRED)
        bands = np.asarray(handle.attrs["bands"], dtype=np.float64).reshape(-1)
        if spectra.ndim != 2:
            raise InputProductError(p, f"spectra must be (N, bands), found shape {spectra.shape}")
        n, b = spectra.shape
        if labels.shape != (n,) or fids.shape != (n,):
            raise InputProductError(p, f"shapes disagree: spectra {spectra.shape}, labels "
                                       f"{labels.shape}, fids {fids.shape}")
        if bands.shape != (b,):
            raise InputProductError(p, f"attribute bands has {bands.size} values for {b} "
                                       "spectral bands")
        if spectra.dtype.kind != "f" or labels.dtype.kind not in "iu":
            raise InputProductError(p, f"spectra must be float and labels integer, found "
                                       f"{spectra.dtype} and {labels.dtype}")
        if not (np.isfinite(bands).all() and np.all(np.diff(bands) > 0)):
            raise InputProductError(p, "attribute bands is not finite and strictly increasing")
    except (OSError, RuntimeError) as exc:  # damaged metadata: h5py's words, this file's name
        handle.close()
        raise InputProductError(p, f"damaged HDF5 file ({' '.join(str(exc).split())})") from None
    except BaseException:
        handle.close()
        raise
    return DatasetFile(p, handle, n, bands)


def check_bands(files: list[DatasetFile], spec: ModelSpec) -> np.ndarray:
    """The band centres all files share, none of them in the specification's drop ranges.

    The specification defines the model's bands as every band outside its drop ranges, so a
    file reduced for another specification (or not reduced) shows bands inside them.
    """
    first = files[0]
    for f in files[1:]:
        if f.bands_nm.shape != first.bands_nm.shape or not np.allclose(
                f.bands_nm, first.bands_nm, rtol=0.0, atol=BAND_TOLERANCE_NM):
            raise InputProductError(f.path, f"band centres differ from those of {first.path}")
    for f in files:
        for lo, hi in spec.drop_ranges_nm:
            inside = (f.bands_nm >= lo) & (f.bands_nm <= hi)
            if inside.any():
                raise InputProductError(
                    f.path, f"{int(inside.sum())} band(s) (first {f.bands_nm[inside][0]:.2f} nm) "
                            f"lie in the drop range {lo:g}-{hi:g} nm of model specification "
                            f"{spec.path}: not reduced to this model's bands")
    gap = missing_bands(first.bands_nm, spec.drop_ranges_nm)
    if gap is not None:
        raise InputProductError(first.path, f"{first.bands_nm.size} bands, with band(s) missing "
                                            f"{gap} outside the drop ranges of model "
                                            f"specification {spec.path}: not this model's bands")
    return first.bands_nm


def missing_bands(bands_nm: np.ndarray, drop_ranges_nm: tuple[tuple[float, float], ...]
                  ) -> str | None:
    """Where EMIT bands are missing from `bands_nm` that no drop range removed, in words, or
    None.

    EMIT's grid has a band every ~7.4 nm (`step`, from the file's own spacing) from the first
    to the last of `EMIT_BAND_SPAN_NM`: any stretch longer than `MISSING_BAND_SLACK` steps that
    holds no band of the file and lies in no drop range held a band that is missing.
    """
    if bands_nm.size < 2:
        return None
    d = np.diff(bands_nm)
    step = float(np.median(d[d < 1.5 * d.min()]))
    slack = MISSING_BAND_SLACK * step
    first, last = EMIT_BAND_SPAN_NM
    points = [first - step, *(float(b) for b in bands_nm), last + step]
    ranges = sorted(drop_ranges_nm)
    for a, b in zip(points[:-1], points[1:], strict=True):
        covered = a  # up to here, a band of the file or a drop range accounts for the grid
        for lo, hi in ranges:
            if hi <= a or lo >= b:
                continue
            if lo - covered > slack:
                return f"between {covered:.2f} and {lo:.2f} nm"
            covered = max(covered, hi)
        if b - covered > slack:
            return f"between {covered:.2f} and {b:.2f} nm"
    return None


@dataclass(frozen=True)
class Split:
    """The rows of each file whose scene id is in one list."""

    fid_list: Path
    masks: tuple[np.ndarray, ...]  # one bool per row, per file

    @property
    def rows(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks))


class LabelledData:
    """The labelled files of one run, opened and checked together; close() when done."""

    def __init__(self, paths: list[Path], spec: ModelSpec, block_rows: int = BLOCK_ROWS) -> None:
        if not paths:
            raise UsageError("no labelled data set given")
        self.block_rows = block_rows
        self.files: list[DatasetFile] = []
        try:
            for p in paths:
                self.files.append(open_dataset_file(p))
            self.bands_nm = check_bands(self.files, spec)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for f in self.files:
            f.handle.close()

    def __enter__(self) -> LabelledData:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def split(self, fid_list: Path | str) -> Split:
        """Select the rows of the listed scenes, reading the ids by blocks; refuse an empty
        selection."""
        wanted = np.array(sorted(read_fid_list(fid_list)), dtype=str)
        masks = []
        for f in self.files:
            mask = np.zeros(f.rows, bool)
            for start in range(0, f.rows, self.block_rows):
                stop = min(start + self.block_rows, f.rows)
                mask[start:stop] = np.isin(f.fids(start, stop), wanted)
            masks.append(mask)
        split = Split(Path(fid_list), tuple(masks))
        if split.rows == 0:
            names = ", ".join(str(f.path) for f in self.files)
            raise InputProductError(fid_list, f"selects no spectrum of {names}")
        return split

    def check_finite(self, split: Split) -> None:
        """Refuse a split whose every spectrum holds a NaN or Inf, before any training or
        evaluation: reads blocks until the first finite spectrum (one block, normally)."""
        stream = self.stream(split)
        for spectra, _ in stream.blocks_in_order():
            if len(spectra):
                return
        names = ", ".join(str(f.path) for f in self.files)
        raise InputProductError(split.fid_list, f"every spectrum it selects of {names} holds a "
                                                "NaN or Inf: nothing to train or test on")

    def check_disjoint(self, train: Split, test: Split) -> None:
        """Refuse a scene in both lists: the test would measure memorised scenes."""
        shared = sum(int((a & b).sum()) for a, b in zip(train.masks, test.masks, strict=True))
        if shared:
            raise InputProductError(test.fid_list, f"shares scenes with {train.fid_list} "
                                                   f"({shared} spectra in both)")

    def stream(self, split: Split, shuffle_blocks: int = SHUFFLE_BLOCKS) -> SpectraStream:
        return SpectraStream(self, split, shuffle_blocks)


class SpectraStream:
    """Passes over the finite spectra of one split, in bounded memory.

    `batches(size, rng)` shuffles: the blocks of the split in a random order, `shuffle_blocks`
    of them mixed at a time. Given the generator's seed the batches are always the same, which
    is what lets an interrupted training resume exactly. `skipped` counts the spectra with a
    NaN or Inf of the last pass.
    """

    def __init__(self, data: LabelledData, split: Split, shuffle_blocks: int) -> None:
        self.data, self.split, self.shuffle_blocks = data, split, max(1, shuffle_blocks)
        self.skipped = 0
        r = data.block_rows
        self.blocks = [(i, s) for i, m in enumerate(split.masks)
                       for s in range(0, m.size, r) if m[s:s + r].any()]

    def _read(self, block: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        i, start = block
        f = self.data.files[i]
        stop = min(start + self.data.block_rows, f.rows)
        spectra, labels = f.read(start, stop)
        selected = self.split.masks[i][start:stop]
        finite = np.isfinite(spectra).all(axis=1)
        self.skipped += int(np.count_nonzero(selected & ~finite))
        keep = selected & finite  # not in place: the split's masks stay as selected
        return spectra[keep], labels[keep]

    def blocks_in_order(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(spectra, labels) of each block in file order: for evaluation."""
        self.skipped = 0
        for block in self.blocks:
            yield self._read(block)

    def batches(self, size: int, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Shuffled (spectra, labels) batches of `size` rows (the last one of a pass smaller)."""
        self.skipped = 0
        order = [self.blocks[k] for k in rng.permutation(len(self.blocks))]
        carry_x = np.empty((0, self.data.bands_nm.size), np.float32)
        carry_y = np.empty(0, np.uint8)
        for w in range(0, len(order), self.shuffle_blocks):
            parts = [self._read(b) for b in order[w:w + self.shuffle_blocks]]
            x = np.concatenate([carry_x] + [p[0] for p in parts])
            y = np.concatenate([carry_y] + [p[1] for p in parts])
            del parts
            perm = rng.permutation(len(y))
            x, y = x[perm], y[perm]
            full = len(y) // size * size
            for s in range(0, full, size):
                yield x[s:s + size], y[s:s + size]
            # Copies: a view would keep this whole window alive while the next one is read.
            carry_x, carry_y = x[full:].copy(), y[full:].copy()
        if len(carry_y):
            yield carry_x, carry_y
