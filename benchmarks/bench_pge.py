"""The whole PGE on full-width synthetic acquisitions: wall time, throughput, peak RSS, steps.

    .venv/bin/python benchmarks/bench_pge.py                     # 320 and 1280 lines x 1242
    .venv/bin/python benchmarks/bench_pge.py --lines 64,320 --precisions float32,bfloat16
    .venv/bin/python benchmarks/bench_pge.py --lines 64,256      # quicker
    .venv/bin/python benchmarks/bench_pge.py --lines 320 --formats envi,daac --repeat 2
    .venv/bin/python benchmarks/bench_pge.py --lines 256 --against REV --repeat 3

Each acquisition (radiance, observation, location, GLT; `l2b_mask.synthetic.scene`) is written once,
then `l2b-mask-pge` runs on it as the SDS runs it (its own process, every product including the
orthorectified GeoTIFFs). `--formats envi,daac` also writes it as LP DAAC granules (contiguous
swath variables, as EMIT's own writer leaves them) and runs the PGE on the two granules alone
(the radiance granule is the location and GLT); the formats alternate, `--repeat` times, so
both see the same machine load, and the last lines give the DAAC / ENVI ratios.
The peak resident memory is each child's own (`os.wait4`), so it covers everything the PGE
holds: reading, inference, the full-scene result arrays and the writers.
The size comparison gives ratios: time should grow with the lines, memory only by the
(lines x samples) result arrays the products are written from. With two sizes, each precision's
marginal rate (the added lines over the added time: start-up cancels) is set against the kernel
alone on the same generator's pixels, and the precisions' marginal rates against the first one's.

`--against REV` measures what the cloud buffer distance and cloud shadow cost (issue 13): the
same acquisition (rendered shadows, location, GLT, every product) goes through this tree's PGE
and through the PGE of git revision REV (a tree without the two bands, exported with `git
archive`, run with the same interpreter and packages), alternating, `--repeat` times each, in
one process; the ratio of the medians is printed. No switch in the PGE is needed for it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from l2b_mask.spec import ModelSpec
from l2b_mask.synthetic.daac import write_daac_granules
from l2b_mask.synthetic.scene import SyntheticAcquisition, generate_acquisition

SAMPLES = 1242
FORMATS = ("envi", "daac")


def make_inputs(folder: Path, lines: int, samples: int, formats: list[str]) -> dict[str, dict]:
    """The acquisition written once, in each format asked for: format -> input_files."""
    t0 = time.perf_counter()
    acq: SyntheticAcquisition = generate_acquisition(folder / f"in_{lines}x{samples}",
                                                     lines=lines, samples=samples, seed=7)
    inputs = {"envi": {"radiance": acq.radiance, "observation": acq.observation,
                       "location": acq.location, "glt": acq.glt}}
    if "daac" in formats:
        granules = write_daac_granules(acq, chunk_lines=None)
        inputs["daac"] = {"radiance": granules.radiance, "observation": granules.observation}
    print(f"# generated {lines} x {samples} ({', '.join(formats)}) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return {f: {k: str(v) for k, v in inputs[f].items()} for f in formats}


def run_once(folder: Path, lines: int, samples: int, precision: str, fmt: str,
             input_files: dict[str, str]) -> dict[str, float | str]:
    """Run the PGE once on these inputs; its figures."""
    spec = ModelSpec.load()
    out = folder / f"out_{lines}x{samples}_{precision}_{fmt}"
    config = {
        "input_files": input_files,
        "ancillary_files": {"model_weights": str(spec.weights_path),
                            "irradiance": str(spec.irradiance_path)},
        "output": {"directory": str(out), "overwrite": True, "write_ortho": True},
        "processing": {"device": "cpu", "precision": precision},
    }
    rc = folder / f"rc_{lines}_{precision}_{fmt}.json"
    rc.write_text(json.dumps(config))
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "pge.cli", str(rc)],
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, peak RSS included
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        err.seek(0)
        if proc.returncode != 0:
            sys.exit(f"PGE failed (exit {proc.returncode}): {err.read().strip()}")
    provenance = next(out.glob("*_provenance.json"))
    timings = json.loads(provenance.read_text())["timings_s"]
    return {"lines": lines, "format": fmt, "precision": precision, "wall_s": wall,
            "px_per_s": lines * samples / wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024.0,
            **{f"step_{k}": v for k, v in timings.items()}}


def _table(rows: list[dict], samples: int) -> None:
    print("\n| lines x samples | format | precision | wall s | px/s | CPU s | peak RSS MB "
          "| run (inference) s | write_products s | other steps s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        steps = {k[5:]: v for k, v in r.items() if k.startswith("step_")}
        other = sum(steps.values()) - steps.get("run", 0) - steps.get("write_products", 0)
        print(f"| {r['lines']} x {samples} | {r['format']} | {r['precision']} | {r['wall_s']:.1f} | "
              f"{r['px_per_s']:.0f} | {r['cpu_s']:.0f} | {r['peak_rss_mb']:.0f} | "
              f"{steps.get('run', 0):.1f} | {steps.get('write_products', 0):.1f} | {other:.1f} |")


def kernel_rate(folder: Path, precision: str, lines: int = 8, rounds: int = 2) -> dict[str, float]:
    """The kernel alone, as the PGE calls it (all cores, batches of 4096), on the pixels with a
    value of a small acquisition of the same generator: pixels with a value per wall second (best
    of `rounds`), and the fraction of pixels with a value."""
    import numpy as np
    import torch

    from l2b_mask.algorithm.model import load_model

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_inference import prepare

    data = folder / f"kernel_{precision}"
    data.mkdir(exist_ok=True)
    _, valid = prepare(data, lines, SAMPLES)
    rho = torch.from_numpy(np.load(data / "rho.npy"))
    band = torch.from_numpy(np.load(data / "band.npy"))
    model = load_model(ModelSpec.load()).set_precision(precision)
    best, best_cpu = 0.0, 0.0
    with torch.inference_mode():
        for _ in range(rounds):
            t0, c0 = time.perf_counter(), _process_cpu_s()
            for s in range(0, rho.shape[0], 4096):
                model(rho[s:s + 4096], band)
            best = max(best, rho.shape[0] / (time.perf_counter() - t0))
            best_cpu = max(best_cpu, rho.shape[0] / (_process_cpu_s() - c0))
    return {"valid_px_s": best, "valid_px_cpu_s": best_cpu, "valid_fraction": valid / (lines * SAMPLES),
            "implementation": model.implementation()}


def _process_cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _marginal(rows: list[dict], sizes: list[int], fmt: str, precisions: list[str],
              kernel: dict[str, dict]) -> None:
    """Per precision, the rate of the lines added between the smallest and the largest size (the
    fixed start-up cost cancels), against the kernel alone; and the precisions' ratios."""
    rates, cpu_rates = {}, {}
    print(f"\n| precision ({fmt}) | marginal px/s ({sizes[0]} -> {sizes[-1]} lines) | kernel alone px/s "
          "(scene pixels) | PGE / kernel | marginal px/CPU-s | kernel alone px/CPU-s | PGE / kernel (CPU) "
          "| peak RSS MB (largest) | kernel |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in precisions:
        mine = [r for r in rows if r["format"] == fmt and r["precision"] == p]
        a = min((r for r in mine if r["lines"] == sizes[0]), key=lambda r: r["wall_s"])
        b = min((r for r in mine if r["lines"] == sizes[-1]), key=lambda r: r["wall_s"])
        added = (b["lines"] - a["lines"]) * SAMPLES
        rates[p] = added / (b["wall_s"] - a["wall_s"])
        cpu_rates[p] = added / (b["cpu_s"] - a["cpu_s"])
        k = kernel[p]
        scene_rate = k["valid_px_s"] / k["valid_fraction"]
        scene_cpu = k["valid_px_cpu_s"] / k["valid_fraction"]
        rss = max(r["peak_rss_mb"] for r in mine if r["lines"] == sizes[-1])
        print(f"| {p} | {rates[p]:.0f} | {scene_rate:.0f} ({k['valid_px_s']:.0f} with a value) | "
              f"{rates[p] / scene_rate:.2f} | {cpu_rates[p]:.0f} | {scene_cpu:.0f} | "
              f"{cpu_rates[p] / scene_cpu:.2f} | {rss:.0f} | {k['implementation']} |")
    for p in precisions[1:]:
        print(f"marginal rate {p} / {precisions[0]}: x{rates[p] / rates[precisions[0]]:.2f} (wall), "
              f"x{cpu_rates[p] / cpu_rates[precisions[0]]:.2f} (CPU time)")


def _format_ratios(rows: list[dict]) -> None:
    """DAAC / ENVI per size: best wall time (throughput) and largest peak RSS of the repeats."""
    for lines in sorted({r["lines"] for r in rows}):
        best = {}
        for fmt in FORMATS:
            mine = [r for r in rows if r["lines"] == lines and r["format"] == fmt
                    and r["precision"] == rows[0]["precision"]]
            if mine:
                best[fmt] = (min(r["wall_s"] for r in mine), max(r["peak_rss_mb"] for r in mine),
                             min(r.get("step_run", 0.0) for r in mine))
        if len(best) == 2:
            (we, me, re), (wd, md, rd) = best["envi"], best["daac"]
            print(f"{lines} lines, DAAC / ENVI: throughput x{we / wd:.3f} (best wall {wd:.1f} / "
                  f"{we:.1f} s; inference step x{re / rd:.3f}), peak RSS x{md / me:.3f} "
                  f"({md:.0f} / {me:.0f} MB)")


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


def compare_against(folder: Path, rev: str, lines: int, samples: int, repeat: int) -> None:
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
    for i in range(repeat):
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
    print(f"\n{lines} x {samples}, {repeat} runs each, alternating: median wall {w:.1f} s with "
          f"buffer + shadow, {wo:.1f} s without ({rev}): ratio {w / wo:.3f}")
    for step in ("run", "beyond_cloud", "write_products", "validate_products"):
        a = statistics.median(t.get(step, 0.0) for t in steps["with"])
        b = statistics.median(t.get(step, 0.0) for t in steps["without"])
        print(f"  step {step}: {a:.2f} s with, {b:.2f} s without")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", default="320,1280", help="comma-separated scene lengths, ascending")
    ap.add_argument("--samples", type=int, default=SAMPLES)
    ap.add_argument("--precisions", "--precision", default="float32,bfloat16",
                    help="comma-separated precisions, alternating on each input (ratios in one run)")
    ap.add_argument("--formats", default="envi",
                    help="comma-separated input formats to run: envi, daac (LP DAAC granules)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per format, alternating")
    ap.add_argument("--folder", type=Path, help="keep inputs and products here (default: temporary)")
    ap.add_argument("--against", metavar="REV",
                    help="compare this tree's PGE with git revision REV's on the first size")
    args = ap.parse_args()
    sizes = sorted(int(x) for x in args.lines.split(","))
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    formats = [f.strip() for f in args.formats.split(",")]
    if not formats or any(f not in FORMATS for f in formats) or args.repeat < 1:
        ap.error(f"--formats takes {', '.join(FORMATS)}; --repeat at least 1")
    print(f"# host: {os.cpu_count()} CPUs, load average at start {os.getloadavg()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_pge_") as tmp:
        folder = args.folder or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if args.against:
            compare_against(folder, args.against, sizes[0], args.samples, args.repeat)
            print(f"# load average at end {os.getloadavg()}")
            return 0
        for n in sizes:
            inputs = make_inputs(folder, n, args.samples, formats)
            for _ in range(args.repeat):
                for fmt in formats:
                    for precision in precisions:
                        rows.append(run_once(folder, n, args.samples, precision, fmt, inputs[fmt]))
                        print(f"# {n} lines {fmt} {precision}: {rows[-1]['wall_s']:.1f} s, "
                              f"{rows[-1]['peak_rss_mb']:.0f} MB, load {os.getloadavg()}", flush=True)
        kernel = {p: kernel_rate(folder, p) for p in precisions} if len(sizes) > 1 else {}
    _table(rows, args.samples)
    if len(sizes) > 1:
        _marginal(rows, sizes, formats[0], precisions, kernel)
    envi = [r for r in rows if r["format"] == formats[0] and r["precision"] == precisions[0]]
    if len(sizes) > 1:
        a, b = envi[0], envi[-1]
        print(f"\n{b['lines']} / {a['lines']} lines ({formats[0]}): x{b['lines'] / a['lines']:.1f} "
              f"pixels, x{b['wall_s'] / a['wall_s']:.2f} wall time, "
              f"x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f} peak RSS "
              f"(+{b['peak_rss_mb'] - a['peak_rss_mb']:.0f} MB)")
    _format_ratios(rows)
    print(f"# load average at end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
