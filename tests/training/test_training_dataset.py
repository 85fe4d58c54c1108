"""Reading labelled HDF5 files: the split by scene, chunked and seeded streaming, bad inputs."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from training_sets import make_set, small_spec

from l2b_mask.errors import ExitCode, InputProductError, OutputError
from l2b_mask.spec import ModelSpec
from l2b_mask.training import cli
from l2b_mask.training.dataset import DatasetFile, LabelledData, cloud_target, read_fid_list
from l2b_mask.training.synthetic_set import write_fid_list


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    base = tmp_path_factory.mktemp("dataset")
    spec_path = small_spec(base, ModelSpec.load())
    return make_set(base / "set", spec_path, scenes=6, test_scenes=2, pixels_per_scene=300,
                    nan_spectra=7)


def _copy(src, dst, drop=None, **changes):
    """A copy of the labelled file `src` with dataset `drop` removed or datasets replaced."""
    with h5py.File(src, "r") as a, h5py.File(dst, "w") as b:
        for name in ("spectra", "labels", "fids"):
            if name != drop:
                b[name] = changes.get(name, a[name][()])
        if drop != "bands":
            b.attrs["bands"] = changes.get("bands", a.attrs["bands"])
    return dst


def test_split_is_by_scene_and_every_spectrum_comes_once(small):
    spec = ModelSpec.load(small.spec)
    with LabelledData([small.dataset], spec, block_rows=128) as data, \
            h5py.File(small.dataset, "r") as h5:
        train, test = data.split(small.train_csv), data.split(small.test_csv)
        data.check_disjoint(train, test)
        fids = h5["fids"][()].astype(str)
        assert np.array_equal(train.masks[0], np.isin(fids, small.train_fids))
        assert np.array_equal(test.masks[0], np.isin(fids, small.test_fids))
        stream = data.stream(train, shuffle_blocks=2)
        got = np.concatenate([x for x, _ in stream.batches(100, np.random.default_rng(0))])
        finite = np.isfinite(h5["spectra"][()]).all(axis=1)
        want = h5["spectra"][()][train.masks[0] & finite]
    assert stream.skipped == int(np.sum(train.masks[0] & ~finite)) > 0
    assert got.shape == want.shape and np.isfinite(got).all()
    order = np.lexsort(got.T)
    assert np.array_equal(got[order], want[np.lexsort(want.T)])


def test_batches_are_seeded_shuffled_and_chunked(small, monkeypatch):
    spec = ModelSpec.load(small.spec)
    reads: list[int] = []
    original = DatasetFile.read

    def spy(self, start, stop):
        reads.append(stop - start)
        return original(self, start, stop)

    monkeypatch.setattr(DatasetFile, "read", spy)
    with LabelledData([small.dataset], spec, block_rows=128) as data:
        stream = data.stream(data.split(small.train_csv), shuffle_blocks=3)

        def labels(seed):
            return np.concatenate([y for _, y in stream.batches(64, np.random.default_rng(seed))])

        batches = stream.batches(64, np.random.default_rng(1))
        next(batches)
        assert len(reads) <= 3 and max(reads) <= 128, "a window is 3 blocks of 128 rows"
        a, b, c = labels(1), labels(1), labels(2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert sorted(a.tolist()) == sorted(c.tolist())


def test_shadow_counts_as_clear(small):
    with h5py.File(small.dataset, "r") as h5:
        labels = h5["labels"][()]
    assert set(np.unique(labels)) == {0, 1, 2}
    assert cloud_target(np.array([0, 1, 2])).tolist() == [0, 1, 0]


# ---------------------------------------------------------------------------------------------
# Bad inputs: one typed error naming the file; the commands turn it into one line and a code


def test_missing_and_unreadable_files(small, tmp_path):
    spec = ModelSpec.load(small.spec)
    for path, words in ((tmp_path / "absent.h5", "not found"),
                        (small.train_csv, "not a readable HDF5 file")):
        with pytest.raises(InputProductError, match=words) as err:
            LabelledData([path], spec)
        assert err.value.path == path and err.value.exit_code == ExitCode.INPUT
    with pytest.raises(InputProductError, match="scene id list not found"):
        read_fid_list(tmp_path / "absent.csv")


@pytest.mark.parametrize("drop", ["spectra", "labels", "fids", "bands"])
def test_file_lacking_a_dataset_or_the_bands(small, tmp_path, drop):
    bad = _copy(small.dataset, tmp_path / "bad.h5", drop=drop)
    with pytest.raises(InputProductError, match=drop) as err:
        LabelledData([bad], ModelSpec.load(small.spec))
    assert err.value.path == bad


def test_shapes_that_disagree(small, tmp_path):
    with h5py.File(small.dataset, "r") as h5:
        labels = h5["labels"][()]
        bands = h5.attrs["bands"]
    for name, changes in (("labels", {"labels": labels[:-1]}), ("bands", {"bands": bands[:-1]})):
        bad = _copy(small.dataset, tmp_path / f"bad_{name}.h5", **changes)
        with pytest.raises(InputProductError, match="shapes disagree|values for"):
            LabelledData([bad], ModelSpec.load(small.spec))


def test_bands_differing_from_the_specification(small, tmp_path):
    spec = ModelSpec.load(small.spec)
    with h5py.File(small.dataset, "r") as h5:
        bands = h5.attrs["bands"].copy()
    shifted = _copy(small.dataset, tmp_path / "shifted.h5", bands=bands + 0.5)
    with pytest.raises(InputProductError, match="differ from those of") as err:
        LabelledData([small.dataset, shifted], spec)
    assert err.value.path == shifted
    bands[0] = 430.0  # inside the small specification's first drop range (0-438 nm)
    unreduced = _copy(small.dataset, tmp_path / "unreduced.h5", bands=bands)
    with pytest.raises(InputProductError, match="drop range 0-438 nm"):
        LabelledData([unreduced], spec)


def test_labels_outside_0_1_2(small, tmp_path):
    with h5py.File(small.dataset, "r") as h5:
        labels = h5["labels"][()]
    labels[5] = 3
    bad = _copy(small.dataset, tmp_path / "labels.h5", labels=labels)
    with LabelledData([bad], ModelSpec.load(small.spec)) as data:
        stream = data.stream(data.split(small.train_csv))
        with pytest.raises(InputProductError, match="label 3 at row 5"):
            list(stream.blocks_in_order())


def test_fid_list_selecting_nothing_or_shared(small, tmp_path):
    spec = ModelSpec.load(small.spec)
    with LabelledData([small.dataset], spec) as data:
        none = write_fid_list(tmp_path / "none.csv", ["emit20000101t000000"])
        with pytest.raises(InputProductError, match="selects no spectrum") as err:
            data.split(none)
        assert err.value.path == none
        both = write_fid_list(tmp_path / "both.csv", [small.train_fids[0], small.test_fids[0]])
        with pytest.raises(InputProductError, match="shares scenes"):
            data.check_disjoint(data.split(small.train_csv), data.split(both))


def test_commands_report_one_line_and_the_code(small, tmp_path, capsys):
    weights = tmp_path / "w.pt"
    cases = [
        (cli.evaluate_main, [str(tmp_path / "absent.h5"), "--weights", str(weights),
                             "--test-csv", str(small.test_csv), "--out", str(tmp_path / "r.json"),
                             "--spec", str(small.spec)], ExitCode.ANCILLARY, "w.pt"),
        (cli.train_main, [str(tmp_path / "absent.h5"), "--train-csv", str(small.train_csv),
                          "--test-csv", str(small.test_csv), "--outdir", str(tmp_path / "o"),
                          "--spec", str(small.spec)], ExitCode.INPUT, "absent.h5"),
        (cli.train_main, ["--epochs", "x"], ExitCode.USAGE, "--epochs"),
        (cli.train_main, [str(small.dataset), "--train-csv", str(small.train_csv), "--test-csv",
                          str(small.test_csv), "--outdir", str(small.train_csv / "sub"),
                          "--spec", str(small.spec)], ExitCode.OUTPUT, "not writable"),
        (cli.release_main, ["--weights", str(weights), "--evaluation", "r.json", "--version",
                            "1.0", "--out", str(tmp_path)], ExitCode.USAGE, "X.Y.Z"),
    ]
    for main, argv, code, words in cases:
        assert main(argv) == code, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err and code.label in err, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "r.json").exists()


def test_unwritable_output_is_an_output_error(tmp_path):
    from l2b_mask.training.files import ensure_folder

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="not writable"):
        ensure_folder(blocker / "sub")
