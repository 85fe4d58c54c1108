"""Agreement with the published implementation's probabilities on the reference scene."""

from __future__ import annotations

import numpy as np
import pytest

from l2b_mask.algorithm.inference import CloudModel, InferenceSettings, SceneInference
from l2b_mask.inputs.scene import Scene
from l2b_mask.kernels import selection

THRESHOLD = np.float32(0.51)


@pytest.fixture(scope="module")
def reference(reference_dir):
    return (np.load(reference_dir / "reference_prob_fp32.npy"),
            np.load(reference_dir / "reference_prob_bf16.npy"))


def _ours(spec, reference_dir, precision, backend="auto"):
    scene = Scene.open(reference_dir / "public_s7_rdn.hdr", reference_dir / "public_s7_obs.img")
    model = CloudModel.load(spec, InferenceSettings(device="cpu", precision=precision))
    model.model.set_precision(precision, backend)
    return SceneInference(scene, model).run(lines_per_block=5)


# Both CPU implementations of float32 are held to the bound on their own (the kernel where this
# machine can build it): measured max |dP| 1.2e-5 for the kernel, 6.5e-6 for the torch path.
@pytest.mark.parametrize("backend", ["kernel", "torch"])
def test_float32_reproduces_the_published_float32(spec, reference_dir, reference, backend):
    if backend == "kernel" and not selection.available():
        pytest.skip(f"CPU kernel unavailable: {selection.unavailable_reason()}")
    ref, _ = reference
    ours = _ours(spec, reference_dir, "float32", backend)
    assert np.array_equal(np.isnan(ours), np.isnan(ref)), "set of pixels without a value differs"
    valid = ~np.isnan(ref)
    assert valid.sum() > 1000
    err = np.abs(ours[valid] - ref[valid]).max()
    print(f"{backend}: max |dP| vs published float32 {err:.2e}")
    assert err <= 1e-4
    clear_of_threshold = valid & (np.abs(ref - THRESHOLD) > 1e-4)
    np.testing.assert_array_equal(ours[clear_of_threshold] > THRESHOLD, ref[clear_of_threshold] > THRESHOLD)


def test_bfloat16_is_much_closer_to_float32_than_the_published_bfloat16(spec, reference_dir, reference):
    ref, published_bf16 = reference
    ours = _ours(spec, reference_dir, "bfloat16")
    valid = ~np.isnan(ref)
    assert np.array_equal(np.isnan(ours), ~valid)
    ours_err = np.abs(ours[valid] - ref[valid]).max()
    published_err = np.abs(published_bf16[valid] - ref[valid]).max()
    ours_flips = int(((ours[valid] > THRESHOLD) != (ref[valid] > THRESHOLD)).sum())
    published_flips = int(((published_bf16[valid] > THRESHOLD) != (ref[valid] > THRESHOLD)).sum())
    # Measured: ours 0.034 max |dP| and 1 flip of 1847; published 0.42 and 28 flips.
    assert ours_err <= 0.05 and ours_err * 8 < published_err
    assert ours_flips <= 2 and ours_flips * 10 < published_flips
