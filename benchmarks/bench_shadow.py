"""Time the cloud buffer and cloud shadow steps on a full 1280 x 1242 scene, in one run.

    .venv/bin/python benchmarks/bench_shadow.py [--lines 1280] [--samples 1242] [--repeat 3]

The scene is made here from arrays, not by the synthetic generator (whose 285-band radiance
would take minutes): clouds from thresholded smooth noise (30 % cover), a swath turned 50
degrees from north, sun at 50 degrees zenith, view azimuths either side of the track, and four
reflectance bands with shadows darkened. Each step is timed `--repeat` times and the best is
printed, with its share of the PGE's 225.6 s full-scene wall time of docs/performance.md
(bfloat16; 364.8 s in float32), so the figures are ratios within one machine and one run.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
from scipy.ndimage import gaussian_filter

from l2b_mask.algorithm.cloud_buffer import cloud_buffer_distance
from l2b_mask.algorithm.cloud_shadow import SunViewAngles, cloud_shadow_flag, geometric_shadow
from l2b_mask.algorithm.geometry import check_location_geometry, local_axes

PGE_FULL_SCENE_S = 225.6  # docs/performance.md, 1280 x 1242, bfloat16 (the faster precision)


def make_scene(lines: int, samples: int, seed: int = 0) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    noise = gaussian_filter(rng.standard_normal((lines, samples)), 12.0)
    flag = (noise > np.quantile(noise, 0.7)).astype(np.uint8)
    flag[::40] = 255  # a few fill lines
    heading = np.deg2rad(50.0)
    li, si = np.meshgrid(np.arange(lines, dtype=np.float64), np.arange(samples, dtype=np.float64),
                         indexing="ij")
    east = 60.0 * (li * np.sin(heading) + (si - samples / 2) * np.cos(heading))
    north = 60.0 * (li * np.cos(heading) - (si - samples / 2) * np.sin(heading))
    lat = -25.0 + north / 111_195.0
    lon = 133.0 + east / (111_195.0 * np.cos(np.deg2rad(-25.0)))
    cross = si - samples / 2
    angles = SunViewAngles(
        solar_zenith=np.full(flag.shape, 50.0), solar_azimuth=np.full(flag.shape, 62.0),
        view_zenith=np.degrees(np.arctan(np.abs(cross) * 60.0 / 410_000.0)),
        view_azimuth=np.where(cross > 0, -40.0, 140.0) % 360.0)
    surface = 0.3 + 0.05 * gaussian_filter(rng.standard_normal((lines, samples)), 4.0)
    reflectance = [surface * f for f in (0.4, 1.0, 0.9, 0.8)]
    return {"flag": flag, "lon": lon, "lat": lat, "angles": angles, "reflectance": reflectance}


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=1280)
    p.add_argument("--samples", type=int, default=1242)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    sc = make_scene(args.lines, args.samples)
    flag, angles, lon, lat = sc["flag"], sc["angles"], sc["lon"], sc["lat"]
    axes = local_axes(lon, lat)  # type: ignore[arg-type]
    steps: dict[str, Callable[[], object]] = {
        "location check + spacing": lambda: check_location_geometry("bench", lon, lat),  # type: ignore[arg-type]
        "local east/north axes": lambda: local_axes(lon, lat),  # type: ignore[arg-type]
        "cloud buffer distance": lambda: cloud_buffer_distance(
            flag, angles.solar_zenith, 60.0),  # type: ignore[union-attr, arg-type]
        "geometric shadow (500-3000 m)": lambda: geometric_shadow(flag, angles, axes),  # type: ignore[arg-type]
        "shadow + darkness test": lambda: cloud_shadow_flag(
            flag, angles, axes, reflectance=sc["reflectance"]),  # type: ignore[arg-type]
    }
    print(f"scene {args.lines} x {args.samples}, cloud-flag pixels {(flag == 1).sum()}, "
          f"python {platform.python_version()}, numpy {np.__version__}, best of {args.repeat}")
    print(f"| step | best s | share of the PGE's {PGE_FULL_SCENE_S:g} s |")
    print("|---|---:|---:|")
    for name, fn in steps.items():
        s = best_of(args.repeat, fn)
        print(f"| {name} | {s:.3f} | {100 * s / PGE_FULL_SCENE_S:.2f} % |")


if __name__ == "__main__":
    main()
