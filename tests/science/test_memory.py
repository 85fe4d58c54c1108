"""Streaming keeps the inference's memory bounded by the block, not the scene length."""

from __future__ import annotations

import tracemalloc

from conftest import write_pair

from l2b_mask.algorithm.inference import CloudModel, InferenceSettings, SceneInference
from l2b_mask.inputs.scene import Scene


def _peak_bytes(spec, folder, lines):
    rdn, obs = write_pair(folder, lines=lines, samples=6, seed=1)
    model = CloudModel.load(spec, InferenceSettings(device="cpu", batch_size=256))
    inference = SceneInference(Scene.open(rdn, obs), model)
    tracemalloc.start()
    try:
        for _ in inference.blocks(lines_per_block=16):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_does_not_grow_with_lines(spec, tmp_path):
    (tmp_path / "short").mkdir()
    (tmp_path / "long").mkdir()
    short = _peak_bytes(spec, tmp_path / "short", 64)
    long = _peak_bytes(spec, tmp_path / "long", 1024)
    # A whole-scene load of the long cube alone would be 1024*6*285*4 = 7 MB (float64 TOA: 14 MB)
    assert long < 1.25 * short + 256 * 1024, (short, long)
    assert long < 3 * 1024 * 1024
