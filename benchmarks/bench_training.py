"""The training loop's speed and memory: spectra/s of training (variants compared in one run) and
evaluation, and the peak RSS of `l2b-mask-train` on a 20,000- and a 200,000-spectrum file.

    .venv/bin/python benchmarks/bench_training.py --skip-memory     # throughput only (~6 min, 2 cores)
    .venv/bin/python benchmarks/bench_training.py --skip-memory --compile   # + torch.compile rows
    .venv/bin/python benchmarks/bench_training.py                   # + memory (~3 min more)
    .venv/bin/python benchmarks/bench_training.py --sizes 20000,200000 --seconds 10

Training throughput (the v0.1.0 architecture, 268 bands, synthetic labelled spectra): one
training step is forward, cross-entropy, backward, clip, schedule-free AdamW, with dropout, as
`l2b-mask-train` runs it. The variants run one after the other in one process, each for
--seconds, the whole list --rounds times (the best round is printed: on a shared machine the
least disturbed one): the attention formulation of training on the CPU (`sdpa`: torch's fused
attention, before; `heads-last`: `l2b_mask.algorithm.attention_cpu`, now), 1 thread and torch's
default, batch sizes (the recipe's 256, and others for comparison: the recipe is not changed),
and with --compile `torch.compile` of the model (its compile time printed). Each row gives
spectra/s (wall clock), spectra per CPU-second of the process (less sensitive to other jobs,
exact for 1 thread), the fraction of the FMA peak (`cpu_peak.py`'s float32 256-bit GMAC/s per
core; ~47 M multiply-adds per spectrum forward and backward, counted from the specification) of
the wall-clock rate against the peak x threads and of the CPU-second rate against one core's
peak (the load-independent figure for 1 thread; with 2 threads CPU time includes waiting),
hours per epoch of the published 7.1 million spectra at that rate, and the
1-minute load average when the row finished (compare rows of one run; figures taken under load
say so). A row "data" times the shuffled HDF5 stream alone: the share of an epoch spent reading.
Evaluation is `CloudModel.predict` (the compiled kernel on the CPU where it applies) and, for
comparison, the torch path.

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
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from l2b_mask.algorithm.inference import CloudModel
from l2b_mask.algorithm.model import SelfAttention, load_model
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

EPOCH_SPECTRA = 7.1e6  # the published labelled set
PEAK_LINE = re.compile(r"float32 FMA, 256-bit.*?([0-9.]+) GMAC/s")


@dataclass(frozen=True)
class Variant:
    """One training-throughput configuration."""

    formulation: str  # SelfAttention.cpu_training_formulation
    threads: int
    batch: int
    compiled: bool = False


@dataclass
class Rate:
    wall: float = 0.0  # spectra/s
    cpu: float = 0.0   # spectra per CPU-second of this process
    load: float = 0.0  # 1-minute load average at the end


def timed(work, seconds: float) -> Rate:
    """Calls of `work()` (each returning its spectra count) for `seconds`."""
    work()  # warm-up (allocations, kernel parameters)
    done, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        done += work()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return Rate(done / wall, done / max(cpu, 1e-9), os.getloadavg()[0])


def macs_per_spectrum(spec: ModelSpec, tokens: int) -> float:
    """Multiply-adds of one spectrum forward and backward (3x the forward: the backward takes the
    gradients of the inputs and of the weights of each product; recomputation not counted)."""
    e, f = spec.embed_dim, spec.ff_dim
    per_token = 2 * e + 3 * e * e + e * e + 2 * e * f  # embed, Q/K/V, out, feed-forward
    forward = tokens * per_token + 2 * tokens * tokens * e * spec.num_layers + 2 * e
    return 3.0 * forward


def fma_peak(given: float | None) -> tuple[float | None, str]:
    """float32 256-bit FMA GMAC/s of one core: given, else measured by cpu_peak.py."""
    if given:
        return given, "given (--peak-gmacs)"
    script = Path(__file__).with_name("cpu_peak.py")
    try:
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                             check=True, timeout=300).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"cpu_peak.py failed ({type(exc).__name__}): no fraction of the peak"
    found = PEAK_LINE.search(out)
    return (float(found.group(1)), "cpu_peak.py") if found else (None, "cpu_peak.py: no FMA line")


def training_variants(default_threads: int, compiled: bool) -> list[Variant]:
    threads = sorted({1, default_threads})
    out = [Variant(f, t, 256) for f in ("sdpa", "heads-last") for t in threads]
    out += [Variant("heads-last", default_threads, b) for b in (64, 1024)]
    if compiled:
        out += [Variant(f, default_threads, 256, True) for f in ("sdpa", "heads-last")]
    return out


def make_trainer(spec: ModelSpec, variant: Variant, bands: np.ndarray) -> Trainer:
    torch.set_num_threads(variant.threads)
    trainer = Trainer(spec, TrainSettings(device="cpu", batch=variant.batch),
                      torch.device("cpu"), bands)
    trainer.train_mode()
    if variant.compiled:
        trainer.model.logits = torch.compile(trainer.model.logits, dynamic=False)
    return trainer


def training_rows(spec: ModelSpec, x: np.ndarray, y: np.ndarray, bands: np.ndarray,
                  args: argparse.Namespace) -> None:
    default_threads = torch.get_num_threads()
    peak, source = fma_peak(args.peak_gmacs)
    macs = macs_per_spectrum(spec, x.shape[1])
    print(f"FMA peak: {peak} GMAC/s per core ({source}); {macs / 1e6:.1f} M multiply-adds per "
          f"spectrum forward and backward; load average before: {os.getloadavg()[0]:.2f}\n")
    variants = training_variants(default_threads, args.compile)
    trainers, best = {}, {}
    for v in variants:
        SelfAttention.cpu_training_formulation = v.formulation
        t0 = time.perf_counter()
        trainers[v] = make_trainer(spec, v, bands)
        trainers[v].step(x[:v.batch], y[:v.batch])
        if v.compiled:
            print(f"compile + first step, {v.formulation}: {time.perf_counter() - t0:.1f} s")
    print("| attention | threads | batch | compile | spectra/s | spectra/CPU-s | of FMA peak "
          "(wall, x threads) | of FMA peak (CPU-s) | h/epoch (7.1 M) | load |\n"
          "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for _ in range(args.rounds):
        for v in variants:
            SelfAttention.cpu_training_formulation = v.formulation
            torch.set_num_threads(v.threads)
            batches = itertools.cycle([(x[s:s + v.batch], y[s:s + v.batch])
                                       for s in range(0, len(y) - v.batch + 1, v.batch)])

            def step(trainer=trainers[v], batches=batches) -> int:
                bx, by = next(batches)
                trainer.step(bx, by)
                return len(by)

            rate = timed(step, args.seconds)
            if v not in best or rate.wall > best[v].wall:
                best[v] = rate
    for v in variants:
        r = best[v]
        share = (f"{r.wall * macs / (peak * 1e9 * v.threads):.1%} "
                 f"| {r.cpu * macs / (peak * 1e9):.1%}") if peak else "n/a | n/a"
        print(f"| {v.formulation} | {v.threads} | {v.batch} | {'on' if v.compiled else 'off'} "
              f"| {r.wall:,.0f} | {r.cpu:,.0f} | {share} | {EPOCH_SPECTRA / r.wall / 3600:,.1f} "
              f"| {r.load:.2f} |", flush=True)
    SelfAttention.cpu_training_formulation = "heads-last"
    torch.set_num_threads(default_threads)


def data_row(stream, seconds: float) -> None:
    """The shuffled stream alone, batches of 256: what reading costs beside training."""
    def read() -> int:
        return sum(len(by) for _, by in stream.batches(256, np.random.default_rng(0)))

    rate = timed(read, seconds)
    print(f"\ndata: the shuffled HDF5 stream alone, {rate.wall:,.0f} spectra/s "
          f"(load {rate.load:.2f})", flush=True)


def evaluation_rows(spec: ModelSpec, x: np.ndarray, bands: np.ndarray, seconds: float) -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    default_threads = torch.get_num_threads()
    print("\n| device | threads | evaluation | spectra/s | load |\n|---|---:|---|---:|---:|")
    for device in devices:
        for threads in ([1, default_threads] if device == "cpu" else [default_threads]):
            torch.set_num_threads(threads)
            for backend in ("auto", "torch"):
                model = load_model(spec).set_precision("float32", backend)
                cloud = CloudModel(spec, model, torch.device(device), "float32", 4096)
                band_term = cloud.model.band_term(bands)

                def evaluate(cloud=cloud, band_term=band_term) -> int:
                    cloud.predict(x, band_term)
                    return len(x)

                rate = timed(evaluate, seconds)
                print(f"| {device} | {threads} | {cloud.model.implementation(device)} "
                      f"| {rate.wall:,.0f} | {rate.load:.2f} |", flush=True)
    torch.set_num_threads(default_threads)


def throughput(folder: Path, spec: ModelSpec, args: argparse.Namespace) -> None:
    labelled = write_labelled_set(folder / "full.h5", spec, scenes=4, seed=1)
    write_fid_list(folder / "all.csv", labelled.fids)
    with LabelledData([labelled.path], spec) as data:
        stream = data.stream(data.split(folder / "all.csv"))
        x, y = next(stream.batches(4096, np.random.default_rng(0)))
        bands = data.bands_nm
        training_rows(spec, x, y, bands, args)
        data_row(stream, args.seconds)
    if not args.skip_evaluation:
        evaluation_rows(spec, x, bands, args.seconds)


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
    p.add_argument("--seconds", type=float, default=8.0, help="per throughput variant and round")
    p.add_argument("--rounds", type=int, default=2, help="passes over the training variants")
    p.add_argument("--compile", action="store_true", help="also torch.compile rows (minutes)")
    p.add_argument("--peak-gmacs", type=float, default=None,
                   help="float32 FMA GMAC/s per core (default: run cpu_peak.py)")
    p.add_argument("--skip-evaluation", action="store_true")
    p.add_argument("--sizes", default="20000,200000", help="spectra of the training runs")
    p.add_argument("--stream-sizes", default="20000,200000,400000",
                   help="spectra of the stream-only passes")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args()
    spec = ModelSpec.load()
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        if not args.skip_throughput:
            throughput(Path(tmp), spec, args)
        if args.skip_memory:
            return
        memory(Path(tmp), spec, [int(v) for v in args.stream_sizes.split(",")],
               [int(v) for v in args.sizes.split(",")])


if __name__ == "__main__":
    main()
