"""Cost of the operators' views (campaign_report.html and campaign_collection.json) per report
rewrite, for reports of growing size.

    .venv/bin/python benchmarks/bench_campaign_page.py [--sizes 100 1000 5000]

For each size N: N acquisitions along a track, each with a UMM-G-like granule record on disk
(the GPolygon and time the PGE writes) in its own product folder, 90 % done with a cloud
fraction, 10 % failed; `campaign.html_report.write_views` is run three times with one footprint
reader, as `Report.write` does during a campaign: the first run reads every record, the next
ones find them unchanged. Prints seconds per run and the page's size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from campaign.html_report import PAGE_HTML, write_views  # noqa: E402
from campaign.stac import FootprintReader  # noqa: E402


def make_report(root: Path, n: int) -> dict:
    entries = []
    for i in range(n):
        stem = f"emit20240302t{i:06d}_o06201_s000_l2b_mask_b0106_v01"
        folder = root / "products" / stem[:19]
        folder.mkdir(parents=True)
        lat, lon = -10.0 - 20.0 * i / n, 115.0 + 35.0 * i / n
        ring = [(lon, lat), (lon + 0.7, lat - 0.1), (lon + 0.6, lat - 0.8), (lon - 0.1, lat - 0.7)]
        ring.append(ring[0])
        (folder / f"{stem}.cmr.json").write_text(json.dumps({
            "TemporalExtent": {"RangeDateTime": {"BeginningDateTime": "2024-03-02T00:00:00Z",
                                                 "EndingDateTime": "2024-03-02T00:00:01Z"}},
            "SpatialExtent": {"HorizontalSpatialDomain": {"Geometry": {"GPolygons": [
                {"Boundary": {"Points": [{"Longitude": x, "Latitude": y} for x, y in ring]}}]}}}}))
        failed = i % 10 == 9
        entries.append({"acquisition": stem[:19], "product_stem": stem, "product_dir": str(folder),
                        "status": "failed" if failed else "done",
                        "exit_code": 4 if failed else 0, "error": "input product invalid: x"
                        if failed else None, "attempts": 1, "retries": 0, "reason": None,
                        "failure_log": None,
                        "cloud_fraction_percent": None if failed else (37.0 * i) % 100})
    done = sum(e["status"] == "done" for e in entries)
    return {"campaign": {"started_utc": "2024-03-02T00:00:00+00:00", "output_root": str(root)},
            "totals": {"acquisitions": n, "done": done, "skipped": 0, "failed": n - done,
                       "pending": 0, "pge_runs": n, "retries": 0},
            "acquisitions": entries}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    a = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    for n in a.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            doc = make_report(root, n)
            reader = FootprintReader()
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                write_views(root, doc, reader)
                times.append(time.perf_counter() - t0)
            size = (root / PAGE_HTML).stat().st_size
            print(f"{n:6d} acquisitions: first {times[0]:.2f} s, then {times[1]:.2f} s and "
                  f"{times[2]:.2f} s per rewrite; page {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
