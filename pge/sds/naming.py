"""EMIT file names: the identity of an acquisition in an EMIT name, and the product's stem.

The files of a product are the stem plus each row's suffix (`pge.sds.files`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

PRODUCT_LEVEL = "l2b"
PRODUCT_NAME = "mask"

# emit<YYYYMMDD>t<HHMMSS>_o<orbit5>_s<scene3>_<level>_<prod>_b<build4>_v<ver2>
# The level is matched loosely (l1b, l2a, ...) so an L2A input still yields an identity.
_EMIT_NAME = re.compile(
    r"(?P<acq>emit(?P<stamp>\d{8}t\d{6}))"
    r"_o(?P<orbit>\d{5})_s(?P<scene>\d{3})"
    r"_(?P<level>l\d[a-z]?)_(?P<prod>[a-z0-9]+)"
    r"_b(?P<build>\d{4})_v(?P<version>\d{2})"
)
_VERSION = re.compile(r"\d{2}")
_BUILD = re.compile(r"\d{4}")
_STRIPPED_SUFFIXES = (".hdr", ".img")


@dataclass(frozen=True)
class EmitIdentity:
    """Who an acquisition is, as its EMIT file name says."""

    acquisition_id: str  # "emit20240302t005829"
    start_time: datetime  # aware, UTC
    orbit: str  # 5 digits, as in the name (the short orbit)
    scene: str  # 3 digits (orbit segment)
    build: str  # 4 digits
    version: str  # 2 digits

    @property
    def flight_line(self) -> str:
        """`<acq>_o<orbit>_s<scene>`: the 31 characters EMIT puts in netCDF `flight_line`."""
        return f"{self.acquisition_id}_o{self.orbit}_s{self.scene}"


def _bare_name(path: Path | str) -> str:
    """The file name without `.hdr` and `.img` (either or both, as in `x.img.hdr`)."""
    name = Path(path).name
    for suffix in _STRIPPED_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def parse_identity(path: Path | str) -> EmitIdentity | None:
    """The identity in an EMIT product name, or None when the name is not one.

    A name that looks right but holds an impossible date (month 13) is not an EMIT name.
    """
    match = _EMIT_NAME.fullmatch(_bare_name(path))
    if match is None:
        return None
    try:
        start = datetime.strptime(match["stamp"], "%Y%m%dt%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return EmitIdentity(
        acquisition_id=match["acq"],
        start_time=start,
        orbit=match["orbit"],
        scene=match["scene"],
        build=match["build"],
        version=match["version"],
    )


def product_stem(radiance_path: Path | str, product_version: str = "01",
                 build: str | None = None) -> str:
    """The base name of every product file of this acquisition.

    EMIT radiance: `<acq>_o<orbit>_s<scene>_l2b_mask_b<build>_v<product_version>`, the build
    being the radiance's unless `build` is given (EMIT stamps the build that made the file).
    Any other name: `<radiance name without .hdr/.img>_l2b_mask`, so local runs still work.
    """
    if not _VERSION.fullmatch(product_version):
        raise ValueError(f"product_version must be 2 digits, not {product_version!r}")
    if build is not None and not _BUILD.fullmatch(build):
        raise ValueError(f"build must be 4 digits, not {build!r}")
    identity = parse_identity(radiance_path)
    if identity is None:
        return f"{_bare_name(radiance_path)}_{PRODUCT_LEVEL}_{PRODUCT_NAME}"
    return "_".join([
        identity.flight_line, PRODUCT_LEVEL, PRODUCT_NAME,
        f"b{build or identity.build}", f"v{product_version}",
    ])
