"""`l2b-mask-campaign --cluster slurm` on a real one-node Slurm (`one_node_slurm`), started
for this module and stopped at its end; skipped, with the reason, where Slurm is not
installed (scripts/setup.sh installs it as root on Debian).

Five tiny synthetic acquisitions (8 x 16): four good and one with a truncated radiance (PGE
exit 4). The same archive through the local cluster and through Slurm jobs gives the same
products (bit for bit, creation times aside) and the same report; a rerun starts no PGE. A
job cancelled mid-PGE (`scancel`) loses no acquisition and the report shows the lost attempt
with its cause; a campaign driver killed with SIGKILL loses nothing either, and the next run
reconciles its report. The PGEs are held at start-up where a test needs one running (a
`sitecustomize` on the jobs' PYTHONPATH, which Slurm passes on from the campaign's).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from one_node_slurm import OneNodeSlurm, unavailable

from campaign import journal, products
from campaign.engine import JobQueue, Settings, run_campaign
from l2b_mask.synthetic.scene import generate_acquisition

pytestmark = [pytest.mark.usefixtures("restore_logging"),
              pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]

PROJECT = Path(__file__).resolve().parents[2]
START = datetime(2024, 5, 6, 0, 0, 0, tzinfo=UTC)
GOOD, LINES, SAMPLES = 4, 8, 16


def _stem(minute: int) -> str:
    stamp = (START + timedelta(minutes=minute)).strftime("emit%Y%m%dt%H%M%S")
    return f"{stamp}_o06201_s000_l2b_mask_b0106_v01"


GOOD_STEMS = [_stem(i) for i in range(GOOD)]
TRUNCATED = _stem(10)


def _dask_config(base: Path) -> dict[str, Any]:
    """dask-jobqueue's own configuration, as a site would write it (jobqueue.slurm), plus a
    short wait before Dask declares a cancelled job's worker lost and starts another job.
    (dask_jobqueue imported first: its defaults must be in Dask's config before a
    `dask.config.set`, which would otherwise drop them on leaving.)"""
    import dask_jobqueue  # noqa: F401

    return {"jobqueue.slurm.log-directory": str(base / "joblogs"),
            "jobqueue.slurm.local-directory": str(base / "dask-local"),
            "jobqueue.slurm.death-timeout": 5, "jobqueue.slurm.walltime": "00:15:00",
            "distributed.deploy.lost-worker-timeout": "1s"}


def _config_env(config: dict[str, Any]) -> dict[str, str]:
    """The same configuration as environment variables (for a campaign in a subprocess)."""
    return {"DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
            for key, value in config.items()}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slurm").resolve()


@pytest.fixture(scope="module")
def slurm(base):
    with OneNodeSlurm(base / "slurm", cpus=os.cpu_count() or 1) as cluster:
        old = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(cluster.conf)
        try:
            yield cluster
        finally:
            if old is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old


@pytest.fixture(scope="module")
def archive(base, spec) -> tuple[Path, Path]:
    tree = base / "archive"
    for i in range(GOOD):
        generate_acquisition(tree / f"good{i}", lines=LINES, samples=SAMPLES, seed=i,
                             start_time=START + timedelta(minutes=i))
    bad = generate_acquisition(tree / "truncated", lines=LINES, samples=SAMPLES, seed=10,
                               start_time=START + timedelta(minutes=10))
    with open(bad.radiance, "r+b") as f:
        f.truncate(1000)
    template = base / "template.json"
    template.write_text(json.dumps({
        "ancillary_files": {"model_weights": str(spec.weights_path),
                            "irradiance": str(spec.irradiance_path)},
        "processing": {"device": "cpu"}, "pge": {"software_build_version": "010635"}}))
    return tree, template


def _settings(archive: tuple[Path, Path], root: Path, **options: Any) -> Settings:
    return Settings(inventory=archive[0], template=archive[1], output_root=root,
                    threads_per_pge=1, gpus=None, retry_delay_s=0.0, stdout=io.StringIO(),
                    **options)


def _slurm_settings(archive, root: Path, **options: Any) -> Settings:
    return _settings(archive, root, cluster="slurm", connect_timeout_s=60.0, jobqueue=JobQueue(
        queue=OneNodeSlurm.PARTITION, max_jobs=2, job_cores=1, job_memory="2GiB"), **options)


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """What must be the same whichever cluster ran the campaign."""
    keep = ("status", "exit_code", "attempts", "retries", "cloud_fraction_percent", "reason")
    return {"totals": {k: v for k, v in report["totals"].items()
                       if k not in ("elapsed_s", "pge_seconds", "done_per_minute")},
            "acquisitions": {a["product_stem"]: {k: a[k] for k in keep}
                             for a in report["acquisitions"]}}


def _products_equal(a: Path, b: Path) -> None:
    """Bit for bit but for creation times: every raster byte and every array, and the
    normalised metadata (`tests/product_digest.py`)."""
    sys.path.insert(0, str(PROJECT / "tests"))
    from product_digest import _Arrays, digest_folder

    for stem in GOOD_STEMS:
        fa, fb = a / stem.split("_")[0], b / stem.split("_")[0]
        names = sorted(p.name for p in fa.iterdir())
        assert names == sorted(p.name for p in fb.iterdir())
        for name in names:
            if name.endswith((".img", ".png")):
                assert (fa / name).read_bytes() == (fb / name).read_bytes(), name
        _Arrays.found = {}
        da, arrays_a = digest_folder(fa, "x"), dict(_Arrays.found)
        _Arrays.found = {}
        db, arrays_b = digest_folder(fb, "x"), dict(_Arrays.found)
        assert da == db
        assert arrays_a.keys() == arrays_b.keys()
        for key, value in arrays_a.items():
            np.testing.assert_array_equal(value, arrays_b[key], err_msg=key)


def test_slurm_campaign_matches_the_local_cluster_and_a_rerun_starts_no_pge(
        archive, slurm, base):
    import dask

    local = run_campaign(_settings(archive, base / "local", workers=2))
    pge = f"env CAMPAIGN_PGE_COMMAND=template {sys.executable} -m pge.cli {{runconfig}}"
    with dask.config.set(_dask_config(base)):
        jobs = run_campaign(_slurm_settings(archive, base / "jobs",
                                            pge_command=tuple(pge.split())))
    assert local.exit_code == jobs.exit_code == 1  # the truncated radiance
    report = json.loads((base / "jobs" / "campaign_report.json").read_text())
    local_report = json.loads((base / "local" / "campaign_report.json").read_text())
    assert _summary(report) == _summary(local_report)
    by_stem = {a["product_stem"]: a for a in report["acquisitions"]}
    assert [by_stem[s]["status"] for s in GOOD_STEMS] == ["done"] * GOOD
    bad = by_stem[TRUNCATED]
    assert (bad["status"], bad["exit_code"], bad["attempts"]) == ("failed", 4, 1)
    assert report["campaign"]["engine"]["scheduler"] == "slurm"
    starts = [a.start for s in GOOD_STEMS for a in journal.read(journal.journal_path(
        base / "jobs", s))]
    assert all(s["slurm_job_id"] and s["command"][:2] == ["env", "CAMPAIGN_PGE_COMMAND=template"]
               for s in starts), starts
    _products_equal(base / "local" / "products", base / "jobs" / "products")

    with dask.config.set(_dask_config(base)):
        again = run_campaign(_slurm_settings(archive, base / "jobs"))
    totals = again.report.totals()
    assert (totals["pge_runs"], totals["skipped"], totals["failed"]) == (0, GOOD, 1)


# ---------------------------------------------------------------------------------------------
# A cancelled job, a killed driver: the campaign as a command, PGEs held at start-up


def _pges_of(root: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if b"pge.cli" in args and any(str(root).encode() in a for a in args) and _alive(
                    int(proc.name)):
                pids.append(int(proc.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _campaign_process(archive, root: Path, base: Path, slurm: OneNodeSlurm, hold: Path,
                      count: int, job_cores: int) -> subprocess.Popen:
    """The campaign command over the first `count` good acquisitions. The first PGE to start claims `hold`
    (creates it, with its PID) and waits until `hold`.release exists; no other PGE waits."""
    site = base / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import os, sys, time\n"
        "hold = os.environ.get('CAMPAIGN_TEST_HOLD')\n"
        "if hold and 'pge.cli' in sys.orig_argv:\n"
        "    try:\n"
        "        fd = os.open(hold, os.O_CREAT | os.O_EXCL | os.O_WRONLY)\n"
        "    except FileExistsError:\n"
        "        fd = None\n"
        "    if fd is not None:\n"
        "        os.write(fd, str(os.getpid()).encode()); os.close(fd)\n"
        "        while not os.path.exists(hold + '.release'):\n"
        "            time.sleep(0.1)\n")
    inventory = base / f"{root.name}.csv"
    rows = ["radiance,observation"] + [
        f"{p},{str(p).replace('_rdn_', '_obs_')}"
        for p in sorted(archive[0].rglob("*_l1b_rdn_*.img"))[:count]]
    inventory.write_text("\n".join(rows) + "\n")
    env = {**slurm.env, **_config_env(_dask_config(base)), "CAMPAIGN_TEST_HOLD": str(hold),
           "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT), str(site),
                                                      os.environ.get("PYTHONPATH")) if p)}
    return subprocess.Popen(
        [sys.executable, "-m", "campaign.cli", str(inventory), str(archive[1]), str(root),
         "--cluster", "slurm", "--partition", OneNodeSlurm.PARTITION, "--jobs", "1",
         "--job-cores", str(job_cores), "--job-memory", "2GiB", "--threads-per-pge", "1",
         "--retry-delay", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _scratch_left(root: Path) -> list[Path]:
    """Anything half-written: the PGE's scratch folders and temporary files."""
    return [p for p in (root / "products").rglob(".*")]


def test_scancel_mid_pge_loses_no_acquisition_and_reports_the_lost_attempt(
        archive, slurm, base):
    root, hold = base / "scancel", base / "scancel.hold"
    proc = _campaign_process(archive, root, base, slurm, hold, 2, 1)  # one PGE per job
    try:
        _wait(lambda: hold.exists() and hold.read_text(), 90, "a PGE to start")
        held_pge = int(hold.read_text())
        running = [job for job, state in slurm.jobs() if state == "RUNNING"]
        assert len(running) == 1
        subprocess.run(["scancel", running[0]], env=slurm.env, check=True)
        _wait(lambda: not _alive(held_pge), 30, "the held PGE to end with its job")
        out, err = proc.communicate(timeout=180)
    finally:
        Path(f"{hold}.release").touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (out[-2000:], err)
    report = json.loads((root / "campaign_report.json").read_text())
    assert {a["status"] for a in report["acquisitions"]} == {"done"}
    lost = [(a["product_stem"], h) for a in report["acquisitions"] for h in a["history"]
            if h.get("lost")]
    assert len(lost) == 1, lost
    stem, attempt = lost[0]
    entry = next(a for a in report["acquisitions"] if a["product_stem"] == stem)
    assert (entry["attempts"], [h["exit_code"] for h in entry["history"]][-1]) == (2, 0)
    assert f"Slurm job {running[0]}" in attempt["cause"], attempt
    assert report["totals"]["pge_runs"] == 2 + 1
    assert not _pges_of(root)
    assert not _scratch_left(root)
    for a in report["acquisitions"]:
        state = products.product_state(a["product_stem"], a["product_dir"], ())
        assert state.status == products.VALID, state


def test_sigkilled_driver_loses_nothing_and_the_rerun_reconciles_its_report(
        archive, slurm, base):
    root, hold = base / "killed", base / "killed.hold"
    count = 2
    proc = _campaign_process(archive, root, base, slurm, hold, count, 2)

    def published() -> int:
        return sum(products.product_state(s, root / "products" / s.split("_")[0], ()).status
                   == products.VALID for s in GOOD_STEMS[:count])

    try:  # one PGE held, the others published beside it: then the driver is killed
        _wait(lambda: hold.exists() and published() == count - 1, 120, "the other product")
        proc.kill()  # SIGKILL: no clean-up, the report on disk is as last written
        proc.wait(timeout=30)
        # its worker loses its scheduler and leaves (death-timeout), the held PGE with it
        _wait(lambda: not _pges_of(root) and not slurm.jobs(), 90, "the orphaned job to end")
    finally:
        Path(f"{hold}.release").touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    before = {p: p.stat().st_mtime_ns for p in (root / "products").rglob("*")}
    valid_before = {s: products.product_state(s, root / "products" / s.split("_")[0], ()).status
                    == products.VALID for s in GOOD_STEMS[:count]}
    rerun = _campaign_process(archive, root, base, slurm, hold, count, 2)
    out, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, (out[-2000:], err)
    report = json.loads((root / "campaign_report.json").read_text())
    previous = report["campaign"]["previous_run"]
    assert previous is not None and previous["attempts_added"] >= 1
    old = json.loads(Path(previous["report"]).read_text())
    assert old["campaign"]["driver_died"] is True
    for a in old["acquisitions"]:  # what was published is done, nothing else
        assert (a["status"] == "done") == valid_before[a["product_stem"]], a
        assert a["status"] in ("done", "pending")
        assert a["attempts"] == len(a["history"])
    lost = [h for a in old["acquisitions"] for h in a["history"] if h.get("lost")]
    assert lost and all("driver died" in h["cause"] for h in lost), lost
    statuses = {a["product_stem"]: a["status"] for a in report["acquisitions"]}
    assert set(statuses.values()) <= {"done", "skipped"} and len(statuses) == count
    for a in report["acquisitions"]:  # nothing redone: what was published is untouched
        if a["status"] == "skipped":
            folder = Path(a["product_dir"])
            assert all(before[p] == p.stat().st_mtime_ns for p in folder.iterdir())
    assert not _pges_of(root) and not _scratch_left(root)


@pytest.fixture(autouse=True)
def _cancel_jobs_after(slurm):
    """A failed test leaves no job running into the next."""
    yield
    subprocess.run(["scancel", "--partition", OneNodeSlurm.PARTITION], env=slurm.env,
                   capture_output=True)
