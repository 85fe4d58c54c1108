"""What `l2b-mask` writes, in the format its output name asks for, and how it is published.

The output's extension picks the format: `.tif`/`.tiff` GeoTIFFs (the flag, and beside it
`_prob`, `_buffer`, `_shadow` as asked; on the GLT grid as COGs with `--ortho`), `.hdr`/`.img`
the ENVI product, `.nc` the netCDF product (both hold every layer). Every file is written into
a private scratch folder made inside the destination folder (`mkdtemp`: an unpredictable name,
created exclusively, mode 0700, so nothing there follows a planted link) and then renamed into
place all together: a run that fails at any point leaves every file of the previous result as
it was, and never a new mask beside an old probability.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l2b_mask.errors import OutputError, UsageError
from l2b_mask.inputs.glt import Glt
from l2b_mask.inputs.location import LocationArrays
from l2b_mask.products.layers import Layers

GEOTIFF, ENVI, NETCDF = "GeoTIFF", "ENVI", "netCDF"
FORMATS = {".tif": GEOTIFF, ".tiff": GEOTIFF, ".hdr": ENVI, ".img": ENVI, ".nc": NETCDF}
# `--layers` names -> the layer table's names (`l2b_mask.products.layers`)
LAYERS = {"buffer": "buffer_distance", "shadow": "shadow"}
# The tag after the stem of each layer's GeoTIFF (the flag's is the output name itself)
GEOTIFF_TAGS = {"probability": "prob", "buffer_distance": "buffer", "shadow": "shadow"}


def output_format(path: Path) -> str:
    """The format the output's extension names (UsageError for any other extension)."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"{path.name}: unknown output extension {path.suffix or '(none)'!r}: "
                         "use .tif (GeoTIFF), .hdr or .img (ENVI) or .nc (netCDF)")
    return fmt


def parse_layers(text: str | None) -> tuple[str, ...]:
    """`buffer,shadow` -> the table's ("buffer_distance", "shadow"); UsageError for others."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in (text or "").split(",") if n.strip()))
    unknown = [n for n in names if n not in LAYERS]
    if unknown:
        raise UsageError(f"--layers: unknown layer {unknown[0]!r} (choose from {', '.join(LAYERS)})")
    return tuple(LAYERS[n] for n in names)


@dataclass(frozen=True)
class Request:
    """What the command line asked to be written."""

    output: Path
    format: str
    proba: bool
    layers: tuple[str, ...]  # beyond the flag and probability, by the layer table's names
    ortho: bool

    def files(self) -> dict[str, Path]:
        """Each file the request writes at its final path: by file key for the ENVI and netCDF
        products, by layer name for the GeoTIFFs."""
        out = self.output
        if self.format == ENVI:
            return {"envi_data": out.with_suffix(".img"), "envi_header": out.with_suffix(".hdr")}
        if self.format == NETCDF:
            return {"netcdf": out}
        names = ["probability"] * self.proba + list(self.layers)
        return {"flag": out, **{name: out.with_name(f"{out.stem}_{GEOTIFF_TAGS[name]}{out.suffix}")
                                for name in names}}


@dataclass(frozen=True)
class Computed:
    """The checked layers (`layers.prepare`) and what the products carry besides them."""

    layers: Layers
    location: LocationArrays | None = None
    glt: Glt | None = None
    attrs: Mapping[str, Any] | None = None  # netCDF global attributes


def _geotiffs(request: Request, computed: Computed, paths: Mapping[str, Path]) -> None:
    """One single-band GeoTIFF per layer asked for, in instrument geometry or (`--ortho`) as a
    COG on the GLT grid; each with its layer's no-value and band name."""
    from l2b_mask.products.geotiff import write_geotiff
    from l2b_mask.products.ortho import write_ortho_layer

    layers = computed.layers
    for row, array in layers.rows():
        if row.name not in paths:
            continue
        if request.ortho:
            assert computed.glt is not None  # checked before any compute
            write_ortho_layer(paths[row.name], row, array, computed.glt)
        else:
            write_geotiff(paths[row.name], row.stored(array), row.fill, row.band_name)


def write_request(request: Request, computed: Computed, paths: Mapping[str, Path]) -> None:
    """Write every file of the request at `paths` (the scratch copies of `request.files()`)."""
    if request.format == ENVI:
        from l2b_mask.products.envi import write_envi_layers

        write_envi_layers(paths["envi_data"], computed.layers)
    elif request.format == NETCDF:
        from l2b_mask.products.netcdf import NetcdfExtras, write_netcdf_layers

        write_netcdf_layers(paths["netcdf"], computed.layers, NetcdfExtras(
            dict(computed.attrs or {}), location=computed.location, glt=computed.glt))
    else:
        _geotiffs(request, computed, paths)


class Staging:
    """A private scratch folder in the destination folder; `publish` renames its files into
    place all or nothing; `close` removes it (and any previous files it kept)."""

    def __init__(self, destination: Path) -> None:
        try:
            destination.mkdir(parents=True, exist_ok=True)
            self.folder = Path(tempfile.mkdtemp(prefix=".l2b-mask-", dir=destination))
        except OSError as exc:
            raise OutputError(destination, f"cannot create output folder ({exc.strerror})") from None

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def paths(self, files: Mapping[str, Path]) -> dict[str, Path]:
        """Where each final file is first written."""
        return {key: self.folder / path.name for key, path in files.items()}

    def publish(self, files: Mapping[str, Path]) -> None:
        """Every staged file over its final path; on any failure the previous files are put
        back and no new one stays (OutputError). A final path that is a link is replaced, the
        file it points to untouched."""
        staged = self.paths(files)
        kept: list[tuple[Path, Path]] = []  # (the previous file's copy in scratch, its place)
        placed: list[Path] = []
        try:
            for number, target in enumerate(files.values()):
                if target.is_dir() and not target.is_symlink():
                    raise OutputError(target, "is a folder")
                if target.is_symlink() or target.exists():
                    keep = self.folder / f".previous.{number}"
                    _keep(target, keep)
                    kept.append((keep, target))
            for key, target in files.items():
                staged[key].replace(target)
                placed.append(target)
        except OSError as exc:
            self._roll_back(kept, placed)
            raise OutputError(Path(exc.filename or self.folder), f"cannot publish the results "
                                                                  f"({exc.strerror})") from None
        except BaseException:  # OutputError, or an interruption half-way: the old files back
            self._roll_back(kept, placed)
            raise

    @staticmethod
    def _roll_back(kept: list[tuple[Path, Path]], placed: list[Path]) -> None:
        restored = {target for _, target in kept}
        for target in placed:
            if target not in restored:
                target.unlink(missing_ok=True)  # new, and made by this run
        for keep, target in kept:
            keep.replace(target)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _keep(target: Path, keep: Path) -> None:
    """A copy of the previous file under `keep` that costs no space: a hard link (the file
    stays in place meanwhile), or where the file system has none, the file itself moved."""
    try:
        os.link(target, keep, follow_symlinks=False)
    except OSError:
        target.replace(keep)
