"""Product writers and readers (ENVI, netCDF, orthorectified GeoTIFF, browse PNG, UMM-G),
product names, the GLT, and scene statistics.

Every writer takes the same in-memory pair, a (lines, samples) float32 probability with NaN
and a uint8 flag with 255 where a pixel has no value, so formats can be added independently.
"""

from l2b_mask.products.browse import render_browse, write_browse_png
from l2b_mask.products.envi import (
    EnviProductWriter,
    check_pair,
    read_envi_product,
    write_envi_product,
)
from l2b_mask.products.glt import Bounds, Glt, parse_map_info, read_glt
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
    geospatial_attributes,
    location_bounds,
    read_location,
    read_netcdf_product,
    write_netcdf_product,
)
from l2b_mask.products.ortho import OrthoPaths, ortho_paths, write_ortho_geotiff
from l2b_mask.products.summary import CloudFraction, cloud_fraction
from l2b_mask.products.ummg import (
    build_ummg,
    day_night_flag,
    granule_ur,
    mean_solar_angles,
    swath_polygon,
    validate_ummg,
    write_ummg,
)

__all__ = [
    "Bounds",
    "CloudFraction",
    "EmitIdentity",
    "EnviProductWriter",
    "Glt",
    "LocationArrays",
    "OrthoPaths",
    "ProductFiles",
    "build_ummg",
    "check_pair",
    "cloud_fraction",
    "day_night_flag",
    "emit_global_attributes",
    "geospatial_attributes",
    "granule_ur",
    "location_bounds",
    "mean_solar_angles",
    "ortho_paths",
    "parse_identity",
    "parse_map_info",
    "product_files",
    "product_stem",
    "read_envi_product",
    "read_glt",
    "read_location",
    "read_netcdf_product",
    "render_browse",
    "swath_polygon",
    "validate_ummg",
    "write_browse_png",
    "write_envi_product",
    "write_netcdf_product",
    "write_ortho_geotiff",
    "write_ummg",
]
