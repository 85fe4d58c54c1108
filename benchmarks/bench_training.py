"""The training loop's speed and memory: spectra/s of training and evaluation, and the peak RSS of
`l2b-mask-train` on a 20,000- and a 200,000-spectrum file.

    .venv/bin/python benchmarks/bench_training.py                   # all of it (~3 min, 2 cores)
    .venv/bin/python benchmarks/bench_training.py --skip-memory     # throughput only
    .venv/bin/python benchmarks/bench_training.py --sizes 20000,200000 --seconds 10

Throughput (the v0.1.0 architecture, 268 bands, batch 256, synthetic labelled spectra): one
training step is forward, cross-entropy, backward, clip, schedule-free AdamW; evaluation is
`CloudModel.predict` (the compiled kernel on the CPU where it applies) and, for comparison,
the torch path. Each variant runs for --seconds in the same process, one after the other, on the
CPU with 1 thread and with torch's default, and on CUDA when present: compare the ratios, as
the machine may be shared.

Memory: each run is its own process, which reports its own peak RSS (VmHWM): one shuffled pass
of the training stream alone (no model; 20,000, 200,000 and 400,000 spectra), and the
`l2b-mask-train` code for 1 epoch (20,000 and 200,000; all scenes but one for training, the
last for the test pass). A small model (8 wide, 63 bands) keeps the 200,000-spectrum epoch
short; the file (52 MB) is streamed whole, in 1024-row blocks mixed 16 at a time. A reader that
loaded the file would peak about 47 MB higher on 200,000 spectra than on 20,000, and twice that
on 400,000.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from l2b_mask.algorithm.inference import CloudModel
from l2b_mask.algorithm.model import load_model
from l2b_mask.spec import ModelSpec
from l2b_mask.training.dataset import LabelledData
from l2b_mask.training.synthetic_set import write_fid_list, write_labelled_set, write_small_spec
from l2b_mask.training.train import Trainer, TrainSettings

PIXELS_PER_SCENE = 4000
# Children that print their own peak RSS (VmHWM, kB) last on stderr. Not ru_maxrss: Linux
# carries a child's ru_maxrss over from the parent it was forked from.
PEAK = """
with open('/proc/self/status') as f:
    print(next(line.split()[1] for line in f if line.startswith('VmHWM:')), file=sys.stderr)
"""
#: the training command, 1 epoch
TRAIN_CHILD = """
import sys
from l2b_mask.training.cli import train_main
code = train_main(sys.argv[1:])
""" + PEAK + "sys.exit(code)\n"
#: one shuffled pass of the training stream alone (no model): the data path's own memory
STREAM_CHILD = """
import sys
import numpy as np
import torch  # the same libraries loaded as in training
from l2b_mask.spec import ModelSpec
from l2b_mask.training.dataset import LabelledData
data_file, train_csv, spec = sys.argv[1:4]
with LabelledData([data_file], ModelSpec.load(spec)) as data:
    stream = data.stream(data.split(train_csv))
    for _ in stream.batches(512, np.random.default_rng(0)):
        pass
""" + PEAK

def timed(work, seconds: float) -> float:
    """Calls of `work()` (each returning its spectra count) for `seconds`: spectra per second."""
    work()  # warm-up (allocations, kernel parameters)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        done += work()
    return done / (time.perf_counter() - t0)


def throughput(folder: Path, spec: ModelSpec, seconds: float) -> None:
    labelled = write_labelled_set(folder / "full.h5", spec, scenes=4, seed=1)
    write_fid_list(folder / "all.csv", labelled.fids)
    with LabelledData([labelled.path], spec) as data:
        stream = data.stream(data.split(folder / "all.csv"))
        x, y = next(stream.batches(4096, np.random.default_rng(0)))
        bands = data.bands_nm
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    default_threads = torch.get_num_threads()
    print("| device | threads | what | spectra/s |\n|---|---:|---|---:|")
    for device in devices:
        for threads in ([1, default_threads] if device == "cpu" else [default_threads]):
            torch.set_num_threads(threads)
            trainer = Trainer(spec, TrainSettings(device=device), torch.device(device), bands)
            trainer.train_mode()
            batches = itertools.cycle([(x[s:s + 256], y[s:s + 256]) for s in range(0, len(y), 256)])

            def step() -> int:
                bx, by = next(batches)  # noqa: B023 - used within this iteration only
                trainer.step(bx, by)  # noqa: B023
                return len(by)

            rate = timed(step, seconds)
            print(f"| {device} | {threads} | training step (batch 256) | {rate:,.0f} |", flush=True)
            for backend in ("auto", "torch"):
                model = load_model(spec).set_precision("float32", backend)
                cloud = CloudModel(spec, model, torch.device(device), "float32", 4096)
                band_term = cloud.model.band_term(bands)

                def evaluate() -> int:
                    cloud.predict(x, band_term)  # noqa: B023
                    return len(x)

                rate = timed(evaluate, seconds)
                what = f"evaluation, {cloud.model.implementation(device)}"
                print(f"| {device} | {threads} | {what} | {rate:,.0f} |", flush=True)
    torch.set_num_threads(default_threads)


def memory_files(folder: Path, rows: int, base: ModelSpec) -> tuple[Path, Path, Path, Path]:
    """(spec, data file, train list, test list) of a `rows`-spectrum file for a small model."""
    spec_path = write_small_spec(folder / "small.toml", base, embed_dim=8, num_heads=1, ff_dim=8,
                                 half_width_nm=33.0)
    labelled = write_labelled_set(folder / f"set_{rows}.h5", ModelSpec.load(spec_path),
                                  scenes=rows // PIXELS_PER_SCENE, lines=64, samples=64,
                                  pixels_per_scene=PIXELS_PER_SCENE, seed=3)
    return (spec_path, labelled.path,
            write_fid_list(folder / f"train_{rows}.csv", labelled.fids[:-1]),
            write_fid_list(folder / f"test_{rows}.csv", labelled.fids[-1:]))


def child_peak(code: str, args: list[str]) -> tuple[float, float]:
    """(peak RSS MB, seconds) of a child process running `code` with `args`."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"child failed: {done.stderr.strip()}")
    return int(done.stderr.strip().splitlines()[-1]) / 1024.0, time.perf_counter() - t0


def memory(folder: Path, base: ModelSpec, stream_sizes: list[int], train_sizes: list[int]) -> None:
    print("\n| spectra | file MB | run | peak RSS MB | seconds |\n|---:|---:|---|---:|---:|")
    peaks: dict[str, list[float]] = {"stream pass": [], "l2b-mask-train, 1 epoch": []}
    for rows in sorted(set(stream_sizes) | set(train_sizes)):
        spec, data, train, test = memory_files(folder, rows, base)
        size = data.stat().st_size / 2**20
        runs = []
        if rows in stream_sizes:
            runs.append(("stream pass", STREAM_CHILD, [str(data), str(train), str(spec)]))
        if rows in train_sizes:
            runs.append(("l2b-mask-train, 1 epoch", TRAIN_CHILD, [
                str(data), "--train-csv", str(train), "--test-csv", str(test), "--outdir",
                str(folder / f"run_{rows}"), "--spec", str(spec), "--epochs", "1", "--batch",
                "512", "--warmup-steps", "10", "--threads", "1", "--device", "cpu"]))
        for what, code, args in runs:
            peak, seconds = child_peak(code, args)
            peaks[what].append(peak)
            print(f"| {rows:,} | {size:.1f} | {what} | {peak:.1f} | {seconds:.1f} |", flush=True)
    for what, values in peaks.items():
        if len(values) > 1:
            steps = ", ".join(f"{b - a:+.1f}" for a, b in zip(values, values[1:], strict=False))
            print(f"{what}: peak RSS change from each size to the next: {steps} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=8.0, help="per throughput variant")
    p.add_argument("--sizes", default="20000,200000", help="spectra of the training runs")
    p.add_argument("--stream-sizes", default="20000,200000,400000",
                   help="spectra of the stream-only passes")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args()
    spec = ModelSpec.load()
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        if not args.skip_throughput:
            throughput(Path(tmp), spec, args.seconds)
        if args.skip_memory:
            return
        memory(Path(tmp), spec, [int(v) for v in args.stream_sizes.split(",")],
               [int(v) for v in args.sizes.split(",")])


if __name__ == "__main__":
    main()
