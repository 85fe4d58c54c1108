"""The product's EMIT file stem, from the identity in the radiance's name (`l2b_mask.inputs.emit_names`),
or, for an LP DAAC radiance granule, the DAAC's own form of the name (`daac_names`).

The files of a product are the stem plus each row's suffix (`pge.sds.files`).
"""

from __future__ import annotations

import re
from pathlib import Path

from l2b_mask.inputs.daac_names import DaacName, parse_daac_name
from l2b_mask.inputs.emit_names import EmitIdentity, bare_name, parse_identity

__all__ = ["EmitIdentity", "daac_product_stem", "parse_identity", "product_stem"]

PRODUCT_LEVEL = "l2b"
PRODUCT_NAME = "mask"
DAAC_PRODUCT_PREFIX = "EMIT_L2B_MASK"

_VERSION = re.compile(r"\d{2}")
_BUILD = re.compile(r"\d{4}")


def product_stem(radiance_path: Path | str, product_version: str = "01",
                 build: str | None = None) -> str:
    """The base name of every product file of this acquisition.

    EMIT radiance: `<acq>_o<orbit>_s<scene>_l2b_mask_b<build>_v<product_version>`, the build
    being the radiance's unless `build` is given (EMIT stamps the build that made the file).
    LP DAAC radiance granule: `daac_product_stem`. Any other name: `<radiance name without
    .hdr/.img/.nc>_l2b_mask`, so local runs still work.
    """
    if not _VERSION.fullmatch(product_version):
        raise ValueError(f"product_version must be 2 digits, not {product_version!r}")
    if build is not None and not _BUILD.fullmatch(build):
        raise ValueError(f"build must be 4 digits, not {build!r}")
    daac = parse_daac_name(radiance_path)
    if daac is not None:
        return daac_product_stem(daac, product_version)
    identity = parse_identity(radiance_path)
    if identity is None:
        bare = bare_name(radiance_path)
        bare = bare[:-3] if bare.lower().endswith(".nc") else bare
        return f"{bare}_{PRODUCT_LEVEL}_{PRODUCT_NAME}"
    return "_".join([
        identity.flight_line, PRODUCT_LEVEL, PRODUCT_NAME,
        f"b{build or identity.build}", f"v{product_version}",
    ])


def daac_product_stem(radiance: DaacName, product_version: str = "01") -> str:
    """`EMIT_L2B_MASK_<0VV>_<YYYYMMDDTHHMMSS>_<orbit7>_<scene3>`: the LP DAAC's name for the
    product of an `EMIT_L1B_RAD_*` granule (its time, orbit and DAAC scene counter), which is
    also the product's UMM-G GranuleUR."""
    if not _VERSION.fullmatch(product_version):
        raise ValueError(f"product_version must be 2 digits, not {product_version!r}")
    stamp = radiance.start_time.strftime("%Y%m%dT%H%M%S")
    return f"{DAAC_PRODUCT_PREFIX}_0{product_version}_{stamp}_{radiance.orbit}_{radiance.scene}"
