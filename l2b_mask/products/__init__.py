"""Product writers and readers (ENVI, netCDF), product names, and scene statistics.

Every writer takes the same in-memory pair, a (lines, samples) float32 probability with NaN
and a uint8 flag with 255 where a pixel has no value, so formats can be added independently.
"""

from l2b_mask.products.envi import (
    EnviProductWriter,
    check_pair,
    read_envi_product,
    write_envi_product,
)
from l2b_mask.products.naming import (
    EmitIdentity,
    ProductFiles,
    parse_identity,
    product_files,
    product_stem,
)
from l2b_mask.products.netcdf import (
    LocationArrays,
    emit_global_attributes,
    read_location,
    read_netcdf_product,
    write_netcdf_product,
)
from l2b_mask.products.summary import CloudFraction, cloud_fraction

__all__ = [
    "CloudFraction",
    "EmitIdentity",
    "EnviProductWriter",
    "LocationArrays",
    "ProductFiles",
    "check_pair",
    "cloud_fraction",
    "emit_global_attributes",
    "parse_identity",
    "product_files",
    "product_stem",
    "read_envi_product",
    "read_location",
    "read_netcdf_product",
    "write_envi_product",
    "write_netcdf_product",
]
