"""UMM-G CloudCover against the cloud fraction (issue 23): both in `_metadata.json`, each with
how it is counted, and the granule record says the same integer."""

from __future__ import annotations

import numpy as np
import pytest

from l2b_mask.products.summary import CLOUD_COVER_DEFINITIONS, cloud_fraction
from pge.sds.ummg import cloud_cover_percent


def _flag(cloudy: int, clear: int, no_value: int) -> np.ndarray:
    return np.array([1] * cloudy + [0] * clear + [255] * no_value, np.uint8).reshape(1, -1)


def test_the_issues_case_cloud_fraction_below_cloud_cover_and_both_given():
    # 246 cloudy of 1000 pixels with a value is 24.6 %; with 54 of 1054 pixels without a value
    # the granule's cloud cover is (246 + 54) / 1054 = 28.5 % -> 28
    meta = cloud_fraction(_flag(246, 754, 54)).metadata()
    assert meta["percent_of_valid_pixels"] == pytest.approx(24.6)
    assert meta["percent_of_all_pixels"] == pytest.approx(100 * 246 / 1054)
    assert meta["percent_cloudy_or_no_value"] == pytest.approx(100 * 300 / 1054)
    assert meta["granule_cloud_cover_percent"] == 28
    assert meta["no_value_pixels"] == 54 and meta["pixels"] == 1054
    assert meta["definitions"] == CLOUD_COVER_DEFINITIONS
    assert set(CLOUD_COVER_DEFINITIONS) <= set(meta)


@pytest.mark.parametrize("counts", [(0, 10, 0), (10, 0, 0), (3, 5, 2), (0, 0, 7), (1, 998, 1)])
def test_metadata_cloud_cover_is_the_granule_records(counts):
    fraction = cloud_fraction(_flag(*counts))
    meta = fraction.metadata()
    assert meta["granule_cloud_cover_percent"] == int(round(cloud_cover_percent(fraction)))
    assert 0 <= meta["granule_cloud_cover_percent"] <= 100
    assert meta["percent_cloudy_or_no_value"] >= meta["percent_of_all_pixels"]
