"""Scene statistics of the cloud flag, for headers, metadata and the run summary, and of
every layer of the layer table (`layer_summary`), for the run's log.

Both denominators are kept because EMIT uses all pixels (its header and UMM-G cloud
fraction) while a user of the mask usually wants the share of pixels that have a value.
The granule's `CloudCover` (UMM-G) is a third figure: cloudy pixels plus pixels without a
value, of all pixels (nothing is seen where there is no value), so it is higher than the
cloud fraction whenever a scene has fill lines or edges. `metadata()` gives all three, with
their definitions, so that `_metadata.json` says why they differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from l2b_mask.nodata import FLAG_NO_VALUE
from l2b_mask.products.layers import Layers

FLAG_CLEAR, FLAG_CLOUD = 0, 1
CLOUD_COVER_DEFINITIONS = {
    "percent_of_valid_pixels": "cloudy pixels / pixels with a value (the mask user's cloud "
                               "fraction; the netCDF's and the run log's)",
    "percent_of_all_pixels": "cloudy pixels / all pixels (EMIT's header cloud fraction)",
    "granule_cloud_cover_percent": "UMM-G CloudCover: (cloudy + no-value pixels) / all "
                                   "pixels, rounded to an integer, at most 100: nothing is "
                                   "seen where there is no value",
}


@dataclass(frozen=True)
class CloudFraction:
    """Pixel counts and percentages (full precision: the caller rounds for display)."""

    valid_pixels: int
    cloudy_pixels: int
    total_pixels: int
    percent_of_valid: float
    percent_of_all: float

    @classmethod
    def from_counts(cls, valid_pixels: int, cloudy_pixels: int,
                    total_pixels: int) -> CloudFraction:
        if not 0 <= cloudy_pixels <= valid_pixels <= total_pixels:
            raise ValueError(f"inconsistent counts: cloudy {cloudy_pixels}, valid {valid_pixels}, "
                             f"total {total_pixels}")
        return cls(
            valid_pixels=valid_pixels,
            cloudy_pixels=cloudy_pixels,
            total_pixels=total_pixels,
            percent_of_valid=100.0 * cloudy_pixels / valid_pixels if valid_pixels else 0.0,
            percent_of_all=100.0 * cloudy_pixels / total_pixels if total_pixels else 0.0,
        )

    @property
    def no_value_pixels(self) -> int:
        return self.total_pixels - self.valid_pixels

    @property
    def percent_no_value(self) -> float:
        """Share of pixels without a value (EMIT adds it to the cloud % for UMM-G CloudCover)."""
        return 100.0 * self.no_value_pixels / self.total_pixels if self.total_pixels else 0.0

    @property
    def percent_cloud_or_no_value(self) -> float:
        """Cloudy or without a value, of all pixels, at most 100: the granule's CloudCover
        (UMM-G) before it is rounded to an integer."""
        return min(self.percent_of_all + self.percent_no_value, 100.0)

    def metadata(self) -> dict[str, object]:
        """The fractions and counts as `_metadata.json`'s `cloud_fraction` holds them."""
        return {
            "percent_of_valid_pixels": self.percent_of_valid,
            "percent_of_all_pixels": self.percent_of_all,
            "granule_cloud_cover_percent": round(self.percent_cloud_or_no_value),
            "percent_cloudy_or_no_value": self.percent_cloud_or_no_value,
            "cloudy_pixels": self.cloudy_pixels,
            "pixels_with_value": self.valid_pixels,
            "no_value_pixels": self.no_value_pixels,
            "pixels": self.total_pixels,
            "definitions": CLOUD_COVER_DEFINITIONS,
        }

    def __add__(self, other: CloudFraction) -> CloudFraction:
        """Combine the counts of two blocks, so a streaming PGE can sum as it goes."""
        if not isinstance(other, CloudFraction):
            return NotImplemented
        return CloudFraction.from_counts(self.valid_pixels + other.valid_pixels,
                                         self.cloudy_pixels + other.cloudy_pixels,
                                         self.total_pixels + other.total_pixels)


def cloud_fraction(flag: np.ndarray) -> CloudFraction:
    """Counts of a uint8 flag (0 clear, 1 cloud, 255 no value); other values are an error."""
    flag = np.asarray(flag)
    clear = int(np.count_nonzero(flag == FLAG_CLEAR))
    cloudy = int(np.count_nonzero(flag == FLAG_CLOUD))
    no_value = int(np.count_nonzero(flag == FLAG_NO_VALUE))
    if clear + cloudy + no_value != flag.size:
        raise ValueError(f"flag holds values other than {FLAG_CLEAR}, {FLAG_CLOUD} and "
                         f"{FLAG_NO_VALUE}")
    return CloudFraction.from_counts(clear + cloudy, cloudy, int(flag.size))


def layer_summary(layers: Layers) -> dict[str, dict[str, float | int | None]]:
    """Per layer of the table, by its netCDF variable: the pixels with a value and, for a
    flag, the percentage of them holding each meaning (`percent_<meaning>`), for a value
    layer its minimum, maximum and mean (None without any value). A layer not made has no
    pixel with a value."""
    out: dict[str, dict[str, float | int | None]] = {}
    for row, array in layers.rows():
        values = array[~row.no_value(array)]
        stats: dict[str, float | int | None] = {"pixels_with_value": int(values.size)}
        if row.flag_values is not None and row.flag_meanings is not None:
            for value, meaning in zip(row.flag_values, row.flag_meanings.split(), strict=True):
                count = int(np.count_nonzero(values == value))
                stats[f"percent_{meaning}"] = 100.0 * count / values.size if values.size else 0.0
        else:
            empty = values.size == 0
            stats.update(min=None if empty else float(values.min()),
                         max=None if empty else float(values.max()),
                         mean=None if empty else float(values.mean(dtype=np.float64)))
        out[row.variable] = stats
    return out
