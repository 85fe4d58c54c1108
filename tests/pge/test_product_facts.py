"""Every file of one product carries the same creation time (issue 12: the facts are computed
once, `pge.facts`), read back from the ENVI header, the netCDF, the granule record, the
metadata and the provenance."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import netCDF4
from product_digest import _run

from l2b_mask.inputs.envi import read_header
from l2b_mask.synthetic.scene import generate_acquisition


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def test_one_creation_time_in_every_file(tmp_path, spec, restore_logging):
    acq = generate_acquisition(tmp_path / "in", lines=12, samples=12, seed=2)
    before = datetime.now(UTC).replace(microsecond=0)
    out = _run(tmp_path, {"radiance": str(acq.radiance), "observation": str(acq.observation),
                          "location": str(acq.location), "glt": str(acq.glt)}, {})
    stem = next(out.glob("*.nc")).name[:-3]
    header = read_header(out / f"{stem}.hdr").meta["emit data product creation time"]
    with netCDF4.Dataset(out / f"{stem}.nc") as ds:
        netcdf = ds.getncattr("date_created")
    ummg = json.loads((out / f"{stem}.cmr.json").read_text())
    metadata = json.loads((out / f"{stem}_metadata.json").read_text())["creation_time"]
    record = json.loads((out / f"{stem}_provenance.json").read_text())
    times = {
        "envi": header,
        "netcdf": netcdf,
        "ummg production": ummg["DataGranule"]["ProductionDateTime"],
        **{f"ummg {d['Type']}": d["Date"] for d in ummg["ProviderDates"]},
        "metadata": metadata,
        "provenance": record["product_generation"]["creation_time"],
    }
    parsed = {k: _parse(v) for k, v in times.items()}
    assert len(set(parsed.values())) == 1, times
    created = parsed["envi"]
    assert before <= created <= datetime.now(UTC)
    assert created <= _parse(record["product_generation"]["finished_utc"])
