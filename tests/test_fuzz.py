"""Property-based fuzzing of the PGE's two text inputs: ENVI headers and run configurations.

Whatever the mutation, the PGE ends with exit 0 or a documented failure code (2-7), never 1
(a bug) and never a traceback; on failure stderr is exactly one line and no product file is
left; on success stderr is empty and the product is complete. The PGE runs in-process
(`pge.cli.main`) on a 8 x 8 scene so that each example costs milliseconds to a second.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import write_pair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pge.cli

ALLOWED = {0, 2, 3, 4, 5, 6, 7}
STEM = "scene_rdn_l2b_mask"
# a non-EMIT name: no granule record (it needs the acquisition time); ortho is off by default
SUFFIXES = (".img", ".hdr", ".nc", ".png", "_metadata.json", "_provenance.json", "_pge.log")
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
TRIED: dict[str, Counter[int]] = {"header": Counter(), "runconfig": Counter()}


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz_scene")
    write_pair(folder, 8, 8)
    return folder


@pytest.fixture
def quiet_pge(spec):
    """Put back what an in-process run changes: logging, torch threads."""
    import logging

    import structlog

    from pge import logging as pge_logging

    root = logging.getLogger()
    handlers, level, threads = root.handlers[:], root.level, torch.get_num_threads()
    yield spec
    pge_logging.close_file()
    logging.captureWarnings(False)
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
    torch.set_num_threads(threads)


def _config(base: Path, spec: Any) -> dict[str, Any]:
    return {
        "input_files": {"radiance": "in/scene_rdn.img", "observation": "in/scene_obs.img"},
        "ancillary_files": {"model_weights": str(spec.weights_path),
                            "irradiance": str(spec.irradiance_path)},
        "output": {"directory": "out"},
        "processing": {"device": "cpu", "threads": 1},
    }


def _run(capsys, work: Path, rc_text: str) -> tuple[int, str, str]:
    rc = work / "rc.json"
    rc.write_text(rc_text)
    capsys.readouterr()
    code = pge.cli.main([str(rc)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _check(code: int, out: str, err: str, out_dir: Path, what: str) -> None:
    assert code in ALLOWED, f"{what}: exit {code}\n{err}\n{out[-2000:]}"
    assert "Traceback" not in err and "Traceback" not in out, what
    summary = json.loads(out.splitlines()[-1])
    assert summary["exit_code"] == code
    if code == 0:
        assert err == "", what
        files = sorted(p.name for p in out_dir.rglob("*"))
        assert files == sorted(STEM + s for s in SUFFIXES), (what, files)
    else:
        assert err.endswith("\n") and err.count("\n") == 1, (what, err)
        left = sorted(str(p) for p in out_dir.rglob("*")) if out_dir.exists() else []
        assert left == [], (what, left)


# ---------------------------------------------------------------------------------------------
# ENVI headers

HEADER_KEYS = ["samples", "lines", "bands", "data type", "byte order", "interleave",
               "header offset", "wavelength", "fwhm", "wavelength units", "band names",
               "data ignore value", "file type"]
_scalar_text = st.one_of(
    st.integers(-3, 300).map(str), st.integers(-2**70, 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["bil", "bip", "bsq", "BIL", "", " ", "nan", "inf", "-0", "1e999", "0x10",
                     "4.0", "{}", "{1, 2}", "{", "}", "=", "Nanometers", "Micrometers", "furlongs"]),
    st.text(max_size=20),
)
_list_text = st.lists(st.one_of(st.floats(300, 2600).map(lambda v: f"{v:.3f}"),
                                st.sampled_from(["", "x", "nan", "-1", "0", "1e999"])),
                      max_size=300).map(lambda xs: "{" + ", ".join(xs) + "}")
mutation = st.one_of(
    st.tuples(st.sampled_from(["rdn", "obs"]), st.sampled_from(HEADER_KEYS),
              st.one_of(st.none(), _scalar_text, _list_text)),
    st.tuples(st.sampled_from(["rdn", "obs"]), st.just("<garbage>"),
              st.binary(max_size=200)),
    st.tuples(st.sampled_from(["rdn", "obs"]), st.just("<truncate>"),
              st.integers(0, 2000)),
)


def _mutate_header(folder: Path, which: str, key: str, value: Any) -> None:
    hdr = folder / f"scene_{which}.hdr"
    if key == "<garbage>":
        hdr.write_bytes(value)
        return
    if key == "<truncate>":
        hdr.write_bytes(hdr.read_bytes()[:value])
        return
    text = hdr.read_bytes().decode("utf-8", "replace")
    lines = [ln for ln in text.splitlines() if not ln.lower().startswith(f"{key} =")]
    if value is not None:
        lines.append(f"{key} = {value}")
    hdr.write_text("\n".join(lines) + "\n")


@SETTINGS
@given(mutations=st.lists(mutation, min_size=1, max_size=3))
def test_header_mutations_end_in_a_documented_exit_code(scene, quiet_pge, capsys, mutations):
    spec = quiet_pge
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(scene, work / "in")
        for which, key, value in mutations:
            _mutate_header(work / "in", which, key, value)
        code, out, err = _run(capsys, work, json.dumps(_config(work, spec)))
        TRIED["header"][code] += 1
        _check(code, out, err, work / "out", repr(mutations))


# ---------------------------------------------------------------------------------------------
# Run configurations

_safe_path = st.text(alphabet="abcxyz_.-/ ", min_size=0, max_size=12).filter(
    lambda p: ".." not in p and not p.startswith("/"))
_json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
              _safe_path),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=6)
FIELDS = {
    "input_files": ["radiance", "observation", "location", "glt"],
    "ancillary_files": ["model_weights", "irradiance", "model_spec"],
    "output": ["directory", "scratch_directory", "overwrite", "product_version", "write_netcdf",
               "write_envi"],
    "algorithm": ["threshold", "comparison"],
    "processing": ["device", "precision", "batch_size", "lines_per_block", "threads"],
    "pge": ["pge_name", "software_build_version", "documentation_version"],
    "": ["log_level", "unknown_top_key"],
}
_typical = {
    "threshold": st.floats(-1, 2) | st.sampled_from([0.5, "0.4", 1e-9, 0.999999]),
    "device": st.sampled_from(["cpu", "auto", "cuda", "cuda:7", "gpu", "CPU", ""]),
    "precision": st.sampled_from(["float32", "bfloat16", "float16", 32]),
    "batch_size": st.integers(-5, 5000) | st.sampled_from(["64", "1e3", True]),
    "lines_per_block": st.integers(-5, 200_000),
    "threads": st.integers(-1, 4) | st.sampled_from([True, "2", 1025, 100_000, 2**40]),
    "comparison": st.sampled_from([">", ">=", "<", "=="]),
    "overwrite": st.sampled_from([True, False, "true", 1, None]),
    "product_version": st.sampled_from(["01", "1", "001", "ab", 1]),
    "log_level": st.sampled_from(["debug", "info", "warning", "error", "trace"]),
}


@st.composite
def config_mutation(draw) -> tuple[str, str, Any]:
    section = draw(st.sampled_from(sorted(FIELDS)))
    key = draw(st.sampled_from(FIELDS[section]))
    kind = draw(st.sampled_from(["delete", "typical", "any", "path"]))
    if kind == "delete":
        return section, key, "<delete>"
    if kind == "typical" and key in _typical:
        return section, key, draw(_typical[key])
    if kind == "path":
        return section, key, draw(_safe_path)
    return section, key, draw(_json_value)


@SETTINGS
@given(mutations=st.lists(config_mutation(), min_size=1, max_size=3),
       raw=st.sampled_from([None, None, None, None, None, None, "", "[]", "{", "null",
                            '{"input_files": 1}', "\ufeff{}", '{"a": NaN}', '{"a": 1, "a": 2}']))
def test_run_configuration_mutations_end_in_a_documented_exit_code(scene, quiet_pge, capsys,
                                                                   mutations, raw):
    spec = quiet_pge
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(scene, work / "in")
        cfg = _config(work, spec)
        for section, key, value in mutations:
            target = cfg if section == "" else cfg.setdefault(section, {})
            if not isinstance(target, dict):
                continue
            if value == "<delete>":
                target.pop(key, None)
            else:
                target[key] = value
        text = raw if raw is not None else json.dumps(cfg)
        code, out, err = _run(capsys, work, text)
        TRIED["runconfig"][code] += 1
        out_dir = work / "out"
        directory = cfg.get("output", {}).get("directory") if isinstance(cfg.get("output"),
                                                                         dict) else None
        if code == 0 and isinstance(directory, str):
            out_dir = work / directory
        if code != 0:
            # whatever folder the configuration named, no product file may exist anywhere
            products = [p for p in work.rglob(f"{STEM}*") if p.parent != work / "in"]
            assert products == [], products
            hidden = [p for p in work.rglob(f".{STEM}*")]
            assert hidden == [], hidden
            assert code in ALLOWED, f"{mutations}: exit {code}\n{err}"
            assert err.endswith("\n") and err.count("\n") == 1, (mutations, err)
        else:
            _check(code, out, err, out_dir, repr(mutations))


def test_report_examples_tried():
    """Not a check: prints how many examples each property ran, by exit code (-s to see)."""
    print(f"fuzz examples tried, by exit code: {({k: dict(v) for k, v in TRIED.items()})}")
