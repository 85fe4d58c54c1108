"""The global attributes EMIT and the LP DAAC put in every EMIT netCDF product: CF/ACDD
conventions, mission, publisher, references. Per-run values are merged over them."""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from l2b_mask.products.netcdf import iso_utc
from pge.provenance import package_version
from pge.sds.naming import parse_identity

SPECTF_DOI = "10.1073/pnas.2502903122"


# The product's global attributes in file order. A "{field}" is filled per run by
# `emit_global_attributes`; an attribute whose field has no value this run is left out.
EMIT_ATTRIBUTES: dict[str, str] = {
    "ncei_template_version": "NCEI_NetCDF_Swath_Template_v2.0",
    "title": "EMIT L2B Cloud Mask 60 m {product_version}",
    "summary": (
        "The Earth Surface Mineral Dust Source Investigation (EMIT) is an imaging "
        "spectrometer on the International Space Station that records reflected sunlight "
        "from about 380 to 2500 nm in 285 channels at a ground sampling of about 60 m. "
        "This Level 2B product is a per-pixel cloud mask derived from EMIT L1B calibrated "
        "radiance by SpecTf, a spectroscopic transformer that labels each spectrum cloudy "
        "or clear from its spectral shape alone, with no spatial or temporal context. The "
        "file holds, on the instrument's own downtrack x crosstrack grid, the modelled "
        "cloud probability, the binary cloud flag obtained by thresholding it, each "
        "pixel's distance to the nearest flagged cloud (the cloud buffer) and a geometric "
        "cloud shadow flag (no value throughout when no location was supplied), and the "
        "longitude, latitude and elevation of each pixel and the geometry lookup table "
        "when they were supplied."
    ),
    "keywords": (
        "EARTH SCIENCE > ATMOSPHERE > CLOUDS, "
        "EARTH SCIENCE > SPECTRAL/ENGINEERING > VISIBLE WAVELENGTHS, "
        "EARTH SCIENCE > SPECTRAL/ENGINEERING > INFRARED WAVELENGTHS, "
        "Imaging Spectroscopy, Cloud Mask, EMIT, SpecTf, Transformer"
    ),
    "keywords_vocabulary": "NASA Global Change Master Directory (GCMD) Science Keywords",
    # CF-1.9: groups (the `location` group, and the absolute-path `coordinates` references
    # into it) came in CF-1.8, the netCDF-4 unsigned types (`cloud_mask` is ubyte) in
    # CF-1.9, so 1.9 is the oldest version the file conforms to. The IOOS
    # compliance-checker checks it (suite cf:1.9), so the claim can be verified.
    "Conventions": "CF-1.9, ACDD-1.3",
    "stdname_vocabulary": "NetCDF Climate and Forecast (CF) Metadata Convention",
    # ACDD's name for it. Only `longitude`, `latitude`, `cloud_binary_mask` are used, long in the table
    # (any recent version); naming the checker's bundled version keeps compliance-checker offline (it
    # downloads any other version it is told about).
    "standard_name_vocabulary": "CF Standard Name Table v93",
    "cdm_data_type": "Swath",
    "sensor": "EMIT (Earth Surface Mineral Dust Source Investigation)",
    "instrument": "EMIT",
    "platform": "ISS",
    "institution": "NASA Jet Propulsion Laboratory/California Institute of Technology",
    "license": ("https://www.earthdata.nasa.gov/engage/open-data-services-software-policies"
                "/data-use-guidance"),
    "naming_authority": "LPDAAC",
    "date_created": "{date_created}",
    "creator_name": "Jet Propulsion Laboratory/California Institute of Technology",
    "creator_url": "https://earth.jpl.nasa.gov/emit/",
    "project": "Earth Surface Mineral Dust Source Investigation",
    "project_url": "https://earth.jpl.nasa.gov/emit/",
    "publisher_name": "NASA LPDAAC",
    "publisher_url": "https://lpdaac.usgs.gov",
    "publisher_email": "lpdaac@usgs.gov",
    "identifier_product_doi_authority": "https://doi.org",
    "references": (
        "Lee, J. H., Kiper, M., Thompson, D. R. and Brodrick, P. G. (2025): SpecTf: "
        "Transformers enable data-driven imaging spectroscopy cloud detection. Proceedings "
        "of the National Academy of Sciences. https://doi.org/" + SPECTF_DOI
    ),
    "source": ("EMIT L1B calibrated radiance and observation geometry (solar zenith, "
               "Earth-Sun distance), top-of-atmosphere reflectance, SpecTf cloud model"),
    "processing_level": "L2B",
    "product_version": "{product_version}",
    "flight_line": "{flight_line}",
    "time_coverage_start": "{time_coverage_start}",
    "time_coverage_end": "{time_coverage_end}",
    "day_night_flag": "{day_night_flag}",
    "history": "{history}",
}


def render(template: dict[str, str], values: dict[str, str | None]) -> dict[str, str]:
    """The template's attributes with their fields filled; those with a field that has no
    value (None) are left out."""
    out = {}
    for name, text in template.items():
        fields = [field for _, field, _, _ in string.Formatter().parse(text) if field]
        if all(values.get(field) is not None for field in fields):
            out[name] = text.format(**values)
    return out


def emit_global_attributes(
    *, product_version: str = "01", radiance_path: Path | str | None = None,
    flight_line: str | None = None, time_coverage_start: datetime | str | None = None,
    time_coverage_end: datetime | str | None = None, history: str | None = None,
    date_created: datetime | None = None, day_night_flag: str | None = None,
) -> dict[str, Any]:
    """The CF/ACDD/EMIT base attributes of the product (`EMIT_ATTRIBUTES` rendered); per-run
    values are merged over them.

    From an EMIT-named `radiance_path` come `flight_line` and the start time, unless given.
    `day_night_flag` is EMIT's "Day"/"Night" (`pge.sds.ummg.day_night_flag`).
    """
    if not re.fullmatch(r"\d{2}", product_version):
        raise ValueError(f"product_version must be 2 digits, not {product_version!r}")
    created = iso_utc(date_created or datetime.now(UTC))
    identity = parse_identity(radiance_path) if radiance_path is not None else None
    if identity is not None:
        flight_line = flight_line or identity.flight_line
        time_coverage_start = time_coverage_start or identity.start_time
    return render(EMIT_ATTRIBUTES, {
        "product_version": f"V0{product_version}",  # EMIT's form: "01" -> "V001"
        "date_created": created, "flight_line": flight_line,
        "time_coverage_start": iso_utc(time_coverage_start) if time_coverage_start else None,
        "time_coverage_end": iso_utc(time_coverage_end) if time_coverage_end else None,
        "day_night_flag": day_night_flag,
        "history": history or f"{created}: created by l2b_mask {package_version()}",
    })
