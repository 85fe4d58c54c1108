"""Choosing the kernel variant by measurement: never a variant the CPU lacks, the choice cached by
CPU and kernel source, a stale or corrupt cache measured again, and the provenance names what ran.

CPUs are simulated by their /proc/cpuinfo flags (`variants.cpu_flags`); the timing itself runs
the variants this machine has (about a second). No timing assertions.
"""

from __future__ import annotations

import json

import pytest

from l2b_mask import kernels
from l2b_mask.algorithm.model import load_model
from l2b_mask.kernels import calibrate, selection, variants
from l2b_mask.kernels.variants import EXP_DEGREE, cpu_flags

ZEN3 = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c"})                        # AVX2 only
CASCADE_LAKE = ZEN3 | {"avx512f", "avx512vl", "avx512bw", "avx512cd", "avx512_vnni"}  # no BF16
ZEN4 = CASCADE_LAKE | {"avx512_bf16"}
SAPPHIRE_RAPIDS = ZEN4 | {"amx_tile", "amx_bf16", "amx_int8"}


@pytest.fixture(scope="module")
def model(spec):
    return load_model(spec)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A calibration cache of the test's own, and a fresh per-process choice."""
    path = tmp_path / calibrate.CACHE_FILE
    monkeypatch.setattr(calibrate, "cache_path", lambda: path)
    monkeypatch.setattr(calibrate, "_choice", None)
    monkeypatch.delenv(calibrate.ENV_VARIANT, raising=False)
    return path


def _simulate(monkeypatch, flags):
    monkeypatch.setattr(variants, "cpu_flags", lambda: flags)


@pytest.mark.parametrize(("flags", "expected"), [
    (ZEN3, {"float32": ["f32-avx2"], "float32-fastexp": ["f32-avx2"], "bfloat16": []}),
    (CASCADE_LAKE, {"float32": ["f32-avx2", "f32-avx512"], "bfloat16": ["mixed-i16pv"]}),
    (ZEN4, {"float32": ["f32-avx2", "f32-avx512"], "bfloat16": ["mixed-bf16pv", "mixed-i16pv"]}),
    (SAPPHIRE_RAPIDS, {"bfloat16": ["mixed-bf16pv", "mixed-i16pv"]}),
    (frozenset(), {"float32": [], "bfloat16": []}),                        # unreadable /proc/cpuinfo
])
def test_only_variants_whose_instructions_the_cpu_has_are_candidates(flags, expected):
    for precision, names in expected.items():
        assert calibrate.runnable(precision, flags) == names


@pytest.mark.parametrize("flags", [ZEN3, CASCADE_LAKE])
def test_the_calibration_never_chooses_a_variant_the_cpu_lacks(monkeypatch, cache, model, flags):
    if not set(flags) <= cpu_flags():
        pytest.skip("this CPU cannot run every variant the simulated one can")
    _simulate(monkeypatch, flags)
    result = calibrate.calibrate()
    for precision, name in result.choice.items():
        allowed = calibrate.runnable(precision, flags)
        assert (name in allowed) if allowed else name is None
    assert result.choice["bfloat16"] == ("mixed-i16pv" if flags is CASCADE_LAKE else None)
    model.set_precision("bfloat16")
    try:
        assert model.uses_kernel() == (flags is CASCADE_LAKE)
    finally:
        model.set_precision("float32")


@pytest.mark.skipif(not {"avx512f", "avx512_vnni", "avx512_bf16"} <= cpu_flags(), reason="needs a CPU with "
                    "two variants for every precision (AVX-512 VNNI and BF16)")
def test_a_measured_choice_is_cached_and_reused(cache):
    first = calibrate.calibrate()
    assert first.measured and set(first.choice) == set(EXP_DEGREE)
    for precision, rates in first.rates.items():       # both candidates were timed, the fastest won
        assert len(rates) == 2 and first.choice[precision] == max(rates, key=rates.get)
    record = json.loads(cache.read_text())
    assert record["choice"] == first.choice
    assert record["key"]["cpu_model"] == variants.cpu_model()
    again = calibrate.calibrate()
    assert not again.measured and again.choice == first.choice


def test_a_changed_kernel_source_is_measured_again(monkeypatch, cache):
    calibrate.calibrate()
    assert not calibrate.calibrate().measured
    monkeypatch.setattr(calibrate, "source_hash", lambda: "0" * 64)   # as an edit of spectf.cpp would
    assert calibrate.calibrate().measured
    assert json.loads(cache.read_text())["key"]["source"] == "0" * 16


def test_another_cpu_is_measured_again(monkeypatch, cache):
    calibrate.calibrate()
    monkeypatch.setattr(calibrate, "cpu_model", lambda: "Some Other CPU")
    assert calibrate.calibrate().measured


@pytest.mark.parametrize("text", ["", "{not json", "[]", '{"key": 1}'])
def test_a_corrupt_cache_is_measured_again_and_replaced(cache, text):
    cache.write_text(text)
    assert calibrate.calibrate().measured
    assert json.loads(cache.read_text())["key"] == calibrate.cache_key(cpu_flags())


def test_a_cached_choice_the_cpu_cannot_run_is_not_trusted(monkeypatch, cache):
    """A cache whose key matches but whose choice this CPU lacks (edited, or written by an older
    table) is measured again, never loaded."""
    _simulate(monkeypatch, ZEN3)
    key = calibrate.cache_key(ZEN3)
    forged = {"float32": "f32-avx512", "float32-fastexp": "f32-avx2", "bfloat16": None}
    cache.write_text(json.dumps({"key": key, "choice": forged}))
    assert calibrate.read_cache(cache, key, ZEN3) is None
    for bad in ({**forged, "float32": "no-such-variant"}, {**forged, "float32": "mixed-i16pv"},
                {"float32": "f32-avx2"}):
        cache.write_text(json.dumps({"key": key, "choice": bad}))
        assert calibrate.read_cache(cache, key, ZEN3) is None
    good = {"float32": "f32-avx2", "float32-fastexp": "f32-avx2", "bfloat16": None}
    cache.write_text(json.dumps({"key": key, "choice": good}))
    assert calibrate.read_cache(cache, key, ZEN3) == good


@pytest.mark.skipif(not selection.available("float32"), reason="no CPU kernel here")
def test_the_provenance_names_the_variant_that_ran(monkeypatch, cache, model):
    chosen = calibrate.choose("float32")
    assert model.implementation().startswith(f"cpu kernel, {chosen} build: float32")
    monkeypatch.setenv(calibrate.ENV_VARIANT, "f32-avx2")                # an operator's pin
    assert model.implementation().startswith("cpu kernel, f32-avx2 build: float32, 256-bit registers")
    monkeypatch.setenv(calibrate.ENV_VARIANT, "mixed-i16pv")             # does not compute float32
    assert model.implementation().startswith(f"cpu kernel, {chosen} build")
    with kernels.forced_fallback():
        assert model.implementation() == "torch (cpu)"
