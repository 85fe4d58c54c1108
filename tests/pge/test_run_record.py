"""The provenance says what ran: the run configuration read once (the bytes hashed are the bytes
parsed), and the batch size the model actually ran at after a CUDA out-of-memory halving."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_pge_e2e import run_pge

import pge.ancillary
import pge.cli
from l2b_mask.algorithm.inference import CloudModel
from l2b_mask.algorithm.model import SpecTf
from l2b_mask.synthetic.scene import generate_acquisition

pytestmark = pytest.mark.usefixtures("restore_logging")

LINES = SAMPLES = 16
CAPACITY = 20  # spectra per batch the simulated GPU holds


def _config(tmp_path: Path, spec, **processing: Any) -> dict[str, Any]:
    acq = generate_acquisition(tmp_path / "in", lines=LINES, samples=SAMPLES, seed=5)
    return {"input_files": {k: str(getattr(acq, k)) for k in ("radiance", "observation",
                                                               "location", "glt")},
            "ancillary_files": {"model_weights": str(spec.weights_path),
                                "irradiance": str(spec.irradiance_path)},
            "output": {"directory": str(tmp_path / "out")},
            "processing": {"device": "cpu", **processing}}


def _provenance(tmp_path: Path) -> dict[str, Any]:
    (path,) = (tmp_path / "out").glob("*_provenance.json")
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------
# The run configuration, read once


def _serve(fifo: Path, data: bytes, done: threading.Event) -> None:
    """Hand `data` to the first reader of the pipe; there is nothing for a second one."""
    with fifo.open("wb") as f:  # waits for a reader
        if not done.is_set():
            f.write(data)


def test_the_run_configuration_is_read_once(spec, tmp_path):
    """On a pipe (`l2b-mask-pge <(make-config)`) a run configuration can be read only once: a
    second read would wait for a writer that never comes (the run times out here). The run
    parses and hashes the bytes of its one read."""
    data = (json.dumps(_config(tmp_path, spec), indent=1) + "\n").encode()
    fifo = tmp_path / "rc.json"
    os.mkfifo(fifo)
    done = threading.Event()
    writer = threading.Thread(target=_serve, args=(fifo, data, done), daemon=True)
    writer.start()
    try:
        result = run_pge([str(fifo)], tmp_path, timeout=120)
    finally:
        done.set()
        if writer.is_alive():  # the run never read it: let the writer go
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(5)
    assert result.code == 0, result.stderr
    record = _provenance(tmp_path)["run_configuration"]
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["text"].encode() == data


# ---------------------------------------------------------------------------------------------
# The batch size that ran


class _SmallGpuModel(SpecTf):
    """The model on a device that holds `CAPACITY` spectra per batch: a larger batch fails in
    forward as torch fails on a full GPU."""

    def forward(self, x: torch.Tensor, band_term: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > CAPACITY:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(x, band_term)


class _ReportsCuda(CloudModel):
    """Computes on the CPU (this machine has no GPU) but says it is on CUDA, where an
    out-of-memory error is retried at half the batch size."""

    def __init__(self, spec, model, device, precision, batch_size) -> None:
        model.__class__ = _SmallGpuModel
        super().__init__(spec, model, device, precision, batch_size)
        self.device = torch.device("cuda")

    @torch.inference_mode()
    def _forward(self, reflectance: np.ndarray, band_term: torch.Tensor) -> np.ndarray:
        return self.model(torch.from_numpy(reflectance), band_term).numpy()


def test_the_provenance_records_the_batch_size_that_ran(spec, tmp_path, capsys, monkeypatch):
    cfg = _config(tmp_path, spec, batch_size=64, lines_per_block=8)
    (tmp_path / "rc.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(pge.ancillary, "CloudModel", _ReportsCuda)
    assert pge.cli.main([str(tmp_path / "rc.json")]) == 0, capsys.readouterr().err
    processing = _provenance(tmp_path)["processing"]
    assert processing["device"] == "cuda"
    assert processing["batch_size_configured"] == 64
    assert processing["batch_size"] == 16  # 64 -> 32 -> 16, the first size that fits
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()
              if line.startswith("{")]
    reduced = [e for e in events if e.get("event") == "batch_size_reduced"]
    assert len(reduced) == 1 and (reduced[0]["configured"], reduced[0]["ran"]) == (64, 16)


def test_without_a_halving_the_configured_batch_size_ran(spec, tmp_path, capsys):
    cfg = _config(tmp_path, spec, batch_size=64, lines_per_block=8)
    (tmp_path / "rc.json").write_text(json.dumps(cfg))
    assert pge.cli.main([str(tmp_path / "rc.json")]) == 0, capsys.readouterr().err
    processing = _provenance(tmp_path)["processing"]
    assert processing["batch_size"] == processing["batch_size_configured"] == 64
