"""The product's EMIT file stem, from the identity in the radiance's name (`l2b_mask.inputs.emit_names`).

The files of a product are the stem plus each row's suffix (`pge.sds.files`).
"""

from __future__ import annotations

import re
from pathlib import Path

from l2b_mask.inputs.emit_names import EmitIdentity, bare_name, parse_identity

__all__ = ["EmitIdentity", "parse_identity", "product_stem"]

PRODUCT_LEVEL = "l2b"
PRODUCT_NAME = "mask"

_VERSION = re.compile(r"\d{2}")
_BUILD = re.compile(r"\d{4}")


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
        return f"{bare_name(radiance_path)}_{PRODUCT_LEVEL}_{PRODUCT_NAME}"
    return "_".join([
        identity.flight_line, PRODUCT_LEVEL, PRODUCT_NAME,
        f"b{build or identity.build}", f"v{product_version}",
    ])
