"""Scoring the cloud shadow flag against the synthetic generator's true shadow.

Used by the tests and by `python -m l2b_mask.synthetic.shadow_evaluation`, the command whose figures the
ATBD (section 4.2.3) quotes. The cloud flag given to the shadow is the generator's true cloud
(thick, ice and cirrus pixels), so the scores are those of the shadow step alone, not of the
cloud model before it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from l2b_mask.algorithm.cloud_shadow import DARKNESS_BANDS_NM, SunViewAngles, cloud_shadow_flag
from l2b_mask.algorithm.geometry import LocalAxes, check_location_geometry, local_axes
from l2b_mask.inputs.envi import EnviReader, read_header
from l2b_mask.synthetic.scene import (
    CLASS_CLEAR,
    CLASS_FILL,
    SyntheticAcquisition,
    generate_acquisition,
    solar_irradiance,
    toa_reflectance,
)

# EMIT observation-file band indices (docs: /work/shared/notes/emit-conventions.md, section 3).
_OBS_VAA, _OBS_VZA, _OBS_SAA, _OBS_SZA, _OBS_ESD = 1, 2, 3, 4, 10


@dataclass(frozen=True)
class ShadowCase:
    """The inputs of `cloud_shadow_flag` for one synthetic acquisition, and its truth."""

    flag: np.ndarray  # uint8 1 cloud, 0 clear, 255 no value (from the true classes)
    angles: SunViewAngles
    axes: LocalAxes
    reflectance: list[np.ndarray]  # TOA reflectance near DARKNESS_BANDS_NM
    truth: np.ndarray  # uint8 true shadow, 1/0/255


@dataclass(frozen=True)
class ShadowScores:
    """Recall: share of the true shadow flagged, of the shadows whose cloud the scene shows
    (`recall`) and of all (`recall_all`, with shadows cast from outside the scene or from under
    fill). False-shadow rate: share of the clear, sunlit pixels flagged. All over pixels with a
    value and a clear flag."""

    recall: float
    recall_all: float
    false_shadow_rate: float
    true_shadow_pixels: int
    sunlit_clear_pixels: int


def read_raster(path: Path, bands: Sequence[int] | None = None) -> np.ndarray:
    """A whole ENVI raster as (lines, samples, bands) float64."""
    header = read_header(path)
    with EnviReader(header) as reader:
        return reader.read_lines(0, header.lines, bands, np.float64)


def load_case(acq: SyntheticAcquisition) -> ShadowCase:
    """Read the acquisition's files as the PGE would, and the truth the generator kept."""
    if acq.shadow is None:
        raise ValueError("the acquisition was generated without shadows")
    loc = read_raster(acq.location)
    obs = read_raster(acq.observation)
    check_location_geometry(acq.location, loc[..., 0], loc[..., 1], loc[..., 2])
    axes = local_axes(loc[..., 0], loc[..., 1])
    angles = SunViewAngles(obs[..., _OBS_SZA], obs[..., _OBS_SAA], obs[..., _OBS_VZA],
                           obs[..., _OBS_VAA])
    header = read_header(acq.radiance)
    wl = header.float_list("wavelength")
    assert wl is not None
    picks = [int(np.argmin(np.abs(wl - w))) for w in DARKNESS_BANDS_NM]
    rdn = read_raster(acq.radiance, picks)
    with np.errstate(all="ignore"):
        rho = toa_reflectance(rdn, obs[..., _OBS_SZA], obs[..., _OBS_ESD],
                              solar_irradiance()[picks]).astype(np.float32)
    flag = np.where(acq.truth == CLASS_CLEAR, 0, 1).astype(np.uint8)
    flag[acq.truth == CLASS_FILL] = 255
    return ShadowCase(flag, angles, axes, [rho[..., j] for j in range(len(picks))], acq.shadow)


def score(predicted: np.ndarray, case: ShadowCase) -> ShadowScores:
    """Recall and false-shadow rate of a shadow flag against the case's truth."""
    clear = case.flag == 0
    true_shadow = clear & (case.truth == 1)
    any_shadow = clear & ((case.truth == 1) | (case.truth == 2))
    sunlit = clear & (case.truth == 0)
    hit = predicted == 1
    n_true, n_all, n_sunlit = int(true_shadow.sum()), int(any_shadow.sum()), int(sunlit.sum())
    return ShadowScores(
        recall=float((hit & true_shadow).sum() / n_true) if n_true else float("nan"),
        recall_all=float((hit & any_shadow).sum() / n_all) if n_all else float("nan"),
        false_shadow_rate=float((hit & sunlit).sum() / n_sunlit) if n_sunlit else float("nan"),
        true_shadow_pixels=n_true, sunlit_clear_pixels=n_sunlit,
    )


def evaluate(seeds: Sequence[int], solar_zeniths: Sequence[float], size: int,
             cloud_fraction: float = 0.15) -> list[dict[str, object]]:
    """Scores of the geometric shadow and of the darkness-tested one, per scene."""
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for sza in solar_zeniths:
                acq = generate_acquisition(Path(tmp) / f"s{seed}_{sza:g}", lines=size,
                                           samples=size, seed=seed, shadows=True,
                                           cloud_fraction=cloud_fraction, solar_zenith_deg=sza)
                case = load_case(acq)
                for test in (False, True):
                    flag = cloud_shadow_flag(case.flag, case.angles, case.axes,
                                             darkness_test=test, reflectance=case.reflectance)
                    rows.append({"seed": seed, "solar_zenith_deg": sza, "darkness_test": test,
                                 **asdict(score(flag, case))})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print per-scene scores and their means as JSON (the ATBD's 4.2.3 table)."""
    p = argparse.ArgumentParser(prog="python -m l2b_mask.synthetic.shadow_evaluation",
                                description="Cloud shadow recall and false-shadow rate on "
                                            "synthetic scenes with rendered shadows.")
    p.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12, 13, 14])
    p.add_argument("--solar-zeniths", type=float, nargs="+", default=[30.0, 50.0])
    p.add_argument("--size", type=int, default=384, help="lines = samples of each scene")
    args = p.parse_args(argv)
    rows = evaluate(args.seeds, args.solar_zeniths, args.size)
    summary = {}
    for test in (False, True):
        sel = [r for r in rows if r["darkness_test"] is test]
        summary["darkness_test" if test else "geometric"] = {
            k: round(float(np.mean([float(r[k]) for r in sel])), 4)  # type: ignore[arg-type]
            for k in ("recall", "recall_all", "false_shadow_rate")}
    print(json.dumps({"scenes": rows, "mean": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
