"""Campaign throughput: acquisitions per minute with 1 and with 2 workers, and their ratio;
with `--cluster slurm`, the per-acquisition overhead of Slurm jobs against the local cluster.

    .venv/bin/python benchmarks/bench_campaign.py                       # 8 of 32 x 32, 1-2 min
    .venv/bin/python benchmarks/bench_campaign.py --acquisitions 16 --size 64 --workers 1 2 4
    .venv/bin/python benchmarks/bench_campaign.py --cluster slurm --acquisitions 6 --size 16

`--cluster slurm` (as root, Slurm installed: scripts/setup.sh) starts a one-node Slurm of its
own (tests/campaign/one_node_slurm.py) and runs the same acquisitions once on the local
cluster (1 worker) and once as Slurm jobs (1 job of 1 core, 1 PGE at a time), alternating
`--repeat` times. From the attempt journal and the PGE logs it prints, per campaign: the time
to the first PGE (cluster start; for Slurm also sbatch, the job's start and its worker
joining), the mean gap between one PGE's end and the next one's start (scheduling), the mean
PGE start (process start to its first log event: Python and imports) and the mean PGE wall
time, and the wall time per acquisition.

Writes `--acquisitions` synthetic EMIT acquisitions (l2b_mask.synthetic.scene, `--size` lines and
samples, distinct start times), then runs the whole campaign (`campaign.engine.run_campaign`:
local Dask cluster, one PGE subprocess per acquisition) once per worker count into a fresh
output root, every PGE with `--threads-per-pge` CPU threads. The figure is end to end: cluster
start, product checks, the PGEs (for such small scenes mostly their start-up: Python, torch,
the model) and the report; "PGE s/acq" is the mean wall time of one PGE subprocess, which
grows when the PGEs compete for the cores. Each worker count runs `--repeat` times, the counts
alternating (1, 2, 1, 2, ...) so that a burst of other load hits both alike, and the best rate
of each is kept; the load average is printed because other work on the machine changes every
figure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))

from campaign.engine import Settings, run_campaign  # noqa: E402
from campaign.plan import usable_cores  # noqa: E402
from l2b_mask.spec import ModelSpec  # noqa: E402
from l2b_mask.synthetic.scene import generate_acquisition  # noqa: E402

START = datetime(2024, 3, 2, 0, 0, 0, tzinfo=UTC)


def make_archive(folder: Path, count: int, size: int) -> None:
    for i in range(count):
        generate_acquisition(folder / f"a{i:03d}", lines=size, samples=size, seed=i,
                             start_time=START + timedelta(minutes=i))


def make_template(path: Path, device: str) -> None:
    spec = ModelSpec.load()
    path.write_text(json.dumps({
        "ancillary_files": {"model_weights": str(spec.weights_path),
                            "irradiance": str(spec.irradiance_path)},
        "processing": {"device": device}}, indent=2))


def run(archive: Path, template: Path, root: Path, workers: int, threads: int) -> dict:
    t0 = time.perf_counter()
    outcome = run_campaign(Settings(inventory=archive, template=template, output_root=root,
                                    workers=workers, threads_per_pge=threads, gpus=[],
                                    retry_delay_s=0.0, stdout=io.StringIO()))
    wall = time.perf_counter() - t0
    totals = outcome.report.totals()
    if outcome.exit_code != 0 or totals["done"] != len(outcome.report.entries):
        raise SystemExit(f"campaign with {workers} worker(s) did not make every product: {totals}")
    return {"workers": workers, "threads_per_pge": threads, "acquisitions": totals["done"],
            "wall_s": round(wall, 2), "per_minute": round(totals["done"] / wall * 60.0, 2),
            "pge_s_per_acquisition": round(totals["pge_seconds"] / totals["done"], 2)}


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def overheads(root: Path, wall: float) -> dict:
    """Where the time of one campaign went, from its attempt journal and the PGE logs."""
    from campaign import journal

    report = json.loads((root / "campaign_report.json").read_text())
    attempts, pge_start = [], []
    for a in report["acquisitions"]:
        for att in journal.read(journal.journal_path(root, a["product_stem"]),
                                report["campaign"]["run_id"]):
            start = _seconds(att.start["started_utc"])
            attempts.append((start, start + (att.end or {}).get("duration_s", 0.0)))
            log = Path(a["product_dir"]) / f"{a['product_stem']}_pge.log"
            first = json.loads(log.read_text().splitlines()[0])
            pge_start.append(_seconds(first["timestamp"]) - start)
    attempts.sort()
    gaps = [b[0] - a[1] for a, b in zip(attempts, attempts[1:], strict=False)]
    n = len(attempts)
    return {"acquisitions": n, "wall_s": round(wall, 2),
            "wall_s_per_acquisition": round(wall / n, 2),
            "to_first_pge_s": round(attempts[0][0] - _seconds(report["campaign"]["started_utc"]), 2),
            "gap_between_pges_s": round(sum(gaps) / len(gaps), 3) if gaps else None,
            "pge_start_s": round(sum(pge_start) / n, 2),
            "pge_wall_s": round(sum(e - s for s, e in attempts) / n, 2)}


def compare_slurm(work: Path, args: argparse.Namespace) -> list[dict]:
    """The same acquisitions on the local cluster and as Slurm jobs, one PGE at a time."""
    import dask
    import dask_jobqueue  # noqa: F401 - its defaults join Dask's config before config.set

    sys.path.insert(0, str(HERE.parents[1] / "tests" / "campaign"))
    from one_node_slurm import OneNodeSlurm, unavailable

    from campaign.engine import JobQueue

    if unavailable():
        raise SystemExit(f"--cluster slurm: {unavailable()}")
    rows = []
    with OneNodeSlurm(work / "slurm") as slurm:
        os.environ["SLURM_CONF"] = str(slurm.conf)
        config = {"jobqueue.slurm.log-directory": str(work / "joblogs"),
                  "jobqueue.slurm.local-directory": str(work / "dask-local")}
        for repeat in range(args.repeat):
            for kind in ("local", "slurm"):
                root = work / f"root_{kind}_{repeat}"
                options = ({"workers": 1} if kind == "local" else {"cluster": "slurm",
                           "jobqueue": JobQueue(queue=slurm.PARTITION, max_jobs=1, job_cores=1,
                                                job_memory="2GiB")})
                t0 = time.perf_counter()
                with dask.config.set(config):
                    outcome = run_campaign(Settings(
                        inventory=work / "archive", template=work / "template.json",
                        output_root=root, threads_per_pge=args.threads_per_pge,
                        retry_delay_s=0.0, stdout=io.StringIO(), **options))
                wall = time.perf_counter() - t0
                if outcome.exit_code != 0:
                    raise SystemExit(f"{kind} campaign failed: {outcome.report.totals()}")
                row = {"cluster": kind, "repeat": repeat + 1, **overheads(root, wall),
                       "load": round(os.getloadavg()[0], 2)}
                rows.append(row)
                print(f"  {kind:5s} run {repeat + 1}: {row['wall_s_per_acquisition']:.2f} s/acq "
                      f"(first PGE after {row['to_first_pge_s']:.2f} s, gap "
                      f"{row['gap_between_pges_s']} s, PGE start {row['pge_start_s']:.2f} s, "
                      f"PGE {row['pge_wall_s']:.2f} s; load {row['load']})", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cluster", choices=("local", "slurm"), default="local",
                   help="slurm: Slurm jobs against the local cluster (per-acquisition overhead)")
    p.add_argument("--acquisitions", type=int, default=8)
    p.add_argument("--size", type=int, default=32, help="lines and samples of each acquisition")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads-per-pge", type=int, default=1)
    p.add_argument("--repeat", type=int, default=2, help="runs per worker count (best is kept)")
    p.add_argument("--device", default="cpu", help="processing.device of the template")
    p.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = p.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_campaign_"))
    work.mkdir(parents=True, exist_ok=True)
    make_archive(work / "archive", args.acquisitions, args.size)
    make_template(work / "template.json", args.device)
    print(f"{args.acquisitions} acquisitions of {args.size} x {args.size}, {usable_cores()} "
          f"core(s), load average {os.getloadavg()[0]:.2f}, device {args.device}")
    if args.cluster == "slurm":
        rows = compare_slurm(work, args)
        print(json.dumps({"runs": rows, "load_average_after": os.getloadavg()[0]}))
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    runs: dict[int, list[dict]] = {n: [] for n in args.workers}
    for repeat in range(args.repeat):
        for n in args.workers:
            r = run(work / "archive", work / "template.json", work / f"root_{n}w_{repeat}", n,
                    args.threads_per_pge)
            runs[n].append(r)
            print(f"  run {repeat + 1}: {n} worker(s): {r['per_minute']:.1f} acquisitions/min "
                  f"({r['acquisitions']} in {r['wall_s']:.1f} s, PGE "
                  f"{r['pge_s_per_acquisition']:.1f} s/acq, load {os.getloadavg()[0]:.2f})",
                  flush=True)
    results = [max(runs[n], key=lambda r: r["per_minute"]) for n in args.workers]
    for r in results:
        print(f"{r['workers']} worker(s) x {r['threads_per_pge']} thread(s): "
              f"{r['per_minute']:.1f} acquisitions/min (best of {args.repeat})")
    base = results[0]["per_minute"]
    for r in results[1:]:
        print(f"ratio {r['workers']} / {results[0]['workers']} worker(s): "
              f"{r['per_minute'] / base:.2f}x")
    print(json.dumps({"best": results, "runs": runs, "load_average_after": os.getloadavg()[0]}))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
