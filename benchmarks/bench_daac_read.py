"""Streaming a radiance by blocks of lines: ENVI raster vs LP DAAC granule, in one run.

    .venv/bin/python benchmarks/bench_daac_read.py                    # 320 x 1242, a few minutes
    .venv/bin/python benchmarks/bench_daac_read.py --lines 64 --samples 256 --repeat 2

Writes one synthetic acquisition (l2b_mask.synthetic.scene, ENVI BIL) and its RAD granule twice
(l2b_mask.synthetic.daac): radiance in 64-line chunks, and contiguous (EMIT's writer sets no
chunking or compression, and netCDF-C then stores a fixed-size variable contiguously). Each
variant then reads the whole radiance by blocks of `--block` lines (all bands, float32, the
reader the PGE would use: EnviReader or DaacReader) in a fresh child process, the variants
alternating over `--repeat` rounds so that other load on the machine hits them alike. Prints
per variant the best wall time, the throughput and the child's peak RSS (and its RSS before
reading, imports included), with ratios to ENVI. The files are in the page cache (just
written), so the figures compare the readers' CPU cost, not the disk.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))

VARIANTS = ("envi", "daac-chunked", "daac-contiguous")


def _rss_mb() -> float:
    """Peak RSS of this process image (Linux VmHWM). Not `ru_maxrss`: on Linux that keeps the
    parent's RSS at fork across the exec, which would hide the reader's own peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def child(variant: str, path: Path, block: int) -> None:
    """Read the whole radiance once and print seconds and peak RSS as JSON."""
    from l2b_mask.inputs.daac import DaacReader, open_radiance_granule
    from l2b_mask.inputs.envi import EnviReader, read_header

    if variant == "envi":
        header = read_header(path)
        reader, lines = EnviReader(header), header.lines
    else:
        granule = open_radiance_granule(path)
        reader, lines = DaacReader(granule), granule.lines
    before = _rss_mb()
    total = 0.0
    t0 = time.perf_counter()
    with reader:
        for start in range(0, lines, block):
            total += float(reader.read_lines(start, min(start + block, lines))[:, :, 100].sum())
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "rss_before_mb": before, "peak_rss_mb": _rss_mb(),
                      "checksum": total}))


def prepare(folder: Path, lines: int, samples: int) -> dict[str, Path]:
    import numpy as np

    from l2b_mask.synthetic.daac import write_daac_granules
    from l2b_mask.synthetic.scene import generate_acquisition

    t0 = time.perf_counter()
    acq = generate_acquisition(folder / "envi", lines=lines, samples=samples,
                               obs_dtype=np.float32)
    chunked = write_daac_granules(acq, folder / "chunked", chunk_lines=64)
    contiguous = write_daac_granules(acq, folder / "contiguous", chunk_lines=None)
    print(f"wrote the acquisition and its granules in {time.perf_counter() - t0:.1f} s")
    return {"envi": acq.radiance, "daac-chunked": chunked.radiance,
            "daac-contiguous": contiguous.radiance}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=320)
    p.add_argument("--samples", type=int, default=1242)
    p.add_argument("--block", type=int, default=64, help="lines per read (the PGE's default)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--child", nargs=3, metavar=("VARIANT", "PATH", "BLOCK"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), int(args.child[2]))
        return
    with tempfile.TemporaryDirectory(prefix="bench_daac_") as tmp:
        paths = prepare(Path(tmp), args.lines, args.samples)
        megabytes = args.lines * args.samples * 285 * 4 / 1e6
        runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for _ in range(args.repeat):
            for variant in VARIANTS:
                out = subprocess.run([sys.executable, str(HERE), "--child", variant,
                                      str(paths[variant]), str(args.block)],
                                     check=True, capture_output=True, text=True).stdout
                runs[variant].append(json.loads(out))
    checksums = {v: runs[v][0]["checksum"] for v in VARIANTS}
    if len(set(checksums.values())) != 1:
        raise SystemExit(f"the variants read different values: {checksums}")
    best = {v: min(runs[v], key=lambda r: r["seconds"]) for v in VARIANTS}
    peak = {v: max(r["peak_rss_mb"] for r in runs[v]) for v in VARIANTS}
    print(f"radiance {args.lines} x {args.samples} x 285 float32 = {megabytes:.0f} MB, blocks of "
          f"{args.block} lines, best of {args.repeat}")
    print(f"{'variant':<16} {'s':>7} {'MB/s':>8} {'x ENVI':>7} {'RSS0 MB':>8} {'peak MB':>8} "
          f"{'peak-RSS0':>9} {'peak x ENVI':>11}")
    ref_s, ref_peak = best["envi"]["seconds"], peak["envi"]
    for v in VARIANTS:
        s, before = best[v]["seconds"], best[v]["rss_before_mb"]
        grow = peak[v] - before
        print(f"{v:<16} {s:7.3f} {megabytes / s:8.0f} {s / ref_s:7.2f} {before:8.0f} "
              f"{peak[v]:8.0f} {grow:9.0f} {peak[v] / ref_peak:11.2f}")


if __name__ == "__main__":
    main()
