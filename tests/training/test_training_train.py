"""l2b-mask-train on small synthetic sets: it learns, it resumes bit for bit after SIGTERM, and
train -> evaluate -> release -> PGE runs end to end with the released model."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import torch
from training_sets import make_set, small_spec, train_args

import pge.cli
from l2b_mask.errors import ExitCode
from l2b_mask.spec import ModelSpec, sha256_of
from l2b_mask.synthetic.scene import generate_acquisition
from l2b_mask.training import cli
from l2b_mask.training import train as train_module


def _rows(outdir: Path) -> list[dict[str, str]]:
    with open(outdir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _weights(outdir: Path) -> dict[str, torch.Tensor]:
    return torch.load(outdir / "weights.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def learned(tmp_path_factory, spec):
    """Three epochs on 6 scenes, evaluated on 2 held-out scenes."""
    base = tmp_path_factory.mktemp("learned")
    s = make_set(base / "set", small_spec(base, spec), scenes=8, test_scenes=2, seed=21,
                 pixels_per_scene=512)
    outdir = base / "run"
    assert cli.train_main(train_args(s, outdir, epochs=3)) == 0
    report = base / "report.json"
    assert cli.evaluate_main([str(s.dataset), "--weights", str(outdir / "weights.pt"), "--spec",
                              str(s.spec), "--test-csv", str(s.test_csv), "--out", str(report),
                              "--device", "cpu"]) == 0
    return s, outdir, json.loads(report.read_text()), report


def test_training_lowers_the_loss_and_beats_the_l2a_rule(learned):
    _, outdir, report, _ = learned
    rows = _rows(outdir)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert list(rows[0]) == ["epoch", "train_loss", "test_loss", "test_f1", "test_auc"]
    assert float(rows[-1]["train_loss"]) < 0.5 * float(rows[0]["train_loss"])
    assert float(rows[-1]["test_loss"]) < float(rows[0]["test_loss"])
    assert report["metrics"]["f1"] > report["baselines"]["l2a_rule"]["f1"] + 0.05
    assert report["metrics"]["f1"] == pytest.approx(float(rows[-1]["test_f1"]), abs=1e-6)


def test_outputs_and_record(learned, spec):
    s, outdir, _, _ = learned
    assert sorted(p.name for p in outdir.iterdir()) == ["checkpoint.pt", "metrics.csv",
                                                         "training.json", "weights.pt"]
    record = json.loads((outdir / "training.json").read_text())
    assert record["weights_sha256"] == sha256_of(outdir / "weights.pt")
    assert record["datasets"] == [{"path": str(s.dataset), "sha256": sha256_of(s.dataset),
                                   "rows": 8 * 512}]
    assert record["settings"]["epochs"] == 3 and record["settings"]["grad_clip"] == 1.0
    assert {"torch", "h5py", "scikit-learn", "schedulefree", "python"} <= set(record["software"])
    assert len(record["timings_s"]["epochs"]) == 3
    assert record["counts"]["train_spectra"] == 6 * 512
    small = ModelSpec.load(s.spec)
    from l2b_mask.algorithm.model import SpecTf

    assert set(_weights(outdir)) == set(SpecTf(small).state_dict()), "official key names"


def test_train_evaluate_release_then_the_pge_names_the_new_version(learned, tmp_path,
                                                                   restore_logging, capsys):
    s, outdir, report, report_path = learned
    release = tmp_path / "release"
    assert cli.release_main(["--weights", str(outdir / "weights.pt"), "--evaluation",
                             str(report_path), "--version", "0.2.0", "--out", str(release),
                             "--spec", str(s.spec)]) == 0
    spec_path = release / "spectf_cloud_v0.2.0.toml"
    assert capsys.readouterr().out.strip() == str(spec_path)
    released = ModelSpec.load(spec_path)
    assert released.version == "0.2.0"
    assert released.threshold == report["best"]["f1"]["threshold"]
    assert released.weights_path == release / "spectf_cloud" / "v0.2.0" / "weights.pt"
    assert released.weights_sha256 == report["weights_sha256"] == sha256_of(released.weights_path)
    assert sha256_of(released.irradiance_path) == released.irradiance_sha256
    assert not [p for p in release.rglob(".*")], "no staging folder left"

    acq = generate_acquisition(tmp_path / "in", lines=16, samples=16, seed=5)
    rc = {"input_files": {"radiance": str(acq.radiance), "observation": str(acq.observation)},
          "ancillary_files": {"model_weights": str(released.weights_path),
                              "irradiance": str(released.irradiance_path),
                              "model_spec": str(spec_path)},
          "output": {"directory": str(tmp_path / "out")}, "processing": {"device": "cpu"},
          "pge": {"software_build_version": "010635"}}
    (tmp_path / "rc.json").write_text(json.dumps(rc))
    assert pge.cli.main([str(tmp_path / "rc.json")]) == 0, capsys.readouterr().err
    metadata = json.loads(next((tmp_path / "out").glob("*_metadata.json")).read_text())
    assert metadata["model"] == {"name": "spectf_cloud", "version": "0.2.0"}
    assert metadata["threshold"] == released.threshold
    header = next((tmp_path / "out").glob("*.hdr")).read_text()
    assert "SpecTf cloud 0.2.0" in header
    provenance = json.loads(next((tmp_path / "out").glob("*_provenance.json")).read_text())
    assert provenance["processing"]["model_version"] == "0.2.0"
    with netCDF4.Dataset(next((tmp_path / "out").glob("*.nc"))) as nc:
        assert nc.getncattr("cloud_model_version") == "0.2.0"
    ummg = json.loads(next((tmp_path / "out").glob("*.cmr.json")).read_text())
    attrs = {a["Name"]: a["Values"] for a in ummg["AdditionalAttributes"]}
    assert attrs["CLOUD_MODEL_VERSION"] == ["0.2.0"]


def test_release_refusals(learned, spec, tmp_path, capsys):
    s, outdir, _, report_path = learned
    weights = str(outdir / "weights.pt")
    other = json.loads(report_path.read_text())
    other["weights_sha256"] = "0" * 64
    other_path = tmp_path / "other.json"
    other_path.write_text(json.dumps(other))

    def release(*args: str, version: str = "0.3.0") -> int:
        return cli.release_main(["--evaluation", str(report_path), "--version", version,
                                 "--out", str(tmp_path / "rel"), *args])

    assert release("--weights", weights) == ExitCode.ANCILLARY  # v0.1.0 architecture: not strict
    assert "do not match" in capsys.readouterr().err
    assert cli.release_main(["--weights", weights, "--evaluation", str(other_path), "--version",
                             "0.3.0", "--out", str(tmp_path / "rel"),
                             "--spec", str(s.spec)]) == ExitCode.ANCILLARY
    assert "evaluated in" in capsys.readouterr().err
    assert not (tmp_path / "rel").exists() or not any((tmp_path / "rel").iterdir())
    assert release("--weights", weights, "--spec", str(s.spec)) == 0
    assert release("--weights", weights, "--spec", str(s.spec)) == ExitCode.OUTPUT
    assert "already exists" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# SIGTERM and --resume


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, spec):
    """4 training scenes of 256 spectra: 8 batches of 128 per epoch."""
    base = tmp_path_factory.mktemp("tiny")
    return make_set(base / "set", small_spec(base, spec), scenes=5, test_scenes=1,
                    pixels_per_scene=256, seed=9, nan_spectra=3)


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("whole") / "run"
    assert cli.train_main(train_args(tiny, outdir)) == 0
    return outdir


@pytest.mark.parametrize("stop_at_step", [5, 8])  # mid-epoch; the last batch of epoch 1
def test_sigterm_writes_a_checkpoint_exits_8_and_resume_is_bit_exact(
        tiny, uninterrupted, tmp_path, monkeypatch, capsys, stop_at_step):
    steps = []
    real_clip = train_module.clip_grad_norm_

    def clip_then_signal(params, max_norm):
        steps.append(1)
        if len(steps) == stop_at_step:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_clip(params, max_norm)

    monkeypatch.setattr(train_module, "clip_grad_norm_", clip_then_signal)
    outdir = tmp_path / "run"
    assert cli.train_main(train_args(tiny, outdir)) == ExitCode.INTERRUPTED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SIGTERM" in err and "--resume" in err
    assert (outdir / "checkpoint.pt").is_file() and not (outdir / "weights.pt").exists()
    assert len(steps) == stop_at_step, "stopped right after the batch it was signalled in"

    monkeypatch.setattr(train_module, "clip_grad_norm_", real_clip)
    assert cli.train_main(train_args(tiny, outdir, "--resume")) == 0
    a, b = _weights(uninterrupted), _weights(outdir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(outdir) == _rows(uninterrupted)
    record = json.loads((outdir / "training.json").read_text())
    assert record["resumed_from"] == {"epoch": 0, "batch": stop_at_step}


def test_resume_refusals(tiny, uninterrupted, tmp_path, capsys):
    assert cli.train_main(train_args(tiny, tmp_path / "new", "--resume")) == ExitCode.USAGE
    assert cli.train_main(train_args(tiny, uninterrupted)) == ExitCode.OUTPUT
    changed = train_args(tiny, uninterrupted, "--resume")
    changed[changed.index("--lr") + 1] = "1e-2"
    assert cli.train_main(changed) == ExitCode.USAGE
    lines = capsys.readouterr().err.splitlines()
    assert "no checkpoint" in lines[0] and "--resume it" in lines[1] and "lr" in lines[2]


def test_json_progress_lines_when_not_a_terminal(tiny, tmp_path, capsys):
    assert cli.train_main(train_args(tiny, tmp_path / "run", epochs=1)) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0]["event"] == "epoch_done" and events[0]["epoch"] == 1
    assert {"train_loss", "test_loss", "test_f1", "test_auc"} <= set(events[0])
    assert events[-1]["event"] == "training_done"
    assert np.isfinite(events[0]["train_loss"])


def test_progress_bar_on_a_terminal_json_lines_otherwise(capsys):
    from l2b_mask.training.progress import Progress

    bar = Progress(epochs=2, spectra_per_epoch=1000, tty=True)
    bar.start_epoch(1)
    bar.update(500, 0.25)
    bar.end_epoch({"epoch": 1, "train_loss": 0.25})
    out, err = capsys.readouterr()
    assert out == "" and "epoch 1/2" in err and "spectra" in err and "loss=0.2500" in err
    lines = Progress(epochs=2, spectra_per_epoch=1000, tty=False, interval_s=0.0)
    lines.start_epoch(2, done=200)
    lines.update(300, 0.5)
    event = json.loads(capsys.readouterr().out)
    assert event["event"] == "train_progress" and event["spectra_done"] == 500
    assert {"spectra_per_s", "loss", "eta_s", "epoch"} <= set(event)
