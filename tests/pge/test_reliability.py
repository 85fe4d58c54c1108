"""Reliability: every bad input and every fault ends in a documented exit code, one stderr line
naming the file and the problem, and no product (or the previous product, intact).

The bad-input cases run the console script as the SDS does, all at once in a thread pool, on
8 x 8 scenes; each test reads its result. Faults (signals, SIGKILL, a full disk, two runs at
once, overwrite, crashes mid-publication) run their own subprocesses. The table in
docs/reliability.md was written from these runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import OBS_NAMES, emit_like_wavelengths, write_raster

from l2b_mask.inputs.envi import read_header
from l2b_mask.products.envi import read_envi_product
from l2b_mask.spec import sha256_of
from pge.errors import ExitCode, OutputProductError
from pge.locking import acquire_acquisition_lock

PROJECT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).with_name("l2b-mask-pge")
PGE = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "pge.cli"]
STEM = "scene_rdn_l2b_mask"
EMIT_RDN = "emit20240302t005829_o06201_s000_l1b_rdn_b0106_v01"
# a non-EMIT name: no granule record (it needs the acquisition time); ortho is off by default
SUFFIXES = (".img", ".hdr", ".nc", ".png", "_metadata.json", "_provenance.json", "_pge.log")
LINES = SAMPLES = 8


# ---------------------------------------------------------------------------------------------
# Scenes, configurations, runs


def write_scene(folder: Path, lines: int = LINES, samples: int = SAMPLES, *, seed: int = 0,
                interleave: str = "bil", byte_order: str = "<", rdn_dtype: Any = np.float32,
                sza: float | np.ndarray = 30.0, esd: float | np.ndarray = 1.0,
                radiance: Callable[[np.ndarray], None] | None = None,
                rdn_extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """A small valid radiance/obs pair; `radiance` may edit the (lines, bands, samples) cube."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    wl, fwhm = emit_like_wavelengths(285)
    cube = rng.uniform(1.0, 20.0, (lines, 285, samples)).astype(np.float32)
    if radiance is not None:
        radiance(cube)
    extra = {"data ignore value": -9999, "wavelength units": "Nanometers",
             "wavelength": [f"{w:.5f}" for w in wl], "fwhm": [f"{f:.5f}" for f in fwhm]}
    extra.update(rdn_extra or {})
    rdn = write_raster(folder / "scene_rdn.img", cube.astype(rdn_dtype), interleave, byte_order,
                       extra)
    obs = np.zeros((lines, 11, samples), np.float64)
    obs[:, 4, :] = sza
    obs[:, 10, :] = esd
    obs_path = write_raster(folder / "scene_obs.img", obs, extra={"data ignore value": -9999,
                                                                 "band names": OBS_NAMES})
    return rdn, obs_path


def base_config(d: Path, rdn: Path, obs: Path, spec: Any, **sections: dict[str, Any]) -> dict:
    cfg: dict[str, Any] = {
        "input_files": {"radiance": str(rdn), "observation": str(obs)},
        "ancillary_files": {"model_weights": str(spec.weights_path),
                            "irradiance": str(spec.irradiance_path)},
        "output": {"directory": str(d / "out")},
        "processing": {"device": "cpu", "threads": 1},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def write_config(d: Path, cfg: dict[str, Any] | str, name: str = "rc.json") -> Path:
    path = d / name
    path.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg, indent=1))
    return path


def edit_header(path: Path, key: str, value: str | None) -> None:
    """Replace (or with None delete) the `key = ...` line of an ENVI header."""
    hdr = path.with_suffix(".hdr")
    lines = hdr.read_text().splitlines()
    out = [ln for ln in lines if not ln.lower().startswith(f"{key} =")]
    if value is not None:
        out.append(f"{key} = {value}")
    hdr.write_text("\n".join(out) + "\n")


def spec_copy(d: Path, spec: Any, *, weights: Path | None = None,
              irradiance: Path | None = None) -> Path:
    """The model spec TOML with weights/irradiance replaced and their sha256 matching."""
    text = spec.path.read_text()
    w, i = weights or spec.weights_path, irradiance or spec.irradiance_path
    text = re.sub(r'^weights = .*$', f'weights = "{w}"', text, flags=re.M)
    text = re.sub(r'^weights_sha256 = .*$', f'weights_sha256 = "{sha256_of(w)}"', text, flags=re.M)
    text = re.sub(r'^irradiance = .*$', f'irradiance = "{i}"', text, flags=re.M)
    text = re.sub(r'^irradiance_sha256 = .*$', f'irradiance_sha256 = "{sha256_of(i)}"', text,
                  flags=re.M)
    path = d / "spec_copy.toml"
    path.write_text(text)
    return path


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads(self.stdout.splitlines()[-1])

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.stdout.splitlines()[:-1] if x.startswith("{")]

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout (tail)\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT), env.get("PYTHONPATH")) if p)
    return env


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background job may inherit SIG_IGN


def run_pge(args: list[str], cwd: Path, *, timeout: float = 300,
            preexec: Callable[[], None] | None = None, cmd: list[str] | None = None) -> Result:
    t0 = time.monotonic()
    p = subprocess.run([*(cmd or PGE), *args], cwd=cwd, env=_env(), capture_output=True,
                       text=True, timeout=timeout, check=False, preexec_fn=preexec)
    return Result(p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


def run_until(args: list[str], cwd: Path, trigger: Callable[[dict[str, Any]], bool],
              action: Callable[[subprocess.Popen], None], *, timeout: float = 300,
              cmd: list[str] | None = None) -> Result:
    """Start the PGE; when a stdout event matches `trigger`, call `action(proc)` once; wait."""
    proc = subprocess.Popen([*(cmd or PGE), *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    head: list[str] = []
    acted_at = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            head.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if trigger(event):
                acted_at = time.monotonic()
                action(proc)
                break
        out, err = proc.communicate(timeout=timeout)
        ended = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    r = Result(proc.returncode, "".join(head) + out, err)
    if acted_at is not None:
        r.extra["stop_latency_s"] = ended - acted_at
    return r


def step_started(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == "step_started" and e.get("step") == name


def files_in(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")) if out.exists() else []


def assert_no_products(out: Path) -> None:
    assert files_in(out) == [], f"left in {out}: {files_in(out)}"


def assert_failure(result: Result, code: int, needles: list[str], out: Path | None) -> str:
    assert result.code == code, str(result)
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, str(result)
    line = result.stderr.rstrip("\n")
    assert line.startswith(f"{ExitCode(code).label}: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    summary = result.summary
    assert (summary["status"], summary["exit_code"]) == ("failure", code), summary
    # the stdout summary carries the whole message; stderr cuts an absurdly long one with "..."
    assert summary["error"] == line or (
        line.endswith("...") and summary["error"].startswith(line[:-3])), (summary, line)
    if out is not None:
        assert_no_products(out)
    return line


def snapshot(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}


def assert_complete_product(out: Path, stem: str = STEM) -> None:
    """Exactly the product files, and every output matches its provenance checksum."""
    assert files_in(out) == sorted(stem + s for s in SUFFIXES)
    record = json.loads((out / f"{stem}_provenance.json").read_text())
    for key, entry in record["outputs"].items():
        if "sha256" in entry:
            assert sha256_of(out / Path(entry["path"]).name) == entry["sha256"], key


@contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted on `folder` (created) while the block runs, unmounted whatever happens.

    Skips the test when mounting is not permitted (not root, no CAP_SYS_ADMIN, a container
    without it): permission bits do not stop root, a read-only or full filesystem does.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount/umount command here")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                       capture_output=True, text=True, check=False)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on {folder} (needs root or CAP_SYS_ADMIN): "
                    f"{(p.stderr or p.stdout).strip() or f'mount exited {p.returncode}'}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


# ---------------------------------------------------------------------------------------------
# Bad inputs: every case at once


@dataclass
class Case:
    code: int
    needles: list[str]
    d: Path
    args: list[str] = field(default_factory=lambda: ["rc.json"])
    out: str = "out"
    check_empty: bool = True


def _build_cases(root: Path, spec: Any) -> dict[str, Case]:
    cases: dict[str, Case] = {}

    def new(name: str) -> Path:
        d = root / name
        d.mkdir()
        return d

    def add(name: str, d: Path, code: int, needles: list[str], **kw: Any) -> None:
        cases[name] = Case(code, needles, d, **kw)

    def scene_case(name: str, code: int, needles: Callable[[Path, Path], list[str]] | list[str],
                   mutate: Callable[[Path, Path, Path], None] | None = None,
                   cfg_over: dict[str, dict[str, Any]] | None = None, **scene_kw: Any) -> None:
        d = new(name)
        rdn, obs = write_scene(d / "in", **scene_kw)
        if mutate is not None:
            mutate(d, rdn, obs)
        write_config(d, base_config(d, rdn, obs, spec, **(cfg_over or {})))
        add(name, d, code, needles(rdn, obs) if callable(needles) else needles)

    # --- 3: run configuration
    shared_rdn, shared_obs = write_scene(root / "shared")
    good = base_config(root, shared_rdn, shared_obs, spec)

    def rc_case(name: str, text: str | dict, needles: list[str]) -> None:
        d = new(name)
        cfg = text if isinstance(text, str) else json.loads(json.dumps(text))
        if isinstance(cfg, dict):
            cfg["output"]["directory"] = str(d / "out")
        write_config(d, cfg)
        add(name, d, 3, ["rc.json", *needles])

    def with_(section: str, **values: Any) -> dict:
        cfg = json.loads(json.dumps(good))
        cfg.setdefault(section, {}).update(values)
        return cfg

    rc_case("rc_not_json", "{this is not JSON", ["not valid JSON"])
    rc_case("rc_empty", "", ["empty"])
    rc_case("rc_top_level_array", "[1, 2]", ["JSON object"])
    rc_case("rc_unknown_key", with_("output", overwrit=True), ["output.overwrit"])
    missing = json.loads(json.dumps(good))
    del missing["input_files"]["radiance"]
    rc_case("rc_missing_required_key", missing, ["input_files.radiance"])
    rc_case("rc_wrong_type_batch", with_("processing", batch_size="many"),
            ["processing.batch_size"])
    rc_case("rc_wrong_type_overwrite", with_("output", overwrite="yes"), ["output.overwrite"])
    rc_case("rc_wrong_type_path", with_("input_files", radiance=42), ["input_files.radiance"])
    rc_case("rc_threshold_zero", with_("algorithm", threshold=0), ["algorithm.threshold"])
    rc_case("rc_threshold_one", with_("algorithm", threshold=1.0), ["algorithm.threshold"])
    rc_case("rc_threshold_negative", with_("algorithm", threshold=-0.2), ["algorithm.threshold"])
    rc_case("rc_unknown_device", with_("processing", device="tpu"), ["processing.device"])
    rc_case("rc_threads_huge", with_("processing", threads=100_000), ["processing.threads"])
    no_data = ["output: at least one of output.write_envi / output.write_netcdf must be true"]
    rc_case("rc_no_data_file", with_("output", write_envi=False, write_netcdf=False,
                                     write_ummg=False), no_data)
    # EMIT-named radiance with the granule record on: it used to reach the UMM-G writer with no
    # data file to list and end in exit 1
    d = new("rc_no_data_file_emit_named")
    rdn, obs = write_scene(d / "in")
    emit_rdn = rdn.with_name(EMIT_RDN + ".img")
    rdn.replace(emit_rdn)
    rdn.with_suffix(".hdr").replace(emit_rdn.with_suffix(".hdr"))
    write_config(d, base_config(d, emit_rdn, obs, spec, output={
        "write_envi": False, "write_netcdf": False, "write_browse": False, "write_ummg": True}))
    add("rc_no_data_file_emit_named", d, 3, ["rc.json", *no_data])
    d = new("rc_file_missing")
    add("rc_file_missing", d, 3, ["no_such_rc.json", "not found"], args=["no_such_rc.json"])
    # paths that do not exist: inputs are checked by the PGE (4), ancillary files too (5)
    d = new("path_radiance_missing")
    write_config(d, base_config(d, d / "nope_rdn.img", shared_obs, spec))
    add("path_radiance_missing", d, 4, [str(d / "nope_rdn.hdr"), "not found"])
    d = new("path_observation_missing")
    write_config(d, base_config(d, shared_rdn, d / "nope_obs.hdr", spec))
    add("path_observation_missing", d, 4, [str(d / "nope_obs.hdr"), "not found"])
    d = new("path_weights_missing")
    write_config(d, base_config(d, shared_rdn, shared_obs, spec,
                                ancillary_files={"model_weights": str(d / "none.pt")}))
    add("path_weights_missing", d, 5, [str(d / "none.pt"), "not found"])
    d = new("path_irradiance_missing")
    write_config(d, base_config(d, shared_rdn, shared_obs, spec,
                                ancillary_files={"irradiance": str(d / "none.npy")}))
    add("path_irradiance_missing", d, 5, [str(d / "none.npy"), "not found"])
    for key in ("glt", "location"):
        d = new(f"path_{key}_missing")
        write_config(d, base_config(d, shared_rdn, shared_obs, spec,
                                    input_files={key: str(d / f"nope_{key}.img")}))
        add(f"path_{key}_missing", d, 4, [str(d / f"nope_{key}.hdr"), "header not found"])
    d = new("path_spec_missing")
    write_config(d, base_config(d, shared_rdn, shared_obs, spec,
                                ancillary_files={"model_spec": str(d / "none.toml")}))
    add("path_spec_missing", d, 5, [str(d / "none.toml"), "not found"])

    # --- 7: output folder
    d = new("out_under_regular_file")
    (d / "afile").write_text("not a folder\n")
    write_config(d, base_config(d, shared_rdn, shared_obs, spec,
                                output={"directory": str(d / "afile" / "out")}))
    add("out_under_regular_file", d, 7, [str(d / "afile" / "out")], out="afile/out")
    d = new("out_is_a_regular_file")
    (d / "out").write_text("a file where the output folder should be\n")
    write_config(d, base_config(d, shared_rdn, shared_obs, spec))
    add("out_is_a_regular_file", d, 7, [str(d / "out")], check_empty=False)
    if os.geteuid() != 0:
        d = new("out_not_writable")
        (d / "out").mkdir()
        (d / "out").chmod(0o500)
        write_config(d, base_config(d, shared_rdn, shared_obs, spec))
        add("out_not_writable", d, 7, [str(d / "out"), "not writable"])
    # output folder = the inputs' folder, and an input carries the product's name
    d = new("out_collides_with_input")
    rdn, obs = write_scene(d / "in")
    obs.rename(d / "in" / f"{STEM}.img")
    obs.with_suffix(".hdr").rename(d / "in" / f"{STEM}.hdr")
    write_config(d, base_config(d, rdn, d / "in" / f"{STEM}.img", spec,
                                output={"directory": str(d / "in")}))
    add("out_collides_with_input", d, 7, [f"{STEM}.img", "collides with an input"],
        check_empty=False)

    # --- 4: radiance and observation
    scene_case("hdr_missing", 4, lambda r, o: [r.with_suffix(".hdr").name, "header not found"],
               lambda d, r, o: r.with_suffix(".hdr").unlink())
    scene_case("hdr_unreadable", 4, lambda r, o: [r.with_suffix(".hdr").name, "unreadable"],
               lambda d, r, o: r.with_suffix(".hdr").write_bytes(b"\x00\xffgarbage\n= = {\n"))
    scene_case("hdr_no_envi_magic", 4, lambda r, o: [r.with_suffix(".hdr").name],
               lambda d, r, o: r.with_suffix(".hdr").write_text(
                   r.with_suffix(".hdr").read_text().replace("ENVI\n", "", 1)))
    scene_case("binary_truncated", 4, lambda r, o: [r.name, "truncated"],
               lambda d, r, o: r.write_bytes(r.read_bytes()[:-100]))
    scene_case("binary_too_long", 4, lambda r, o: [r.name, "longer than its header"],
               lambda d, r, o: r.write_bytes(r.read_bytes() + b"\0" * 64))
    scene_case("binary_missing", 4, lambda r, o: [r.name, "binary file not found"],
               lambda d, r, o: r.unlink())
    scene_case("wrong_band_count", 4, lambda r, o: [r.with_suffix(".hdr").name, "100 bands"],
               lambda d, r, o: (edit_header(r, "bands", "100"),
                                r.write_bytes(r.read_bytes()[: LINES * SAMPLES * 100 * 4])))
    scene_case("interleave_unknown", 4, lambda r, o: [r.with_suffix(".hdr").name, "interleave"],
               lambda d, r, o: edit_header(r, "interleave", "bxl"))
    scene_case("byte_order_invalid", 4, lambda r, o: [r.with_suffix(".hdr").name, "byte order"],
               lambda d, r, o: edit_header(r, "byte order", "2"))
    scene_case("data_type_int16", 4,
               lambda r, o: [r.with_suffix(".hdr").name, "floating point"],
               rdn_dtype=np.int16)
    scene_case("data_type_unknown", 4, lambda r, o: [r.with_suffix(".hdr").name, "data type 99"],
               lambda d, r, o: edit_header(r, "data type", "99"))
    scene_case("obs_hdr_unreadable", 4, lambda r, o: [o.with_suffix(".hdr").name, "unreadable"],
               lambda d, r, o: o.with_suffix(".hdr").write_bytes(b"\x00\xffgarbage\n= = {\n"))
    scene_case("obs_binary_truncated", 4, lambda r, o: [o.name, "truncated"],
               lambda d, r, o: o.write_bytes(o.read_bytes()[:-100]))
    scene_case("obs_binary_too_long", 4, lambda r, o: [o.name, "longer than its header"],
               lambda d, r, o: o.write_bytes(o.read_bytes() + b"\0" * 64))
    scene_case("obs_wrong_band_count", 4,
               lambda r, o: [o.with_suffix(".hdr").name, "5 bands", "expected 11 or 12"],
               lambda d, r, o: write_raster(o, np.zeros((LINES, 5, SAMPLES)),
                                            extra={"data ignore value": -9999}))
    scene_case("obs_data_type_int", 4, lambda r, o: [o.with_suffix(".hdr").name, "floating"],
               lambda d, r, o: (edit_header(o, "data type", "14")))
    scene_case("dims_mismatch", 4, lambda r, o: [o.with_suffix(".hdr").name, "lines"],
               lambda d, r, o: write_raster(
                   o, np.zeros((LINES - 2, 11, SAMPLES)), extra={"band names": OBS_NAMES}))
    scene_case("wavelength_missing", 4, lambda r, o: [r.with_suffix(".hdr").name, "wavelength"],
               lambda d, r, o: edit_header(r, "wavelength", None))
    wl = [f"{w:.5f}" for w in emit_like_wavelengths(285)[0]]
    scene_case("wavelength_unsorted", 4,
               lambda r, o: [r.with_suffix(".hdr").name, "strictly increasing"],
               lambda d, r, o: edit_header(r, "wavelength",
                                           "{" + ", ".join([wl[1], wl[0], *wl[2:]]) + "}"))
    scene_case("wavelength_duplicated", 4,
               lambda r, o: [r.with_suffix(".hdr").name, "strictly increasing"],
               lambda d, r, o: edit_header(r, "wavelength",
                                           "{" + ", ".join([wl[0], *wl[:-1]]) + "}"))
    scene_case("wavelength_count", 4, lambda r, o: [r.with_suffix(".hdr").name, "284 wavelengths"],
               lambda d, r, o: edit_header(r, "wavelength", "{" + ", ".join(wl[:-1]) + "}"))
    scene_case("wavelength_not_number", 4, lambda r, o: [r.with_suffix(".hdr").name, "not a number"],
               lambda d, r, o: edit_header(r, "wavelength", "{" + ", ".join(["x", *wl[1:]]) + "}"))
    scene_case("fwhm_missing", 4, lambda r, o: [r.with_suffix(".hdr").name, "fwhm"],
               lambda d, r, o: edit_header(r, "fwhm", None))
    scene_case("all_radiance_fill", 4,
               lambda r, o: [r.with_suffix(".hdr").name, "no pixel has a value"],
               radiance=lambda c: c.fill(-9999.0))
    scene_case("all_radiance_nan", 4,
               lambda r, o: [r.with_suffix(".hdr").name, "no pixel has a value"],
               radiance=lambda c: c.fill(np.nan))
    scene_case("all_sun_below_horizon", 4,
               lambda r, o: [o.with_suffix(".hdr").name, "no pixel has a value", "90"],
               sza=95.0)
    scene_case("sza_exactly_90", 4, lambda r, o: [o.with_suffix(".hdr").name, "no pixel"], sza=90.0)
    scene_case("earth_sun_all_fill", 4, lambda r, o: [o.name, "Earth-Sun distance"], esd=-9999.0)

    # --- 5: ancillary
    d = new("weights_truncated")
    w = d / "weights.pt"
    w.write_bytes(spec.weights_path.read_bytes()[:1000])
    write_config(d, base_config(d, shared_rdn, shared_obs, spec,
                                ancillary_files={"model_weights": str(w)}))
    add("weights_truncated", d, 5, [str(w), "sha256 mismatch"])
    d = new("weights_truncated_matching_spec")
    w = d / "weights.pt"
    w.write_bytes(spec.weights_path.read_bytes()[:1000])
    write_config(d, base_config(d, shared_rdn, shared_obs, spec, ancillary_files={
        "model_weights": str(w), "model_spec": str(spec_copy(d, spec, weights=w))}))
    add("weights_truncated_matching_spec", d, 5, [str(w), "unreadable"])
    d = new("weights_wrong_checksum")
    w = d / "weights.pt"
    blob = bytearray(spec.weights_path.read_bytes())
    blob[-10] ^= 0x1
    w.write_bytes(bytes(blob))
    write_config(d, base_config(d, shared_rdn, shared_obs, spec,
                                ancillary_files={"model_weights": str(w)}))
    add("weights_wrong_checksum", d, 5, [str(w), "sha256 mismatch"])
    state = torch.load(spec.weights_path, map_location="cpu", weights_only=True)
    for name, edit, needle in (
            ("weights_other_keys", lambda s: {**{k + "_x": v for k, v in s.items()}},
             "missing keys"),
            ("weights_wrong_shapes", lambda s: {k: (torch.zeros(3, 3) if k == "head.weight" else v)
                                                for k, v in s.items()}, "wrong shapes"),
            ("weights_not_a_state_dict", lambda s: [1, 2, 3], "not a state_dict")):
        d = new(name)
        w = d / "weights.pt"
        torch.save(edit(state), w)
        write_config(d, base_config(d, shared_rdn, shared_obs, spec, ancillary_files={
            "model_weights": str(w), "model_spec": str(spec_copy(d, spec, weights=w))}))
        add(name, d, 5, [str(w), needle])
    irr = np.load(spec.irradiance_path)
    for name, table, needle in (
            ("irradiance_wrong_shape", irr[:, :1].copy(), "(N, 2)"),
            ("irradiance_wrong_units", irr * [1.0, 0.01], "not uW/cm2/nm"),
            ("irradiance_unsorted", irr[::-1].copy(), "strictly increasing")):
        d = new(name)
        i = d / "irr.npy"
        np.save(i, table)
        write_config(d, base_config(d, shared_rdn, shared_obs, spec, ancillary_files={
            "irradiance": str(i), "model_spec": str(spec_copy(d, spec, irradiance=i))}))
        add(name, d, 5, [str(i), needle])
    d = new("irradiance_wrong_checksum")
    i = d / "irr.npy"
    np.save(i, irr * 1.0001)
    write_config(d, base_config(d, shared_rdn, shared_obs, spec,
                                ancillary_files={"irradiance": str(i)}))
    add("irradiance_wrong_checksum", d, 5, [str(i), "sha256 mismatch"])

    # --- 4: geolocation inputs (checked before any compute)
    map_info = {"map info": ["Geographic Lat/Lon", 1, 1, "10.0", "20.0", "0.0005", "0.0005",
                             "WGS-84", "units=Degrees"]}

    def geo_case(name: str, key: str, cube: np.ndarray, extra: dict[str, Any], needles: list[str],
                 named: str = ".hdr") -> None:
        d = new(name)
        path = write_raster(d / f"scene_{key}.img", cube, extra=extra)
        cfg = base_config(d, shared_rdn, shared_obs, spec)
        cfg["input_files"][key] = str(path)
        write_config(d, cfg)
        add(name, d, 4, [str(path.with_suffix(named)), *needles])

    glt = np.ones((6, 2, 5), np.int32)  # (rows, [sample, line], cols): every cell -> pixel (1, 1)
    outside = glt.copy()
    outside[2, 1, 3] = LINES + 5  # a line the swath does not have
    geo_case("glt_points_outside_the_swath", "glt", outside, map_info, ["outside the swath"],
             named=".img")
    half = glt.copy()
    half[0, 0, 0] = 0  # sample 0 (no pixel) but line 1
    geo_case("glt_half_empty_cell", "glt", half, map_info, ["only one of"])
    geo_case("glt_without_map_info", "glt", glt, {}, ["map info"])
    utm = {"map info": ["UTM", 1, 1, "5e5", "4e6", "60", "60", "11", "North", "WGS-84"]}
    geo_case("glt_not_geographic", "glt", glt, utm, ["EPSG:4326"])
    geo_case("glt_floats", "glt", glt.astype(np.float32), map_info, ["integers"])
    geo_case("location_dimensions_differ", "location", np.zeros((LINES + 1, 3, SAMPLES)),
             {"data ignore value": -9999}, ["location is", "radiance is"])
    return cases


BAD_INPUT_CASES: list[str] = []


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, spec) -> dict[str, tuple[Case, Result]]:
    root = tmp_path_factory.mktemp("bad_inputs").resolve()
    cases = _build_cases(root, spec)
    with ThreadPoolExecutor(max_workers=max(2, min(6, 2 * (os.cpu_count() or 1)))) as pool:
        futures = {n: pool.submit(run_pge, c.args, c.d) for n, c in cases.items()}
        results = {n: (cases[n], f.result()) for n, f in futures.items()}
    report = {n: {"exit": r.code, "stderr": r.stderr.strip()} for n, (_, r) in results.items()}
    (root / "report.json").write_text(json.dumps(report, indent=1))
    return results


_NAMES = [
    "rc_not_json", "rc_empty", "rc_top_level_array", "rc_unknown_key", "rc_missing_required_key",
    "rc_wrong_type_batch", "rc_wrong_type_overwrite", "rc_wrong_type_path", "rc_threshold_zero",
    "rc_threshold_one", "rc_threshold_negative", "rc_unknown_device", "rc_threads_huge",
    "rc_file_missing",
    "path_radiance_missing", "path_observation_missing", "path_weights_missing",
    "path_spec_missing", "path_irradiance_missing", "path_glt_missing", "path_location_missing",
    "rc_no_data_file", "rc_no_data_file_emit_named", "obs_hdr_unreadable", "obs_binary_truncated",
    "obs_binary_too_long", "obs_wrong_band_count", "out_under_regular_file", "out_is_a_regular_file",
    "out_collides_with_input", "hdr_missing", "hdr_unreadable", "hdr_no_envi_magic",
    "binary_truncated", "binary_too_long", "binary_missing", "wrong_band_count",
    "interleave_unknown", "byte_order_invalid", "data_type_int16", "data_type_unknown",
    "obs_data_type_int", "dims_mismatch", "wavelength_missing", "wavelength_unsorted",
    "wavelength_duplicated", "wavelength_count", "wavelength_not_number", "fwhm_missing",
    "all_radiance_fill", "all_radiance_nan", "all_sun_below_horizon", "sza_exactly_90",
    "earth_sun_all_fill", "weights_truncated", "weights_truncated_matching_spec",
    "weights_wrong_checksum", "weights_other_keys", "weights_wrong_shapes",
    "weights_not_a_state_dict", "irradiance_wrong_shape", "irradiance_wrong_units",
    "irradiance_unsorted", "irradiance_wrong_checksum",
    "glt_points_outside_the_swath", "glt_half_empty_cell", "glt_without_map_info",
    "glt_not_geographic", "glt_floats", "location_dimensions_differ",
]


@pytest.mark.parametrize("name", _NAMES)
def test_bad_input(bad_inputs, name):
    case, result = bad_inputs[name]
    out = case.d / case.out
    assert_failure(result, case.code, case.needles, out if case.check_empty else None)
    if not case.check_empty and out.is_dir():
        assert not any(p.name.startswith(f".{STEM}") or p.name.startswith(STEM + "_")
                       for p in out.iterdir()), files_in(out)


def test_a_run_stopped_by_its_inputs_never_imports_torch(tmp_path, spec):
    """torch is most of a PGE start (imported by the step that loads the model): a run its
    inputs stop answers without it; a run that computes imports it."""
    rdn, obs = write_scene(tmp_path / "in")
    edit_header(rdn, "wavelength units", "Micrometers")          # exit 4 in validate_inputs
    probe = ("import sys; from pge.cli import main; code = main([sys.argv[1]]); "
             "print('torch imported:', 'torch' in sys.modules, 'exit:', code)")
    for case, code in (("bad", 4), ("good", 0)):
        if case == "good":
            edit_header(rdn, "wavelength units", "Nanometers")
        rc = write_config(tmp_path, base_config(tmp_path / case, rdn, obs, spec), f"{case}.json")
        result = run_pge([str(rc)], tmp_path, cmd=[sys.executable, "-c", probe])
        assert f"torch imported: {case == 'good'} exit: {code}" in result.stdout, result


def test_every_bad_input_case_is_checked(bad_inputs):
    expected = set(_NAMES) | ({"out_not_writable"} if os.geteuid() != 0 else set())
    assert set(bad_inputs) == expected


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits (CI runs as root): "
                                              "out_under_regular_file covers an unwritable folder")
def test_output_folder_not_writable(bad_inputs):
    case, result = bad_inputs["out_not_writable"]
    try:
        assert_failure(result, 7, case.needles, case.d / "out")
    finally:
        (case.d / "out").chmod(0o755)


@pytest.mark.parametrize("where", ["mount_point", "below_it"])
def test_output_folder_on_a_read_only_filesystem_exits_7(tmp_path, spec, where):
    """Root ignores permission bits but not a read-only mount: this variant runs as root (CI).
    The output folder is the read-only mount itself, or a folder to create below it."""
    rdn, obs = write_scene(tmp_path / "in")
    ro = tmp_path / "ro"
    out = ro if where == "mount_point" else ro / "out"
    write_config(tmp_path, base_config(tmp_path, rdn, obs, spec, output={"directory": str(out)}))
    with tmpfs(ro, "ro,size=1m"):
        result = run_pge(["rc.json"], tmp_path)
        needles = ([str(out), "output folder is not writable"] if where == "mount_point" else
                   [str(out), "cannot create output folder (Read-only file system)"])
        assert_failure(result, 7, needles, ro)


# ---------------------------------------------------------------------------------------------
# Inputs that are read correctly: BIP, BSQ, big-endian give the BIL product; pixel-level values


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, spec) -> dict[str, tuple[Path, Result]]:
    root = tmp_path_factory.mktemp("layouts").resolve()

    def holes(cube: np.ndarray) -> None:
        cube[0, 10, 0] = np.nan  # NaN in a model band
        cube[1, 100, 1] = np.inf
        cube[2, 50, 2] = -np.inf
        cube[3, :, 3] = -9999.0
        cube[4, :, 4] = -0.5  # noise: negative radiance, kept
        cube[5, 60:70, 5] = -2.0

    variants = {"bil": {}, "bip": {"interleave": "bip"}, "bsq": {"interleave": "bsq"},
                "bil_big_endian": {"byte_order": ">"}, "bsq_big_endian": {
                    "interleave": "bsq", "byte_order": ">"}}
    sza = np.full((LINES, SAMPLES), 30.0)
    sza[6, 6] = 90.0  # sun on the horizon: no value
    sza[6, 7] = -9999.0
    esd = np.full((LINES, SAMPLES), 1.01)
    esd[7, :] = -9999.0  # fill pixels must not enter the scene's Earth-Sun distance
    runs = {}
    for name, kw in variants.items():
        d = root / name
        rdn, obs = write_scene(d / "in", radiance=holes, sza=sza, esd=esd, **kw)
        write_config(d, base_config(d, rdn, obs, spec))
        runs[name] = d
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {n: pool.submit(run_pge, ["rc.json"], d) for n, d in runs.items()}
        return {n: (runs[n] / "out", f.result()) for n, f in futures.items()}


def test_bip_bsq_big_endian_give_the_same_product(layouts):
    out, result = layouts["bil"]
    assert result.code == 0 and result.stderr == "", str(result)
    reference = (out / f"{STEM}.img").read_bytes()
    for name, (o, r) in layouts.items():
        assert r.code == 0 and r.stderr == "", f"{name}: {r}"
        assert header_layout(o) == header_layout(out)
        assert (o / f"{STEM}.img").read_bytes() == reference, name
        assert_complete_product(o)


def header_layout(out: Path) -> tuple:
    h = read_header(out / f"{STEM}.hdr")
    return h.lines, h.samples, h.bands, h.dtype, h.interleave


def test_nan_inf_fill_and_sun_down_pixels_have_no_value_negative_radiance_does(layouts):
    out, result = layouts["bil"]
    flag, prob = read_envi_product(out / f"{STEM}.img")
    for line, sample in ((0, 0), (1, 1), (2, 2), (3, 3), (6, 6), (6, 7)):
        assert np.isnan(prob[line, sample]) and flag[line, sample] == 255, (line, sample)
    for line, sample in ((4, 4), (5, 5)):  # negative radiance: noise, kept as the reference does
        assert np.isfinite(prob[line, sample]) and 0 <= prob[line, sample] <= 1
    assert np.isfinite(prob).sum() == LINES * SAMPLES - 6
    warned = [e for e in result.events if e["event"] == "radiance_not_finite"]
    assert len(warned) == 1 and warned[0]["pixels"] == 3, result.events


def test_earth_sun_distance_comes_from_valid_pixels_only(layouts):
    out, _ = layouts["bil"]
    record = json.loads((out / f"{STEM}_provenance.json").read_text())
    assert record["processing"]["earth_sun_distance_au"] == pytest.approx(1.01, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Signals


@pytest.fixture(scope="module")
def big_scene(tmp_path_factory) -> tuple[Path, Path]:
    """200 x 64 pixels, batch 64: hundreds of forward passes, so a signal lands mid-inference."""
    root = tmp_path_factory.mktemp("big_scene").resolve()
    return write_scene(root / "in", 200, 64)


STOP_LATENCIES: dict[str, float] = {}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_inference_stops_cleans_and_exits_8(tmp_path, spec, big_scene, sig):
    rdn, obs = big_scene
    write_config(tmp_path, base_config(tmp_path, rdn, obs, spec,
                                       processing={"batch_size": 64, "lines_per_block": 8}))
    result = run_until(["rc.json"], tmp_path, step_started("run"),
                       lambda p: (time.sleep(0.5), p.send_signal(sig)))
    line = assert_failure(result, 8, [sig.name], tmp_path / "out")
    assert "run stopped" in line
    assert not any(e["event"] == "products_written" for e in result.events)
    STOP_LATENCIES[sig.name] = result.extra["stop_latency_s"] - 0.5
    # measured on 2 CPU cores: the handler runs between forward passes, well under a second
    assert result.extra["stop_latency_s"] < 10, result.extra


def test_second_signal_does_not_cut_cleanup_short(tmp_path, spec, big_scene):
    rdn, obs = big_scene
    write_config(tmp_path, base_config(tmp_path, rdn, obs, spec,
                                       processing={"batch_size": 64, "lines_per_block": 8}))

    def twice(p: subprocess.Popen) -> None:
        p.send_signal(signal.SIGTERM)
        p.send_signal(signal.SIGINT)
        p.send_signal(signal.SIGTERM)

    result = run_until(["rc.json"], tmp_path, step_started("run"), twice)
    line = assert_failure(result, 8, ["run stopped"], tmp_path / "out")
    assert "SIGINT" in line or "SIGTERM" in line  # pending signals are handled in number order


def test_sigkill_leftovers_are_cleaned_by_the_rerun(tmp_path, spec, big_scene):
    rdn, obs = big_scene
    write_config(tmp_path, base_config(tmp_path, rdn, obs, spec,
                                       processing={"batch_size": 256, "lines_per_block": 16}))
    killed = run_until(["rc.json"], tmp_path, step_started("run"),
                       lambda p: p.send_signal(signal.SIGKILL))
    assert killed.code == -signal.SIGKILL
    out = tmp_path / "out"
    left = files_in(out)
    assert any(n.startswith(f".{STEM}.") and n.endswith(".scratch") for n in left), left
    rerun = run_pge(["rc.json"], tmp_path)
    assert rerun.code == 0 and rerun.stderr == "", str(rerun)
    assert any(e["event"] == "removed_killed_run_scratch" for e in rerun.events)
    assert_complete_product(out)


# ---------------------------------------------------------------------------------------------
# Killed or failing mid-publication: the old product survives, never a mix

_KILL_AT = """
import os, signal, sys
from pge import cli, publish
n = int(os.environ["KILL_AT_RENAME"])
how = os.environ.get("KILL_HOW", "kill")
real = publish.rename
count = [0]
def rename(src, dst):
    count[0] += 1
    if count[0] == n:
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise publish.OutputError(dst, "cannot move product file into place (injected)")
    real(src, dst)
publish.rename = rename
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def published(tmp_path_factory, spec) -> tuple[Path, dict[str, str]]:
    """A folder with a complete product (threshold 0.3) to overwrite (threshold 0.7)."""
    root = tmp_path_factory.mktemp("published").resolve()
    rdn, obs = write_scene(root / "in")
    write_config(root, base_config(root, rdn, obs, spec, algorithm={"threshold": 0.3}))
    result = run_pge(["rc.json"], root)
    assert result.code == 0, str(result)
    return root, snapshot(root / "out")


def _copy_published(published: tuple[Path, dict[str, str]], dest: Path, spec: Any,
                    **over: Any) -> Path:
    root, _ = published
    shutil.copytree(root, dest)
    cfg = json.loads((dest / "rc.json").read_text())
    cfg["input_files"] = {k: v.replace(str(root), str(dest)) for k, v in cfg["input_files"].items()}
    cfg["output"]["directory"] = str(dest / "out")
    cfg["output"]["overwrite"] = True
    cfg["algorithm"]["threshold"] = 0.7
    for section, values in over.items():
        cfg.setdefault(section, {}).update(values)
    write_config(dest, cfg)
    return dest


# 7 old files move to backup (renames 1-7), then 7 new ones move in (8-14)
@pytest.mark.parametrize("at", [3, 8, 14])
def test_killed_mid_publication_rerun_restores_the_old_product(tmp_path, spec, published, at):
    d = _copy_published(published, tmp_path / "p", spec)
    out = d / "out"
    before = snapshot(out)
    env_cmd = [sys.executable, "-c", _KILL_AT]
    os.environ["KILL_AT_RENAME"] = str(at)
    try:
        killed = run_pge(["rc.json"], d, cmd=env_cmd)
    finally:
        del os.environ["KILL_AT_RENAME"]
    assert killed.code == -signal.SIGKILL, str(killed)
    # a reader now may see a mix; the provenance check says the product is incomplete
    cfg = json.loads((d / "rc.json").read_text())
    cfg["output"]["overwrite"] = False
    write_config(d, cfg, "rc_no_overwrite.json")
    rerun = run_pge(["rc_no_overwrite.json"], d)
    assert_failure(rerun, 7, ["already exists", "overwrite"], None)
    assert any(e["event"] == "recovered_killed_run" for e in rerun.events), rerun.events
    assert snapshot(out) == before  # rolled back to the old product, byte for byte
    again = run_pge(["rc.json"], d)
    assert again.code == 0, str(again)
    assert_complete_product(out)
    assert json.loads((out / f"{STEM}_metadata.json").read_text())["threshold"] == 0.7


@pytest.mark.parametrize("at", [2, 9])
def test_failure_mid_publication_restores_the_old_product(tmp_path, spec, published, at):
    d = _copy_published(published, tmp_path / "p", spec)
    out = d / "out"
    before = snapshot(out)
    os.environ["KILL_AT_RENAME"], os.environ["KILL_HOW"] = str(at), "raise"
    try:
        result = run_pge(["rc.json"], d, cmd=[sys.executable, "-c", _KILL_AT])
    finally:
        del os.environ["KILL_AT_RENAME"], os.environ["KILL_HOW"]
    assert_failure(result, 7, ["injected"], None)
    assert snapshot(out) == before


def test_overwrite_without_an_optional_product_removes_the_old_one(tmp_path, spec, published):
    """A file of the earlier product that the new configuration does not write leaves with the
    old product (not left beside the new one, outside its provenance); when the publication
    fails, it comes back with the rest of the old product."""
    switched_off = {"overwrite": True, "write_netcdf": False, "write_browse": False}
    d = _copy_published(published, tmp_path / "full", spec, output=switched_off)
    before = snapshot(d / "out")
    assert {f"{STEM}.nc", f"{STEM}.png"} <= set(before)
    # 5 old files and the 2 switched off move to backup (renames 1-7); fail at the 2nd move in
    os.environ["KILL_AT_RENAME"], os.environ["KILL_HOW"] = "9", "raise"
    try:
        result = run_pge(["rc.json"], d, cmd=[sys.executable, "-c", _KILL_AT])
    finally:
        del os.environ["KILL_AT_RENAME"], os.environ["KILL_HOW"]
    assert_failure(result, 7, ["injected"], None)
    assert snapshot(d / "out") == before
    result = run_pge(["rc.json"], d)
    assert result.code == 0, str(result)
    assert files_in(d / "out") == sorted(STEM + s for s in SUFFIXES if s not in (".nc", ".png"))
    record = json.loads((d / "out" / f"{STEM}_provenance.json").read_text())
    assert "netcdf" not in record["outputs"] and "browse" not in record["outputs"]


# ---------------------------------------------------------------------------------------------
# Full disk


def _fsize_limit(nbytes: int) -> Callable[[], None]:
    def preexec() -> None:
        _default_sigint()
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return preexec


@pytest.mark.parametrize("limit", [600, 12000])
def test_disk_full_exits_7_and_leaves_nothing(tmp_path, spec, limit):
    rdn, obs = write_scene(tmp_path / "in")
    write_config(tmp_path, base_config(tmp_path, rdn, obs, spec))
    result = run_pge(["rc.json"], tmp_path, preexec=_fsize_limit(limit))
    line = assert_failure(result, 7, [], tmp_path / "out")
    # 600: the log file hits the limit (EFBIG); 12000: the netCDF file, whose library only says
    # "HDF error": either way the line names the cause
    assert f"(file size limit {limit} bytes reached)" in line or (
        f": file size limit {limit} bytes reached" in line), line
    if limit == 12000:
        assert "NetCDF: HDF error" in line, line


@pytest.mark.parametrize("netcdf_only", [False, True], ids=["all_formats", "netcdf_only"])
def test_small_filesystem_exits_7_names_the_cause_and_leaves_nothing(tmp_path, spec,
                                                                     netcdf_only):
    """A real full disk: the output folder is a 16 KiB tmpfs (the product needs ~50 KiB). With
    ENVI first, its header write hits ENOSPC; with the netCDF alone, the netCDF library's
    "HDF error" hides the errno and the PGE adds the cause from the filesystem's free space."""
    rdn, obs = write_scene(tmp_path / "in")
    out = tmp_path / "out"
    write_config(tmp_path, base_config(tmp_path, rdn, obs, spec,
                                       output={"write_envi": not netcdf_only}))
    with tmpfs(out, "size=16k"):
        result = run_pge(["rc.json"], tmp_path)
        line = assert_failure(result, 7, ["no space left: ", f"free on {out}"], out)
    assert re.search(r"no space left: \d+ (bytes|KiB) free on ", line), line
    if netcdf_only:
        assert "cannot write netCDF product (NetCDF: HDF error) (no space left: " in line, line


def test_small_filesystem_during_overwrite_keeps_the_old_product(tmp_path, spec, published):
    """The old product fills a tmpfs but for 16 KiB; the overwrite cannot fit its new product
    beside it: exit 7, the old product byte for byte, no scratch, no lock."""
    d = _copy_published(published, tmp_path / "p", spec)
    fs = d / "fs"
    cfg = json.loads((d / "rc.json").read_text())
    cfg["output"]["directory"] = str(fs)
    write_config(d, cfg)
    page = os.sysconf("SC_PAGE_SIZE")
    used = sum(-(-p.stat().st_size // page) * page for p in (d / "out").iterdir())
    with tmpfs(fs, f"size={used // 1024 + 16}k"):
        for p in (d / "out").iterdir():
            shutil.copyfile(p, fs / p.name)
        before = snapshot(fs)
        result = run_pge(["rc.json"], d)
        assert_failure(result, 7, ["no space left: ", f"free on {fs}"], None)
        assert snapshot(fs) == before


@pytest.mark.parametrize("cause", ["no_space", "size_limit", "neither", "not_a_write"])
def test_output_failure_names_its_cause(tmp_path, monkeypatch, cause):
    """In-process and without mounting: a writer's own wording ('HDF error') gets the cause
    the system can tell appended, once, in the one place write failures pass through."""
    from l2b_mask.errors import OutputError
    from pge import diagnosis

    # before the inputs are read: no folder known yet, the size bound of an unknown scene
    largest = diagnosis.largest_file_bound(None)
    # f_bsize, f_frsize, f_blocks, f_bfree, f_bavail, f_files, f_ffree, f_favail, f_flag, namemax
    free = 3 if cause == "no_space" else 10**7
    fake = os.statvfs_result((4096, 4096, 10**8, free, free, 1000, 100, 100, 0, 255))
    monkeypatch.setattr(diagnosis.os, "statvfs", lambda path: fake)
    soft = 65536 if cause == "size_limit" else resource.RLIM_INFINITY
    monkeypatch.setattr(diagnosis.resource, "getrlimit", lambda which: (soft, soft))
    nc = tmp_path / "x.nc"  # removed by the writer on failure, as the netCDF writer does
    with pytest.raises((OutputError, OutputProductError)) as info:
        # prepare_output's refusals are decisions, not failed writes; write_products writes
        with diagnosis.output_failure(None, largest, writes=cause != "not_a_write"):
            raise OutputError(nc, "cannot write netCDF product (NetCDF: HDF error)")
    message = str(info.value)
    assert message.startswith(f"{nc}: cannot write netCDF product (NetCDF: HDF error)")
    suffix = {"no_space": f" (no space left: 12 KiB free on {diagnosis.mount_point(tmp_path)})",
              "size_limit": " (file size limit 65536 bytes reached)"}.get(cause, "")
    assert message == f"{nc}: cannot write netCDF product (NetCDF: HDF error){suffix}"
    with pytest.raises(OutputProductError) as info:  # an errno says it outright
        with diagnosis.output_failure(None, largest, writes=False):  # as in validate_inputs
            raise OSError(28, "No space left on device", str(nc))
    if cause == "no_space":
        assert str(info.value).endswith("cannot write (No space left on device): no space left: "
                                        f"12 KiB free on {diagnosis.mount_point(tmp_path)}")


def test_disk_full_during_overwrite_keeps_the_old_product(tmp_path, spec, published):
    d = _copy_published(published, tmp_path / "p", spec)
    before = snapshot(d / "out")
    result = run_pge(["rc.json"], d, preexec=_fsize_limit(12000))
    assert_failure(result, 7, [], None)
    assert snapshot(d / "out") == before


# ---------------------------------------------------------------------------------------------
# Existing products, incomplete products, concurrent runs, stale scratch


def test_rerun_refused_without_overwrite_and_replaced_with_it(tmp_path, spec, published):
    d = _copy_published(published, tmp_path / "p", spec, output={"overwrite": False})
    before = snapshot(d / "out")
    result = run_pge(["rc.json"], d)
    assert_failure(result, 7, [f"{STEM}.img", "already exists", "overwrite"], None)
    assert snapshot(d / "out") == before
    cfg = json.loads((d / "rc.json").read_text())
    cfg["output"]["overwrite"] = True
    write_config(d, cfg)
    result = run_pge(["rc.json"], d)
    assert result.code == 0, str(result)
    assert_complete_product(d / "out")
    assert snapshot(d / "out")[f"{STEM}_metadata.json"] != before[f"{STEM}_metadata.json"]
    assert json.loads((d / "out" / f"{STEM}_metadata.json").read_text())["threshold"] == 0.7


@pytest.mark.parametrize("damage", ["no_provenance", "tampered_img", "missing_nc"])
def test_incomplete_product_is_not_taken_for_a_product(tmp_path, spec, published, damage):
    d = _copy_published(published, tmp_path / "p", spec, output={"overwrite": False})
    out = d / "out"
    if damage == "no_provenance":
        (out / f"{STEM}_provenance.json").unlink()
    elif damage == "tampered_img":
        blob = bytearray((out / f"{STEM}.img").read_bytes())
        blob[0] ^= 1
        (out / f"{STEM}.img").write_bytes(bytes(blob))
    else:
        (out / f"{STEM}.nc").unlink()
    before = snapshot(out)
    result = run_pge(["rc.json"], d)
    assert_failure(result, 7, ["incomplete product", "overwrite"], None)
    assert snapshot(out) == before  # refused: nothing is destroyed without overwrite
    cfg = json.loads((d / "rc.json").read_text())
    cfg["output"]["overwrite"] = True
    write_config(d, cfg)
    assert run_pge(["rc.json"], d).code == 0
    assert_complete_product(out)


def test_second_run_while_the_lock_is_held_exits_7(tmp_path, spec):
    rdn, obs = write_scene(tmp_path / "in")
    write_config(tmp_path, base_config(tmp_path, rdn, obs, spec))
    out = tmp_path / "out"
    out.mkdir()
    lock = acquire_acquisition_lock(out, STEM)
    try:
        result = run_pge(["rc.json"], tmp_path)
    finally:
        lock.release()
    assert_failure(result, 7, ["another run", f"pid {os.getpid()}", "holds the lock"], out)


def test_two_runs_at_once_one_product_never_a_mix(tmp_path, spec, big_scene):
    rdn, obs = big_scene
    write_config(tmp_path, base_config(tmp_path, rdn, obs, spec,
                                       processing={"batch_size": 1024, "lines_per_block": 64}))
    barrier = threading.Barrier(2)

    def one() -> Result:
        barrier.wait()
        return run_pge(["rc.json"], tmp_path)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = [f.result() for f in [pool.submit(one), pool.submit(one)]]
    codes = sorted(r.code for r in results)
    assert codes == [0, 7], [str(r) for r in results]
    loser = next(r for r in results if r.code == 7)
    line = assert_failure(loser, 7, [], None)
    assert "holds the lock" in line or "already exists" in line, line
    assert_complete_product(tmp_path / "out")


def test_stale_scratch_of_a_dead_run_is_removed_live_one_kept(tmp_path, spec):
    rdn, obs = write_scene(tmp_path / "in")
    shared = tmp_path / "scratch"
    write_config(tmp_path, base_config(tmp_path, rdn, obs, spec,
                                       output={"scratch_directory": str(shared)}))
    # made as the PGE makes its scratch folders (tempfile.mkdtemp: private, 0700); a folder
    # of another user or open to others is not the PGE's and is left alone (test_safety.py)
    dead = tmp_path / "out" / f".{STEM}.dead0001.scratch"
    dead.parent.mkdir(parents=True)
    dead.mkdir(mode=0o700)
    (dead / f"{STEM}.img").write_bytes(b"half a product")
    dead_shared = shared / f".{STEM}.dead0002.scratch"
    shared.mkdir()
    dead_shared.mkdir(mode=0o700)
    (dead_shared / "owner.lock").write_text("12345\n")  # nobody holds it
    live = shared / f".{STEM}.live0003.scratch"
    live.mkdir(mode=0o700)
    from pge.locking import FileLock
    holder = FileLock(live / "owner.lock", remove=False)
    assert holder.try_acquire()
    try:
        result = run_pge(["rc.json"], tmp_path)
    finally:
        holder.release()
    assert result.code == 0, str(result)
    assert not dead.exists() and not dead_shared.exists() and live.is_dir()
    assert_complete_product(tmp_path / "out")


def test_staged_product_that_fails_its_checksum_is_never_published(tmp_path, spec, monkeypatch,
                                                                   capsys, restore_logging):
    import pge.cli
    from pge import run

    rdn, obs = write_scene(tmp_path / "in")
    rc = write_config(tmp_path, base_config(tmp_path, rdn, obs, spec))
    real = run.write_provenance

    def corrupt_after(cfg: Any, plan: Any, facts: Any, model: Any, record: Any, staged: Any,
                      final: Any) -> None:
        real(cfg, plan, facts, model, record, staged, final)
        with open(staged.netcdf, "ab") as f:
            f.write(b"\0")

    monkeypatch.setattr(run, "write_provenance", corrupt_after)
    code = pge.cli.main([str(rc)])
    err = capsys.readouterr().err
    assert code == 7 and err.count("\n") == 1, err
    assert "provenance check" in err and f"{STEM}.nc" in err
    assert_no_products(tmp_path / "out")


def test_help_exits_0(capsys, restore_logging):
    import pge.cli

    assert pge.cli.main(["--help"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "exit codes" in captured.out


def test_in_process_main_restores_signal_handlers(tmp_path, restore_logging):
    import pge.cli

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGXFSZ)}
    pge.cli.main([str(tmp_path / "missing.json")])
    assert {s: signal.getsignal(s) for s in before} == before


def test_report_stop_latency():
    """Not a check: prints the measured stop latencies for the report (-s to see them)."""
    print(f"stop latency after signal (s): {STOP_LATENCIES}")


def test_console_script_ignores_signals_once_the_run_is_over():
    """After the run the console script only exits: a SIGTERM then must not turn a published
    product's exit 0 into death by signal; in-process callers get their handlers back."""
    import pge.cli

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert pge.cli.main(["--version"]) == 0
        assert {sig: signal.getsignal(sig) for sig in before} == before
        assert pge.cli.main(["--version"], exiting=True) == 0
        assert all(signal.getsignal(sig) is signal.SIG_IGN for sig in before)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
