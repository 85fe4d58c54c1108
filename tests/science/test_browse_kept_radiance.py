"""The browse drawn from the radiance a caller's stream kept (a PGE run reads its radiance once,
issue 21) is the browse drawn from the file, to the byte; the stream keeps that radiance as
read, fill values included, and keeps none of it when the model does not read every band."""

from __future__ import annotations

import numpy as np

from l2b_mask.algorithm.inference import CloudModel, InferenceSettings, SceneInference, cloud_flag
from l2b_mask.inputs.scene import Scene
from l2b_mask.products.browse import browse_bands, render_browse, write_browse_png
from l2b_mask.synthetic.scene import generate_acquisition


def _inference(acq, spec, bands) -> SceneInference:
    scene = Scene.open(acq.radiance, acq.observation)
    model = CloudModel.load(spec, InferenceSettings(device="cpu", batch_size=256))
    return SceneInference(scene, model, keep_radiance_bands=bands)


def test_browse_from_the_kept_bands_is_the_browse_from_the_file(tmp_path, spec):
    acq = generate_acquisition(tmp_path / "in", lines=40, samples=30, seed=5, fill_lines=3,
                               partial_band_fill=True)
    bands = browse_bands(acq.radiance)
    inference = _inference(acq, spec, bands)
    assert inference.keeps_radiance
    ran = inference.run_keeping(lines_per_block=16)
    with inference.scene.radiance_reader() as reader:
        as_read = reader.read_lines(0, inference.scene.lines, bands)
    assert ran.radiance is not None and ran.radiance.dtype == np.float32
    assert np.array_equal(ran.radiance, as_read, equal_nan=True)
    assert (as_read <= -9990).any()  # fill in the browse bands: the browse must leave it out

    flag = cloud_flag(ran.probability, 0.5)
    for side in (12, 1000):  # reduced by area averaging, and at the swath's size
        kept = render_browse(acq.radiance, flag, max_side=side, browse_radiance=ran.radiance)
        assert np.array_equal(kept, render_browse(acq.radiance, flag, max_side=side))
    swapped = np.ascontiguousarray(ran.radiance[..., ::-1])  # the kept array is what is drawn
    assert not np.array_equal(render_browse(acq.radiance, flag, browse_radiance=swapped), kept)
    write_browse_png(tmp_path / "kept.png", acq.radiance, flag, browse_radiance=ran.radiance)
    write_browse_png(tmp_path / "read.png", acq.radiance, flag)
    assert (tmp_path / "kept.png").read_bytes() == (tmp_path / "read.png").read_bytes()


def test_bands_the_model_does_not_read_are_not_kept(tmp_path, spec):
    acq = generate_acquisition(tmp_path / "in", lines=8, samples=8, seed=1)
    scene = Scene.open(acq.radiance, acq.observation)
    lo, hi = spec.drop_ranges_nm[0]
    dropped = int(np.flatnonzero((scene.wavelengths_nm >= lo) & (scene.wavelengths_nm <= hi))[0])
    inference = _inference(acq, spec, [*browse_bands(acq.radiance)[:2], dropped])
    assert not inference.keeps_radiance
    assert inference.run_keeping(lines_per_block=8).radiance is None
