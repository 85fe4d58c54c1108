"""Streaming inference: nodata rules, block coverage, devices, and block-size independence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_pair
from hypothesis import given
from hypothesis import strategies as st

from l2b_mask.algorithm.inference import (
    CloudModel,
    InferenceSettings,
    SceneInference,
    cloud_flag,
    iter_line_blocks,
    pixels_with_value,
    resolve_device,
)
from l2b_mask.errors import ProcessingError
from l2b_mask.inputs.scene import Scene


@given(st.integers(1, 3000), st.integers(1, 700))
def test_blocks_cover_every_line_once(lines, per_block):
    covered = []
    for start, stop in iter_line_blocks(lines, per_block):
        assert 0 < stop - start <= per_block
        covered.extend(range(start, stop))
    assert covered == list(range(lines))


def test_pixels_with_value_rules():
    rad = np.ones((1, 8, 3), np.float32)
    sza = np.full((1, 8), 30.0)
    rad[0, 1, 2] = -9999          # fill in one model band
    rad[0, 2, :] = -9999          # fill in all bands
    rad[0, 3, 0] = np.nan
    rad[0, 4, 1] = -5.0           # negative noise: kept
    sza[0, 5] = -9999
    sza[0, 6] = 90.0
    sza[0, 7] = np.nan
    ok = pixels_with_value(rad, sza, -9999.0, -9999.0)
    assert ok[0].tolist() == [True, False, False, False, True, False, False, False]
    sza[0, 6] = 89.99
    assert pixels_with_value(rad, sza, -9999.0, -9999.0)[0, 6]


def test_cloud_flag_comparisons():
    p = np.array([0.2, 0.51, 0.52, np.nan], np.float32)
    assert cloud_flag(p, np.float32(0.51), ">").tolist() == [0, 0, 1, 255]
    assert cloud_flag(p, np.float32(0.51), ">=").tolist() == [0, 1, 1, 255]
    with pytest.raises(ValueError, match="comparison"):
        cloud_flag(p, 0.5, "<")


def test_auto_device_is_cpu_without_cuda():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("CPU").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_requested_without_cuda(name):
    with pytest.raises(ProcessingError, match="CUDA is not available"):
        resolve_device(name)


def test_device_numbers_of_the_published_tool():
    assert resolve_device("-1") == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("0") == torch.device("cuda:0")
    else:
        with pytest.raises(ProcessingError, match="'cuda:0' requested but CUDA is not available"):
            resolve_device("0")


@pytest.mark.parametrize("name", ["tpu", "gpu", "mps:0", "-2"])
def test_unknown_devices(name):
    with pytest.raises(ProcessingError, match="device"):
        resolve_device(name)


def test_settings_validate():
    with pytest.raises(ValueError):
        InferenceSettings(precision="float16")
    with pytest.raises(ValueError):
        InferenceSettings(batch_size=0)


def test_result_does_not_depend_on_blocks_or_batches(spec, tmp_path):
    rdn, obs = write_pair(tmp_path, lines=9, samples=7, seed=3)
    scene = Scene.open(rdn, obs)
    runs = []
    for lines_per_block, batch in ((1, 5), (4, 64), (9, 4096)):
        model = CloudModel.load(spec, InferenceSettings(device="cpu", batch_size=batch))
        runs.append(SceneInference(scene, model).run(lines_per_block))
    assert runs[0].shape == (9, 7) and not np.isnan(runs[0]).any()
    for other in runs[1:]:
        np.testing.assert_allclose(other, runs[0], rtol=0, atol=2e-6)


def test_blocks_are_reported_in_order(spec, tmp_path):
    rdn, obs = write_pair(tmp_path, lines=5, samples=3)
    seen = []
    model = CloudModel.load(spec, InferenceSettings(device="cpu"))
    SceneInference(Scene.open(rdn, obs), model).run(2, on_block=lambda b: seen.append((b.start, b.stop)))
    assert seen == [(0, 2), (2, 4), (4, 5)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_matches_cpu(spec, tmp_path):
    rdn, obs = write_pair(tmp_path, lines=8, samples=8, seed=5)
    scene = Scene.open(rdn, obs)
    cpu = SceneInference(scene, CloudModel.load(spec, InferenceSettings(device="cpu"))).run(4)
    gpu = SceneInference(scene, CloudModel.load(spec, InferenceSettings(device="cuda"))).run(4)
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Out of memory: the batch-halving retry of CloudModel.predict. A test double reports a CUDA
# device but runs on the CPU, and fails like a full GPU above `capacity` spectra per batch; the
# logic under test is the retry loop, not the GPU.


class _SmallDeviceModel(CloudModel):
    def __init__(self, base: CloudModel, device: str, capacity: int, batch_size: int) -> None:
        super().__init__(base.spec, base.model, torch.device("cpu"), base.precision, batch_size)
        self.device = torch.device(device)  # reported only: the forward below stays on the CPU
        self.capacity = capacity
        self.batches: list[int] = []

    @torch.inference_mode()
    def _forward(self, reflectance: np.ndarray, band_term: torch.Tensor) -> np.ndarray:
        self.batches.append(len(reflectance))
        if len(reflectance) > self.capacity:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.model(torch.from_numpy(reflectance), band_term).numpy()


def _model_inputs(spec, n: int, seed: int = 0) -> tuple[CloudModel, np.ndarray, torch.Tensor]:
    cpu = CloudModel.load(spec, InferenceSettings(device="cpu", batch_size=4096))
    bands = 268  # what the drop ranges leave of EMIT's 285
    rng = np.random.default_rng(seed)
    reflectance = rng.uniform(0.0, 1.0, (n, bands)).astype(np.float32)
    band_term = cpu.model.band_term(np.linspace(400.0, 2450.0, bands))
    return cpu, reflectance, band_term


@pytest.fixture
def without_torch_2_5_oom(monkeypatch):
    """torch 2.3 and 2.4 (allowed by pyproject) have no torch.OutOfMemoryError."""
    monkeypatch.delattr(torch, "OutOfMemoryError", raising=False)


def test_cuda_oom_halves_the_batch_and_matches_cpu(spec, without_torch_2_5_oom):
    cpu, reflectance, band_term = _model_inputs(spec, 100)
    expected = cpu.predict(reflectance, band_term).probability
    gpu = _SmallDeviceModel(cpu, "cuda", capacity=20, batch_size=64)
    got = gpu.predict(reflectance, band_term)
    np.testing.assert_allclose(got.probability, expected, rtol=0, atol=2e-6)
    assert got.batch_size == 16  # 64 -> 32 -> 16, the first size that fits
    assert gpu.batch_size == 64  # the model's own setting is left as asked
    assert gpu.batches[:3] == [64, 32, 16]
    assert all(b <= 16 for b in gpu.batches[3:])
    assert sum(gpu.batches[2:]) == 100  # every spectrum computed exactly once after the retries
    # a call handed the smaller size starts there and never fails again
    gpu.batches.clear()
    again = gpu.predict(reflectance, band_term, got.batch_size)
    np.testing.assert_allclose(again.probability, expected, rtol=0, atol=2e-6)
    assert max(gpu.batches) == 16 and sum(gpu.batches) == 100 and again.batch_size == 16


def test_cuda_oom_at_batch_size_one_is_a_processing_error(spec, without_torch_2_5_oom):
    cpu, reflectance, band_term = _model_inputs(spec, 5)
    gpu = _SmallDeviceModel(cpu, "cuda:0", capacity=0, batch_size=4)
    with pytest.raises(ProcessingError, match="out of memory on cuda:0 even at batch size 1"):
        gpu.predict(reflectance, band_term)
    assert gpu.batches == [4, 2, 1]


def test_cpu_oom_is_a_processing_error_without_retry(spec, without_torch_2_5_oom):
    cpu, reflectance, band_term = _model_inputs(spec, 50)
    small = _SmallDeviceModel(cpu, "cpu", capacity=10, batch_size=32)
    with pytest.raises(ProcessingError, match="out of memory on cpu at batch size 32"):
        small.predict(reflectance, band_term)
    assert small.batches == [32]
