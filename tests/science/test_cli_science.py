"""The scientists' command `l2b-mask RADIANCE OBSERVATION OUT.tif`: its GeoTIFFs read back with
GDAL and compared with the library, its options, and its one-line errors with distinct codes.

Most runs call `l2b_mask.cli.main` in this process (torch is imported once); the console script
itself runs as a subprocess for a success and the error cases, where a traceback would show.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_raster

from l2b_mask import cli
from l2b_mask.algorithm.bands import kept_bands
from l2b_mask.algorithm.inference import CloudModel, InferenceSettings, SceneInference, cloud_flag
from l2b_mask.inputs.envi import EnviReader, read_header
from l2b_mask.inputs.scene import Scene
from l2b_mask.synthetic.scene import generate_acquisition

gdal = pytest.importorskip("osgeo.gdal")
gdal.UseExceptions()

LINES, SAMPLES = 16, 12


class Acquisition:
    def __init__(self, folder: Path, spec) -> None:
        # seed 4 with half cloud: clear, cloud, intermediate probabilities and no-value pixels
        acq = generate_acquisition(folder, lines=LINES, samples=SAMPLES, seed=4, cloud_fraction=0.5)
        self.radiance, self.observation = acq.radiance, acq.observation
        model = CloudModel.load(spec, InferenceSettings(device="cpu"))
        # the library's answer, to compare the command's files with
        self.probability = SceneInference(Scene.open(acq.radiance, acq.observation), model).run(64)
        self.valid = ~np.isnan(self.probability)
        self.threshold = spec.threshold


@pytest.fixture(scope="module")
def acq(tmp_path_factory, spec) -> Acquisition:
    a = Acquisition(tmp_path_factory.mktemp("cli_acq"), spec)
    assert a.valid.any() and (~a.valid).any()
    assert (a.probability[a.valid] > a.threshold).any() and (a.probability[a.valid] <= a.threshold).any()
    return a


def _paths(stdout: str) -> list[str]:
    """The lines of stdout that name written files (progress events are JSON lines there)."""
    return [line for line in stdout.splitlines() if not line.startswith('{"event": "progress"')]


def _run(capsys, *args: object) -> tuple[int, list[str], str]:
    """main() in process: (exit code, stdout lines less the progress events, stderr)."""
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, _paths(out), err


def _read(path: Path) -> tuple[np.ndarray, float, int, str]:
    ds = gdal.Open(str(path))
    assert ds.GetDriver().ShortName == "GTiff" and ds.RasterCount == 1
    band = ds.GetRasterBand(1)
    return band.ReadAsArray(), band.GetNoDataValue(), band.DataType, band.GetDescription()


def _console_script() -> str:
    script = Path(sys.executable).parent / "l2b-mask"
    if not script.is_file():
        pytest.skip(f"console script l2b-mask not installed next to {sys.executable}")
    return str(script)


def _assert_one_line_error(stderr: str, *parts: str) -> str:
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    assert stderr.startswith("l2b-mask: ") and "Traceback" not in stderr
    for part in parts:
        assert part in stderr, (part, stderr)
    return stderr.strip()


# ---------------------------------------------------------------------------------------------
# The products


def test_mask_geotiff_readable_with_gdal(acq, tmp_path, capsys):
    out = tmp_path / "mask.tif"
    code, stdout, stderr = _run(capsys, acq.radiance, acq.observation, out)
    assert code == 0 and stderr == ""
    assert stdout == [str(out)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif"]  # no probability asked
    flag, nodata, dtype, description = _read(out)
    assert dtype == gdal.GDT_Byte and flag.dtype == np.uint8 and nodata == 255
    assert flag.shape == (LINES, SAMPLES) and description == "Cloud Flag"
    assert set(np.unique(flag[acq.valid]).tolist()) == {0, 1}
    assert (flag[~acq.valid] == 255).all()
    np.testing.assert_array_equal(flag, cloud_flag(acq.probability, acq.threshold))


def test_proba_writes_the_probability_beside_the_mask(acq, tmp_path, capsys):
    out = tmp_path / "sub" / "mask.tif"  # the folder is created
    code, stdout, _ = _run(capsys, acq.radiance, acq.observation, out, "--proba")
    prob_path = tmp_path / "sub" / "mask_prob.tif"
    assert code == 0 and stdout == [str(out), str(prob_path)]
    prob, nodata, dtype, description = _read(prob_path)
    assert dtype == gdal.GDT_Float32 and nodata == -9999 and description == "Cloud Probability"
    assert ((prob == -9999) == ~acq.valid).all()
    assert ((prob[acq.valid] >= 0) & (prob[acq.valid] <= 1)).all()
    np.testing.assert_allclose(prob[acq.valid], acq.probability[acq.valid], rtol=0, atol=2e-6)
    flag = _read(out)[0]
    np.testing.assert_array_equal(flag, cloud_flag(np.where(prob == -9999, np.nan, prob),
                                                   acq.threshold))


def test_threshold_changes_the_mask_consistently_with_the_probability(acq, tmp_path, capsys):
    clouds = {}
    for t in (0.01, 0.51, 0.99):
        out = tmp_path / f"mask_{t}.tif"
        assert _run(capsys, acq.radiance, acq.observation, out, "--proba", "--threshold", t)[0] == 0
        flag = _read(out)[0]
        prob = _read(tmp_path / f"mask_{t}_prob.tif")[0]
        v = prob != -9999
        # the ATBD rule: cloud where P(cloud) > threshold, on the probability written beside it
        np.testing.assert_array_equal(flag[v], (prob[v] > np.float32(t)).astype(np.uint8))
        assert (flag[~v] == 255).all()
        clouds[t] = flag == 1
    # a higher threshold only ever clears pixels, and these thresholds do clear some
    assert (clouds[0.99] <= clouds[0.51]).all() and (clouds[0.51] <= clouds[0.01]).all()
    assert clouds[0.01].sum() > clouds[0.51].sum() > clouds[0.99].sum()
    # the default is the model specification's threshold (0.51 for v0.1.0)
    out = tmp_path / "default.tif"
    assert _run(capsys, acq.radiance, acq.observation, out)[0] == 0
    np.testing.assert_array_equal(_read(out)[0] == 1, clouds[0.51])


def test_comparison_greater_or_equal(acq, tmp_path, capsys):
    # a threshold equal to one pixel's probability: '>=' flags it, '>' does not
    target = np.flatnonzero(acq.valid & (acq.probability > 0.05) & (acq.probability < 0.95))
    assert target.size, "the scene has no intermediate probability"
    line, sample = np.unravel_index(target[0], acq.probability.shape)
    t = float(acq.probability[line, sample])  # exactly representable: it is a float32
    flags = {}
    for comparison in (">", ">="):
        out = tmp_path / f"m{len(comparison)}.tif"
        args = (acq.radiance, acq.observation, out, "--threshold", repr(t), "--comparison", comparison)
        assert _run(capsys, *args)[0] == 0
        flags[comparison] = _read(out)[0]
    assert flags[">"][line, sample] == 0 and flags[">="][line, sample] == 1


def _model_bands_only(acq: Acquisition, spec, folder: Path) -> Path:
    """The radiance cut to the 268 bands the model uses: a non-EMIT-like instrument whose bands
    are all usable, which is what --keep-bands is for."""
    header = read_header(acq.radiance)
    wl, fwhm = header.float_list("wavelength"), header.float_list("fwhm")
    bands = kept_bands(wl, spec.drop_ranges_nm)
    assert bands.size == 268
    with EnviReader(header) as reader:
        cube = reader.read_lines(0, header.lines, bands, np.float32)  # (lines, samples, bands)
    extra = {"data ignore value": -9999, "wavelength units": "Nanometers",
             "wavelength": [repr(float(w)) for w in wl[bands]],
             "fwhm": [repr(float(f)) for f in fwhm[bands]]}
    return write_raster(folder / "model_bands_rdn.img", cube.transpose(0, 2, 1), extra=extra)


def test_keep_bands_feeds_every_band_of_a_non_emit_radiance(acq, spec, tmp_path, capsys):
    """--keep-bands: no band dropping and no 285-band check. On a radiance that holds exactly the
    model's bands it gives the default EMIT run's answer; the default refuses that radiance."""
    radiance = _model_bands_only(acq, spec, tmp_path)
    code, _, stderr = _run(capsys, radiance, acq.observation, tmp_path / "no.tif")
    assert code == 4
    _assert_one_line_error(stderr, "model_bands_rdn.hdr", "268 bands, expected 285")
    out = tmp_path / "keep.tif"
    code, stdout, stderr = _run(capsys, radiance, acq.observation, out, "--keep-bands", "--proba")
    assert code == 0 and stderr == "" and len(stdout) == 2
    prob = _read(tmp_path / "keep_prob.tif")[0]
    assert ((prob == -9999) == ~acq.valid).all()
    np.testing.assert_allclose(prob[acq.valid], acq.probability[acq.valid], rtol=0, atol=2e-6)
    np.testing.assert_array_equal(_read(out)[0], cloud_flag(acq.probability, acq.threshold))


def test_keep_bands_on_an_emit_radiance_also_feeds_the_dropped_bands(acq, tmp_path, capsys):
    """On EMIT data --keep-bands lets the 17 bands the specification drops (noisy, saturated)
    reach the model: it runs, and the probability moves, which is why EMIT runs drop them."""
    out = tmp_path / "all.tif"
    code, _, _ = _run(capsys, acq.radiance, acq.observation, out, "--keep-bands", "--proba")
    assert code == 0
    prob = _read(tmp_path / "all_prob.tif")[0]
    assert ((prob == -9999) == ~acq.valid).all()
    assert ((prob[acq.valid] >= 0) & (prob[acq.valid] <= 1)).all()
    assert np.abs(prob[acq.valid] - acq.probability[acq.valid]).max() > 1e-4


# ---------------------------------------------------------------------------------------------
# Failures: one line on stderr, a distinct code, no traceback, nothing written


def test_console_script_success(acq, tmp_path):
    out = tmp_path / "mask.tif"
    proc = subprocess.run([_console_script(), str(acq.radiance), str(acq.observation), str(out),
                           "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert _paths(proc.stdout) == [str(out)]
    np.testing.assert_array_equal(_read(out)[0], cloud_flag(acq.probability, acq.threshold))


def test_device_number_minus_one_is_the_cpu(acq, tmp_path):
    """The published tool's `--device -1` (its default): the CPU."""
    out = tmp_path / "mask.tif"
    proc = subprocess.run([_console_script(), str(acq.radiance), str(acq.observation), str(out),
                           "--device", "-1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    np.testing.assert_array_equal(_read(out)[0], cloud_flag(acq.probability, acq.threshold))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
@pytest.mark.parametrize(("device", "named"), [("cuda", "cuda"), ("cuda:0", "cuda:0"), ("0", "cuda:0")])
def test_device_cuda_without_cuda(acq, tmp_path, device, named):
    out = tmp_path / "mask.tif"
    proc = subprocess.run([_console_script(), str(acq.radiance), str(acq.observation), str(out),
                           "--device", device], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 6  # processing failed: the device is unavailable
    line = _assert_one_line_error(proc.stderr)
    assert line == f"l2b-mask: device '{named}' requested but CUDA is not available"
    assert proc.stdout == "" and not out.exists()


def test_bad_radiance_through_the_console_script(acq, tmp_path):
    bad = tmp_path / "garbage_rdn.hdr"
    bad.write_bytes(b"not an ENVI header\n\x00\xff" * 20)
    (tmp_path / "garbage_rdn.img").write_bytes(b"\x00" * 64)
    out = tmp_path / "mask.tif"
    proc = subprocess.run([_console_script(), str(bad), str(acq.observation), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 4, proc.stderr
    _assert_one_line_error(proc.stderr, "garbage_rdn")
    assert not out.exists()


def _irradiance_copy(folder: Path, spec) -> Path:
    path = folder / "irr_changed.npy"
    data = np.load(spec.irradiance_path)
    np.save(path, data * 1.01)
    return path


@pytest.mark.parametrize(("case", "code", "expected"), [
    ("missing_radiance", 4, ["missing_rdn.hdr", "not found"]),
    ("radiance_as_observation", 4, ["observation file has 285 bands, expected 11 or 12"]),
    ("observation_of_another_size", 4, ["lines x", "but the radiance"]),
    ("threshold_out_of_range", 2, ["--threshold must be strictly between 0 and 1"]),
    ("batch_size_zero", 2, ["batch_size and lines_per_block must be positive"]),
    ("missing_weights", 5, ["missing_weights.pt", "model weights not found"]),
    ("irradiance_checksum", 5, ["irr_changed.npy", "sha256 mismatch"]),
    ("spec_not_toml", 5, ["spec.toml", "model specification unreadable"]),
    ("unknown_device", 6, ["unknown device 'tpu'"]),
    ("output_under_a_file", 7, ["a_file", "cannot create output folder"]),
])
def test_bad_input_one_line_and_exit_code(acq, spec, tmp_path, capsys, case, code, expected):
    rdn, obs = acq.radiance, acq.observation
    out = tmp_path / "mask.tif"
    extra: list[object] = []
    if case == "missing_radiance":
        rdn = tmp_path / "missing_rdn.hdr"
    elif case == "radiance_as_observation":
        obs = acq.radiance
    elif case == "observation_of_another_size":
        obs = tmp_path / "small_obs.img"
        cube = np.zeros((LINES - 1, 11, SAMPLES))
        cube[:, 4], cube[:, 10] = 30.0, 1.0
        write_raster(obs, cube, extra={"data ignore value": -9999})
    elif case == "threshold_out_of_range":
        extra = ["--threshold", "1.5"]
    elif case == "batch_size_zero":
        extra = ["--batch-size", "0"]
    elif case == "missing_weights":
        extra = ["--weights", tmp_path / "missing_weights.pt"]
    elif case == "irradiance_checksum":
        extra = ["--irradiance", _irradiance_copy(tmp_path, spec)]
    elif case == "spec_not_toml":
        (tmp_path / "spec.toml").write_text("this is [not TOML\n")
        extra = ["--spec", tmp_path / "spec.toml"]
    elif case == "unknown_device":
        extra = ["--device", "tpu"]
    elif case == "output_under_a_file":
        (tmp_path / "a_file").write_text("")
        out = tmp_path / "a_file" / "mask.tif"
    got, stdout, stderr = _run(capsys, rdn, obs, out, *extra)
    assert got == code, stderr
    _assert_one_line_error(stderr, *expected)
    assert stdout == [] and not out.exists() and not out.with_name("mask_prob.tif").exists()


def test_unexpected_error_is_one_line_exit_1_and_debug_shows_it(acq, tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(cli, "write_request", broken)
    args = (acq.radiance, acq.observation, tmp_path / "mask.tif")
    code, _, stderr = _run(capsys, *args)
    assert code == 1
    line = _assert_one_line_error(stderr, "unexpected error: RuntimeError: something broke", "--debug")
    assert "\n" not in line
    with pytest.raises(RuntimeError, match="something"):
        cli.main([str(a) for a in args] + ["--debug"])


def test_help_lists_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for code in ("0", "1", "2", "4", "5", "6", "7"):
        assert f"\n  {code}  " in text
    assert "--keep-bands" in text and "--proba" in text


# ---------------------------------------------------------------------------------------------
# The command line and the stop signals


@pytest.mark.parametrize(("args", "expected"), [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--precision", "float16"], "argument --precision: invalid choice"),
    (["--threshold", "half"], "argument --threshold: invalid float value"),
    ([], "RADIANCE is required"),
])
def test_bad_command_line_is_one_line_exit_2(capsys, monkeypatch, args, expected):
    for name in cli.ENV_ARGUMENTS:
        monkeypatch.delenv(cli.ENV_PREFIX + name, raising=False)
    code, stdout, stderr = _run(capsys, *args)
    assert code == 2 and stdout == []
    _assert_one_line_error(stderr, expected)


def _scratch_folders(folder: Path) -> list[Path]:
    return sorted(folder.glob(".l2b-mask-*"))


class _SigtermEscaped(Exception):
    """Raised by the test's own handler: the command did not take SIGTERM over."""


@pytest.fixture
def sigterm_guard():
    """A SIGTERM the command does not handle fails the test instead of ending pytest."""
    def escaped(signum, frame):
        raise _SigtermEscaped

    previous = signal.signal(signal.SIGTERM, escaped)
    yield escaped
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_while_writing_leaves_the_previous_result_whole(acq, tmp_path, capsys, monkeypatch,
                                                                sigterm_guard):
    out = tmp_path / "mask.tif"
    out.write_bytes(b"the previous result")
    writer = cli.write_request

    def stopped_half_way(request, computed, paths):
        writer(request, computed, paths)
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's stop, delivered to this process

    monkeypatch.setattr(cli, "write_request", stopped_half_way)
    code, stdout, stderr = _run(capsys, acq.radiance, acq.observation, out, "--proba")
    assert code == 8 and stdout == []
    _assert_one_line_error(stderr, "interrupted")
    assert out.read_bytes() == b"the previous result" and not out.with_name("mask_prob.tif").exists()
    assert _scratch_folders(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is sigterm_guard  # put back


def test_sigterm_after_publication_is_ignored(acq, tmp_path, capsys, monkeypatch, sigterm_guard):
    close = cli.Staging.close

    def stopped_while_tidying(self):
        os.kill(os.getpid(), signal.SIGTERM)
        close(self)

    monkeypatch.setattr(cli.Staging, "close", stopped_while_tidying)
    out = tmp_path / "mask.tif"
    code, stdout, stderr = _run(capsys, acq.radiance, acq.observation, out)
    assert code == 0, stderr
    assert stdout == [str(out)] and out.is_file() and _scratch_folders(tmp_path) == []
