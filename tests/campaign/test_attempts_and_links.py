"""Every attempt counted, nothing written through a link, one policy row per exit code.

- A worker killed at every PGE start (local cluster, worker processes): Dask reruns the task
  on the restarted worker unasked; the attempt journal shows each start to the driver, the
  retry policy holds (one retry for a lost attempt), and the report counts every PGE start.
- Links planted at the names the campaign writes in its output root (run as root, as in CI):
  exit 2 with one stderr line naming the link, the victim outside untouched.
- `--pge-command` without `{runconfig}`: exit 2.
- The retry policy has a row for every `ExitCode` member.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_campaign import archive, campaign  # noqa: F401

from campaign import cli, journal, policy
from campaign.files import append_line, write_atomically
from l2b_mask.errors import ExitCode

pytestmark = pytest.mark.usefixtures("restore_logging")
PROJECT = Path(__file__).resolve().parents[2]


def test_every_exit_code_has_a_policy_row():
    assert set(policy.RULES) == set(ExitCode), set(ExitCode) - set(policy.RULES)
    assert policy.REMEMBERED == {ExitCode.USAGE, ExitCode.RUNCONFIG, ExitCode.INPUT,
                                 ExitCode.ANCILLARY}
    assert policy.retries_allowed(None, False, 5) == 1  # lost: once
    assert policy.retries_allowed(99, False, 5) == 1  # outside the table: as unexpected


def test_a_worker_killed_at_every_pge_start_is_counted_and_bounded(archive, tmp_path,  # noqa: F811
                                                                    monkeypatch):
    """Each PGE kills its worker process as it starts (the nanny restarts the worker, Dask
    reruns the task): the PGE starts twice (one retry for a lost attempt), not as often as
    Dask would, and the report says 2 attempts, both lost, with their cause."""
    site = tmp_path / "site"
    site.mkdir()
    starts = tmp_path / "starts"
    (site / "sitecustomize.py").write_text(
        "import os, signal, sys, time\n"
        "if 'pge.cli' in sys.orig_argv and os.environ.get('CAMPAIGN_TEST_STARTS'):\n"
        "    with open(os.environ['CAMPAIGN_TEST_STARTS'], 'a') as f:\n"
        "        f.write(f'{os.getpid()}\\n')\n"
        "    os.kill(os.getppid(), signal.SIGKILL)\n"
        "    time.sleep(60)\n")
    monkeypatch.setenv("CAMPAIGN_TEST_STARTS", str(starts))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(PROJECT), str(site), os.environ.get("PYTHONPATH")) if p))
    csv = tmp_path / "one.csv"
    first_row = archive.good_csv.read_text().splitlines()[1].split(",")[:2]
    csv.write_text("radiance,observation\n" + ",".join(
        str(archive.good_csv.parent / p) for p in first_row) + "\n")
    run = campaign(archive, tmp_path / "root", inventory_path=csv, local_processes=True)
    (entry,) = run.entries.values()
    pge_starts = starts.read_text().split()
    assert (entry.status, entry.attempts) == ("failed", len(pge_starts)), (entry, pge_starts)
    assert len(pge_starts) == 2
    assert all(h["lost"] and "lost: no end recorded" in h["cause"] for h in entry.history)
    assert run.totals["pge_runs"] == 2
    recorded = journal.read(journal.journal_path(tmp_path / "root", entry.product_stem))
    assert [a.lost for a in recorded] == [True, True]


@pytest.mark.skipif(os.geteuid() != 0, reason="the campaign's link safety matters as root")
@pytest.mark.parametrize("name", [".campaign.lock", "campaign_report.json",
                                  "campaign_report.csv", "campaign_report.html",
                                  "campaign_collection.json", "logs", "attempts"])
def test_a_link_at_a_campaign_name_is_refused(archive, tmp_path, capfd, name):  # noqa: F811
    victim_dir = tmp_path / "outside"
    victim_dir.mkdir()
    victim = victim_dir / "victim"
    victim.write_text("precious\n")
    root = tmp_path / "root"
    root.mkdir()
    (root / name).symlink_to(victim_dir if name in ("logs", "attempts") else victim)
    code = cli.main([str(archive.good_csv), str(archive.template), str(root), "--workers", "1",
                     "--gpus", "none"])
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(root / name) in err, err
    assert "symbolic link" in err
    assert victim.read_text() == "precious\n" and [p.name for p in victim_dir.iterdir()] == [
        "victim"]


def test_files_are_replaced_or_refused_never_written_through_a_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "report.json"
    link.symlink_to(victim)
    write_atomically(link, "new\n")  # the link is replaced, the victim untouched
    assert not link.is_symlink() and link.read_text() == "new\n"
    assert victim.read_text() == "precious\n"
    journal_link = tmp_path / "stem.jsonl"
    journal_link.symlink_to(victim)
    with pytest.raises(OSError):
        append_line(journal_link, "{}")
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "stem.jsonl", "victim"]


def test_pge_command_needs_runconfig(archive, tmp_path, capfd):  # noqa: F811
    code = cli.main([str(archive.good_csv), str(archive.template), str(tmp_path / "root"),
                     "--pge-command", "apptainer exec l2b.sif l2b-mask-pge"])
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "{runconfig}" in err
    assert not (tmp_path / "root").exists()
    shutil.rmtree(tmp_path / "root", ignore_errors=True)
