"""What reading the observation file once saves (issue 21): the four passes a PGE run made
over it before, against the one `read_observation` makes, on the same file, in one process.

    .venv/bin/python benchmarks/bench_observation.py                   # 1280 x 1242, float32 and float64
    .venv/bin/python benchmarks/bench_observation.py --lines 320 --repeat 5

The file is EMIT's layout (11 bands, BIL, fill in a few pixels) with random angles, written once
per data type; it sits in the page cache after the first pass, so the times are those of
reading from memory and converting (a cold disk adds the file's size once per pass). The four
passes: the Earth-Sun distance (`Scene.earth_sun_distance`), the mean solar angles
(`mean_solar_angles`), the solar zenith streamed with the radiance (64-line blocks, as the PGE's
default `lines_per_block`) and the four angles of the shadow (`read_sun_view_angles`). The one
pass: `read_observation`, then the same solar zenith blocks sliced from its plane and the
shadow's float32 angles from its planes (`sun_view_angles`). Best of `--repeat`, CPU and wall.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import OBS_NAMES, write_pair, write_raster  # noqa: E402

from l2b_mask.algorithm.beyond_cloud import read_sun_view_angles, sun_view_angles  # noqa: E402
from l2b_mask.inputs.observation import read_observation  # noqa: E402
from l2b_mask.inputs.scene import Scene, mean_solar_angles  # noqa: E402

SAMPLES = 1242
BLOCK_LINES = 64


def write_scene(folder: Path, lines: int, dtype: type) -> tuple[Scene, Path]:
    rdn, _ = write_pair(folder, 2, SAMPLES, bands=8)  # only its header is opened
    rng = np.random.default_rng(0)
    obs = rng.uniform(0.0, 90.0, (lines, 11, SAMPLES)).astype(dtype)
    obs[:, 10, :] = 1.0
    obs[:, :, :3] = -9999.0
    path = write_raster(folder / "scene_obs.img", obs,
                        extra={"data ignore value": -9999, "band names": OBS_NAMES})
    header_lines = (folder / "scene_rdn.hdr").read_text().replace("lines = 2", f"lines = {lines}")
    (folder / "scene_rdn.hdr").write_text(header_lines)
    os.truncate(folder / "scene_rdn.img", lines * SAMPLES * 8 * 4)
    return Scene.open(rdn, path, expected_radiance_bands=None), path


def four_passes(scene: Scene, path: Path) -> None:
    scene.earth_sun_distance()
    mean_solar_angles(path)
    with scene.observation_reader() as reader:
        for start in range(0, scene.lines, BLOCK_LINES):
            reader.read_band(start, min(start + BLOCK_LINES, scene.lines), scene.solar_zenith_band)
    read_sun_view_angles(scene)


def one_pass(scene: Scene, path: Path) -> None:
    once = read_observation(scene)
    once.earth_sun_distance()
    for start in range(0, scene.lines, BLOCK_LINES):
        once.solar_zenith[start:start + BLOCK_LINES].astype(np.float64)
    sun_view_angles(once)


def best(fn: Callable[[Scene, Path], None], scene: Scene, path: Path, repeat: int
         ) -> tuple[float, float]:
    """(wall s, CPU s), the fastest of `repeat` runs."""
    runs = []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn(scene, path)
        runs.append((time.perf_counter() - w0, time.process_time() - c0))
    return min(r[0] for r in runs), min(r[1] for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1280)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"observation file {args.lines} x {SAMPLES} x 11, BIL, best of {args.repeat}")
    print("| data type | file MB | four passes: wall s (CPU s) | one pass: wall s (CPU s) | saved wall s |")
    print("|---|---|---|---|---|")
    for dtype in (np.float32, np.float64):
        with tempfile.TemporaryDirectory() as tmp:
            scene, path = write_scene(Path(tmp), args.lines, dtype)
            one_pass(scene, path)  # the file into the page cache
            four = best(four_passes, scene, path, args.repeat)
            one = best(one_pass, scene, path, args.repeat)
            size = path.stat().st_size / 1e6
            print(f"| {np.dtype(dtype).name} | {size:.0f} | {four[0]:.3f} ({four[1]:.3f}) "
                  f"| {one[0]:.3f} ({one[1]:.3f}) | {four[0] - one[0]:.3f} |")


if __name__ == "__main__":
    main()
