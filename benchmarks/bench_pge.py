"""The whole PGE on full-width synthetic acquisitions: wall time, throughput, peak RSS, steps.

    .venv/bin/python benchmarks/bench_pge.py                     # 320 and 1280 lines x 1242
    .venv/bin/python benchmarks/bench_pge.py --lines 64,256      # quicker
    .venv/bin/python benchmarks/bench_pge.py --lines 256 --against main --repeats 3

Each acquisition (radiance, observation, location, GLT; `l2b_mask.synthetic`) is written once,
then `l2b-mask-pge` runs on it as the SDS runs it (its own process, every product including the
orthorectified GeoTIFFs). The peak resident memory is the child's (`ru_maxrss`), so it covers
everything the PGE holds: reading, inference, the full-scene result arrays and the writers.
The last lines compare the runs as ratios: time should grow with the lines, memory only by the
(lines x samples) result arrays the products are written from.

`--against REV` measures what the cloud buffer distance and cloud shadow cost (issue 13): the
same acquisition (rendered shadows, location, GLT, every product) goes through this tree's PGE
and through the PGE of git revision REV (a tree without the two bands, exported with `git
archive`, run with the same interpreter and packages), alternating, `--repeats` times each, in
one process; the ratio of the medians is printed. No switch in the PGE is needed for it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
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


PROJECT = Path(__file__).resolve().parents[1]


def export_revision(rev: str, folder: Path) -> Path:
    """The tree of git revision `rev`, exported (not checked out) into `folder`."""
    archive = subprocess.run(["git", "-C", str(PROJECT), "archive", rev], capture_output=True,
                             check=True).stdout
    folder.mkdir(parents=True)
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def timed_pge(rc: Path, code: Path) -> tuple[float, dict[str, float]]:
    """Wall seconds of one PGE run with the code of `code` first on the path, and its steps."""
    env = {**os.environ, "PYTHONPATH": str(code), "L2B_MASK_ANCILLARY_DIR": str(PROJECT / "ancillary")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pge.cli", str(rc)], capture_output=True,
                          text=True, cwd=code, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"PGE of {code} failed (exit {proc.returncode}): {proc.stderr.strip()}")
    summary = json.loads(proc.stdout.splitlines()[-1])
    provenance = Path(summary["products"]["provenance"])
    return wall, json.loads(provenance.read_text())["timings_s"]


def compare_against(folder: Path, rev: str, lines: int, samples: int, repeats: int) -> None:
    """This tree's PGE (with buffer distance and shadow) against revision `rev`'s, same inputs."""
    baseline = export_revision(rev, folder / f"code_{rev}")
    t0 = time.perf_counter()
    acq = generate_acquisition(folder / "in_compare", lines=lines, samples=samples, seed=7,
                               shadows=True)
    print(f"# generated {lines} x {samples} with shadows in {time.perf_counter() - t0:.0f} s")
    spec = ModelSpec.load()
    rcs = {}
    for name in ("with", "without"):
        config = {
            "input_files": {"radiance": str(acq.radiance), "observation": str(acq.observation),
                            "location": str(acq.location), "glt": str(acq.glt)},
            "ancillary_files": {"model_weights": str(spec.weights_path),
                                "irradiance": str(spec.irradiance_path),
                                "model_spec": str(spec.path)},
            "output": {"directory": str(folder / f"out_{name}"), "overwrite": True,
                       "write_ortho": True},
            "processing": {"device": "cpu"},
        }
        rcs[name] = folder / f"rc_{name}.json"
        rcs[name].write_text(json.dumps(config))
    code = {"with": PROJECT, "without": baseline}
    walls: dict[str, list[float]] = {"with": [], "without": []}
    steps: dict[str, list[dict[str, float]]] = {"with": [], "without": []}
    for i in range(repeats):
        for name in (("with", "without") if i % 2 == 0 else ("without", "with")):
            wall, timings = timed_pge(rcs[name], code[name])
            walls[name].append(wall)
            steps[name].append(timings)
            print(f"# {name:7s} run {i + 1}: {wall:.1f} s wall, run step {timings['run']:.1f} s, "
                  f"beyond_cloud {timings.get('beyond_cloud', 0.0):.2f} s, write_products "
                  f"{timings['write_products']:.2f} s", flush=True)
    bands = len(json.loads((next((folder / "out_without").glob("*_metadata.json"))).read_text())
                .get("cloud_buffer", {}))
    assert bands == 0, "the baseline's product has a cloud buffer: not a tree without the bands"
    w, wo = statistics.median(walls["with"]), statistics.median(walls["without"])
    print(f"\n{lines} x {samples}, {repeats} runs each, alternating: median wall {w:.1f} s with "
          f"buffer + shadow, {wo:.1f} s without ({rev}): ratio {w / wo:.3f}")
    for step in ("run", "beyond_cloud", "write_products", "validate_products"):
        a = statistics.median(t.get(step, 0.0) for t in steps["with"])
        b = statistics.median(t.get(step, 0.0) for t in steps["without"])
        print(f"  step {step}: {a:.2f} s with, {b:.2f} s without")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", default="320,1280", help="comma-separated scene lengths, ascending")
    ap.add_argument("--samples", type=int, default=SAMPLES)
    ap.add_argument("--precision", default="float32")
    ap.add_argument("--folder", type=Path, help="keep inputs and products here (default: temporary)")
    ap.add_argument("--against", metavar="REV",
                    help="compare this tree's PGE with git revision REV's on the first size")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side with --against")
    args = ap.parse_args()
    sizes = sorted(int(x) for x in args.lines.split(","))
    print(f"# host: {os.cpu_count()} CPUs, load average at start {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench_pge_") as tmp:
        folder = args.folder or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if args.against:
            compare_against(folder, args.against, sizes[0], args.samples, args.repeats)
            print(f"# load average at end {os.getloadavg()}")
            return 0
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
