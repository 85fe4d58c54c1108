"""`l2b-mask RADIANCE OBSERVATION OUTPUT.tif`: the science without the PGE, for scientists.

The inputs are the SDS's ENVI rasters or the LP DAAC's netCDF granules as downloaded
(`EMIT_L1B_RAD_*.nc`, `EMIT_L1B_OBS_*.nc`), told apart by content.

The options follow the published deployment script (`--proba`, `--threshold`, `--device`,
`--weights`, `--irradiance`, model spec), with `--keep-bands` for instruments other than EMIT:
the model then sees every band. Writes a uint8 cloud-flag GeoTIFF in raw geometry and, with
`--proba`, the probability beside it. Errors are one line on stderr and a non-zero exit, with
the PGE's codes (below); `--debug` shows the traceback of an unexpected one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from l2b_mask.algorithm.inference import (
    PRECISIONS,
    CloudModel,
    InferenceSettings,
    SceneInference,
)
from l2b_mask.errors import ExitCode, L2BMaskError, exit_code_for, text_table
from l2b_mask.inputs.scene import EMIT_RADIANCE_BANDS, Scene
from l2b_mask.products.geotiff import write_flag_and_probability
from l2b_mask.spec import COMPARISONS, ModelSpec

# The exit codes this command can end with: the PGE's table (`l2b_mask.errors.ExitCode`), less
# the run configuration's code (this command has none).
CODES = [c for c in ExitCode if c != ExitCode.RUNCONFIG]


def exit_code(exc: BaseException) -> int:
    """The exit code of a failure: the table's code for the library's typed errors, else 1."""
    return int(exit_code_for(exc))


def _fail(message: str, code: int) -> int:
    """One line on stderr, whatever newlines the message holds."""
    print("l2b-mask: " + " ".join(message.split()), file=sys.stderr)
    return int(code)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="l2b-mask", description=__doc__.split("\n\n")[0],
                                epilog="exit codes:\n" + text_table(CODES),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("radiance", type=Path,
                   help="L1B radiance: ENVI (.hdr or binary) or LP DAAC EMIT_L1B_RAD_*.nc")
    p.add_argument("observation", type=Path,
                   help="L1B observation geometry: ENVI or LP DAAC EMIT_L1B_OBS_*.nc (the same "
                        "format as the radiance)")
    p.add_argument("output", type=Path, help="cloud-flag GeoTIFF to write")
    p.add_argument("--proba", action="store_true", help="also write <output stem>_prob.tif")
    p.add_argument("--threshold", type=float, help="cloud threshold (default: the model spec's)")
    p.add_argument("--comparison", choices=COMPARISONS,
                   help="cloud where P > threshold or P >= threshold (default: the model "
                        "spec's)")
    p.add_argument("--device", default="auto",
                   help="auto, cpu, cuda, cuda:N, or a number: -1 the CPU, N cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, default="float32")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--lines-per-block", type=int, default=64)
    p.add_argument("--spec", type=Path, help="model specification TOML (default: v0.1.0)")
    p.add_argument("--weights", type=Path, help="weights file (default: the spec's)")
    p.add_argument("--irradiance", type=Path, help="irradiance .npy (default: the spec's)")
    p.add_argument("--no-checksum", action="store_true",
                   help="accept weights/irradiance whose sha256 differs from the spec's")
    p.add_argument("--keep-bands", action="store_true",
                   help="no band dropping and any band count (non-EMIT data): the model sees "
                        "every band of the radiance, so give it only bands it can use")
    p.add_argument("--debug", action="store_true",
                   help="let an unexpected error raise, with its traceback")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        return _fail("--threshold must be strictly between 0 and 1", ExitCode.USAGE)
    try:
        settings = InferenceSettings(args.device, args.precision, args.batch_size,
                                     args.lines_per_block)
    except ValueError as exc:
        return _fail(str(exc), ExitCode.USAGE)
    try:
        spec = ModelSpec.load(args.spec)
        scene = Scene.open(args.radiance, args.observation,
                           expected_radiance_bands=None if args.keep_bands else EMIT_RADIANCE_BANDS)
        model = CloudModel.load(spec, settings, args.weights, verify_checksum=not args.no_checksum)
        inference = SceneInference(scene, model, args.irradiance, keep_all_bands=args.keep_bands,
                                   verify_checksum=not args.no_checksum)
        probability = inference.run(settings.lines_per_block)
        decision = spec.decision(args.threshold, args.comparison, "command line")
        flag = decision.flag(probability)
        written = write_flag_and_probability(args.output, flag, probability if args.proba else None)
    except L2BMaskError as exc:
        return _fail(str(exc), exit_code(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", ExitCode.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - one line for the operator, traceback on request
        if args.debug:
            raise
        name = type(exc).__name__
        return _fail(f"unexpected error: {name}: {exc} (run with --debug for the traceback)",
                     ExitCode.UNEXPECTED)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
