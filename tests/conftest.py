"""Shared fixtures: tiny hand-built ENVI rasters and the delivered ancillary/reference files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from netCDF4 import Dataset

from l2b_mask.inputs.daac import SWATH_DIMS
from l2b_mask.inputs.envi import raster_header, write_header
from l2b_mask.spec import ModelSpec, ancillary_dir
from l2b_mask.synthetic.scene import OBS_BAND_NAMES, emit_wavelengths

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "testdata" / "reference_scene_s7"
OBS_NAMES = list(OBS_BAND_NAMES)


def emit_like_wavelengths(bands: int = 285) -> tuple[np.ndarray, np.ndarray]:
    """Band centres from 381 to 2493 nm and an 8.5 nm FWHM: EMIT's grid, closely enough."""
    return np.linspace(381.00558, 2493.2, bands), np.full(bands, 8.5)


def write_raster(path: Path, cube_lbs: np.ndarray, interleave: str = "bil",
                 byte_order: str = "<", extra: dict | None = None) -> Path:
    """Write a (lines, bands, samples) cube as ENVI; returns the binary path."""
    lines, bands, samples = cube_lbs.shape
    order = {"bil": (0, 1, 2), "bip": (0, 2, 1), "bsq": (1, 0, 2)}[interleave]
    data = np.ascontiguousarray(cube_lbs.transpose(order))
    data.astype(data.dtype.newbyteorder(byte_order)).tofile(path)
    meta = raster_header(lines, samples, bands, cube_lbs.dtype, interleave, extra)
    meta["byte order"] = 0 if byte_order == "<" else 1
    write_header(path.with_suffix(".hdr"), meta)
    return path


def write_pair(folder: Path, lines: int = 6, samples: int = 5, *, bands: int = 285,
               seed: int = 0, obs_bands: int = 11, obs_dtype=np.float64,
               sza: float = 30.0, esd: float = 1.0, names: bool = True,
               rdn_extra: dict | None = None) -> tuple[Path, Path]:
    """A small valid radiance/obs pair with random positive radiance."""
    rng = np.random.default_rng(seed)
    wl, fwhm = emit_like_wavelengths(bands)
    rdn = rng.uniform(1.0, 20.0, (lines, bands, samples)).astype(np.float32)
    extra = {"data ignore value": -9999, "wavelength units": "Nanometers",
             "wavelength": [f"{w:.5f}" for w in wl], "fwhm": [f"{f:.5f}" for f in fwhm]}
    extra.update(rdn_extra or {})
    rdn_path = write_raster(folder / "scene_rdn.img", rdn, extra=extra)
    obs = np.zeros((lines, obs_bands, samples), obs_dtype)
    obs[:, 4, :] = sza
    obs[:, 10, :] = esd
    obs_extra = {"data ignore value": -9999}
    if names:
        obs_extra["band names"] = OBS_NAMES + (["Extra"] if obs_bands == 12 else [])
    obs_path = write_raster(folder / "scene_obs.img", obs, extra=obs_extra)
    return rdn_path, obs_path


@pytest.fixture(scope="session")
def spec() -> ModelSpec:
    s = ModelSpec.load()
    if not s.weights_path.is_file() or not s.irradiance_path.is_file():
        pytest.skip(f"ancillary files not installed in {ancillary_dir()} (run scripts/setup.sh)")
    return s


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE / "reference_prob_fp32.npy").is_file():
        pytest.skip(f"reference scene not found at {REFERENCE} (../shared is absent)")
    return REFERENCE


@pytest.fixture
def restore_logging():
    """In-process PGE runs and campaigns configure structlog and the root logger for the whole
    process (pge.logging); put them back for the tests that follow."""
    import logging

    import structlog

    from pge import logging as pge_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    pge_logging.close_file()
    logging.captureWarnings(False)
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


# ---------------------------------------------------------------------------------------------
# netCDF compliance (IOOS compliance-checker), shared by the product and end-to-end tests

KNOWN_CHECKER_FALSE_POSITIVES = {
    # CF-1.8 §2.7 lets `coordinates` name variables in other groups by absolute path; the
    # checker (6.1) looks names up in the root group only.
    r"references non-existent variable '/location/(lon|lat)'",
    r"auxiliary coordinate specified by the coordinates attribute, /location/(lon|lat), is not a "
    r"variable in this dataset",
}
# ACDD high-priority items left on purpose.
ACCEPTED_ACDD = {
    # No CF standard name exists for a classifier's probability; a wrong one would mislead.
    ("cloud_probability", "standard_name"),
    # Nor for a distance counted in pixels of the instrument grid.
    ("cloud_buffer_distance", "standard_name"),
}


# Checks that crash on valid files instead of judging them. The CF 1.8 "same-named dimension
# across groups" check (checker 6.1) reads a dimension named "time" from the first group of any
# file with two or more groups and raises KeyError when there is none; every dimension of the
# product is on the root (groups define none), so there is nothing for it to find either way.
CHECKER_BUGS = ["check_invalid_same_named_dimension_across_groups"]


def _run_checker(path: Path, monkeypatch) -> dict[str, list]:
    pytest.importorskip("compliance_checker")
    from compliance_checker.cf import util as cf_util
    from compliance_checker.runner import CheckSuite

    def offline(*args, **kwargs):
        raise OSError("tests run offline; the packaged standard name table is used")

    # The checker downloads a standard-name table only when the file names a version other
    # than its packaged one; make sure a future checker version cannot go to the network.
    monkeypatch.setattr(cf_util, "download_cf_standard_name_table", offline)
    suite = CheckSuite()
    suite.load_all_available_checkers()
    ds = suite.load_dataset(str(path))
    results = suite.run_all(ds, ["cf:1.9", "acdd:1.3"], skip_checks=CHECKER_BUGS)
    out: dict[str, list] = {}
    for name, (checks, errors) in results.items():
        assert not errors, f"{name} checker crashed: {errors}"
        out[name] = [r for r in checks]
    return out


def _failures(results: list, weight: int) -> list[tuple[str, list[str]]]:
    bad = []
    for r in results:
        score, total = r.value if isinstance(r.value, tuple) else (int(bool(r.value)), 1)
        if r.weight == weight and score < total:
            bad.append((str(r.name), list(r.msgs)))
    return bad


def compliance_problems(path: Path, monkeypatch) -> list:
    """High-priority CF-1.9 / ACDD-1.3 results of the IOOS compliance checker on a netCDF file,
    less the checker's known false positives and the ACDD items left on purpose (each with its
    reason above); an empty list is a pass. Skips the test when the checker is not installed."""
    results = _run_checker(path, monkeypatch)
    assert set(results) >= {"cf:1.9", "acdd:1.3"}
    unexpected = []
    for name, checks in results.items():
        for check, msgs in _failures(checks, weight=3):
            left = [m for m in msgs if not any(re.search(p, m) for p in KNOWN_CHECKER_FALSE_POSITIVES)]
            if name.startswith("acdd"):
                left = [m for m in left if not any(var in check and m == attr
                                                   for var, attr in ACCEPTED_ACDD)]
            if left or not msgs:
                unexpected.append((name, check, left))
    return unexpected


def small_granule(path: Path, variable: str = "radiance", *, bands: int | None = None,
             dims: tuple[str, ...] = SWATH_DIMS, dtype: str = "f4",
             band_vars: dict | None = None, attrs: dict | None = None) -> Path:
    """A small granule of the DAAC layout; `band_vars` replaces `sensor_band_parameters`
    (an empty dict: no group)."""
    bands = bands or (285 if variable == "radiance" else 11)
    if band_vars is None:
        wl, fwhm = emit_wavelengths()
        band_vars = ({"wavelengths": wl[:bands], "fwhm": fwhm[:bands]} if variable == "radiance"
                     else {"observation_bands": list(OBS_BAND_NAMES)[:bands]})
    with Dataset(path, "w", format="NETCDF4") as ds:
        ds.setncatts(attrs or {"time_coverage_start": "2024-03-02T00:58:29+0000",
                               "time_coverage_end": "2024-03-02T00:58:30+0000"})
        for name, size in zip(SWATH_DIMS, (3, 2, bands), strict=True):
            ds.createDimension(name, size)
        shape = tuple(ds.dimensions[d].size for d in dims)
        var = ds.createVariable(variable, dtype, dims, fill_value=-9999)
        var[:] = np.ones(shape)
        if band_vars:
            group = ds.createGroup("sensor_band_parameters")
            for name, values in band_vars.items():
                if isinstance(values, list):
                    v = group.createVariable(name, str, ("bands",))
                    for i, text in enumerate(values):
                        v[i] = text
                else:
                    group.createVariable(name, "f4", ("bands",))[:] = np.asarray(values)
    return path
