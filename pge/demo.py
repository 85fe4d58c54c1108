"""`l2b-mask-demo`: make a synthetic EMIT acquisition, write its run configuration, run the PGE.

Shows the whole chain on a machine with nothing but this project and its ancillary files:
the inputs, run configuration and products all land under one folder (default demo_output/).
`--format daac` gives the PGE the acquisition as the LP DAAC distributes it instead: the two
netCDF granules `EMIT_L1B_RAD_001_...nc` and `EMIT_L1B_OBS_001_...nc` alone (the radiance
granule carries the location and the GLT), and the product is named `EMIT_L2B_MASK_001_...`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from l2b_mask.spec import ModelSpec
from l2b_mask.synthetic.daac import write_formats
from l2b_mask.synthetic.scene import generate_acquisition
from pge import cli


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="l2b-mask-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", type=Path, default=Path("demo_output"))
    p.add_argument("--lines", type=int, default=128)
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="float32")
    p.add_argument("--format", choices=("envi", "daac"), default="envi",
                   help="inputs as the SDS's ENVI rasters (default) or the LP DAAC's granules")
    args = p.parse_args(argv)
    folder = args.folder.resolve()
    acquisition = generate_acquisition(folder / "inputs", lines=args.lines, samples=args.samples,
                                       seed=args.seed)
    inputs = {"radiance": str(acquisition.radiance), "observation": str(acquisition.observation),
              "location": str(acquisition.location), "glt": str(acquisition.glt)}
    if args.format == "daac":  # the granules replace the ENVI files; location/GLT from the RAD
        granules = write_formats(acquisition, "daac")
        inputs = {"radiance": granules["radiance"], "observation": granules["observation"]}
    spec = ModelSpec.load()
    config = {
        "input_files": inputs,
        "ancillary_files": {"model_weights": str(spec.weights_path),
                            "irradiance": str(spec.irradiance_path),
                            "model_spec": str(spec.path)},
        "output": {"directory": str(folder / "products"), "overwrite": True, "write_ortho": True},
        "processing": {"device": args.device, "precision": args.precision},
    }
    runconfig = folder / "runconfig.json"
    runconfig.write_text(json.dumps(config, indent=2) + "\n")
    code = cli.main([str(runconfig)])
    if code == 0:
        print(f"demo: products in {folder / 'products'} (run configuration {runconfig})")
    return code


if __name__ == "__main__":
    sys.exit(main())
