"""Which format an input is (SDS ENVI raster or LP DAAC netCDF granule), and its reader:
the header or granule description, the block reader, the location and GLT readers, and the
files that make up the input (for the provenance record).

The content decides: a file whose first bytes are HDF5's or netCDF-3's signature, or that is
named `.nc`, is read as a granule (so a truncated or mislabelled `.nc` gets the granule
reader's one-line diagnosis rather than "ENVI header not found"); anything else is ENVI.
One acquisition is read in one format: an ENVI radiance with a DAAC observation (or the
reverse) is refused, because nothing could then check that the two belong together.
"""

from __future__ import annotations

from pathlib import Path

from l2b_mask.errors import InputProductError
from l2b_mask.inputs.daac import (
    DaacGranule,
    DaacReader,
    open_granule,
    read_granule_glt,
    read_granule_location,
)
from l2b_mask.inputs.envi import EnviHeader, EnviReader, read_header, resolve_pair
from l2b_mask.inputs.glt import Glt, read_glt
from l2b_mask.inputs.location import LocationArrays, read_location

ENVI, DAAC = "envi", "daac"
_SIGNATURES = (b"\x89HDF\r\n\x1a\n", b"CDF")
_NETCDF_SUFFIXES = (".nc", ".nc4")

Raster = EnviHeader | DaacGranule


def is_netcdf(path: Path | str) -> bool:
    """Whether `path` is to be read as a netCDF granule: by its first bytes, else its suffix."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(8)
    except OSError:
        head = b""
    return head.startswith(_SIGNATURES) or p.suffix.lower() in _NETCDF_SUFFIXES


def input_format(radiance: Path | str, observation: Path | str) -> str:
    """`ENVI` or `DAAC` for the pair; mixing the two is an input error naming the granule."""
    rdn, obs = is_netcdf(radiance), is_netcdf(observation)
    if rdn == obs:
        return DAAC if rdn else ENVI
    granule, other = (radiance, observation) if rdn else (observation, radiance)
    raise InputProductError(granule, f"a netCDF granule given with the ENVI raster "
                                     f"{Path(other).name}: give the radiance and the "
                                     "observation in one format (both ENVI or both LP DAAC "
                                     "granules)")


def open_raster(path: Path | str) -> Raster:
    """The header of an ENVI raster or the description of a granule (any kind), checked."""
    return open_granule(path, None) if is_netcdf(path) else read_header(path)


def raster_reader(raster: Raster) -> EnviReader | DaacReader:
    """The block reader of either format: the same `read_lines` / `read_band`."""
    return DaacReader(raster) if isinstance(raster, DaacGranule) else EnviReader(raster)


def read_location_file(path: Path | str, shape: tuple[int, int] | None = None) -> LocationArrays:
    """The per-pixel location of an ENVI LOC raster or of a granule's `location` group, checked
    against the radiance's (lines, samples) `shape`."""
    return (read_granule_location if is_netcdf(path) else read_location)(path, shape)


def read_glt_file(path: Path | str, shape: tuple[int, int] | None = None) -> Glt:
    """The GLT of an ENVI GLT raster or of a granule's `location` group, every entry checked
    against a swath of (lines, samples) `shape`."""
    return (read_granule_glt if is_netcdf(path) else read_glt)(path, shape)


def input_files(path: Path | str) -> dict[str, Path]:
    """The files an input is made of: a granule is one (`granule`), an ENVI raster its
    `header` and its `data` (found beside each other, the header not parsed again)."""
    if is_netcdf(path):
        return {"granule": Path(path)}
    header, data = resolve_pair(path)
    return {"header": header, "data": data}
