"""The browse's legend, scale and edges (issue 23): what a catalogue user sees without docs."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pytest
from PIL import Image

from l2b_mask.products.browse import (
    CLOUD_RGB,
    LEGEND_HEIGHT,
    LEGEND_MIN_WIDTH,
    SHADOW_ALPHA,
    SHADOW_RGB,
    compose,
    draw_edges,
    legend_panel,
    nice_length_m,
    pixel_size_text,
    write_browse_png,
)
from l2b_mask.synthetic.scene import generate_acquisition


def _has_colour(rgba: np.ndarray, colour: tuple[float, float, float], tol: int = 2) -> bool:
    return bool((np.abs(rgba[..., :3].astype(int) - np.asarray(colour, int)) <= tol)
                .all(axis=-1).any())


def test_legend_shows_both_colours_and_the_pixel_size_words():
    with_shadow = legend_panel(400, 60.0, 60.0, with_shadow=True)
    without = legend_panel(400, 60.0, 60.0, with_shadow=False)
    assert with_shadow.shape == (LEGEND_HEIGHT, 400, 4) and (with_shadow[..., 3] == 255).all()
    assert _has_colour(with_shadow, CLOUD_RGB) and _has_colour(with_shadow, SHADOW_RGB)
    assert _has_colour(without, CLOUD_RGB) and not _has_colour(without, SHADOW_RGB)
    assert (with_shadow[..., :3].max(axis=-1) < 60).sum() > 100  # black text and scale bar


def test_pixel_size_words_and_scale_length():
    assert pixel_size_text(60.0, 60.0) == "pixel 60 m"
    assert pixel_size_text(60.0, None) == "pixel 60 m (nominal)"
    assert pixel_size_text(77.0, 61.0) == "pixel 77 m (swath 61 m)"
    assert nice_length_m(4900.0) == 2000.0 and nice_length_m(5000.0) == 5000.0
    assert nice_length_m(19000.0) == 10000.0 and nice_length_m(130.0) == 100.0
    with pytest.raises(ValueError):
        nice_length_m(0.0)


def test_legend_does_not_depend_on_the_users_matplotlib_style():
    reference = legend_panel(320, 61.0, 61.0, with_shadow=True)
    with mpl.rc_context({"font.size": 30, "figure.facecolor": "black", "text.color": "red",
                         "font.family": "monospace"}):
        assert np.array_equal(legend_panel(320, 61.0, 61.0, with_shadow=True), reference)


def test_edges_are_opaque_and_a_thin_shadow_is_wholly_opaque():
    grey = np.full((12, 12, 3), 0.1)  # dark ground, where a half-tone amber turns olive
    valid = np.ones((12, 12), bool)
    shadow = np.zeros((12, 12))
    shadow[2:4, 1:11] = 1.0  # a shadow two browse pixels wide
    cloud = np.zeros((12, 12))
    cloud[5:12, 3:10] = 1.0  # a large cloud: opaque edge, blended inside
    rgba = compose(grey, cloud, valid, shadow)
    rgba = draw_edges(draw_edges(rgba, cloud, CLOUD_RGB, 1), shadow, SHADOW_RGB, 1)
    assert (rgba[2:4, 1:11, :3] == np.asarray(SHADOW_RGB, np.uint8)).all()
    assert (rgba[5, 3:10, :3] == np.asarray(CLOUD_RGB, np.uint8)).all()  # top edge
    inside = rgba[8, 6, :3].astype(int)
    assert inside.tolist() != list(CLOUD_RGB) and inside[0] > 100 and inside[1] < 60
    assert (rgba[0, :, :3] == np.rint(0.1 * 255)).all()  # clear ground untouched
    # without edges the fill alone is stronger for shadow than the cloud's half tone
    assert SHADOW_ALPHA > 0.5


def test_edges_leave_pixels_without_value_transparent():
    rgba = np.full((3, 3, 4), 10, np.uint8)
    rgba[..., 3] = 255
    rgba[1, 2] = 0  # no value
    share = np.ones((3, 3))
    share[2, 2] = 0.0  # (1, 1), (1, 2) and (2, 1) are on the region's edge
    out = draw_edges(rgba, share, CLOUD_RGB, 1)
    assert (out[..., 3] == rgba[..., 3]).all() and out[1, 2].tolist() == [0, 0, 0, 0]
    assert out[1, 1, :3].tolist() == [255, 0, 255] and out[2, 1, :3].tolist() == [255, 0, 255]
    assert out[0, 0, :3].tolist() == [10, 10, 10]  # inside the region (the frame is not an edge)


def test_reduced_scene_fits_with_its_legend_and_states_the_browse_pixel(tmp_path):
    acq = generate_acquisition(tmp_path, lines=600, samples=20, seed=5)
    flag = np.where(acq.truth == 0, 255, acq.truth >= 2).astype(np.uint8)
    path = tmp_path / "reduced.png"
    write_browse_png(path, acq.radiance, flag, max_side=LEGEND_MIN_WIDTH, pixel_size_m=60.0)
    with Image.open(path) as image:
        assert image.size == (LEGEND_MIN_WIDTH, LEGEND_MIN_WIDTH) and image.mode == "RGBA"
        rgba = np.asarray(image)
    rows = LEGEND_MIN_WIDTH - LEGEND_HEIGHT
    # the image: 600 lines reduced to `rows`, 20 samples to 20 * rows / 600 (rounded)
    cols = round(20 * rows / 600)
    assert (rgba[:rows, cols:, 3] == 0).all()  # right of the image: transparent padding
    assert (rgba[rows:, :, 3] == 255).all()
    # the panel drawn is that of a browse pixel of 60 m * mean reduction
    pixel_m = 60.0 * (600 / rows + 20 / cols) / 2
    assert np.array_equal(rgba[rows:], legend_panel(LEGEND_MIN_WIDTH, pixel_m, 60.0, False))
    assert not np.array_equal(rgba[rows:], legend_panel(LEGEND_MIN_WIDTH, 60.0, 60.0, False))


def test_too_small_a_browse_for_the_legend_is_refused_and_writes_nothing(tmp_path):
    acq = generate_acquisition(tmp_path, lines=8, samples=8, seed=5)
    flag = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match="legend"):
        write_browse_png(tmp_path / "x.png", acq.radiance, flag, max_side=LEGEND_MIN_WIDTH - 1)
    assert not (tmp_path / "x.png").exists()
