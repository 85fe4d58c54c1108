"""The products hold what they held before the layout changed (issue 12): every array, header
key and attribute of the reference scene's and an EMIT-named synthetic scene's products, creation
times and paths aside, against the digests committed with this test (`tests/product_digest.py`
says how they are made and when to remake them)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from product_digest import DIGESTS, FLOAT_TOLERANCE, FLOATS, REFERENCE


@pytest.fixture(scope="module")
def made(tmp_path_factory, spec):
    if not (REFERENCE / "public_s7_rdn.img").is_file():
        pytest.skip("reference scene not found (../shared is absent)")
    out = tmp_path_factory.mktemp("digests") / "made.json"
    script = DIGESTS.parents[1] / "product_digest.py"
    p = subprocess.run([sys.executable, str(script), "--out", str(out)], capture_output=True,
                       text=True, timeout=600, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(out.read_text()), out.with_suffix(".npz")


def test_products_match_the_committed_digests(made):
    digests, _ = made
    expected = json.loads(DIGESTS.read_text())
    assert set(digests) == set(expected)
    for case in expected:
        assert set(digests[case]) == set(expected[case]), f"{case}: other product files"
        for suffix in expected[case]:
            assert digests[case][suffix] == expected[case][suffix], f"{case} {suffix} changed"


def test_float_arrays_match_to_the_tolerance(made):
    _, npz = made
    with np.load(FLOATS) as stored, np.load(npz) as arrays:
        assert set(stored.files) == set(arrays.files)
        for key in stored.files:
            want, got = stored[key], arrays[key]
            assert got.shape == want.shape and got.dtype == want.dtype, key
            assert np.array_equal(np.isnan(got), np.isnan(want)), key
            ok = ~np.isnan(want)
            assert np.allclose(got[ok], want[ok], rtol=0, atol=FLOAT_TOLERANCE), key
