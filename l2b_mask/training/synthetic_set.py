"""Labelled synthetic HDF5 files in the published layout, for the tests and the benchmark.

The real labelled set cannot be fetched here. These files hold spectra of the synthetic scenes
of `l2b_mask.synthetic.scene` (its scene model, not a second one), one scene id per scene, reduced to
a model specification's bands, with labels 0 clear / 1 cloud and some clear pixels turned
into darker "shadow" spectra labelled 2 (counted as clear, as in the published evaluation).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import h5py
import numpy as np

from l2b_mask.algorithm.bands import kept_bands
from l2b_mask.spec import ModelSpec
from l2b_mask.synthetic.scene import CLASS_CLEAR, emit_wavelengths, reflectance_blocks
from l2b_mask.training.dataset import LABEL_CLEAR, LABEL_CLOUD, LABEL_SHADOW
from l2b_mask.training.release import spec_toml

FIRST_SCENE = datetime(2023, 5, 1, 6, 0, 0, tzinfo=UTC)
SHADOW_DARKENING = 0.5
#: band windows of the small test models: the L2A rule's four bands and a few continuum bands
WINDOW_CENTRES_NM = (450.0, 560.0, 860.0, 1250.0, 1380.0, 1650.0, 2110.0)


def window_drop_ranges(half_width_nm: float,
                       centres_nm: tuple[float, ...] = WINDOW_CENTRES_NM) -> tuple[tuple[float, float], ...]:
    """Drop ranges that keep only the bands within `half_width_nm` of each centre: a model
    with few tokens trains in seconds, as tests need (attention costs the square of the
    band count)."""
    ranges, low = [], 0.0
    for c in sorted(centres_nm):
        ranges.append((low, c - half_width_nm))
        low = c + half_width_nm
    return (*ranges, (low, 9999.0))


def write_small_spec(path: Path | str, base: ModelSpec, *, embed_dim: int = 16, num_heads: int = 2,
                     ff_dim: int = 16, half_width_nm: float | None = 12.0) -> Path:
    """A model specification for small, fast models: `base` (its irradiance, by absolute path)
    with another architecture and, unless `half_width_nm` is None, band windows only."""
    ranges = base.drop_ranges_nm if half_width_nm is None else window_drop_ranges(half_width_nm)
    small = replace(base, version="0.0.0", embed_dim=embed_dim, num_heads=num_heads,
                    ff_dim=ff_dim, drop_ranges_nm=ranges)
    p = Path(path)
    p.write_text(spec_toml(small, str(base.weights_path.resolve()),
                           str(base.irradiance_path.resolve()), "A small model for tests."))
    return p


def scene_id(index: int, seed: int = 0) -> str:
    """An EMIT-style scene id (`emitYYYYMMDDtHHMMSS`), distinct for each (index, seed)."""
    t = FIRST_SCENE + timedelta(days=seed % 1000, minutes=97 * index)
    return t.strftime("emit%Y%m%dt%H%M%S")


@dataclass(frozen=True)
class LabelledSet:
    path: Path
    fids: tuple[str, ...]  # scene ids in file order
    rows: int


def _scene_rows(index: int, seed: int, lines: int, samples: int, pixels: int | None,
                bands: np.ndarray, shadow_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Spectra (rows, B) and labels of one scene; a varying cloud fraction and sun per scene."""
    golden = (index * 0.6180339887) % 1.0
    rho, truth = zip(*reflectance_blocks(
        lines, samples, seed=seed * 100_003 + index, cloud_fraction=0.15 + 0.5 * golden,
        solar_zenith_deg=20.0 + 40.0 * ((index * 0.381966) % 1.0)), strict=True)
    spectra = np.concatenate(rho)[:, bands]
    truth = np.concatenate(truth)
    labels = np.where(truth == CLASS_CLEAR, LABEL_CLEAR, LABEL_CLOUD).astype(np.uint8)
    rng = np.random.default_rng([seed, index, 7])
    shadow = (labels == LABEL_CLEAR) & (rng.random(labels.size) < shadow_fraction)
    spectra[shadow] *= SHADOW_DARKENING
    labels[shadow] = LABEL_SHADOW
    if pixels is not None and pixels < labels.size:
        keep = np.sort(rng.choice(labels.size, pixels, replace=False))
        spectra, labels = spectra[keep], labels[keep]
    return spectra, labels


def write_labelled_set(path: Path | str, spec: ModelSpec, *, scenes: int = 8, lines: int = 32,
                       samples: int = 32, seed: int = 0, pixels_per_scene: int | None = None,
                       shadow_fraction: float = 0.1, nan_spectra: int = 0,
                       chunk_rows: int = 4096) -> LabelledSet:
    """Write `scenes` synthetic scenes as one labelled HDF5 file (written to a temporary name,
    then renamed). `nan_spectra` rows, spread over the file, get a NaN in one band."""
    out = Path(path)
    wl, _ = emit_wavelengths()
    bands = kept_bands(wl, spec.drop_ranges_nm)
    fids = tuple(scene_id(i, seed) for i in range(scenes))
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as h5:
            b = bands.size
            ds_x = h5.create_dataset("spectra", (0, b), np.float32, maxshape=(None, b),
                                     chunks=(min(chunk_rows, 4096), b))
            ds_y = h5.create_dataset("labels", (0,), np.uint8, maxshape=(None,), chunks=True)
            ds_f = h5.create_dataset("fids", (0,), f"S{len(fids[0])}", maxshape=(None,),
                                     chunks=True)
            h5.attrs["bands"] = wl[bands]
            for i, fid in enumerate(fids):
                x, y = _scene_rows(i, seed, lines, samples, pixels_per_scene, bands,
                                   shadow_fraction)
                n0 = ds_y.shape[0]
                for ds, rows in ((ds_x, x), (ds_y, y)):
                    ds.resize(n0 + len(y), axis=0)
                    ds[n0:] = rows
                ds_f.resize(n0 + len(y), axis=0)
                ds_f[n0:] = np.full(len(y), fid.encode())
            rows = ds_y.shape[0]
            if nan_spectra:
                rng = np.random.default_rng([seed, 11])
                for r in np.sort(rng.choice(rows, nan_spectra, replace=False)):
                    ds_x[r, int(rng.integers(b))] = np.nan
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return LabelledSet(out, fids, rows)


def write_fid_list(path: Path | str, fids: list[str] | tuple[str, ...]) -> Path:
    """One scene id per line, as the published train_fids.csv / test_fids.csv."""
    p = Path(path)
    p.write_text("".join(f"{f}\n" for f in fids))
    return p


def main(argv: list[str] | None = None) -> int:
    """`python -m l2b_mask.training.synthetic_set OUT_DIR`: a labelled set to try the loop on."""
    p = argparse.ArgumentParser(prog="python -m l2b_mask.training.synthetic_set",
                                description=main.__doc__)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--spec", type=Path, help="model specification whose bands the spectra keep "
                   "(default: v0.1.0's, 268 bands)")
    p.add_argument("--scenes", type=int, default=12)
    p.add_argument("--test-scenes", type=int, default=4, help="the last scenes, for testing")
    p.add_argument("--pixels-per-scene", type=int, help="labelled pixels per 64 x 64 scene")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if not 0 < a.test_scenes < a.scenes:
        p.error("--test-scenes must be between 1 and --scenes - 1")
    a.out_dir.mkdir(parents=True, exist_ok=True)
    labelled = write_labelled_set(a.out_dir / "labelled.h5", ModelSpec.load(a.spec),
                                  scenes=a.scenes, lines=64, samples=64, seed=a.seed,
                                  pixels_per_scene=a.pixels_per_scene)
    for name, fids in (("train_fids.csv", labelled.fids[:-a.test_scenes]),
                       ("test_fids.csv", labelled.fids[-a.test_scenes:])):
        print(write_fid_list(a.out_dir / name, fids))
    print(labelled.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
