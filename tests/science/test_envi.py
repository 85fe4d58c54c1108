"""ENVI header parsing, validation errors, and block reads in every interleave."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_raster

from l2b_mask.errors import InputProductError
from l2b_mask.inputs.envi import EnviReader, read_header, resolve_pair


@pytest.fixture
def cube() -> np.ndarray:
    return np.arange(4 * 3 * 5, dtype=np.float32).reshape(4, 3, 5)  # lines, bands, samples


def test_header_or_binary_path_give_the_same_pair(tmp_path, cube):
    img = write_raster(tmp_path / "a.img", cube)
    assert resolve_pair(img) == resolve_pair(img.with_suffix(".hdr")) == (img.with_suffix(".hdr"), img)


def test_binary_without_extension(tmp_path, cube):
    img = write_raster(tmp_path / "a.img", cube)
    bare = tmp_path / "a"
    img.rename(bare)
    h = read_header(tmp_path / "a.hdr")
    assert h.data_path == bare and (h.lines, h.bands, h.samples) == (4, 3, 5)


@pytest.mark.parametrize("interleave", ["bil", "bip", "bsq"])
@pytest.mark.parametrize("order", ["<", ">"])
def test_blocks_read_the_same_whatever_the_layout(tmp_path, cube, interleave, order):
    img = write_raster(tmp_path / "a.img", cube, interleave, order)
    with EnviReader(read_header(img)) as r:
        whole = r.read_lines(0, 4)
        assert whole.shape == (4, 5, 3) and whole.dtype == np.float32
        np.testing.assert_array_equal(whole, cube.transpose(0, 2, 1))
        np.testing.assert_array_equal(r.read_lines(1, 3, [2, 0]), cube[1:3][:, [2, 0], :].transpose(0, 2, 1))
        np.testing.assert_array_equal(r.read_band(2, 4, 1), cube[2:4, 1, :])


def _rewrite(img, old, new):
    hdr = img.with_suffix(".hdr")
    text = hdr.read_text()
    assert old in text
    hdr.write_text(text.replace(old, new))


@pytest.mark.parametrize(("old", "new", "message"), [
    ("interleave = bil", "interleave = xyz", "unknown interleave"),
    ("data type = 4", "data type = 7", "unsupported ENVI data type 7"),
    ("byte order = 0", "byte order = 2", "'byte order' must be 0 or 1"),
    ("lines = 4", "lines = four", "'lines' is not an integer"),
    ("lines = 4", "lines = 0", "'lines' must be positive"),
    ("samples = 5\n", "", "has no 'samples'"),
    ("lines = 4", "lines = 5", "binary is truncated"),
    ("lines = 4", "lines = 3", "longer than its header says"),
    ("header offset = 0", "header offset = 8", "binary is truncated"),
    ("ENVI\n", "NOT ENVI\n", "unreadable ENVI header"),
])
def test_header_problems_name_the_file(tmp_path, cube, old, new, message):
    img = write_raster(tmp_path / "a.img", cube)
    _rewrite(img, old, new)
    with pytest.raises(InputProductError, match=message) as err:
        read_header(img)
    assert err.value.path is not None and err.value.path.name.startswith("a.")


def test_missing_header_and_missing_binary(tmp_path, cube):
    img = write_raster(tmp_path / "a.img", cube)
    img.with_suffix(".hdr").unlink()
    with pytest.raises(InputProductError, match="ENVI header not found"):
        read_header(img)
    img2 = write_raster(tmp_path / "b.img", cube)
    img2.unlink()
    with pytest.raises(InputProductError, match="binary file not found"):
        read_header(img2.with_suffix(".hdr"))


def test_header_offset_is_honoured(tmp_path, cube):
    img = write_raster(tmp_path / "a.img", cube)
    img.write_bytes(b"\0" * 16 + img.read_bytes())
    _rewrite(img, "header offset = 0", "header offset = 16")
    with EnviReader(read_header(img)) as r:
        np.testing.assert_array_equal(r.read_lines(0, 4), cube.transpose(0, 2, 1))


@pytest.mark.parametrize("interleave", ["bil", "bip", "bsq"])
def test_binary_cut_short_after_the_header_was_checked(tmp_path, cube, interleave):
    """A binary that shrinks between the header's check and the read (another process) is an
    input error naming it, not a short array."""
    img = write_raster(tmp_path / "a.img", cube, interleave)
    header = read_header(img)
    with img.open("r+b") as f:
        f.truncate(img.stat().st_size // 2)
    with EnviReader(header) as r, pytest.raises(InputProductError, match="binary ended early") as info:
        r.read_lines(0, 4)
    assert info.value.path == header.data_path
