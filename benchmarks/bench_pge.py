"""The whole PGE on full-width synthetic acquisitions: wall time, throughput, peak RSS, steps.

    .venv/bin/python benchmarks/bench_pge.py                     # 320 and 1280 lines x 1242
    .venv/bin/python benchmarks/bench_pge.py --lines 64,256      # quicker

Each acquisition (radiance, observation, location, GLT; `l2b_mask.synthetic`) is written once,
then `l2b-mask-pge` runs on it as the SDS runs it (its own process, every product including the
orthorectified GeoTIFFs). The peak resident memory is the child's (`ru_maxrss`), so it covers
everything the PGE holds: reading, inference, the full-scene result arrays and the writers.
The last lines compare the runs as ratios: time should grow with the lines, memory only by the
(lines x samples) result arrays the products are written from.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from l2b_mask.spec import ModelSpec
from l2b_mask.synthetic import generate_acquisition

SAMPLES = 1242


def run_once(folder: Path, lines: int, samples: int, precision: str) -> dict[str, float]:
    """Generate the acquisition and run the PGE on it; its figures."""
    t0 = time.perf_counter()
    acq = generate_acquisition(folder / f"in_{lines}x{samples}", lines=lines, samples=samples, seed=7)
    print(f"# generated {lines} x {samples} in {time.perf_counter() - t0:.0f} s", flush=True)
    inputs = {"radiance": acq.radiance, "observation": acq.observation, "location": acq.location,
              "glt": acq.glt}
    spec = ModelSpec.load()
    out = folder / f"out_{lines}x{samples}_{precision}"
    config = {
        "input_files": {k: str(v) for k, v in inputs.items()},
        "ancillary_files": {"model_weights": str(spec.weights_path),
                            "irradiance": str(spec.irradiance_path)},
        "output": {"directory": str(out), "overwrite": True, "write_ortho": True},
        "processing": {"device": "cpu", "precision": precision},
    }
    rc = folder / f"rc_{lines}_{precision}.json"
    rc.write_text(json.dumps(config))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pge.cli", str(rc)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"PGE failed (exit {proc.returncode}): {proc.stderr.strip()}")
    provenance = next(out.glob("*_provenance.json"))
    timings = json.loads(provenance.read_text())["timings_s"]
    return {"lines": lines, "wall_s": wall, "px_per_s": lines * samples / wall,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            # ru_maxrss of children is the largest of any child so far: sizes run small first
            "peak_rss_mb": after.ru_maxrss / 1024.0, **{f"step_{k}": v for k, v in timings.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", default="320,1280", help="comma-separated scene lengths, ascending")
    ap.add_argument("--samples", type=int, default=SAMPLES)
    ap.add_argument("--precision", default="float32")
    ap.add_argument("--folder", type=Path, help="keep inputs and products here (default: temporary)")
    args = ap.parse_args()
    sizes = sorted(int(x) for x in args.lines.split(","))
    print(f"# host: {os.cpu_count()} CPUs, load average at start {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench_pge_") as tmp:
        folder = args.folder or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rows = [run_once(folder, n, args.samples, args.precision) for n in sizes]
    print("\n| lines x samples | wall s | px/s | CPU s | peak RSS MB | run (inference) s | "
          "write_products s | other steps s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        steps = {k[5:]: v for k, v in r.items() if k.startswith("step_")}
        other = sum(steps.values()) - steps.get("run", 0) - steps.get("write_products", 0)
        print(f"| {r['lines']} x {args.samples} | {r['wall_s']:.1f} | {r['px_per_s']:.0f} | "
              f"{r['cpu_s']:.0f} | {r['peak_rss_mb']:.0f} | {steps.get('run', 0):.1f} | "
              f"{steps.get('write_products', 0):.1f} | {other:.1f} |")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"\n{b['lines']} / {a['lines']} lines: x{b['lines'] / a['lines']:.1f} pixels, "
              f"x{b['wall_s'] / a['wall_s']:.2f} wall time, x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f} "
              f"peak RSS (+{b['peak_rss_mb'] - a['peak_rss_mb']:.0f} MB)")
    print(f"# load average at end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
