"""A radiance granule's `location` group: every EMIT L1B radiance granule carries lon, lat, elev,
glt_x and glt_y there, so a granule without the group, or without part of it, is a malformed
input (exit 4, one stderr line naming the granule and what it lacks), unless the run
configuration gives a location file apart (a given file wins over the group). The scientists'
command and `cloud_probability` read no location: a granule without it still gives its mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_pge_e2e import config, write_config

import pge.cli
from l2b_mask import cli as science_cli
from l2b_mask.algorithm.inference import InferenceSettings, cloud_probability
from l2b_mask.errors import InputProductError
from l2b_mask.inputs.acquisition import open_acquisition
from l2b_mask.inputs.glt import read_glt
from l2b_mask.inputs.location import read_location
from l2b_mask.synthetic.daac import ALL_LOCATION, write_daac_granules
from l2b_mask.synthetic.scene import generate_acquisition
from pge.errors import ExitCode

LINES = SAMPLES = 16
# name -> the variables the radiance granule's `location` group keeps (none: no group)
GROUPS = {
    "whole": ALL_LOCATION,
    "no_group": (),
    "no_elev": ("lon", "lat", "glt_x", "glt_y"),
    "no_lat": ("lon", "elev", "glt_x", "glt_y"),
    "no_glt_y": ("lon", "lat", "elev", "glt_x"),
}
MISSING = {"no_group": "has no 'location' group", "no_elev": "has no 'location/elev'",
           "no_lat": "has no 'location/lat'", "no_glt_y": "has no 'location/glt_y'"}


@pytest.fixture(scope="module")
def granules(tmp_path_factory):
    """One synthetic acquisition (ENVI, with its LOC and GLT) and its granules, once per
    `GROUPS` entry."""
    base = tmp_path_factory.mktemp("granule_location").resolve()
    acq = generate_acquisition(base / "envi", lines=LINES, samples=SAMPLES, seed=5)
    pairs = {name: write_daac_granules(acq, base / name, radiance_location=keep)
             for name, keep in GROUPS.items()}
    return acq, pairs


def _run(tmp_path: Path, spec, files: dict[str, Path], *args: str, **sections) -> int:
    rc = write_config(tmp_path / "rc.json", config(files, tmp_path, spec, **sections))
    return pge.cli.main([str(rc), *args])


@pytest.mark.parametrize("case", sorted(MISSING))
def test_the_pge_refuses_a_granule_missing_its_location(case, granules, spec, tmp_path, capsys,
                                                        restore_logging):
    _, pairs = granules
    rad = pairs[case].radiance
    code = _run(tmp_path, spec, {"radiance": rad, "observation": pairs[case].observation})
    err = capsys.readouterr().err
    assert code == ExitCode.INPUT == 4, err
    assert err.count("\n") == 1 and err.startswith(f"{ExitCode.INPUT.label}: "), err
    assert str(rad) in err and MISSING[case] in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("case", sorted(MISSING))
def test_the_library_refuses_it_and_a_location_file_given_apart_wins(case, granules):
    acq, pairs = granules
    rad, obs = pairs[case].radiance, pairs[case].observation
    with pytest.raises(InputProductError) as info:
        open_acquisition(rad, obs)
    assert info.value.path == rad and MISSING[case] in str(info.value)
    opened = open_acquisition(rad, obs, location=acq.location, glt=acq.glt)
    loc, glt = read_location(acq.location), read_glt(acq.glt)
    for name in ("lon", "lat", "elev"):
        np.testing.assert_array_equal(getattr(opened.location, name), getattr(loc, name))
    np.testing.assert_array_equal(opened.glt.sample, glt.sample)
    np.testing.assert_array_equal(opened.glt.line, glt.line)


def test_the_whole_group_is_the_location_and_a_glt_file_may_replace_its_glt(granules):
    acq, pairs = granules
    whole = open_acquisition(pairs["whole"].radiance, pairs["whole"].observation)
    np.testing.assert_array_equal(whole.location.elev, read_location(acq.location).elev)
    assert whole.glt is not None and whole.glt.source == pairs["whole"].radiance
    # the group without its GLT is whole once a GLT file is given apart
    no_glt = open_acquisition(pairs["no_glt_y"].radiance, pairs["no_glt_y"].observation,
                              glt=acq.glt)
    np.testing.assert_array_equal(no_glt.location.lat, whole.location.lat)
    assert no_glt.glt.source == acq.glt


def test_a_location_file_given_apart_makes_the_run_valid(granules, spec, tmp_path, capsys,
                                                         restore_logging):
    acq, pairs = granules
    files = {"radiance": pairs["no_group"].radiance, "observation": pairs["no_group"].observation,
             "location": acq.location, "glt": acq.glt}
    assert _run(tmp_path, spec, files, "--validate-only", output={"write_ortho": True}) == 0
    assert capsys.readouterr().err == ""


def test_without_a_glt_the_ortho_cannot_be_made(granules, spec, tmp_path, capsys,
                                                restore_logging):
    """The location given apart, the granule's GLT incomplete and no GLT file: the location
    is whole, but the orthorectified outputs have no grid."""
    acq, pairs = granules
    rad = pairs["no_glt_y"].radiance
    files = {"radiance": rad, "observation": pairs["no_glt_y"].observation,
             "location": acq.location}
    assert _run(tmp_path, spec, files, output={"write_ortho": True}) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(rad) in err
    assert "the orthorectified outputs need a GLT" in err


def test_the_mask_alone_needs_no_location(granules, spec, tmp_path, capsys):
    """`l2b-mask` and `cloud_probability` read the radiance and observation only."""
    _, pairs = granules
    bare, whole = pairs["no_group"], pairs["whole"]
    settings = InferenceSettings(device="cpu")
    probability = cloud_probability(bare.radiance, bare.observation, spec, settings)
    np.testing.assert_array_equal(
        probability, cloud_probability(whole.radiance, whole.observation, spec, settings))
    out = tmp_path / "mask.tif"
    assert science_cli.main([str(bare.radiance), str(bare.observation), str(out),
                             "--device", "cpu"]) == 0
    assert out.is_file() and capsys.readouterr().err == ""
