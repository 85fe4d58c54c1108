"""Small labelled data sets and specifications shared by the tests of l2b_mask.training.

Everything here is built by the project's own code (l2b_mask.training.synthetic_set) in a few
tenths of a second; the small specification keeps 22 bands and a 16-wide model, so a training
epoch over a few thousand spectra takes about a second on one core.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from l2b_mask.spec import ModelSpec
from l2b_mask.training.synthetic_set import write_fid_list, write_labelled_set, write_small_spec


@dataclass(frozen=True)
class SetFiles:
    spec: Path
    dataset: Path
    train_csv: Path
    test_csv: Path
    train_fids: tuple[str, ...]
    test_fids: tuple[str, ...]


def make_set(folder: Path, spec_path: Path, *, scenes: int, test_scenes: int, seed: int = 0,
             pixels_per_scene: int | None = None, nan_spectra: int = 0,
             lines: int = 32, samples: int = 32) -> SetFiles:
    """One HDF5 file of `scenes` scenes; the last `test_scenes` are the test split."""
    folder.mkdir(parents=True, exist_ok=True)
    labelled = write_labelled_set(folder / "set.h5", ModelSpec.load(spec_path), scenes=scenes,
                                  seed=seed, pixels_per_scene=pixels_per_scene,
                                  nan_spectra=nan_spectra, lines=lines, samples=samples)
    train, test = labelled.fids[:-test_scenes], labelled.fids[-test_scenes:]
    return SetFiles(spec_path, labelled.path, write_fid_list(folder / "train_fids.csv", train),
                    write_fid_list(folder / "test_fids.csv", test), train, test)


def small_spec(folder: Path, base: ModelSpec) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_small_spec(folder / "spectf_cloud_v0.0.0.toml", base)


def train_args(s: SetFiles, outdir: Path, *extra: str, epochs: int = 2) -> list[str]:
    """l2b-mask-train arguments of a quick single-thread run on `s`."""
    return [str(s.dataset), "--train-csv", str(s.train_csv), "--test-csv", str(s.test_csv),
            "--outdir", str(outdir), "--spec", str(s.spec), "--epochs", str(epochs),
            "--batch", "128", "--lr", "3e-3", "--warmup-steps", "10", "--threads", "1", *extra]
