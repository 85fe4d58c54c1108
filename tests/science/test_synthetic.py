"""The synthetic L1B generator: layout, determinism, fill, physics, GLT, memory and CLI."""

from __future__ import annotations

import hashlib
import json
import re
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from spectral.io import envi as spy_envi

from l2b_mask.inputs.envi import EnviReader, read_header
from l2b_mask.synthetic.cli import main
from l2b_mask.synthetic.scene import (
    CLASS_CIRRUS,
    CLASS_CLEAR,
    CLASS_FILL,
    CLASS_ICE,
    CLASS_THICK,
    GLT_BAND_NAMES,
    LOC_BAND_NAMES,
    OBS_BAND_NAMES,
    PARTIAL_FILL_DROPPED_NM,
    PARTIAL_FILL_KEPT_NM,
    SyntheticAcquisition,
    emit_wavelengths,
    generate_acquisition,
    solar_irradiance,
    toa_reflectance,
)

NAME_RE = re.compile(r"^emit\d{8}t\d{6}_o\d{5}_s\d{3}_l1b_(rdn|obs|loc|glt)_b\d{4}_v\d{2}\.img$")
PRODUCTS = ("radiance", "observation", "location", "glt")


def _read(path: Path, dtype: type = np.float64) -> np.ndarray:
    """Whole raster as (lines, samples, bands)."""
    h = read_header(path)
    with EnviReader(h) as r:
        return r.read_lines(0, h.lines, dtype=dtype)


def _digest(acq: SyntheticAcquisition) -> dict[str, str]:
    out = {}
    for name in PRODUCTS:
        img = getattr(acq, name)
        for p in (img, img.with_suffix(".hdr")):
            out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _band(wl: np.ndarray, nm: float) -> int:
    return int(np.argmin(np.abs(wl - nm)))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> SyntheticAcquisition:
    return generate_acquisition(tmp_path_factory.mktemp("small"), lines=32, samples=64)


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> SyntheticAcquisition:
    """Large enough that every surface and cloud class occurs (checked below)."""
    return generate_acquisition(tmp_path_factory.mktemp("medium"), lines=128, samples=128)


# ---------------------------------------------------------------------------------------------
# Layout


def test_wavelengths_are_emit_like() -> None:
    wl, fwhm = emit_wavelengths()
    assert wl.shape == fwhm.shape == (285,)
    assert wl[0] == pytest.approx(381.0, abs=0.01) and wl[-1] == pytest.approx(2493.2, abs=0.01)
    step = np.diff(wl)
    assert np.all((step > 7.3) & (step < 7.6)) and np.all(np.diff(step) < 0)
    assert fwhm.min() > 8.2 and fwhm.max() < 8.7
    e = solar_irradiance()
    assert 440 < wl[np.argmax(e)] < 530 and 180 < e.max() < 220


def test_names_headers_and_sizes(small: SyntheticAcquisition) -> None:
    stem = "emit20240302t005829_o06201_s000_l1b_{}_b0106_v01.img"
    assert small.acquisition_id == "emit20240302t005829"
    expected = {"radiance": ("rdn", 285, 4, 4), "observation": ("obs", 11, 5, 8),
                "location": ("loc", 3, 5, 8), "glt": ("glt", 2, 3, 4)}
    for name, (prod, bands, code, itemsize) in expected.items():
        img = getattr(small, name)
        assert NAME_RE.match(img.name) and img.name == stem.format(prod)
        meta = spy_envi.read_envi_header(str(img.with_suffix(".hdr")))
        assert int(meta["bands"]) == bands and int(meta["data type"]) == code
        assert meta["interleave"] == "bil" and int(meta["byte order"]) == 0
        assert int(meta["header offset"]) == 0
        size = int(meta["lines"]) * int(meta["samples"]) * bands * itemsize
        assert img.stat().st_size == size
        assert meta["emit acquisition start time"] == "2024-03-02T00:58:29+0000"
        if name != "glt":
            assert (int(meta["lines"]), int(meta["samples"])) == (32, 64)
            assert float(meta["data ignore value"]) == -9999
        read_header(img)  # the project's own validation agrees

    rdn = spy_envi.read_envi_header(str(small.radiance.with_suffix(".hdr")))
    wl, fwhm = emit_wavelengths()
    assert rdn["wavelength units"] == "Nanometers"
    assert np.array_equal(np.array(rdn["wavelength"], float), wl)
    assert np.array_equal(np.array(rdn["fwhm"], float), fwhm)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000", rdn["emit acquisition stop time"])
    obs = spy_envi.read_envi_header(str(small.observation.with_suffix(".hdr")))
    assert tuple(obs["band names"]) == OBS_BAND_NAMES
    loc = spy_envi.read_envi_header(str(small.location.with_suffix(".hdr")))
    assert tuple(loc["band names"]) == LOC_BAND_NAMES
    glt = spy_envi.read_envi_header(str(small.glt.with_suffix(".hdr")))
    assert tuple(glt["band names"]) == GLT_BAND_NAMES
    info = glt["map info"]
    assert info[0] == "Geographic Lat/Lon" and info[7] == "WGS-84"
    assert float(info[5]) == float(info[6]) == pytest.approx(0.000542, rel=0.01)
    assert "WGS" in ",".join(glt["coordinate system string"])

    assert _read(small.radiance).dtype == np.float64  # read converts; check raw dtypes:
    assert read_header(small.radiance).dtype == np.dtype("<f4")
    assert read_header(small.observation).dtype == np.dtype("<f8")
    assert read_header(small.location).dtype == np.dtype("<f8")
    assert read_header(small.glt).dtype == np.dtype("<i4")
    assert small.truth.shape == (32, 64) and small.truth.dtype == np.uint8
    assert not list(small.radiance.parent.glob("*.npy"))  # truth saved only on request


def test_obs_float32_option(tmp_path: Path) -> None:
    acq = generate_acquisition(tmp_path, lines=8, samples=8, obs_dtype=np.float32)
    assert read_header(acq.observation).dtype == np.dtype("<f4")


def test_geometry_is_plausible(small: SyntheticAcquisition) -> None:
    obs = _read(small.observation)
    loc = _read(small.location)
    ok = small.truth > 0
    o, g = obs[ok], loc[ok]
    assert np.all((o[:, 0] > 395e3) & (o[:, 0] < 420e3))  # path length
    assert np.all(o[:, 2] < 10)  # sensor zenith
    assert np.all((o[:, 4] >= 25 - 1e-9) & (o[:, 4] <= 45 + 1e-9))  # sun zenith 35 +- 10
    doy = 62  # 2 March 2024
    d = 1 - 0.01672 * np.cos(np.deg2rad(0.9856 * (doy - 4)))
    assert np.allclose(o[:, 10], d, atol=1e-4) and np.ptp(o[:, 10]) < 1e-6
    assert np.all((o[:, 8] >= -1) & (o[:, 8] <= 1))
    utc = obs[:, :, 9].max(axis=1)
    good = utc > 0
    assert np.all(np.diff(utc[good]) > 0) and utc[good][0] == pytest.approx(58 / 60 + 29 / 3600)
    assert np.all((g[:, 0] > 130) & (g[:, 0] < 136) & (g[:, 1] > -28) & (g[:, 1] < -22))


# ---------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_same_bytes_different_seed_different(tmp_path: Path) -> None:
    kw = dict(lines=24, samples=20)
    a = _digest(generate_acquisition(tmp_path / "a", seed=3, **kw))
    b = _digest(generate_acquisition(tmp_path / "b", seed=3, lines_per_block=5, **kw))
    c = _digest(generate_acquisition(tmp_path / "c", seed=4, **kw))
    assert a == b  # block size never changes the output
    rdn = "emit20240302t005829_o06201_s000_l1b_rdn_b0106_v01.img"
    assert a[rdn] != c[rdn]


# ---------------------------------------------------------------------------------------------
# Fill


def test_fill_pixels_everywhere_and_only_there(small: SyntheticAcquisition) -> None:
    rdn, obs, loc = _read(small.radiance), _read(small.observation), _read(small.location)
    all_fill = np.all(rdn == -9999, axis=2)
    assert not np.any((rdn == -9999) & ~all_fill[..., None])  # no partial fill by default
    assert np.array_equal(all_fill, small.truth == CLASS_FILL)
    for other in (obs, loc):
        assert np.array_equal(np.all(other == -9999, axis=2), all_fill)
        assert not np.any((other == -9999) & ~all_fill[..., None])
    whole = np.all(all_fill, axis=1)
    assert whole.sum() == 1  # auto: one whole line per 32
    edge = all_fill[~whole]
    assert edge[:, 0].all() and edge[:, -1].all() and not edge[:, 4:-4].any()
    assert len({int(row.argmin()) for row in edge}) > 1  # edge width varies by line
    assert np.all(small.surface[all_fill] == 0)


def test_fill_options(tmp_path: Path) -> None:
    none = generate_acquisition(tmp_path / "n", lines=20, samples=16, fill_lines=0,
                                edge_fill=False)
    assert np.all(none.truth > 0) and not np.any(_read(none.radiance) == -9999)
    three = generate_acquisition(tmp_path / "t", lines=20, samples=16, fill_lines=3)
    assert np.all(three.truth == 0, axis=1).sum() == 3
    tiny = generate_acquisition(tmp_path / "s", lines=15, samples=16, edge_fill=False)
    assert np.all(tiny.truth > 0)  # fewer than 16 lines: no fill line by default


def test_partial_band_fill(tmp_path: Path) -> None:
    acq = generate_acquisition(tmp_path, lines=48, samples=64, partial_band_fill=True)
    rdn, obs = _read(acq.radiance), _read(acq.observation)
    wl, _ = emit_wavelengths()
    dropped = [_band(wl, w) for w in PARTIAL_FILL_DROPPED_NM]
    kept = [_band(wl, w) for w in PARTIAL_FILL_KEPT_NM]
    assert dropped[0] == 0
    part = acq.partial_fill
    assert (part == 1).any() and (part == 2).any()
    assert np.all(acq.truth[part > 0] != CLASS_FILL)
    assert not np.any(obs[part > 0] == -9999)
    is_fill = rdn == -9999
    partial_pixels = is_fill.any(axis=2) & ~is_fill.all(axis=2)
    assert np.array_equal(partial_pixels, part > 0)
    for b in dropped:
        assert np.array_equal(is_fill[..., b] & partial_pixels, part > 0)
    for b in kept:
        assert np.array_equal(is_fill[..., b] & partial_pixels, part == 2)
    assert is_fill[part > 0].sum(axis=1).max() == len(dropped) + len(kept)


# ---------------------------------------------------------------------------------------------
# Physics


def test_physics_sanity(medium: SyntheticAcquisition) -> None:
    truth, surface = medium.truth, medium.surface
    assert set(np.unique(truth)) == {0, 1, 2, 3, 4}
    assert set(np.unique(surface[truth == CLASS_CLEAR])) == {1, 2, 3, 4, 5}
    rdn, obs = _read(medium.radiance), _read(medium.observation)
    wl, _ = emit_wavelengths()
    rho = toa_reflectance(rdn, obs[..., 4], obs[..., 10])
    vnir = (wl > 500) & (wl < 900)
    clear = truth == CLASS_CLEAR
    water = clear & (surface == 3)
    veg = clear & (surface == 1)
    thick = truth == CLASS_THICK
    thick_vnir = rho[thick][:, vnir].mean()
    assert thick_vnir > 0.5 and thick_vnir > 5 * rho[water][:, vnir].mean()
    assert np.all(rho[water][:, wl > 720].mean(axis=0) < 0.05)

    r1380 = rho[..., _band(wl, 1380)]
    assert r1380[clear].mean() < 0.005 and np.percentile(r1380[clear], 99) < 0.012
    assert np.median(r1380[truth == CLASS_CIRRUS]) > 0.02
    assert np.median(r1380[thick]) > 0.05 and np.median(r1380[truth == CLASS_ICE]) > 0.05

    red, nir = rho[veg][:, _band(wl, 670)], rho[veg][:, _band(wl, 860)]
    assert np.median(nir / red) > 3 and nir.mean() > 0.35
    assert np.any(rdn[truth > 0] < 0)  # noise leaves a few negative values in deep bands
    assert np.all(rdn[truth > 0] > -5)


# ---------------------------------------------------------------------------------------------
# GLT


def test_glt_points_at_valid_pixels_near_cell_centres(medium: SyntheticAcquisition) -> None:
    glt = _read(medium.glt, np.int64)
    loc = _read(medium.location)
    lines, samples = medium.truth.shape
    meta = read_header(medium.glt).meta
    info = meta["map info"]
    ulx, uly, dx, dy = (float(v) for v in info[3:7])
    s, ln = glt[..., 0], glt[..., 1]
    found = s > 0
    assert np.array_equal(found, ln > 0) and found.mean() > 0.3
    assert s.min() >= 0 and s.max() <= samples and ln.max() <= lines
    ls, ll = s[found] - 1, ln[found] - 1
    assert np.all(medium.truth[ll, ls] != CLASS_FILL)
    rows, cols = np.nonzero(found)
    lon_c, lat_c = ulx + (cols + 0.5) * dx, uly - (rows + 0.5) * dy
    lon, lat = loc[ll, ls, 0], loc[ll, ls, 1]
    # Cells are square in degrees; east-west they are cos(lat) narrower in metres than the
    # ~60 m pixels, so the longitude tolerance is one cell's north-south size in metres.
    assert np.all(np.abs(lat - lat_c) <= dy)
    assert np.all(np.abs(lon - lon_c) * np.cos(np.deg2rad(lat)) <= dy)
    hit = np.zeros((lines, samples), bool)
    hit[ll, ls] = True
    # A cell (~60 x 55 m) is a little smaller than a pixel (60 x 60 m), so a few pixels are
    # never the nearest to any cell centre; most are.
    assert hit[medium.truth > 0].mean() > 0.8


# ---------------------------------------------------------------------------------------------
# Memory, command line, argument checks


def _peak(tmp: Path, lines: int) -> int:
    tracemalloc.start()
    try:
        generate_acquisition(tmp, lines=lines, samples=64, lines_per_block=32)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_lines(tmp_path: Path) -> None:
    short, long = _peak(tmp_path / "a", 128), _peak(tmp_path / "b", 512)
    assert long / short < 1.5, (short, long)
    assert long < 40 * 2**20


def test_main_prints_paths_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main([str(tmp_path), "--lines", "16", "--samples", "12", "--seed", "5", "--orbit", "7",
               "--scene", "3", "--cloud-fraction", "0.5", "--save-truth"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["acquisition_id"] == "emit20240302t005829"
    for key in PRODUCTS:
        p = Path(out[key])
        assert p.is_file() and p.with_suffix(".hdr").is_file() and NAME_RE.match(p.name)
    assert Path(out["radiance"]).name == "emit20240302t005829_o00007_s003_l1b_rdn_b0106_v01.img"
    truth = np.load(out["truth"])
    assert truth.shape == (16, 12) and truth.dtype == np.uint8
    assert main([str(tmp_path), "--lines", "0"]) == 2


def test_start_time_and_arguments(tmp_path: Path) -> None:
    acq = generate_acquisition(tmp_path, lines=4, samples=4,
                               start_time=datetime(2023, 8, 15, 13, 4, 5, tzinfo=UTC))
    assert acq.acquisition_id == "emit20230815t130405"
    with pytest.raises(ValueError):
        generate_acquisition(tmp_path, lines=4, samples=4, cloud_fraction=1.5)
    with pytest.raises(ValueError):
        generate_acquisition(tmp_path, lines=4, samples=4, fill_lines=5)
    clear = generate_acquisition(tmp_path / "c", lines=16, samples=16, cloud_fraction=0.0)
    assert set(np.unique(clear.truth)) <= {CLASS_FILL, CLASS_CLEAR}
