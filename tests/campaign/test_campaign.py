"""The reprocessing campaign (`campaign/`, `l2b-mask-campaign`) on a local Dask cluster.

One archive of five tiny synthetic acquisitions (8 x 16): two good, one with a truncated
radiance binary (PGE exit 4), one without a GLT while the template asks for orthorectified
products (PGE exit 3: its run configuration is invalid), and one radiance without an
observation (exit 4 from the inventory, no PGE). The first campaign over it (2 workers, one
PGE subprocess per attempt, for real) is shared by the product, report and log checks; the
reruns work on copies of its output root. An interrupted campaign (SIGTERM to the campaign's
process) over the good ones and a third, and a retryable failure (device cuda:7 on this
CPU-only machine: exit 6) run on their own. Retry policy, cluster sizing, inventory and
template handling are unit-tested without the PGE.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from campaign import cli, cluster, engine, inventory, loop, plan, policy, products
from campaign.engine import Outcome, Settings, run_campaign
from campaign.policy import Action
from campaign.report import CSV_COLUMNS, DONE, FAILED, PRODUCT_KEYS, Entry, Progress, Report
from campaign.template import TemplateError, load_template
from l2b_mask.synthetic.scene import generate_acquisition
from pge.errors import RunConfigError
from pge.runconfig import RunConfig
from pge.sds.files import product_files

# in-process runs reconfigure structlog and the root logger: conftest puts them back
pytestmark = pytest.mark.usefixtures("restore_logging")

LINES, SAMPLES = 8, 16
START = datetime(2024, 3, 2, 0, 0, 0, tzinfo=UTC)
GOOD = 2
PROJECT = Path(__file__).resolve().parents[2]


def _stem(minute: int) -> str:
    stamp = (START + timedelta(minutes=minute)).strftime("emit%Y%m%dt%H%M%S")
    return f"{stamp}_o06201_s000_l2b_mask_b0106_v01"


def _acq_id(stem: str) -> str:
    return stem.split("_")[0]


GOOD_STEMS = [_stem(i) for i in range(GOOD)]
EXTRA = _stem(5)  # a third good one, outside the tree: the CSV inventory lists all three
CSV_STEMS = [*GOOD_STEMS, EXTRA]
TRUNCATED, NO_GLT, NO_OBS = _stem(10), _stem(11), _stem(12)
BAD_STEMS = [TRUNCATED, NO_GLT, NO_OBS]


# ---------------------------------------------------------------------------------------------
# The archive and the first campaign, shared


@dataclass
class Archive:
    base: Path
    tree: Path  # the folder-tree inventory: good and bad acquisitions
    good_csv: Path  # CSV of the good acquisitions and EXTRA (paths relative to its folder)
    good: list[Any]  # the good ones' SyntheticAcquisition
    truncated: Any  # the SyntheticAcquisition whose radiance binary is truncated
    template: Path

    def product_keys(self) -> list[str]:
        """Every file a product of this template has: what the PGE writes, then its record."""
        return [*load_template(self.template).config.output.product_keys(), "provenance", "log"]

    def product_names(self, stem: str) -> set[str]:
        files = product_files(stem).as_dict()
        return {files[k].name for k in self.product_keys()}


@dataclass
class Run:
    root: Path
    outcome: Outcome
    stdout: str

    @property
    def entries(self) -> dict[str, Any]:
        return {e.product_stem: e for e in self.outcome.report.entries.values()}

    @property
    def totals(self) -> dict[str, Any]:
        return self.outcome.report.totals()

    def report_json(self) -> dict[str, Any]:
        return json.loads((self.root / "campaign_report.json").read_text())

    def report_csv(self) -> list[dict[str, str]]:
        with open(self.root / "campaign_report.csv", newline="") as f:
            return list(csv.DictReader(f))


def _template_data(spec: Any, **processing: Any) -> dict[str, Any]:
    return {"ancillary_files": {"model_weights": str(spec.weights_path),
                                "irradiance": str(spec.irradiance_path)},
            "output": {"write_ortho": True},
            "processing": {"device": "cpu", **processing},
            "pge": {"software_build_version": "010635"}}


def _generate(folder: Path, minute: int) -> Any:
    return generate_acquisition(folder, lines=LINES, samples=SAMPLES, seed=minute,
                                start_time=START + timedelta(minutes=minute))


@pytest.fixture(scope="module")
def archive(tmp_path_factory, spec) -> Archive:
    base = tmp_path_factory.mktemp("campaign").resolve()
    tree = base / "archive"
    good = [_generate(tree / f"good{i}", i) for i in range(GOOD)]
    truncated = _generate(tree / "truncated", 10)
    with open(truncated.radiance, "r+b") as f:
        f.truncate(1000)
    no_glt = _generate(tree / "no_glt", 11)
    for p in (no_glt.glt, no_glt.glt.with_suffix(".hdr")):
        p.unlink()
    no_obs = _generate(tree / "no_obs", 12)
    for p in (no_obs.observation, no_obs.observation.with_suffix(".hdr")):
        p.unlink()
    rows = ["radiance,observation,location,glt"]
    rows += [",".join(str(p.relative_to(base)) for p in (a.radiance, a.observation, a.location,
                                                          a.glt))
             for a in (*good, _generate(base / "extra", 5))]
    good_csv = base / "good.csv"
    good_csv.write_text("\n".join(rows) + "\n")
    template = base / "template.json"
    template.write_text(json.dumps(_template_data(spec), indent=2))
    return Archive(base, tree, good_csv, good, truncated, template)


def campaign(archive: Archive, root: Path, inventory_path: Path | None = None,
             template: Path | None = None, stdout: io.StringIO | None = None,
             **options: Any) -> Run:
    """One campaign in this process: 2 workers of 1 thread, 1 thread per PGE, no retry delay."""
    out = stdout or io.StringIO()
    settings = Settings(inventory=inventory_path or archive.tree,
                        template=template or archive.template, output_root=root, workers=2,
                        threads_per_pge=1, gpus=[], retry_delay_s=0.0, stdout=out, **options)
    return Run(root, run_campaign(settings), out.getvalue())


@pytest.fixture(scope="module")
def first(archive) -> Run:
    return campaign(archive, archive.base / "root")


def copy_root(run: Run, dest: Path) -> Path:
    shutil.copytree(run.root, dest)
    return dest


def state(archive: Archive, root: Path, stem: str) -> products.ProductState:
    keys = load_template(archive.template).config.output.product_keys()
    return products.product_state(stem, root / "products" / _acq_id(stem), keys)


def snapshot(root: Path) -> dict[Path, int]:
    """Modification times of every product and run configuration: what "nothing done" keeps."""
    return {p: p.stat().st_mtime_ns for sub in ("products", "runconfigs", "failed")
            for p in (root / sub).rglob("*")}


def made(report: dict[str, Any]) -> Counter[str]:
    """The products a campaign run made (its `done` acquisitions)."""
    return Counter(a["product_stem"] for a in report["acquisitions"] if a["status"] == "done")


# ---------------------------------------------------------------------------------------------
# First campaign: good products made once, bad ones reported with their codes, not retried


def test_first_campaign_makes_every_good_product_once(first, archive):
    assert first.outcome.exit_code == 1  # some acquisitions failed
    t = first.totals
    assert (t["acquisitions"], t["done"], t["skipped"], t["failed"], t["pending"]) == (5, 2, 0, 3, 0)
    assert t["pge_runs"] == 4 and t["retries"] == 0  # one PGE per acquisition that has inputs
    for stem in GOOD_STEMS:
        e = first.entries[stem]
        assert (e.status, e.exit_code, e.attempts, len(e.history)) == ("done", 0, 1, 1), e
        assert e.error is None and e.failure_log is None
        assert 0.0 <= e.cloud_fraction_percent <= 100.0
        folder = first.root / "products" / _acq_id(stem)
        assert set(e.products) == set(archive.product_keys())
        assert {Path(p) for p in e.products.values()} == {folder / n for n in archive.product_names(stem)}
        # exactly one product in its folder: every file once, no scratch or other leftovers
        assert {p.name for p in folder.iterdir()} == archive.product_names(stem)
        assert state(archive, first.root, stem).status == products.VALID


def test_bad_acquisitions_are_reported_with_their_codes_and_not_retried(first):
    """Exit 3 and 4 are never retried although the campaign allows 2 retries (for exit 6)."""
    e = first.entries
    assert first.outcome.report.campaign["retries"] == 2
    assert (e[TRUNCATED].status, e[TRUNCATED].exit_code, e[TRUNCATED].attempts) == ("failed", 4, 1)
    assert "truncated" in e[TRUNCATED].error and e[TRUNCATED].error.startswith("input product invalid")
    assert (e[NO_GLT].status, e[NO_GLT].exit_code, e[NO_GLT].attempts) == ("failed", 3, 1)
    assert e[NO_GLT].error.startswith("run configuration invalid") and "glt" in e[NO_GLT].error
    assert (e[NO_OBS].status, e[NO_OBS].exit_code, e[NO_OBS].attempts) == ("failed", 4, 0)
    assert "no observation" in e[NO_OBS].error
    assert first.totals["failed_by_exit_code"] == {"3": 1, "4": 2}
    for stem in (TRUNCATED, NO_GLT):
        log = Path(e[stem].failure_log)  # the PGE's output, kept: it removes its own log
        assert log.is_file() and f'"exit_code": {e[stem].exit_code}' in log.read_text()
        assert (first.root / "failed" / f"{stem}.json").is_file()  # remembered for the rerun
    for stem in BAD_STEMS:
        assert e[stem].products == {} and e[stem].cloud_fraction_percent is None
        folder = first.root / "products" / _acq_id(stem)
        assert not folder.exists() or not list(folder.iterdir())  # nothing left behind


def test_no_more_pges_in_flight_than_workers(first):
    """From each attempt's start and duration: at most 2 PGEs at once, one per worker."""
    attempts = [h for e in first.entries.values() for h in e.history]
    spans = [(datetime.fromisoformat(h["started_utc"]).timestamp(), h["duration_s"], h["worker"])
             for h in attempts]
    assert {w for _, _, w in spans} == {"0", "1"}
    edges = sorted([(t, 1) for t, _, _ in spans] + [(t + d, -1) for t, d, _ in spans],
                   key=lambda x: (x[0], x[1]))
    level, peak = 0, 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    assert peak <= 2
    for worker in ("0", "1"):
        mine = sorted((t, t + d) for t, d, w in spans if w == worker)
        assert all(a[1] <= b[0] for a, b in zip(mine, mine[1:], strict=False))


def test_run_configurations_are_kept(first):
    for stem in GOOD_STEMS:
        path = first.root / "runconfigs" / f"{stem}.json"
        cfg = RunConfig.from_file(path)
        assert first.entries[stem].runconfig == str(path)
        assert cfg.output.directory == first.root / "products" / _acq_id(stem)
        assert cfg.output.overwrite is True and cfg.output.write_ortho is True
        assert cfg.processing.threads == 1 and cfg.processing.device == "cpu"
        assert cfg.pge.software_build_version == "010635"
        assert cfg.ancillary_files.model_spec is not None  # spelled out, for the record
        assert cfg.input_files.radiance.name == stem.replace("l2b_mask", "l1b_rdn") + ".img"
        assert cfg.input_files.glt is not None
    # the run configuration the PGE refused is kept too, exactly as it was run
    with pytest.raises(RunConfigError, match="glt"):
        RunConfig.from_file(first.root / "runconfigs" / f"{NO_GLT}.json")
    # no observation: no run configuration can be made, and the report names none
    assert not (first.root / "runconfigs" / f"{NO_OBS}.json").exists()
    assert first.entries[NO_OBS].runconfig is None


def test_report_json_and_csv(first, archive):
    data = first.report_json()
    assert data["totals"] == {**first.totals, "elapsed_s": data["totals"]["elapsed_s"],
                              "done_per_minute": data["totals"]["done_per_minute"]}
    assert data["campaign"]["engine"]["workers"] == 2
    assert data["campaign"]["template"]["path"] == str(archive.template)
    assert data["campaign"]["finished_utc"] and data["campaign"]["interrupted"] is False
    by_stem = {a["product_stem"]: a for a in data["acquisitions"]}
    assert set(by_stem) == {*GOOD_STEMS, *BAD_STEMS}
    assert by_stem[TRUNCATED]["history"][0]["exit_code"] == 4
    rows = first.report_csv()
    assert list(rows[0]) == list(CSV_COLUMNS)
    csv_by_stem = {r["product_stem"]: r for r in rows}
    for stem, a in by_stem.items():
        r = csv_by_stem[stem]
        assert (r["status"], r["attempts"], r["exit_code"]) == (
            a["status"], str(a["attempts"]), "" if a["exit_code"] is None else str(a["exit_code"]))
        assert r["error"] == (a["error"] or "")
        assert r["runconfig"] == "" or Path(r["runconfig"]).is_file()  # never dangling
    assert csv_by_stem[NO_OBS]["runconfig"] == "" and by_stem[NO_OBS]["runconfig"] is None
    for stem in GOOD_STEMS:
        r = csv_by_stem[stem]
        assert float(r["cloud_fraction_percent"]) == by_stem[stem]["cloud_fraction_percent"]
        assert float(r["duration_s"]) > 0
        for key in PRODUCT_KEYS:
            assert r[f"product_{key}"] == by_stem[stem]["products"].get(key, "")
        assert all(Path(r[f"product_{k}"]).is_file() for k in archive.product_keys())


def test_progress_in_the_structured_log(first):
    events = [json.loads(line) for line in first.stdout.splitlines()]
    assert events[0]["event"] == "campaign_started" and events[-1]["event"] == "campaign_finished"
    finished = [e for e in events if e["event"] in ("acquisition_done", "acquisition_failed")
                and "progress" in e]
    # the unpaired radiance is reported before the loop; the four others count up to 5/5
    assert [e["progress"] for e in finished] == [f"{i}/5" for i in range(2, 6)]
    assert all({"eta_s", "done", "failed", "skipped", "running", "timestamp"} <= e.keys()
               for e in finished)
    assert finished[-1]["eta_s"] == 0.0 and finished[-1]["done"] == 2
    logs = list((first.root / "logs").glob("campaign-*.log"))
    assert len(logs) == 1
    assert logs[0].read_text().splitlines() == first.stdout.splitlines()


# ---------------------------------------------------------------------------------------------
# Reruns: nothing to do; a progress bar on a terminal; --limit 0


def test_second_run_does_nothing(first, archive, tmp_path, capfd):
    """Valid products are skipped, the bad acquisitions are reported again without a PGE
    (their inputs and run configuration did not change), and no file is touched."""
    root = copy_root(first, tmp_path / "root")
    before = snapshot(root)
    code = cli.main([str(archive.tree), str(archive.template), str(root), "--workers", "2",
                     "--threads-per-pge", "1", "--gpus", "none"])
    out, err = capfd.readouterr()
    assert code == 1  # still failures to report
    assert err.count("\n") == 1 and "3 of 5 acquisitions failed" in err
    summary = json.loads(out.splitlines()[-1])
    t = summary["totals"]
    assert (t["skipped"], t["done"], t["failed"], t["pge_runs"]) == (2, 0, 3, 0)
    assert t["failed_by_exit_code"] == {"3": 1, "4": 2}
    report = json.loads((root / "campaign_report.json").read_text())
    by_stem = {a["product_stem"]: a for a in report["acquisitions"]}
    for stem in GOOD_STEMS:
        a = by_stem[stem]
        assert (a["status"], a["attempts"], a["history"]) == ("skipped", 0, [])
        assert a["cloud_fraction_percent"] == first.entries[stem].cloud_fraction_percent
        assert set(a["products"]) == set(archive.product_keys())
    for stem in (TRUNCATED, NO_GLT):
        a = by_stem[stem]
        assert (a["status"], a["exit_code"], a["attempts"]) == (
            "failed", first.entries[stem].exit_code, 0)
        assert a["error"] == first.entries[stem].error and "not rerun" in a["reason"]
    assert snapshot(root) == before


def test_progress_bar_on_a_terminal(first, archive, tmp_path):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    root = copy_root(first, tmp_path / "root")
    run = campaign(archive, root, stdout=Terminal())
    assert run.totals["pge_runs"] == 0
    lines = run.stdout.split("\n")
    bars = [part for line in lines for part in line.split("\r\x1b[2K") if part.startswith("[")]
    assert bars[-1].startswith("[" + "#" * 28 + "] 5/5  done 0  skipped 2  failed 3  pending 0")
    assert "ETA 0m00s" in bars[-1]
    assert sum(line.count("FAILED ") for line in lines) == 2  # the two remembered failures
    assert not any(line.startswith("{") for line in lines)  # the log goes to its file only
    copied = set((first.root / "logs").glob("campaign-*.log"))
    (log,) = [p for p in (root / "logs").glob("campaign-*.log")
              if first.root / "logs" / p.name not in copied]
    assert sum('"acquisition_skipped"' in line for line in log.read_text().splitlines()) == 2


def test_the_report_of_a_driver_that_died_is_reconciled(first, archive, tmp_path):
    """As a SIGKILLed driver leaves it: finished_utc null, an acquisition published after
    its last report write still pending there with no attempt."""
    root = copy_root(first, tmp_path / "root")
    path = root / "campaign_report.json"
    report = json.loads(path.read_text())
    report["campaign"]["finished_utc"] = None
    stale = next(a for a in report["acquisitions"] if a["product_stem"] == GOOD_STEMS[0])
    stale.update(status="pending", attempts=0, history=[], exit_code=None)
    path.write_text(json.dumps(report))
    rerun = campaign(archive, root, inventory_path=archive.good_csv, limit=0)
    previous = rerun.outcome.report.campaign["previous_run"]
    assert previous["attempts_added"] == 1 and previous["published_since_last_write"] == 1
    old = json.loads(Path(previous["report"]).read_text())
    fixed = next(a for a in old["acquisitions"] if a["product_stem"] == GOOD_STEMS[0])
    assert (fixed["status"], fixed["attempts"], fixed["history"][0]["exit_code"]) == (
        "done", 1, 0)
    assert "did not record it" in fixed["reason"] and old["campaign"]["driver_died"]
    assert not [a for a in old["acquisitions"] if a["status"] == "pending"]
    assert rerun.entries[GOOD_STEMS[0]].status == "skipped"


def test_limit_0_checks_and_runs_nothing(archive, tmp_path):
    """No PGE runs, but every acquisition gets the run configuration it would run with (what
    the report's `runconfig` names); a rerun brings a stale or missing one up to date."""
    run = campaign(archive, tmp_path / "root", archive.good_csv, limit=0)
    assert run.outcome.exit_code == 0
    assert [e.status for e in run.entries.values()] == ["pending"] * len(CSV_STEMS)
    assert all("--limit 0" in e.reason for e in run.entries.values())
    assert run.totals["pge_runs"] == 0
    assert not (run.root / "products").exists() or not list((run.root / "products").rglob("*.*"))
    for stem in CSV_STEMS:
        path = run.root / "runconfigs" / f"{stem}.json"
        assert run.entries[stem].runconfig == str(path)
        cfg = RunConfig.from_file(path)
        assert cfg.processing.threads == 1 and cfg.output.directory == run.root / "products" / _acq_id(stem)
    stale, missing = (run.root / "runconfigs" / f"{s}.json" for s in CSV_STEMS[:2])
    wanted = stale.read_text()
    stale.write_text("{}\n")
    missing.unlink()
    campaign(archive, run.root, archive.good_csv, limit=0)
    assert stale.read_text() == wanted and missing.is_file()


def test_crash_leftovers_are_remade_and_a_changed_input_is_rerun(first, archive, tmp_path):
    """A product whose provenance is missing (its PGE killed while publishing) is remade; an
    acquisition that failed for good runs again once an input changed (touched, as if
    replaced); the valid product and the unchanged failure are left alone."""
    root = copy_root(first, tmp_path / "root")
    crashed, intact = GOOD_STEMS
    (root / "products" / _acq_id(crashed) / f"{crashed}_provenance.json").unlink()
    untouched = {p: p.stat().st_mtime_ns for p in (root / "products" / _acq_id(intact)).iterdir()}
    radiance = next((archive.tree / "no_glt").glob("*_l1b_rdn_*.img"))
    st = radiance.stat()
    os.utime(radiance, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        run = campaign(archive, root)
    finally:
        os.utime(radiance, ns=(st.st_atime_ns, st.st_mtime_ns))
    e = run.entries
    assert run.outcome.exit_code == 1
    assert (e[crashed].status, e[crashed].attempts) == ("done", 1)
    assert "provenance.json is missing" in e[crashed].reason
    assert (e[intact].status, e[intact].attempts) == ("skipped", 0)
    assert (e[NO_GLT].status, e[NO_GLT].exit_code, e[NO_GLT].attempts) == ("failed", 3, 1)
    assert (e[TRUNCATED].status, e[TRUNCATED].exit_code, e[TRUNCATED].attempts) == ("failed", 4, 0)
    assert run.totals["pge_runs"] == 2
    for stem in GOOD_STEMS:
        assert state(archive, root, stem).status == products.VALID
        folder = root / "products" / _acq_id(stem)
        assert {p.name for p in folder.iterdir()} == archive.product_names(stem)
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched


# ---------------------------------------------------------------------------------------------
# Interrupted for real, then resumed


def test_interrupted_campaign_is_resumed_and_completes_the_rest(archive, tmp_path):
    """SIGTERM to the campaign's process (a batch scheduler's stop) once the first product is
    made: the running PGEs are stopped and clean up, the report says what is done and what is
    pending, exit 8. The rerun makes only the pending products; each good product is made
    exactly once over both runs."""
    root = tmp_path / "root"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(PROJECT), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen(
        [sys.executable, "-m", "campaign.cli", str(archive.good_csv), str(archive.template),
         str(root), "--workers", "2", "--threads-per-pge", "1", "--gpus", "none",
         "--retry-delay", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if '"acquisition_done"' in line:
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 8, err
    assert err.count("\n") == 1 and "interrupted" in err
    assert json.loads(out.splitlines()[-1])["status"] == "interrupted"
    interrupted = json.loads((root / "campaign_report.json").read_text())
    assert interrupted["campaign"]["interrupted"] is True
    status = {a["product_stem"]: a["status"] for a in interrupted["acquisitions"]}
    done = {s for s, v in status.items() if v == "done"}
    pending = {s for s, v in status.items() if v == "pending"}
    assert done and pending and done | pending == set(CSV_STEMS)
    for stem in pending:  # a stopped PGE leaves nothing: no product, no scratch
        assert state(archive, root, stem).status == products.ABSENT
        folder = root / "products" / _acq_id(stem)
        assert not folder.exists() or not list(folder.iterdir())

    resumed = campaign(archive, root, archive.good_csv)
    assert resumed.outcome.exit_code == 0
    assert {s for s, e in resumed.entries.items() if e.status == "skipped"} == done
    assert {s for s, e in resumed.entries.items() if e.status == "done"} == pending
    assert resumed.totals["pge_runs"] == len(pending)
    # the ETA comes from PGE runs only: the near-instant skips of a resume give none (they
    # would promise the pending PGEs in no time), and the end says 0
    events = [json.loads(line) for line in resumed.stdout.splitlines()]
    skips = [e for e in events if e["event"] == "acquisition_skipped"]
    assert skips and all(e["eta_s"] is None for e in skips)
    assert [e for e in events if "progress" in e][-1]["eta_s"] == 0.0
    # each product made once over both runs: by exactly one PGE (exit 0, or stopped after it
    # had published), never remade
    assert made(interrupted) + made(resumed.report_json()) == Counter(CSV_STEMS)
    for stem in CSV_STEMS:
        assert state(archive, root, stem).status == products.VALID
        folder = root / "products" / _acq_id(stem)
        assert {p.name for p in folder.iterdir()} == archive.product_names(stem)


# ---------------------------------------------------------------------------------------------
# Retryable failures


def test_exit_6_is_retried_and_a_bad_input_is_not(archive, tmp_path, spec):
    """processing.device cuda:7 on a machine without 8 GPUs: the good acquisition fails with
    exit 6 and is retried --retries times; the truncated one fails with 4 first (inputs are
    checked before the device) and is not retried."""
    if len(plan.detect_gpus()) > 7:
        pytest.skip("this machine has a cuda:7")
    template = tmp_path / "cuda7.json"
    template.write_text(json.dumps(_template_data(spec, device="cuda:7")))
    inv = tmp_path / "two.csv"
    inv.write_text("radiance,observation,glt\n" + "".join(
        f"{a.radiance},{a.observation},{a.glt}\n" for a in (archive.good[0], archive.truncated)))
    run = campaign(archive, tmp_path / "root", inv, template=template, retries=1)
    assert run.outcome.exit_code == 1
    e = run.entries[GOOD_STEMS[0]]
    assert (e.status, e.exit_code, e.attempts, e.retries) == ("failed", 6, 2, 1), e
    assert [h["exit_code"] for h in e.history] == [6, 6]
    assert e.error.startswith("processing failed") and "cuda:7" in e.error
    bad = run.entries[TRUNCATED]
    assert (bad.status, bad.exit_code, bad.attempts, bad.retries) == ("failed", 4, 1, 0)
    assert run.totals["retries"] == 1 and run.totals["pge_runs"] == 3
    assert not (run.root / "failed" / f"{GOOD_STEMS[0]}.json").exists()  # 6: tried again later
    assert (run.root / "failed" / f"{TRUNCATED}.json").exists()


@pytest.mark.parametrize(("code", "timed_out", "used", "retries", "action"), [
    (0, False, 0, 2, Action.DONE),
    (6, False, 0, 2, Action.RETRY),
    (6, False, 1, 2, Action.RETRY),
    (6, False, 2, 2, Action.GIVE_UP),
    (6, False, 0, 0, Action.GIVE_UP),
    (1, False, 0, 5, Action.RETRY),  # unexpected error: once
    (1, False, 1, 5, Action.GIVE_UP),
    (1, False, 0, 0, Action.GIVE_UP),
    (-9, False, 0, 3, Action.RETRY),  # killed (OOM killer): like 1
    (-9, False, 1, 3, Action.GIVE_UP),
    (8, True, 0, 3, Action.RETRY),  # stopped by --pge-timeout: like 1
    (0, True, 0, 3, Action.RETRY),
    (None, False, 0, 2, Action.RETRY),  # the task was lost (worker died): like 1
    (2, False, 0, 9, Action.GIVE_UP),
    (3, False, 0, 9, Action.GIVE_UP),
    (4, False, 0, 9, Action.GIVE_UP),
    (5, False, 0, 9, Action.GIVE_UP),
    (7, False, 0, 9, Action.GIVE_UP),
    (8, False, 0, 9, Action.GIVE_UP),
])
def test_retry_policy(code, timed_out, used, retries, action):
    assert policy.decide(code, timed_out, used, retries) == action


# ---------------------------------------------------------------------------------------------
# Cluster sizing


def test_plan_one_pge_per_gpu_pinned():
    p = plan.plan_local("auto", 32, ["0", "1", "2", "3"], memory_bytes=64 << 30)
    assert (p.workers, p.threads_per_pge, p.mode) == (4, 8, "gpu")
    env = p.env_by_worker()
    assert [env[str(i)]["CUDA_VISIBLE_DEVICES"] for i in range(4)] == ["0", "1", "2", "3"]
    assert env["0"]["OMP_NUM_THREADS"] == "8"


def test_plan_cpu_cores_over_threads_capped_by_memory():
    p = plan.plan_local("auto", 16, [], memory_bytes=256 << 30, threads_per_pge=4)
    assert (p.workers, p.threads_per_pge, p.mode) == (4, 4, "cpu")
    assert "CUDA_VISIBLE_DEVICES" not in p.env_by_worker()["0"]
    small = plan.plan_local("auto", 16, [], memory_bytes=8 << 30, threads_per_pge=1,
                            memory_per_pge=2 << 30)
    assert small.workers == 3  # 90 % of 8 GiB holds 3 PGEs of 2 GiB
    assert plan.plan_local("cpu", 16, ["0"], threads_per_pge=2).mode == "cpu"
    forced = plan.plan_local("auto", 4, [], hide_gpus=True)
    assert forced.env_by_worker()["0"]["CUDA_VISIBLE_DEVICES"] == ""
    assert plan.plan_local("cuda:1", 8, ["0", "1"]).workers == 1
    assert plan.plan_local("auto", 2, [], workers=5).workers == 5
    assert plan.plan_local("auto", 2, []).workers == 1  # 2 threads per PGE by default


# ---------------------------------------------------------------------------------------------
# Inventory


def _touch(*paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def test_scan_pairs_by_name_then_by_flight_line(tmp_path):
    a = "emit20240101t000000_o00001_s000_l1b_{}_b0106_v01.img"
    b = "emit20240101t000100_o00001_s001_l1b_{}_b0106_v01.img"
    c = "emit20240101t000200_o00001_s002_l1b_{}_b0106_v01.img"
    _touch(tmp_path / "x" / a.format("rdn"), tmp_path / "x" / a.format("obs"),
           tmp_path / "x" / a.format("glt"),
           tmp_path / "y" / b.format("rdn"),  # obs in another folder, other build
           tmp_path / "z" / b.format("obs").replace("b0106", "b0107"),
           tmp_path / "w" / c.format("rdn"),  # no observation at all
           tmp_path / ".scratch" / a.format("rdn").replace("000000", "000500"),  # hidden: ignored
           tmp_path / "x" / "notes.img")
    found = {p.radiance.name: p for p in inventory.scan_tree(tmp_path)}
    assert set(found) == {a.format("rdn"), b.format("rdn"), c.format("rdn")}
    first = found[a.format("rdn")]
    assert first.observation == tmp_path / "x" / a.format("obs") and first.problem is None
    assert first.glt == tmp_path / "x" / a.format("glt") and first.location is None
    assert found[b.format("rdn")].observation.parent == tmp_path / "z"
    assert "no observation" in found[c.format("rdn")].problem


def test_csv_inventory_relative_paths_and_blank_optional_cells(tmp_path):
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "inv.csv"
    f.write_text("radiance,observation,glt\n../r1.img,../o1.img,\n/abs/r2.img,/abs/o2.img,g2.img\n\n")
    rows = inventory.read_csv(f)
    # joined, not normalised (as pge.runconfig does): names stay as the operator wrote them
    assert [r.radiance for r in rows] == [tmp_path / "sub" / ".." / "r1.img", Path("/abs/r2.img")]
    assert rows[0].glt is None and rows[1].glt == tmp_path / "sub" / "g2.img"
    assert rows[0].location is None


def test_csv_inventory_errors_are_all_listed(tmp_path):
    f = tmp_path / "inv.csv"
    f.write_text("radiance,observaton\nr.img,o.img\n")
    with pytest.raises(inventory.InventoryError) as exc:
        inventory.read_csv(f)
    assert any("missing column(s) observation" in p for p in exc.value.problems)
    assert any("'observaton'" in p for p in exc.value.problems)
    f.write_text("radiance,observation\nr.img,\nr2.img,o2.img\nr2.img,o3.img\n")
    with pytest.raises(inventory.InventoryError) as exc:
        inventory.read_csv(f)
    assert exc.value.problems == ["line 2: empty observation",
                                  "line 4: radiance already listed on line 3"]


def test_two_radiances_writing_one_product_are_an_inventory_error(tmp_path):
    a = "emit20240101t000000_o00001_s000_l1b_{}_b0106_v0{}.img"
    _touch(*(tmp_path / a.format(k, v) for k in ("rdn", "obs") for v in (1, 2)))
    acquisitions = inventory.scan_tree(tmp_path)
    assert len(acquisitions) == 2 and all(x.problem is None for x in acquisitions)
    (dupe,) = inventory.duplicates(acquisitions, "01")
    assert "would be written by 2 radiances" in dupe


# ---------------------------------------------------------------------------------------------
# Template, products and command line


def test_template_problems_are_all_listed_and_exit_3(archive, tmp_path, capfd, spec):
    bad = dict(_template_data(spec, batch_size=0), input_files={"radiance": "x"},
               output={"directory": "out"}, colour="blue")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(TemplateError) as exc:
        load_template(path)
    text = "; ".join(exc.value.problems)
    for words in ("input_files", "output.directory", "processing.batch_size", "colour"):
        assert words in text
    code = cli.main([str(archive.good_csv), str(path), str(tmp_path / "root")])
    out, err = capfd.readouterr()
    assert code == 3 and err.count("\n") == 1 and "template invalid" in err
    assert json.loads(out.splitlines()[-1])["exit_code"] == 3
    assert not (tmp_path / "root").exists()


def test_template_with_wrong_weights_is_exit_3(archive, tmp_path, spec):
    data = _template_data(spec)
    data["ancillary_files"]["model_weights"] = str(spec.irradiance_path)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    assert cli.main([str(archive.good_csv), str(path), str(tmp_path / "root")]) == 3


def test_usage_errors_exit_2(archive, tmp_path, capfd):
    assert cli.main([]) == 2
    assert cli.main([str(tmp_path / "nowhere"), str(archive.template), str(tmp_path / "r")]) == 2
    assert cli.main([str(archive.good_csv), str(archive.template), str(tmp_path / "r"),
                     "--workers", "0"]) == 2
    (tmp_path / "empty").mkdir()
    assert cli.main([str(tmp_path / "empty"), str(archive.template), str(tmp_path / "r")]) == 2
    with engine._lock(tmp_path / "locked"):  # another campaign holds this output root
        assert cli.main([str(archive.good_csv), str(archive.template),
                         str(tmp_path / "locked")]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 5 and "inventory not found" in err and "no EMIT L1B radiance" in err
    assert "another campaign is running" in err


def test_product_state_reasons(first, archive, tmp_path):
    root = copy_root(first, tmp_path / "root")
    stem = GOOD_STEMS[1]
    folder = root / "products" / _acq_id(stem)
    t = load_template(archive.template)
    keys = t.config.output.product_keys()
    files = product_files(stem, folder)
    cfg = RunConfig.from_file(root / "runconfigs" / f"{stem}.json")
    fp = products.fingerprint(cfg, t.ancillary_sha256)
    assert products.product_state(stem, folder, keys, fp).status == products.VALID
    for section, key, value in (("algorithm", "threshold", 0.7), ("output", "write_browse", False),
                                ("output", "write_ummg", False), ("output", "product_version", "02")):
        changed = json.loads(json.dumps(fp))
        changed[section][key] = value
        s = products.product_state(stem, folder, keys, changed)
        assert s.status == products.INVALID and f"{section}.{key}" in s.reason
    other = RunConfig.from_dict({**json.loads(json.dumps(cfg.model_dump(mode="json"))),
                                 "processing": {"device": "cuda", "batch_size": 7, "threads": 9}}, "/")
    assert products.fingerprint(other, t.ancillary_sha256) == fp  # compute settings do not count
    files.log.unlink()
    assert "log missing" in products.product_state(stem, folder, keys).reason
    files.browse.write_bytes(b"x")
    assert "checksum" in products.product_state(stem, folder, keys).reason
    files.provenance.write_text("{")
    assert "unreadable" in products.product_state(stem, folder, keys).reason
    for p in folder.iterdir():
        p.unlink()
    assert products.product_state(stem, folder, keys).status == products.ABSENT


def test_progress_bar_rendering():
    out = io.StringIO()
    bar = Progress(out, 4)
    bar.update(2, Counter(done=1, skipped=1, pending=2), 2, 12.0, 75.0)
    bar.message("FAILED x: exit 4")
    bar.close()
    text = out.getvalue()
    assert "[##############--------------] 2/4  done 1  skipped 1  failed 0" in text
    assert "running 2  12.0/min  ETA 1m15s" in text
    assert "FAILED x: exit 4\n" in text and text.endswith("\n")


def test_eta_from_pge_runs_over_the_pges_at_once():
    assert loop.eta_seconds(8, pge_seconds=20.0, pge_runs=2, slots=2) == 40.0
    assert loop.eta_seconds(3, pge_seconds=30.0, pge_runs=1, slots=1) == 90.0
    assert loop.eta_seconds(5, pge_seconds=0.0, pge_runs=0, slots=2) is None  # nothing to go by
    assert loop.eta_seconds(0, pge_seconds=0.0, pge_runs=0, slots=2) == 0.0


def test_report_counts_are_kept_not_recounted(tmp_path):
    """counts() is called on every completion: it must not walk the whole archive."""

    class NoWalk(dict):
        def values(self):
            raise AssertionError("counts() walked every entry")

    report = Report(tmp_path, {})
    entries = [Entry(acquisition=f"a{i}", product_stem=f"s{i}", radiance=f"r{i}",
                     observation=None, location=None, glt=None, runconfig=None,
                     product_dir=f"d{i}") for i in range(5)]
    for e in entries:
        report.add(e)
    report.set_status(entries[0], DONE)
    report.set_status(entries[1], FAILED)
    report.set_status(entries[1], FAILED)
    report.set_status(entries[2], DONE)
    report.add(entries[2])  # the same entry again does not count twice
    expected = Counter(e.status for e in entries)
    walked, report.entries = report.entries, NoWalk(report.entries)
    assert report.counts() == expected == Counter(done=2, failed=1, pending=2)
    report.entries = walked
    assert report.totals()["done"] == 2 and report.totals()["pending"] == 2


def _bars(text: str) -> list[str]:
    return [part for part in text.split("\r\x1b[2K") if part.startswith("[")]


def test_progress_bar_draws_the_last_update_of_a_burst():
    """Updates inside the throttle interval are not lost: the last one of a burst shows soon
    after, with no further update (the campaign may then wait minutes on its PGEs), and a
    burst costs a few redraws, not one per update."""
    out = io.StringIO()
    bar = Progress(out, 10)
    try:
        for i in range(1, 10):
            bar.update(i, Counter(done=i, pending=10 - i), 2, 30.0, 60.0)
        time.sleep(0.6)
        bars = _bars(out.getvalue())
        assert bars[-1].startswith("[" + "#" * 25 + "---] 9/10  done 9")
        assert len(bars) <= 3
    finally:
        bar.close()


def test_progress_bar_eta_counts_down_while_waiting():
    out = io.StringIO()
    bar = Progress(out, 4)
    bar.REFRESH_S = 0.3
    try:
        bar.update(1, Counter(done=1, pending=3), 2, 12.0, 10.0)
        time.sleep(1.3)
    finally:
        bar.close()
    etas = [int(b.rsplit("ETA 0m", 1)[1][:2]) for b in _bars(out.getvalue())]
    assert etas[0] == 10 and etas[-1] < 10 and len(etas) <= 8


# ---------------------------------------------------------------------------------------------
# The engine: addresses, a cluster that does not start, local-only options


@pytest.mark.parametrize("address", ["notaurl", "tcp://host", "tcp://:8786", "tcp://h:port",
                                     "foo://h:1", "tcp://h:70000", ""])
def test_malformed_scheduler_address_is_a_usage_error(archive, tmp_path, capfd, address):
    root = tmp_path / "root"
    code = cli.main([str(archive.good_csv), str(archive.template), str(root),
                     "--scheduler", address])
    out, err = capfd.readouterr()
    assert code == 2, err
    assert err.count("\n") == 1 and f"--scheduler {address!r}" in err
    assert "Traceback" not in err
    assert json.loads(out.splitlines()[-1])["status"] == "usage error"
    assert not root.exists()  # found before anything was touched


@pytest.mark.parametrize("address", ["tcp://10.0.0.5:8786", "head:8786", "tls://[::1]:8786",
                                     "ws://head.example.org:8786"])
def test_well_formed_scheduler_addresses_pass_the_check(address):
    cluster.check_scheduler_address(address)


def test_address_that_distributed_refuses_later_is_a_usage_error(archive, tmp_path, capfd,
                                                                 monkeypatch):
    """Should an address pass the check and `Client` raise ValueError, still exit 2, one line."""
    monkeypatch.setattr(engine, "check_scheduler_address", lambda address: None)
    code = cli.main([str(archive.good_csv), str(archive.template), str(tmp_path / "root"),
                     "--scheduler", "tcp://host"])
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "missing port" in err, err


def test_local_cluster_that_fails_to_start_is_exit_6(archive, tmp_path, capfd, monkeypatch):
    import distributed

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Cluster failed to start: [Errno 98] Address already in use")

    monkeypatch.setattr(distributed, "LocalCluster", broken)
    code = cli.main([str(archive.good_csv), str(archive.template), str(tmp_path / "root"),
                     "--workers", "1", "--gpus", "none", "--dashboard", ":8787"])
    out, err = capfd.readouterr()
    assert code == 6, err
    assert err.count("\n") == 1 and "cannot start the local Dask cluster" in err
    assert "--dashboard :8787" in err and "Address already in use" in err
    assert json.loads(out.splitlines()[-1])["status"] == "engine failed"


@pytest.mark.parametrize("options", [["--workers", "2"], ["--gpus", "none"],
                                     ["--processes", "--dashboard", ":8787"],
                                     ["--memory-per-pge", "8"]])
def test_local_cluster_options_with_scheduler_are_a_usage_error(archive, tmp_path, capfd,
                                                                options):
    """They would be ignored (the remote workers decide): refused, before connecting."""
    root = tmp_path / "root"
    code = cli.main([str(archive.good_csv), str(archive.template), str(root),
                     "--scheduler", "tcp://127.0.0.1:8786", *options])
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "only for the local cluster" in err
    assert all(o in err for o in options if o.startswith("--"))
    assert not root.exists()


def test_bad_dashboard_port_is_a_usage_error(archive, tmp_path, capfd):
    code = cli.main([str(archive.good_csv), str(archive.template), str(tmp_path / "root"),
                     "--dashboard", "localhost:web"])
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "'web' is not a number" in err


# ---------------------------------------------------------------------------------------------
# PGEs do not outlive a killed campaign


def _pges_of(root: Path) -> list[int]:
    """PGE processes working for this output root (their run configuration is under it)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"pge.cli" in args and any(str(root).encode() in a for a in args):
            pids.append(int(proc.name))
    return pids


def _alive(pid: int) -> bool:
    try:  # a zombie is gone for our purpose (a container's init may not reap it at once)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_pges_do_not_outlive_a_sigkilled_campaign(archive, tmp_path):
    """SIGKILL to the campaign (no chance to stop its PGEs): each PGE gets SIGTERM from the
    kernel (parent-death signal) and ends. The PGEs are held at start-up for 2 minutes by a
    sitecustomize, so one still there after 15 s was not stopped."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, sys, time\n"
        "if 'pge.cli' in sys.orig_argv and os.environ.get('CAMPAIGN_TEST_PGE_HOLD_S'):\n"
        "    time.sleep(float(os.environ['CAMPAIGN_TEST_PGE_HOLD_S']))\n")
    root = tmp_path / "root"
    env = dict(os.environ, CAMPAIGN_TEST_PGE_HOLD_S="120", PYTHONPATH=os.pathsep.join(
        p for p in (str(PROJECT), str(site), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen(
        [sys.executable, "-m", "campaign.cli", str(archive.good_csv), str(archive.template),
         str(root), "--workers", "2", "--threads-per-pge", "1", "--gpus", "none"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    pges: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(pges) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            pges = _pges_of(root)
        assert pges, "no PGE started"
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in pges) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in pges if _alive(p)], "PGEs outlived the campaign"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _pges_of(root):  # only if the test failed: ours, by their output root
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
