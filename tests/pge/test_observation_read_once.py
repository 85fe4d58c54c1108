"""The PGE reads each input file once (issue 21): every line of the observation and of the
radiance goes through its reader's block read exactly once in a whole run, ENVI or LP DAAC
granules, the cloud shadow and the browse image made (the observation used to be read four
times, the radiance twice: the browse kept its three bands from the model's stream since). The
one observation pass (`read_observation`) gives the values the separate passes gave, to the bit
(`tests/science/test_observation_geometry.py`); the browse drawn from the kept bands is the one
drawn from the file (`tests/science/test_browse_kept_radiance.py`; its bytes
`tests/pge/test_product_digests.py`)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from l2b_mask.inputs.daac import DaacReader
from l2b_mask.inputs.envi import EnviReader
from l2b_mask.synthetic.daac import write_daac_granules
from l2b_mask.synthetic.scene import generate_acquisition
from pge import run as pge_run

# in-process runs reconfigure structlog and the root logger: conftest puts them back
pytestmark = pytest.mark.usefixtures("restore_logging")

LINES, SAMPLES, SEED = 20, 24, 3


def _count_reads(monkeypatch, reader_class: type) -> dict[Path, list[tuple[int, int]]]:
    """The (start, stop) of every block the run reads through `reader_class.read_lines`, by
    file: the real read runs, its ranges are recorded."""
    reads: dict[Path, list[tuple[int, int]]] = defaultdict(list)
    original = reader_class.read_lines

    def counting(self, start, stop, *args, **kwargs):
        path = self.header.data_path if isinstance(self, EnviReader) else self.granule.path
        reads[Path(path).resolve()].append((start, stop))
        return original(self, start, stop, *args, **kwargs)

    monkeypatch.setattr(reader_class, "read_lines", counting)
    return reads


def _lines_read(ranges: list[tuple[int, int]]) -> list[int]:
    """How many times each line was read."""
    times = [0] * LINES
    for start, stop in ranges:
        for line in range(start, stop):
            times[line] += 1
    return times


def _run(tmp_path: Path, spec, files: dict[str, Path], browse: bool = True) -> dict:
    cfg = {"input_files": {k: str(v) for k, v in files.items()},
           "ancillary_files": {"model_weights": str(spec.weights_path),
                               "irradiance": str(spec.irradiance_path)},
           "output": {"directory": str(tmp_path / "out"), "write_browse": browse},
           "processing": {"device": "cpu", "lines_per_block": 8}}
    (tmp_path / "rc.json").write_text(json.dumps(cfg))
    result = pge_run.execute(tmp_path / "rc.json", "test")
    assert result is not None
    return json.loads(result.published["metadata"].read_text())


def test_envi_run_reads_the_observation_once(tmp_path, spec, monkeypatch):
    acq = generate_acquisition(tmp_path / "in", lines=LINES, samples=SAMPLES, seed=SEED,
                               shadows=True)
    reads = _count_reads(monkeypatch, EnviReader)
    meta = _run(tmp_path, spec, {"radiance": acq.radiance, "observation": acq.observation,
                                 "location": acq.location, "glt": acq.glt})
    assert meta["cloud_shadow"]["made"] is True  # the shadow, which needs the four angles, was made
    assert _lines_read(reads[acq.observation.resolve()]) == [1] * LINES
    assert len(reads[acq.observation.resolve()]) == 1  # one block: the scene is < 512 lines
    assert _lines_read(reads[acq.radiance.resolve()]) == [1] * LINES  # the model's stream only


def test_envi_run_without_browse_reads_the_radiance_once(tmp_path, spec, monkeypatch):
    acq = generate_acquisition(tmp_path / "in", lines=LINES, samples=SAMPLES, seed=SEED)
    reads = _count_reads(monkeypatch, EnviReader)
    _run(tmp_path, spec, {"radiance": acq.radiance, "observation": acq.observation,
                          "location": acq.location, "glt": acq.glt}, browse=False)
    assert _lines_read(reads[acq.observation.resolve()]) == [1] * LINES
    assert _lines_read(reads[acq.radiance.resolve()]) == [1] * LINES


def test_granule_run_reads_the_observation_once(tmp_path, spec, monkeypatch):
    acq = generate_acquisition(tmp_path / "in", lines=LINES, samples=SAMPLES, seed=SEED,
                               shadows=True)
    granules = write_daac_granules(acq, tmp_path / "granules", chunk_lines=8)
    reads = _count_reads(monkeypatch, DaacReader)
    meta = _run(tmp_path, spec, {"radiance": granules.radiance,
                                 "observation": granules.observation})
    assert meta["cloud_shadow"]["made"] is True
    assert _lines_read(reads[granules.observation.resolve()]) == [1] * LINES
    assert _lines_read(reads[granules.radiance.resolve()]) == [1] * LINES


def test_the_scientists_command_reads_each_input_once(tmp_path, spec, monkeypatch):
    """`l2b-mask` with the buffer and the shadow: the observation once (it was three passes:
    the Earth-Sun distance, the streamed zenith, the four angles), the radiance once."""
    from l2b_mask import cli

    acq = generate_acquisition(tmp_path / "in", lines=LINES, samples=SAMPLES, seed=SEED,
                               shadows=True)
    reads = _count_reads(monkeypatch, EnviReader)
    out = tmp_path / "mask.nc"
    code = cli.main([str(acq.radiance), str(acq.observation), str(out), "--device", "cpu",
                     "--layers", "buffer,shadow", "--location", str(acq.location),
                     "--lines-per-block", "8", "--progress", "none"])
    assert code == 0 and out.is_file()
    assert _lines_read(reads[acq.observation.resolve()]) == [1] * LINES
    assert _lines_read(reads[acq.radiance.resolve()]) == [1] * LINES


def test_envi_run_parses_each_header_once(tmp_path, spec, monkeypatch):
    """Each input's header is parsed once, by the inputs step: the browse image takes the
    radiance's as opened and the provenance finds each binary beside its header (they were
    parsed 7 times for the radiance, twice for the others)."""
    from l2b_mask.inputs import envi

    acq = generate_acquisition(tmp_path / "in", lines=LINES, samples=SAMPLES, seed=SEED,
                               shadows=True)
    parsed: dict[Path, int] = defaultdict(int)
    original = envi._parse_header_text

    def counting(path):
        parsed[Path(path).resolve()] += 1
        return original(path)

    monkeypatch.setattr(envi, "_parse_header_text", counting)
    meta = _run(tmp_path, spec, {"radiance": acq.radiance, "observation": acq.observation,
                                 "location": acq.location, "glt": acq.glt})
    assert meta["cloud_shadow"]["made"] is True
    headers = {name: getattr(acq, name).with_suffix(".hdr").resolve()
               for name in ("radiance", "observation", "location", "glt")}
    assert {name: parsed[path] for name, path in headers.items()} == dict.fromkeys(headers, 1)
