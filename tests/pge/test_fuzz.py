"""Property-based fuzzing of the PGE's two text inputs: ENVI headers and run configurations.

Whatever the mutation, the PGE ends with exit 0 or a documented failure code (2-7), never 1
(a bug) and never a traceback; on failure stderr is exactly one line and no product file is
left; on success stderr is empty and the product is complete: exactly the files the output
switches ask for, each matching its checksum in the provenance. The PGE runs in-process
(`pge.cli.main`) on 8 x 8 scenes so that each example costs milliseconds to a second. Two
scenes: "plain" (radiance and observation with non-EMIT names, so the granule record is
skipped) and "emit" (EMIT-named radiance, observation, location and GLT: granule record,
geolocation and, when switched on, the orthorectified GeoTIFFs).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import write_pair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pge.cli
from l2b_mask.synthetic.scene import generate_acquisition
from pge.manifest import product_problem
from pge.runconfig import RunConfig
from pge.sds.files import product_files
from pge.sds.naming import product_stem

ALLOWED = {0, 2, 3, 4, 5, 6, 7}
STEMS = ("scene_rdn_l2b_mask", "emit20240302t005829_o06201_s000_l2b_mask")
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
TRIED: dict[str, Counter[int]] = {"header": Counter(), "runconfig": Counter(),
                                  "output_switches": Counter()}
SCENES = ("plain", "emit")
KINDS = ("rdn", "obs", "loc", "glt")
_CONFIG_KEYS = {"rdn": "radiance", "obs": "observation", "loc": "location", "glt": "glt"}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, tuple[Path, dict[str, str]]]:
    """Each scene: its folder and the file name of each input it has, by kind."""
    root = tmp_path_factory.mktemp("fuzz_scenes")
    (root / "plain").mkdir()
    write_pair(root / "plain", 8, 8)
    acq = generate_acquisition(root / "emit", lines=8, samples=8)
    return {"plain": (root / "plain", {"rdn": "scene_rdn.img", "obs": "scene_obs.img"}),
            "emit": (root / "emit", {"rdn": acq.radiance.name, "obs": acq.observation.name,
                                     "loc": acq.location.name, "glt": acq.glt.name})}


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


@contextlib.contextmanager
def _workspace(scene_folder: Path) -> Iterator[Path]:
    """A throw-away folder holding a copy of the scene under `in/`: each example mutates its own."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(scene_folder, work / "in")
        yield work


def _config(names: dict[str, str], spec: Any) -> dict[str, Any]:
    return {
        "input_files": {_CONFIG_KEYS[k]: f"in/{name}" for k, name in names.items()},
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


def expected_product(rc: Path) -> tuple[Path, str, list[str]]:
    """The output folder and the file names a successful run with this configuration must
    leave there: what the switches ask for (the granule record only with an EMIT name: the
    scenes' headers give no acquisition time otherwise), provenance and log."""
    cfg = RunConfig.from_file(rc)
    files = product_files(product_stem(cfg.input_files.radiance, cfg.output.product_version),
                          cfg.output.directory)
    keys = cfg.output.product_keys()
    if not cfg.input_files.radiance.name.startswith("emit"):  # no acquisition time
        keys = [k for k in keys if k not in ("ummg", "stac")]
    return cfg.output.directory, files.envi_data.stem, sorted(
        files.as_dict()[k].name for k in [*keys, "provenance", "log"])


def _check(code: int, out: str, err: str, work: Path, what: str) -> None:
    assert code in ALLOWED, f"{what}: exit {code}\n{err}\n{out[-2000:]}"
    assert "Traceback" not in err and "Traceback" not in out, what
    summary = json.loads(out.splitlines()[-1])
    assert summary["exit_code"] == code
    if code == 0:
        assert err == "", what
        out_dir, stem, names = expected_product(work / "rc.json")
        files = sorted(p.name for p in out_dir.rglob("*"))
        assert files == names, (what, files)
        assert product_problem(product_files(stem, out_dir)) is None, what
    else:
        assert err.endswith("\n") and err.count("\n") == 1, (what, err)
        # whatever folder the configuration named, no product file, scratch or lock anywhere
        left = [p for stem in STEMS for pattern in (f"{stem}*", f".{stem}*")
                for p in work.rglob(pattern)]  # (no input's name starts with a product stem)
        left += [p for p in (work / "out").rglob("*") if not p.is_dir()]
        assert left == [], (what, left)


# ---------------------------------------------------------------------------------------------
# ENVI headers

HEADER_KEYS = ["samples", "lines", "bands", "data type", "byte order", "interleave",
               "header offset", "wavelength", "fwhm", "wavelength units", "band names",
               "data ignore value", "file type", "map info", "coordinate system string"]
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
_number_text = st.one_of(st.floats(-400, 400).map(repr), st.sampled_from(
    ["0", "-0.000542", "nan", "inf", "1e999", "x", ""]))
# the GLT's grid: projection, reference pixel, origin, pixel size, datum, units
_map_info_text = st.tuples(
    st.sampled_from(["Geographic Lat/Lon", "UTM", "Arbitrary", ""]),
    _number_text, _number_text, _number_text, _number_text, _number_text, _number_text,
    st.sampled_from(["WGS-84", "NAD-27", ""]), st.sampled_from(["units=Degrees", "units=Meters"]),
).map(lambda xs: "{" + ", ".join(xs) + "}") | st.lists(_number_text, max_size=12).map(
    lambda xs: "{" + ", ".join(xs) + "}")
mutation = st.one_of(
    st.tuples(st.sampled_from(KINDS), st.sampled_from(HEADER_KEYS),
              st.one_of(st.none(), _scalar_text, _list_text, _map_info_text)),
    st.tuples(st.sampled_from(KINDS), st.just("<garbage>"),
              st.binary(max_size=200)),
    st.tuples(st.sampled_from(KINDS), st.just("<truncate>"),
              st.integers(0, 2000)),
)


def _mutate_header(folder: Path, name: str, key: str, value: Any) -> None:
    hdr = (folder / name).with_suffix(".hdr")
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


@settings(SETTINGS, max_examples=200)
@given(which=st.sampled_from(SCENES), mutations=st.lists(mutation, min_size=1, max_size=3))
def test_header_mutations_end_in_a_documented_exit_code(scenes, quiet_pge, capsys, which,
                                                        mutations):
    """Radiance, observation, location and GLT headers (the plain scene has only the first
    two: a mutation of another file's header is dropped there)."""
    spec = quiet_pge
    folder, names = scenes[which]
    with _workspace(folder) as work:
        for kind, key, value in mutations:
            if kind in names:
                _mutate_header(work / "in", names[kind], key, value)
        code, out, err = _run(capsys, work, json.dumps(_config(names, spec)))
        TRIED["header"][code] += 1
        _check(code, out, err, work, f"{which}: {mutations!r}")


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
               "write_envi", "write_browse", "write_ummg", "write_ortho"],
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
    **{switch: st.sampled_from([True, False, False, "true", 0, None])
       for switch in ("write_netcdf", "write_envi", "write_browse", "write_ummg", "write_ortho")},
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


@settings(SETTINGS, max_examples=200)
@given(which=st.sampled_from(SCENES),
       mutations=st.lists(config_mutation(), min_size=1, max_size=3),
       raw=st.sampled_from([None, None, None, None, None, None, "", "[]", "{", "null",
                            '{"input_files": 1}', "\ufeff{}", '{"a": NaN}', '{"a": 1, "a": 2}']))
def test_run_configuration_mutations_end_in_a_documented_exit_code(scenes, quiet_pge, capsys,
                                                                   which, mutations, raw):
    spec = quiet_pge
    folder, names = scenes[which]
    with _workspace(folder) as work:
        cfg = _config(names, spec)
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
        _check(code, out, err, work, f"{which}: {mutations!r} {raw!r}")


SWITCHES = ("write_envi", "write_netcdf", "write_browse", "write_ummg", "write_ortho")


@settings(SETTINGS, max_examples=40)
@given(which=st.sampled_from(SCENES), on=st.fixed_dictionaries(
    {switch: st.booleans() for switch in SWITCHES}))
def test_output_switches_give_exactly_the_files_asked_for(scenes, quiet_pge, capsys, which, on):
    """Every combination of the output switches, on both scenes: exit 0 with exactly the files
    asked for (the granule record of an EMIT-named scene included), or exit 3 when no data file
    (ENVI or netCDF) is asked for, or ortho without a GLT; never 1."""
    spec = quiet_pge
    folder, names = scenes[which]
    with _workspace(folder) as work:
        cfg = _config(names, spec)
        cfg["output"].update(on)
        code, out, err = _run(capsys, work, json.dumps(cfg))
        TRIED["output_switches"][code] += 1
        refused = not (on["write_envi"] or on["write_netcdf"]) or (
            on["write_ortho"] and "glt" not in names)
        assert code == (3 if refused else 0), (which, on, err)
        _check(code, out, err, work, f"{which}: {on}")
        if code == 0 and which == "emit" and on["write_ummg"]:  # it lists every data file
            _, _, names = expected_product(work / "rc.json")
            data = {n for n in names if not n.endswith(
                ("_metadata.json", ".cmr.json", "_stac.json", "_provenance.json", "_pge.log"))}
            granule = json.loads(next((work / "out").glob("*.cmr.json")).read_text())
            listed = granule["DataGranule"]["ArchiveAndDistributionInformation"]
            assert {f["Name"] for f in listed} == data, (on, listed)


def test_report_examples_tried():
    """Not a check: prints how many examples each property ran, by exit code (-s to see)."""
    print(f"fuzz examples tried, by exit code: {({k: dict(v) for k, v in TRIED.items()})}")
