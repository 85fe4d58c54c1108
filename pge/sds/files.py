"""Every file of one product: the data products' table (`l2b_mask.products.table`) and the
records the SDS adds (metadata, granule record, STAC Item, provenance, log), named from one stem.

The run configuration's output switches, the PGE's write and publish steps, the granule
record's file list and the campaign's completeness check all walk `PRODUCT_FILES`, so a new
file is one row and never a sixth edit. Importing this module loads no torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from l2b_mask.products.table import DATA_PRODUCTS


@dataclass(frozen=True)
class ProductFile:
    """One file of the product."""

    key: str
    suffix: str
    switch: str | None  # the output option that turns it on; None: always written
    format: str  # as the granule record names it
    product: str  # the row of `DATA_PRODUCTS` that writes it, or "record"


RECORD = "record"
PRODUCT_FILES: tuple[ProductFile, ...] = (
    *(ProductFile(key, suffix, row.switch, fmt, row.key)
      for row in DATA_PRODUCTS for (key, suffix), fmt in zip(row.files, row.formats, strict=True)),
    ProductFile("metadata", "_metadata.json", None, "JSON", RECORD),
    ProductFile("ummg", ".cmr.json", "write_ummg", "JSON", RECORD),
    ProductFile("stac", "_stac.json", None, "JSON", RECORD),
    ProductFile("provenance", "_provenance.json", None, "JSON", RECORD),
    ProductFile("log", "_pge.log", None, "ASCII", RECORD),
)
FILE_KEYS = tuple(f.key for f in PRODUCT_FILES)
RECORD_KEYS = tuple(f.key for f in PRODUCT_FILES if f.product == RECORD)
# Written last, after every other file is checksummed: they list or narrate the others.
TRAILING = ("provenance", "log")


@dataclass(frozen=True)
class ProductFiles:
    """The paths of every file of one product, by file key (`files.netcdf`, `files["log"]`)."""

    paths: dict[str, Path]

    def __getattr__(self, key: str) -> Path:
        try:
            return self.__dict__["paths"][key]
        except KeyError:
            raise AttributeError(key) from None

    def __getitem__(self, key: str) -> Path:
        return self.paths[key]

    def __iter__(self) -> Iterator[Path]:
        return iter(self.paths.values())

    @property
    def folder(self) -> Path:
        return self.paths["log"].parent

    def all(self) -> list[Path]:
        """Every path, in table order (for moving, checksumming or cleaning up)."""
        return list(self.paths.values())

    def as_dict(self) -> dict[str, Path]:
        return dict(self.paths)


def product_files(stem: str, folder: Path | str | None = None) -> ProductFiles:
    """The product paths for `stem`, inside `folder` (bare names when no folder)."""
    if not stem or "/" in stem or stem in (".", ".."):
        raise ValueError(f"not a usable file stem: {stem!r}")
    base = Path(folder) if folder is not None else Path()
    return ProductFiles({f.key: base / f"{stem}{f.suffix}" for f in PRODUCT_FILES})


def enabled_keys(switches: dict[str, bool]) -> list[str]:
    """The file keys that output switches (`{"write_envi": True, ...}`) turn on, in table
    order, provenance and log aside: what a complete product of those settings holds."""
    return [f.key for f in PRODUCT_FILES
            if f.key not in TRAILING and (f.switch is None or switches[f.switch])]


def formats() -> dict[str, str]:
    """The granule record's format of each file suffix."""
    return {f.suffix: f.format for f in PRODUCT_FILES}
