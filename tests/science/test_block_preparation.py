"""The per-pixel preparation (which pixels have a value, TOA reflectance) runs on the read-ahead
thread, off the model's path, and gives the values it gave when it ran on the model's thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import write_pair

from l2b_mask.algorithm.inference import CloudModel, InferenceSettings, SceneInference
from l2b_mask.algorithm.reflectance import toa_reflectance
from l2b_mask.inputs.scene import Scene


def _whole_array(radiance, zenith, d, irr):
    """The formula over the whole array at once, as before the chunking."""
    rho = radiance.astype(np.float64)
    rho *= (np.pi / np.cos(np.deg2rad(np.asarray(zenith, np.float64))))[..., None]
    rho *= 1.0 / (np.asarray(irr, np.float64) / (d * d))
    return rho.astype(np.float32)


@pytest.mark.parametrize("shape", [(1000, 31), (5, 7, 31), (0, 31), (1, 31), (31,)])
@pytest.mark.parametrize("chunk", [1, 7, 2048])
def test_chunked_reflectance_is_the_whole_array_formula_to_the_bit(shape, chunk):
    g = np.random.default_rng(sum(shape) + chunk)
    radiance = g.uniform(-1, 40, shape).astype(np.float32)
    zenith = g.uniform(0, 89, shape[:-1])
    irr = g.uniform(20, 200, shape[-1])
    got = toa_reflectance(radiance, zenith, 1.0167, irr, chunk=chunk)
    assert got.dtype == np.float32 and got.shape == radiance.shape
    np.testing.assert_array_equal(got, _whole_array(radiance, zenith, 1.0167, irr))


def test_blocks_are_prepared_on_the_read_ahead_thread(spec, tmp_path, monkeypatch):
    rdn, obs = write_pair(tmp_path, lines=40, samples=6, seed=2)
    model = CloudModel.load(spec, InferenceSettings(device="cpu", batch_size=64))
    inference = SceneInference(Scene.open(rdn, obs), model)
    serial = [b.probability for b in (inference.block(*read[2:], *read[:2])
                                      for read in inference.read_blocks(16))]
    where: list[str] = []
    prepare = inference.prepare

    def recording(*args):
        where.append(threading.current_thread().name)
        return prepare(*args)

    monkeypatch.setattr(inference, "prepare", recording)
    blocks = list(inference.blocks(16))
    assert len(where) == len(blocks) == 3
    assert threading.current_thread().name not in where
    for block, expected in zip(blocks, serial, strict=True):
        np.testing.assert_array_equal(block.probability, expected)
