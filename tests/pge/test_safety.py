"""The PGE runs as root in an output folder others may write (issue 20): it never writes through
a link, never follows or deletes what its own runs did not make, and a failure at the very
start leaves nothing behind.

Each case holds the contract of docs/reliability.md: the documented exit code, exactly one
stderr line naming the file, nothing outside the output folder created or changed, nothing
already published lost, no process left. The suite runs as root in CI, so the links are real
and a planted folder of another user is made with chown.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_reliability import (
    STEM,
    _copy_published,
    _fsize_limit,
    assert_complete_product,
    assert_failure,
    base_config,
    files_in,
    run_pge,
    snapshot,
    tmpfs,
    write_config,
    write_scene,
)
from test_reliability import published as published  # noqa: F401 - the module fixture

from pge.journal import JOURNAL, VERSION
from pge.sds.files import product_files

NOBODY = 65534


def _scene(tmp_path: Path, spec: Any, **output: Any) -> Path:
    rdn, obs = write_scene(tmp_path / "in")
    write_config(tmp_path, base_config(tmp_path, rdn, obs, spec, output=output))
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return out


# ---------------------------------------------------------------------------------------------
# 1. The lock file


@pytest.mark.parametrize("target", ["victim", "dangling"])
def test_lock_file_symlink_is_refused_and_nothing_outside_written(tmp_path, spec, target):
    out = _scene(tmp_path, spec)
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    if target == "victim":
        victim.write_text("precious\n")
    (out / f".{STEM}.lock").symlink_to(victim)
    result = run_pge(["rc.json"], tmp_path)
    line = assert_failure(result, 7, [str(out / f".{STEM}.lock"), "symbolic link"], None)
    assert "does not write through it" in line
    if target == "victim":
        assert victim.read_text() == "precious\n"
    else:
        assert not victim.exists()
    assert files_in(outside) == (["victim.txt"] if target == "victim" else [])
    assert files_in(out) == [f".{STEM}.lock"]  # the link, as planted: nothing else
    assert (out / f".{STEM}.lock").is_symlink()


def test_lock_file_that_is_a_fifo_or_hard_link_is_refused(tmp_path, spec):
    out = _scene(tmp_path, spec)
    lock = out / f".{STEM}.lock"
    os.mkfifo(lock)
    result = run_pge(["rc.json"], tmp_path, timeout=120)
    assert_failure(result, 7, [str(lock), "not a regular file"], None)
    lock.unlink()
    elsewhere = tmp_path / "other.txt"
    elsewhere.write_text("keep\n")
    os.link(elsewhere, lock)
    result = run_pge(["rc.json"], tmp_path)
    assert_failure(result, 7, [str(lock), "2 hard links"], None)
    assert elsewhere.read_text() == "keep\n"


def test_lock_file_left_by_a_killed_run_is_reused(tmp_path, spec):
    """A lock file nobody holds (its run was killed) is not in the way: the flock is the lock."""
    out = _scene(tmp_path, spec)
    (out / f".{STEM}.lock").write_text("999999\n")
    result = run_pge(["rc.json"], tmp_path)
    assert result.code == 0 and result.stderr == "", str(result)
    assert_complete_product(out)


# ---------------------------------------------------------------------------------------------
# 2. Planted scratch folders and journals


def _plant(out: Path, name: str, journal: dict[str, Any], *, owner: int | None = None) -> Path:
    folder = out / f".{STEM}.{name}.scratch"
    folder.mkdir(mode=0o700)
    (folder / JOURNAL).write_text(json.dumps(journal))
    (folder / "owner.lock").write_text("1\n")
    if owner is not None:
        for p in (folder / JOURNAL, folder / "owner.lock", folder):
            os.chown(p, owner, owner)
    return folder


@pytest.fixture
def victims(tmp_path) -> dict[str, Path]:
    """Files of the output folder a planted journal names: another product's, a user's."""
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    other = product_files("other_rdn_l2b_mask", out)
    made = {"other_img": other.envi_data, "notes": out / "notes.txt"}
    for p in made.values():
        p.write_text(f"content of {p.name}\n")
    return made


def test_foreign_scratch_folder_is_left_alone_and_its_journal_never_followed(
        tmp_path, spec, victims):
    out = _scene(tmp_path, spec)
    names = [p.name for p in victims.values()]
    planted = _plant(out, "x1y2z3", {"version": VERSION, "output": str(out), "stem": STEM,
                                     "names": names, "old": [], "staged": {},
                                     "state": "swapping"}, owner=NOBODY)
    before = {p.name: p.read_text() for p in victims.values()}
    result = run_pge(["rc.json"], tmp_path)
    assert result.code == 0 and result.stderr == "", str(result)
    assert {p.name: p.read_text() for p in victims.values()} == before
    assert planted.is_dir() and (planted / JOURNAL).is_file()  # not ours: not removed either
    assert any(e["event"] == "foreign_scratch_left_alone" for e in result.events)


@pytest.mark.parametrize("journal", [
    "other_names", "relative_escape", "old_journal_format", "not_json", "journal_is_a_link"])
def test_own_scratch_with_a_journal_that_is_not_this_products_is_refused(
        tmp_path, spec, victims, journal):
    out = _scene(tmp_path, spec)
    base = {"version": VERSION, "output": str(out), "stem": STEM, "old": [], "staged": {},
            "state": "swapping"}
    record: Any = {
        "other_names": {**base, "names": [p.name for p in victims.values()]},
        "relative_escape": {**base, "names": ["../in/scene_rdn.img"]},
        "old_journal_format": {k: v for k, v in base.items() if k not in ("version", "staged")}
        | {"names": [f"{STEM}.img"]},
        "not_json": {}, "journal_is_a_link": {},
    }[journal]
    planted = _plant(out, "a1b2c3", record)
    if journal == "not_json":
        (planted / JOURNAL).write_text("{not json")
    if journal == "journal_is_a_link":
        (planted / JOURNAL).unlink()
        (planted / JOURNAL).symlink_to(tmp_path / "rc.json")
    before_in = snapshot(tmp_path / "in")
    before = {p.name: p.read_text() for p in victims.values()}
    result = run_pge(["rc.json"], tmp_path)
    assert_failure(result, 7, [str(planted / JOURNAL), "not followed"], None)
    assert {p.name: p.read_text() for p in victims.values()} == before
    assert snapshot(tmp_path / "in") == before_in
    assert planted.is_dir()  # left for the operator to inspect
    assert not os.path.lexists(out / f".{STEM}.lock")


def test_own_journal_never_removes_a_file_its_run_did_not_move_in(tmp_path, spec, published):
    """A journal of this product, in a folder of ours, whose run 'moved in' every product file
    (state swapping, nothing old): the files there now are another run's (their inodes differ),
    so the roll-back removes none of them."""
    d = _copy_published(published, tmp_path / "p", spec, output={"overwrite": False})
    out = d / "out"
    before = snapshot(out)
    names = [p.name for p in product_files(STEM, out).all() if p.exists()]
    _plant(out, "k9k9k9", {"version": VERSION, "output": str(out), "stem": STEM,
                           "names": names, "old": [], "staged": dict.fromkeys(names, 1),
                           "state": "swapping"})
    result = run_pge(["rc.json"], d)
    assert_failure(result, 7, ["already exists"], None)  # the product is still there
    assert snapshot(out) == before
    assert any(e["event"] == "recovered_killed_run" for e in result.events)


def test_scratch_folders_are_private_with_unpredictable_names(tmp_path, spec):
    from pge.publish import open_workspace

    out = tmp_path / "out"
    made = []
    for _ in range(2):
        ws = open_workspace(STEM, out, None, overwrite=False, inputs=[])
        made.append(ws.scratch.name)
        mode = stat.S_IMODE(os.lstat(ws.scratch).st_mode)
        ws.close()
        assert mode == 0o700
    assert made[0] != made[1] and all(n.startswith(f".{STEM}.") for n in made)
    assert files_in(out) == []


# ---------------------------------------------------------------------------------------------
# 3. A link where a product file goes


@pytest.mark.parametrize("overwrite", [False, True])
def test_product_named_symlink_is_refused_before_computing(tmp_path, spec, overwrite):
    out = _scene(tmp_path, spec, overwrite=overwrite)
    victim = tmp_path / "victim.img"
    victim.write_bytes(b"not yours")
    (out / f"{STEM}.img").symlink_to(victim)
    result = run_pge(["rc.json"], tmp_path)
    assert_failure(result, 7, [str(out / f"{STEM}.img"), "symbolic link"], None)
    assert victim.read_bytes() == b"not yours"
    assert files_in(out) == [f"{STEM}.img"] and (out / f"{STEM}.img").is_symlink()
    assert not any(e.get("step") == "run" for e in result.events)  # refused before inference


def test_product_named_folder_is_refused(tmp_path, spec):
    out = _scene(tmp_path, spec, overwrite=True)
    (out / f"{STEM}.nc").mkdir()
    result = run_pge(["rc.json"], tmp_path)
    assert_failure(result, 7, [str(out / f"{STEM}.nc"), "not a regular file"], None)


def test_provenance_names_the_output_folder_not_a_link_target(tmp_path, spec):
    """The output folder reached through a link: the provenance records the resolved folder
    and each product's own name in it."""
    real = tmp_path / "real_out"
    real.mkdir()
    rdn, obs = write_scene(tmp_path / "in")
    (tmp_path / "out").symlink_to(real)
    write_config(tmp_path, base_config(tmp_path, rdn, obs, spec))
    result = run_pge(["rc.json"], tmp_path)
    assert result.code == 0, str(result)
    record = json.loads((real / f"{STEM}_provenance.json").read_text())
    assert record["outputs"]["envi_data"]["path"] == str(real.resolve() / f"{STEM}.img")


# ---------------------------------------------------------------------------------------------
# 7. A full disk at the start


def test_full_filesystem_at_the_start_leaves_no_lock_and_no_scratch(tmp_path, spec):
    """The output folder is a 64 KiB tmpfs already full: the first write (the log, in scratch)
    fails; exit 7 naming the cause, and nothing of the run is left: no lock, no scratch."""
    rdn, obs = write_scene(tmp_path / "in")
    out = tmp_path / "out"
    write_config(tmp_path, base_config(tmp_path, rdn, obs, spec))
    with tmpfs(out, "size=64k"):
        filler = out / "filler.bin"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\xab" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        size = filler.stat().st_size
        result = run_pge(["rc.json"], tmp_path)
        assert_failure(result, 7, ["no space left"], None)
        assert files_in(out) == ["filler.bin"], files_in(out)
        assert filler.stat().st_size == size


def test_file_size_limit_at_the_first_write_leaves_nothing(tmp_path, spec):
    """The same through RLIMIT_FSIZE (no mount needed): 1 byte, so the log's first line fails."""
    rdn, obs = write_scene(tmp_path / "in")
    write_config(tmp_path, base_config(tmp_path, rdn, obs, spec))
    result = run_pge(["rc.json"], tmp_path, preexec=_fsize_limit(1))
    assert_failure(result, 7, ["file size limit 1 bytes reached"], tmp_path / "out")
    shutil.rmtree(tmp_path / "out", ignore_errors=True)


def test_file_size_limit_at_the_second_log_line_leaves_nothing(tmp_path, spec):
    """The limit lets the log's first line through and stops the second, the prepare step's
    own `step_finished`: the workspace is already the clean-up's, so nothing is left. The
    limit comes from a first run's log (the two runs' lines have the same lengths)."""
    rdn, obs = write_scene(tmp_path / "in")
    for name in ("outA", "outB"):
        cfg = base_config(tmp_path, rdn, obs, spec, output={"directory": str(tmp_path / name)})
        write_config(tmp_path, cfg, f"rc{name[-1]}.json")
    first = run_pge(["rcA.json"], tmp_path)
    assert first.code == 0, str(first)
    lines = (tmp_path / "outA" / f"{STEM}_pge.log").read_text().splitlines(keepends=True)
    assert json.loads(lines[1])["event"] == "step_finished"
    limit = len(lines[0].encode())
    result = run_pge(["rcB.json"], tmp_path, preexec=_fsize_limit(limit))
    assert_failure(result, 7, [f"file size limit {limit} bytes reached"], tmp_path / "outB")


# ---------------------------------------------------------------------------------------------
# 6. Wavelengths in micrometres labelled nanometres: the radiance is named, not the model


def test_envi_wavelengths_in_micrometres_labelled_nm_exit_4_naming_the_radiance(tmp_path, spec):
    from conftest import emit_like_wavelengths
    from test_reliability import edit_header

    rdn, obs = write_scene(tmp_path / "in")
    wl, _ = emit_like_wavelengths(285)
    edit_header(rdn, "wavelength", "{" + ", ".join(f"{w / 1000:.8f}" for w in wl) + "}")
    write_config(tmp_path, base_config(tmp_path, rdn, obs, spec))
    result = run_pge(["rc.json"], tmp_path)
    line = assert_failure(result, 4, [str(rdn.with_suffix(".hdr")), "micrometres"], tmp_path / "out")
    assert "specification" not in line


def test_granule_wavelengths_in_micrometres_exit_4_naming_the_granule(tmp_path):
    from conftest import small_granule

    from l2b_mask.errors import ExitCode, InputProductError
    from l2b_mask.inputs.daac import open_radiance_granule
    from l2b_mask.synthetic.scene import emit_wavelengths

    wl, fwhm = emit_wavelengths()
    path = small_granule(tmp_path / "EMIT_L1B_RAD_001_20240302T005829_2406201_001.nc",
                         band_vars={"wavelengths": wl / 1000.0, "fwhm": fwhm / 1000.0})
    with pytest.raises(InputProductError) as info:
        open_radiance_granule(path)
    assert info.value.exit_code == ExitCode.INPUT and info.value.path == path
    assert "micrometres" in info.value.problem


# ---------------------------------------------------------------------------------------------
# 5. A view zenith a hair above the horizon: bounded, and no value there


def test_view_zenith_at_89_9999_degrees_finishes_and_has_no_shadow_value(tmp_path, spec):
    """Before the bound this scene kept the shadow step busy for over 300 s (24 million sweep
    steps); the run's own timeout here is far below that. The library test
    (tests/science/test_shadow_bounds.py) asserts the step count."""
    from l2b_mask.inputs.envi import read_header
    from l2b_mask.products.envi import read_envi_layers
    from l2b_mask.synthetic.scene import generate_acquisition

    acq = generate_acquisition(tmp_path / "in", lines=64, samples=64, seed=5, shadows=True)
    header = read_header(acq.observation)
    assert header.interleave == "bil"
    obs = np.memmap(header.data_path, header.dtype, "r+",
                    shape=(header.lines, header.bands, header.samples))
    obs[20, 2, :] = 89.9999  # to-sensor zenith of a whole line, clouds included
    obs.flush()
    del obs
    cfg = base_config(tmp_path, acq.radiance, acq.observation, spec)
    cfg["input_files"]["location"] = str(acq.location)
    write_config(tmp_path, cfg)
    result = run_pge(["rc.json"], tmp_path, timeout=240)
    assert result.code == 0 and result.stderr == "", str(result)
    stem = next((tmp_path / "out").glob("*_provenance.json")).name.removesuffix("_provenance.json")
    layers = read_envi_layers(tmp_path / "out" / f"{stem}.img")
    assert (layers.flag[20] != 255).any()  # the line has cloud flag values...
    assert (layers.shadow[20] == 255).all()  # ...but no shadow value
    assert (layers.shadow[:20] != 255).any()  # the rest of the scene keeps its shadow values
