"""The model team's commands refuse bad inputs before any work, naming the file (issue 20): a
file missing one of the model's bands, a damaged HDF5 chunk, a split whose every spectrum is
NaN, a checkpoint that is not one of l2b-mask-train's; and their outputs are written through
unpredictable temporary names, never through a link."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from training_sets import make_set, small_spec, train_args

from l2b_mask.algorithm.bands import kept_bands
from l2b_mask.algorithm.model import SpecTf
from l2b_mask.errors import ExitCode
from l2b_mask.spec import ModelSpec
from l2b_mask.synthetic.scene import emit_wavelengths
from l2b_mask.training import cli
from l2b_mask.training.dataset import missing_bands
from l2b_mask.training.files import write_json, write_text


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    base = tmp_path_factory.mktemp("inputs")
    spec_path = small_spec(base, ModelSpec.load())
    return make_set(base / "set", spec_path, scenes=4, test_scenes=1, pixels_per_scene=200)


@pytest.fixture(scope="module")
def weights(small, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "w.pt"
    torch.save(SpecTf(ModelSpec.load(small.spec)).state_dict(), path)
    return path


def _rewrite(src: Path, dst: Path, *, keep_bands: np.ndarray | None = None, nan_fids=(),
             gzip: bool = False) -> Path:
    """A copy of a labelled file: some band columns only, NaN spectra for some scenes, or
    gzip-compressed chunks."""
    with h5py.File(src, "r") as a, h5py.File(dst, "w") as b:
        spectra, bands, fids = a["spectra"][()], a.attrs["bands"][()], a["fids"][()]
        if keep_bands is not None:
            spectra, bands = spectra[:, keep_bands], bands[keep_bands]
        spectra[np.isin(fids, [f.encode() for f in nan_fids])] = np.nan
        options = {"compression": "gzip", "chunks": (64, spectra.shape[1])} if gzip else {}
        b.create_dataset("spectra", data=spectra, **options)
        b["labels"], b["fids"] = a["labels"][()], fids
        b.attrs["bands"] = bands
    return dst


def _evaluate(small, data: Path, weights: Path, out: Path) -> list[str]:
    return [str(data), "--weights", str(weights), "--test-csv", str(small.test_csv), "--out",
            str(out / "report.json"), "--spec", str(small.spec)]


def _one_line(capsys, code: ExitCode, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and code.label in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def _train(small, data: Path, outdir: Path, *extra: str) -> list[str]:
    args = train_args(small, outdir, *extra, epochs=1)
    args[0] = str(data)
    return args


# ---------------------------------------------------------------------------------------------
# A band missing


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_268_band_grid_with_one_band_missing_is_found(where):
    spec = ModelSpec.load()
    wl, _ = emit_wavelengths()
    bands = wl[kept_bands(wl, spec.drop_ranges_nm)]
    assert bands.size == 268 and missing_bands(bands, spec.drop_ranges_nm) is None
    drop = {"first": 0, "middle": 100, "last": 267}[where]
    assert missing_bands(np.delete(bands, drop), spec.drop_ranges_nm) is not None


def test_a_file_with_one_band_less_is_refused_by_train_and_evaluate(small, weights, tmp_path,
                                                                     capsys):
    with h5py.File(small.dataset, "r") as h5:
        b = h5.attrs["bands"].size
    short = _rewrite(small.dataset, tmp_path / "short.h5", keep_bands=np.delete(np.arange(b), 5))
    assert cli.evaluate_main(_evaluate(small, short, weights, tmp_path)) == ExitCode.INPUT
    _one_line(capsys, ExitCode.INPUT, str(short), f"{b - 1} bands", "missing")
    assert cli.train_main(_train(small, short, tmp_path / "o")) == ExitCode.INPUT
    _one_line(capsys, ExitCode.INPUT, str(short), "missing")
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# A damaged chunk


def test_damaged_hdf5_chunk_names_the_file(small, weights, tmp_path, capsys):
    bad = _rewrite(small.dataset, tmp_path / "damaged.h5", gzip=True)
    with h5py.File(bad, "r") as h5:
        info = h5["spectra"].id.get_chunk_info(1)
    with open(bad, "r+b") as f:
        f.seek(info.byte_offset + 8)
        f.write(b"\xff" * 64)
    assert cli.evaluate_main(_evaluate(small, bad, weights, tmp_path)) == ExitCode.INPUT
    _one_line(capsys, ExitCode.INPUT, str(bad), "spectra", "unreadable")
    assert cli.train_main(_train(small, bad, tmp_path / "o")) == ExitCode.INPUT
    _one_line(capsys, ExitCode.INPUT, str(bad), "unreadable")
    assert not any((tmp_path / "o").glob("*.pt"))


# ---------------------------------------------------------------------------------------------
# Splits with no finite spectrum: refused before training starts


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_split_of_nan_spectra_is_refused_before_training(small, tmp_path, capsys, split):
    fids = small.train_fids if split == "train" else small.test_fids
    nan = _rewrite(small.dataset, tmp_path / "nan.h5", nan_fids=fids)
    outdir = tmp_path / "o"
    assert cli.train_main(_train(small, nan, outdir)) == ExitCode.INPUT
    csv = small.train_csv if split == "train" else small.test_csv
    _one_line(capsys, ExitCode.INPUT, str(csv), "NaN or Inf")
    assert not outdir.exists()  # nothing trained, nothing written


def test_evaluate_refuses_a_test_split_of_nan_spectra(small, weights, tmp_path, capsys):
    nan = _rewrite(small.dataset, tmp_path / "nan.h5", nan_fids=small.test_fids)
    assert cli.evaluate_main(_evaluate(small, nan, weights, tmp_path)) == ExitCode.INPUT
    _one_line(capsys, ExitCode.INPUT, str(small.test_csv), "NaN or Inf")


# ---------------------------------------------------------------------------------------------
# --resume with a file that is not a checkpoint


class _Payload:
    """Unpickling this runs a command: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["code", "not_a_checkpoint"])
def test_resume_from_a_crafted_checkpoint_is_an_input_error(small, tmp_path, capsys, kind):
    outdir = tmp_path / "o"
    outdir.mkdir()
    marker = tmp_path / "pwned"
    ckpt = outdir / "checkpoint.pt"
    torch.save({"model": _Payload(marker)} if kind == "code" else {"model": {}}, ckpt)
    assert cli.train_main(_train(small, small.dataset, outdir, "--resume")) == ExitCode.INPUT
    _one_line(capsys, ExitCode.INPUT, str(ckpt), "--resume refused")
    assert not marker.exists()
    assert sorted(p.name for p in outdir.iterdir()) == ["checkpoint.pt"]


# ---------------------------------------------------------------------------------------------
# Temporary names


def test_outputs_never_written_through_a_planted_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep\n")
    out = tmp_path / "out"
    out.mkdir()
    for name in (f".metrics.csv.{os.getpid()}.tmp", f".training.json.{os.getpid()}.tmp",
                 ".metrics.csv", "metrics.csv"):
        (out / name).symlink_to(victim)  # the old predictable names, and the target itself
    write_text(out / "metrics.csv", "epoch\n1\n")
    write_json(out / "training.json", {"a": 1})
    assert victim.read_text() == "keep\n"
    assert not (out / "metrics.csv").is_symlink() and (out / "metrics.csv").read_text() == "epoch\n1\n"
    assert oct((out / "training.json").stat().st_mode & 0o777) == oct(0o644)
    left = sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp") and not p.is_symlink())
    assert left == []


def test_temporary_names_are_unpredictable(tmp_path):
    from l2b_mask.training import files

    seen = []

    def record(f) -> None:
        seen.append(str(Path(f"/proc/self/fd/{f.fileno()}").readlink()))
        f.write(b"x")

    for _ in range(2):
        files.write_atomic(tmp_path / "weights.pt", record)
    assert len(set(seen)) == 2 and all(f".weights.pt.{os.getpid()}.tmp" not in s for s in seen)
