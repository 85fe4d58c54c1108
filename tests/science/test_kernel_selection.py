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

HASWELL = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"})           # AVX2 only
ZEN3 = HASWELL | {"vaes", "vpclmulqdq"}                                          # AVX2 only
ALDER_LAKE = HASWELL | {"avx_vnni"}                                              # AVX2 + AVX-VNNI
CASCADE_LAKE = ZEN3 | {"avx512f", "avx512vl", "avx512bw", "avx512cd", "avx512_vnni"}  # no BF16
ZEN4 = CASCADE_LAKE | {"avx512_bf16"}
SAPPHIRE_RAPIDS = ZEN4 | {"avx_vnni", "amx_tile", "amx_bf16", "amx_int8"}
ARM = frozenset({"fp", "asimd", "sve", "bf16", "i8mm"})                          # an aarch64 host
X86 = {"Haswell": HASWELL, "Zen 3": ZEN3, "Alder Lake": ALDER_LAKE, "Cascade Lake": CASCADE_LAKE,
       "Zen 4": ZEN4, "Sapphire Rapids": SAPPHIRE_RAPIDS}
F32 = ["f32-avx2", "f32-avx512"]


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
    (ZEN3, {"float32": ["f32-avx2"], "float32-fastexp": ["f32-avx2"],
            "bfloat16": ["f32-avx2", "mixed-i16-avx2"]}),
    (ALDER_LAKE, {"float32": ["f32-avx2"], "bfloat16": ["f32-avx2", "mixed-i16-avx2", "mixed-i16-avxvnni"]}),
    (CASCADE_LAKE, {"float32": F32, "bfloat16": [*F32, "mixed-i16pv", "mixed-i16-avx2"]}),
    (ZEN4, {"float32": F32, "bfloat16": [*F32, "mixed-bf16pv", "mixed-i16pv", "mixed-i16-avx2"]}),
    (SAPPHIRE_RAPIDS, {"bfloat16": [*F32, "mixed-bf16pv", "mixed-i16pv", "mixed-i16-avx2",
                                    "mixed-i16-avxvnni"]}),
    (frozenset(), {"float32": [], "bfloat16": []}),                        # unreadable /proc/cpuinfo
])
def test_only_variants_whose_instructions_the_cpu_has_are_candidates(flags, expected):
    for precision, names in expected.items():
        assert calibrate.runnable(precision, flags) == names


@pytest.mark.parametrize("cpu", X86)
def test_bfloat16_has_every_float32_candidate_and_a_16_bit_one(cpu):
    """The fast mode is never the slow one: every build that runs float32 on a CPU also runs
    bfloat16 there (the fastest of them is chosen), and every x86-64 CPU with AVX2 has a 16-bit build."""
    flags = X86[cpu]
    bf16, f32 = calibrate.runnable("bfloat16", flags), calibrate.runnable("float32", flags)
    assert f32 and set(f32) <= set(bf16)
    assert any(kernels.VARIANTS[n].precisions == ("bfloat16",) for n in bf16)
    for name in bf16:                                     # instructions the CPU has, and no others
        assert set(kernels.VARIANTS[name].cpu_flags) <= flags


def test_an_arm_host_runs_the_torch_path_for_every_precision(monkeypatch, cache, model):
    monkeypatch.setattr(kernels.platform, "machine", lambda: "aarch64")
    _simulate(monkeypatch, ARM)
    for precision in EXP_DEGREE:
        assert calibrate.runnable(precision, ARM) == []
    result = calibrate.calibrate()
    assert result.choice == dict.fromkeys(EXP_DEGREE)
    model.set_precision("bfloat16")
    try:
        assert not model.uses_kernel()
        assert model.implementation() == "torch (cpu)"
    finally:
        model.set_precision("float32")


@pytest.mark.parametrize("cpu", X86)
def test_the_calibration_never_chooses_a_variant_the_cpu_lacks(monkeypatch, cache, model, cpu):
    """Timed where this machine has the simulated CPU's instructions (the others: the candidate
    lists above); bfloat16 always gets a kernel, never the torch path."""
    flags = X86[cpu]
    if not set(flags) <= cpu_flags():
        pytest.skip(f"this CPU cannot run every variant {cpu} can")
    _simulate(monkeypatch, flags)
    result = calibrate.calibrate()
    for precision, name in result.choice.items():
        assert name in calibrate.runnable(precision, flags)
    rates = result.rates["bfloat16"]                       # all timed; the fastest chosen
    assert set(rates) == set(calibrate.runnable("bfloat16", flags))
    assert result.choice["bfloat16"] == max(rates, key=rates.get)
    model.set_precision("bfloat16")
    try:
        assert model.uses_kernel()
        assert model.implementation().startswith(f"cpu kernel, {result.choice['bfloat16']} build")
    finally:
        model.set_precision("float32")


@pytest.mark.skipif(len(calibrate.runnable("bfloat16", cpu_flags())) < 2, reason="needs a CPU with two "
                    "variants for a precision (AVX2)")
def test_a_measured_choice_is_cached_and_reused(cache):
    first = calibrate.calibrate()
    assert first.measured and set(first.choice) == set(EXP_DEGREE)
    assert "bfloat16" in first.rates
    for precision, rates in first.rates.items():       # every candidate was timed, the fastest won
        assert set(rates) == set(calibrate.runnable(precision, cpu_flags()))
        assert first.choice[precision] == max(rates, key=rates.get)
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
    forged = {"float32": "f32-avx512", "float32-fastexp": "f32-avx2", "bfloat16": "mixed-i16-avx2"}
    cache.write_text(json.dumps({"key": key, "choice": forged}))
    assert calibrate.read_cache(cache, key, ZEN3) is None
    for bad in ({**forged, "float32": "no-such-variant"}, {**forged, "float32": "mixed-i16pv"},
                {"float32": "f32-avx2"}, {**forged, "float32": "f32-avx2", "bfloat16": None}):
        cache.write_text(json.dumps({"key": key, "choice": bad}))
        assert calibrate.read_cache(cache, key, ZEN3) is None
    good = {"float32": "f32-avx2", "float32-fastexp": "f32-avx2", "bfloat16": "mixed-i16-avx2"}
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
