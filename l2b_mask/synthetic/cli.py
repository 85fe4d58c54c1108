"""`l2b-mask-synthetic OUT_DIR ...`: write one synthetic acquisition (`scene`), in the SDS's
ENVI form, the LP DAAC's granules (`daac`) or both, and print its paths as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from l2b_mask.synthetic.daac import write_formats
from l2b_mask.synthetic.scene import generate_acquisition


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def main(argv: list[str] | None = None) -> int:
    """`l2b-mask-synthetic OUT_DIR ...`: write one acquisition and print its paths as JSON."""
    p = argparse.ArgumentParser(
        prog="l2b-mask-synthetic",
        description="Write a deterministic synthetic EMIT-like L1B acquisition (ENVI).",
    )
    p.add_argument("out_dir", type=Path)
    p.add_argument("--lines", type=int, default=64)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-time", type=_parse_time, default=datetime(2024, 3, 2, 0, 58, 29,
                                                                      tzinfo=UTC),
                   help="UTC acquisition start, ISO 8601 (default 2024-03-02T00:58:29)")
    p.add_argument("--orbit", type=int, default=6201)
    p.add_argument("--scene", type=int, default=0)
    p.add_argument("--build", default="0106")
    p.add_argument("--product-version", default="01")
    p.add_argument("--cloud-fraction", type=float, default=0.3)
    p.add_argument("--fill-lines", type=int, default=None,
                   help="whole fill lines (default: 1 per 32 lines, none below 16 lines)")
    p.add_argument("--no-edge-fill", action="store_true")
    p.add_argument("--partial-band-fill", action="store_true")
    p.add_argument("--solar-zenith", type=float, default=35.0)
    p.add_argument("--obs-float32", action="store_true")
    p.add_argument("--lines-per-block", type=int, default=256)
    p.add_argument("--save-truth", action="store_true")
    p.add_argument("--shadows", action="store_true",
                   help="darken the ground in the clouds' shadows (cloud tops 700-2800 m)")
    p.add_argument("--format", choices=("envi", "daac", "both"), default="envi",
                   help="ENVI rasters (the SDS's), LP DAAC netCDF-4 granules, or both")
    p.add_argument("--float32-header", action="store_true",
                   help="write the ENVI wavelengths/FWHM as the granule's float32 values")
    args = p.parse_args(argv)
    try:
        acq = generate_acquisition(
            args.out_dir, lines=args.lines, samples=args.samples, seed=args.seed,
            start_time=args.start_time, orbit=args.orbit, scene=args.scene, build=args.build,
            version=args.product_version, cloud_fraction=args.cloud_fraction,
            fill_lines=args.fill_lines, edge_fill=not args.no_edge_fill,
            partial_band_fill=args.partial_band_fill, solar_zenith_deg=args.solar_zenith,
            obs_dtype=np.float32 if args.obs_float32 else np.float64,
            lines_per_block=args.lines_per_block, save_truth=args.save_truth,
            shadows=args.shadows,
        )
        formats = write_formats(acq, args.format, float32_header=args.float32_header)
    except (ValueError, OSError) as exc:
        print(f"l2b-mask-synthetic: {exc}", file=sys.stderr)
        return 2
    result = {
        "acquisition_id": acq.acquisition_id,
        "radiance": str(acq.radiance),
        "observation": str(acq.observation),
        "location": str(acq.location),
        "glt": str(acq.glt),
    }
    result.update(formats)
    if acq.truth_path is not None:
        result["truth"] = str(acq.truth_path)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
