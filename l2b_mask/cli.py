"""`l2b-mask RADIANCE OBSERVATION OUTPUT`: the science without the PGE, for scientists.

The inputs are the SDS's ENVI rasters or the LP DAAC's netCDF granules as downloaded
(`EMIT_L1B_RAD_*.nc`, `EMIT_L1B_OBS_*.nc`), told apart by content. The output's extension
picks the format: `.tif` GeoTIFFs (the cloud flag, and with `--proba` the probability beside it,
as the published deployment script), `.hdr`/`.img` the ENVI product, `.nc` the netCDF product.

The options follow the published deployment script (`--proba`, `--threshold`, `--device`,
`--weights`, `--irradiance`, model spec, `--keep-bands`), each also read from its
`SPECTF_DEPLOY_*` environment variable as there (the command line wins). Results are written
to a scratch folder beside the output and renamed into place together, so a failed run leaves
the previous result whole. Errors are one line on stderr and a non-zero exit, with the PGE's
codes (below); progress is a bar on a terminal, JSON lines on stdout otherwise, then the paths
written, one per line. `--debug` shows the traceback of an unexpected error. SIGTERM stops it as
Ctrl-C does: the scratch folder is removed and the previous result stays whole.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from l2b_mask.algorithm.inference import (
    PRECISIONS,
    CloudModel,
    InferenceSettings,
    SceneInference,
)
from l2b_mask.command_files import (
    GEOTIFF,
    NETCDF,
    Computed,
    Request,
    Staging,
    output_format,
    parse_layers,
    write_request,
)
from l2b_mask.errors import (
    ExitCode,
    InputProductError,
    L2BMaskError,
    UsageError,
    exit_code_for,
    text_table,
)
from l2b_mask.inputs.scene import EMIT_RADIANCE_BANDS, Scene
from l2b_mask.scan_progress import MODES, ScanProgress
from l2b_mask.spec import COMPARISONS, ModelSpec

if TYPE_CHECKING:
    from l2b_mask.algorithm.beyond_cloud import BeyondCloudSettings
    from l2b_mask.algorithm.inference import KeptReflectance
    from l2b_mask.inputs.location import LocationArrays
    from l2b_mask.inputs.observation import ObservationGeometry

# What the PGE's exit codes (`l2b_mask.errors.ExitCode`) mean for this command: all of them but
# the run configuration's (it has none), in its own words (no log, no run configuration).
MEANINGS = {
    ExitCode.SUCCESS: "Every output written (their paths on stdout, one per line).",
    ExitCode.UNEXPECTED: "A bug or an unforeseen condition (--debug shows the traceback).",
    ExitCode.USAGE: "Bad command line or SPECTF_DEPLOY_* variable: an unknown option or value, "
                    "a missing RADIANCE, OBSERVATION or OUTPUT, an output extension it cannot "
                    "write.",
    ExitCode.INPUT: "An input product (radiance, observation, location, GLT) is missing or "
                    "malformed.",
    ExitCode.ANCILLARY: "An ancillary file (weights, irradiance, model specification) is "
                        "missing, has the wrong checksum or the wrong shapes.",
    ExitCode.PROCESSING: "The computation failed: device unavailable, out of memory after "
                         "retries.",
    ExitCode.OUTPUT: "An output could not be written; the previous files at those paths stay "
                     "as they were.",
    ExitCode.INTERRUPTED: "SIGTERM or SIGINT received; nothing new was published, the "
                          "previous files stay.",
}
CODES = list(MEANINGS)
ENV_PREFIX = "SPECTF_DEPLOY_"
# The published script's environment variables (after the prefix) and the argument each sets.
ENV_ARGUMENTS = {"RDNFP": "radiance", "OBSFP": "observation", "OUTFP": "output"}
ENV_OPTIONS = {"WEIGHTS": "weights", "IRRADIANCE": "irradiance", "ARCH_SPEC": "spec",
               "DEVICE": "device", "THRESHOLD": "threshold"}
ENV_FLAGS = {"PROBA": "proba", "KEEP_BANDS": "keep_bands"}
_TRUE, _FALSE = {"1", "true", "t", "yes", "y", "on"}, {"0", "false", "f", "no", "n", "off", ""}


def exit_code(exc: BaseException) -> int:
    """The exit code of a failure: the table's code for the library's typed errors, else 1."""
    return int(exit_code_for(exc))


def _fail(message: str, code: int) -> int:
    """One line on stderr, whatever newlines the message holds."""
    print("l2b-mask: " + " ".join(message.split()), file=sys.stderr)
    return int(code)


def _environment_help() -> str:
    names = [*ENV_ARGUMENTS, *ENV_FLAGS, *ENV_OPTIONS]
    return ("environment (as the published deployment script; the command line wins): "
            + ", ".join(ENV_PREFIX + n for n in names) + ". ARCH_SPEC names the model "
            "specification (TOML); PROBA and KEEP_BANDS take 1/0, true/false, yes/no, on/off.")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see l2b-mask --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="l2b-mask", description=__doc__.split("\n\n")[0],
                epilog=_environment_help() + "\n\nexit codes:\n" + text_table(CODES, MEANINGS),
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("radiance", type=Path, nargs="?",
                   help="L1B radiance: ENVI (.hdr or binary) or LP DAAC EMIT_L1B_RAD_*.nc")
    p.add_argument("observation", type=Path, nargs="?",
                   help="L1B observation geometry: ENVI or LP DAAC EMIT_L1B_OBS_*.nc (the same "
                        "format as the radiance)")
    p.add_argument("output", type=Path, nargs="?",
                   help="what to write: .tif (GeoTIFF cloud flag), .hdr/.img (ENVI product) or "
                        ".nc (netCDF product)")
    p.add_argument("--proba", action="store_true",
                   help="also write <output stem>_prob.tif (the ENVI and netCDF products always "
                        "hold the probability)")
    p.add_argument("--layers", help="also the cloud buffer distance and/or the cloud shadow: "
                                    "'buffer', 'shadow' or 'buffer,shadow' (GeoTIFF: "
                                    "<stem>_buffer.tif, <stem>_shadow.tif; the shadow needs a "
                                    "location)")
    p.add_argument("--ortho", action="store_true",
                   help="GeoTIFFs on the GLT's map grid (cloud-optimised, EPSG:4326) instead of "
                        "the instrument geometry; needs a GLT (the radiance granule's, or --glt)")
    p.add_argument("--location", type=Path,
                   help="L1B location (ENVI LOC, or a granule with a location group); a radiance "
                        "granule's own is used by default")
    p.add_argument("--glt", type=Path, help="L1B GLT (ENVI, or a granule with one)")
    p.add_argument("--threshold", type=float, help="cloud threshold (default: the model spec's)")
    p.add_argument("--comparison", choices=COMPARISONS,
                   help="cloud where P > threshold or P >= threshold (default: the model "
                        "spec's)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, or a number: -1 the CPU, "
                                    "N cuda:N")
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
    p.add_argument("--progress", choices=MODES, default="auto",
                   help="auto: a bar on a terminal (stderr), else JSON lines on stdout")
    p.add_argument("--debug", action="store_true",
                   help="let an unexpected error raise, with its traceback")
    return p


def apply_environment(args: argparse.Namespace, environ: dict[str, str]) -> argparse.Namespace:
    """Fill what the command line left unset from `SPECTF_DEPLOY_*` (UsageError naming a
    variable whose value is not of its kind)."""
    for name, dest in {**ENV_ARGUMENTS, **ENV_OPTIONS}.items():
        value = environ.get(ENV_PREFIX + name)
        if getattr(args, dest) is None and value:
            setattr(args, dest, _typed(name, dest, value))
    for name, dest in ENV_FLAGS.items():
        value = environ.get(ENV_PREFIX + name)
        if value is not None and not getattr(args, dest):
            text = value.strip().lower()
            if text not in _TRUE | _FALSE:
                raise UsageError(f"{ENV_PREFIX}{name}={value!r} is not a boolean (1/0, true/false)")
            setattr(args, dest, text in _TRUE)
    for dest in ENV_ARGUMENTS.values():
        if getattr(args, dest) is None:
            variable = next(k for k, v in ENV_ARGUMENTS.items() if v == dest)
            raise UsageError(f"{dest.upper()} is required (or {ENV_PREFIX}{variable})")
    return args


def _typed(name: str, dest: str, value: str) -> Any:
    if dest == "threshold":
        try:
            return float(value)
        except ValueError:
            raise UsageError(f"{ENV_PREFIX}{name}={value!r} is not a number") from None
    return value if dest == "device" else Path(value)


def _request(args: argparse.Namespace) -> Request:
    """What to write, checked before anything is computed (UsageError)."""
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise UsageError("--threshold must be strictly between 0 and 1")
    fmt = output_format(args.output)
    if args.ortho and fmt != GEOTIFF:
        raise UsageError("--ortho writes GeoTIFFs: give a .tif output (the netCDF product "
                         "carries the GLT itself)")
    return Request(args.output, fmt, bool(args.proba), parse_layers(args.layers), bool(args.ortho))


class _Stops:
    """SIGTERM (a scheduler's stop) and SIGINT unwind a run like Ctrl-C, through the scratch
    folder's removal and the publication's roll-back, until its outputs are published; after
    that they are ignored (the result is complete and its paths are being printed)."""

    def __init__(self) -> None:
        self.published = False

    def handler(self, signum: int, frame: object) -> None:
        if not self.published:
            raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Only the main thread takes signals; an inherited SIG_IGN of SIGINT (a background
        job) is kept."""
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                if sig == signal.SIGINT and signal.getsignal(sig) is signal.SIG_IGN:
                    continue
                previous[sig] = signal.signal(sig, self.handler)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    stops = _Stops()
    with stops.installed():
        return _main(argv, stops)


def _main(argv: list[str] | None, stops: _Stops) -> int:
    try:
        args = _parser().parse_args(argv)
        args = apply_environment(args, dict(os.environ))
        request = _request(args)
        settings = InferenceSettings(args.device or "auto", args.precision, args.batch_size,
                                     args.lines_per_block)
    except (UsageError, ValueError) as exc:
        return _fail(str(exc), ExitCode.USAGE)
    progress: ScanProgress | None = None
    try:
        scene = Scene.open(args.radiance, args.observation,
                           expected_radiance_bands=None if args.keep_bands else EMIT_RADIANCE_BANDS)
        geo = _geography(args, scene, request)
        progress = ScanProgress(scene.lines, scene.samples, args.progress)
        computed = _compute(args, settings, scene, request, geo, progress)
        progress.close()
        written = _write(request, computed, stops)
    except L2BMaskError as exc:
        return _closed(progress, str(exc), exit_code(exc))
    except KeyboardInterrupt:
        return _closed(progress, "interrupted", ExitCode.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - one line for the operator, traceback on request
        if args.debug:
            raise
        name = type(exc).__name__
        return _closed(progress, f"unexpected error: {name}: {exc} (run with --debug for the "
                                 "traceback)", ExitCode.UNEXPECTED)
    for path in written:
        print(path)
    return 0


def _closed(progress: ScanProgress | None, message: str, code: int) -> int:
    if progress is not None:
        progress.close()
    return _fail(message, code)


def _geography(args: argparse.Namespace, scene: Scene, request: Request) -> dict[str, Any]:
    """The location and GLT the request needs: named, or the radiance granule's own; an input
    error when the request needs one that is not there (before any compute)."""
    from l2b_mask.inputs.daac import DaacGranule
    from l2b_mask.inputs.formats import is_netcdf

    rdn = scene.radiance_header
    location_file, glt_file = args.location, args.glt
    if isinstance(rdn, DaacGranule):
        location_file = location_file or (rdn.path if rdn.has_location else None)
        glt_file = glt_file or (rdn.path if rdn.has_glt else None)
    if "shadow" in request.layers and location_file is None:
        raise UsageError("--layers shadow needs a location: give --location (the L1B LOC) or a "
                         "radiance granule with its location group")
    if request.ortho and glt_file is None:
        raise InputProductError(args.radiance, "--ortho needs a GLT: the radiance has none and "
                                               "--glt is not given")
    shape = (scene.lines, scene.samples)
    geo: dict[str, Any] = {"location": None, "glt": None}
    wants_location = bool(request.layers) or request.format == NETCDF
    if location_file is not None and wants_location:
        from l2b_mask.inputs.daac import read_granule_location
        from l2b_mask.inputs.location import read_location

        read = read_granule_location if is_netcdf(location_file) else read_location
        geo["location"] = read(location_file, shape)
    if glt_file is not None and (request.ortho or request.format == NETCDF):
        from l2b_mask.inputs.daac import read_granule_glt
        from l2b_mask.inputs.glt import read_glt

        geo["glt"] = (read_granule_glt if is_netcdf(glt_file) else read_glt)(glt_file, shape)
    return geo


def _compute(args: argparse.Namespace, settings: InferenceSettings, scene: Scene,
             request: Request, geo: dict[str, Any], progress: ScanProgress) -> Computed:
    """Probability, flag and the layers asked for, as the PGE computes them."""
    from l2b_mask.algorithm.beyond_cloud import BeyondCloudSettings, reflectance_bands_needed
    from l2b_mask.inputs.observation import read_observation
    from l2b_mask.products.layers import prepare

    spec = ModelSpec.load(args.spec)
    model = CloudModel.load(spec, settings, args.weights, verify_checksum=not args.no_checksum)
    beyond = BeyondCloudSettings()
    keep = reflectance_bands_needed(beyond, "shadow" in request.layers)
    observation = read_observation(scene)  # one pass: the distance, the zenith, the four angles
    inference = SceneInference(scene, model, args.irradiance, keep_all_bands=args.keep_bands,
                               verify_checksum=not args.no_checksum, keep_reflectance_nm=keep,
                               observation=observation)
    ran = inference.run_keeping(settings.lines_per_block, on_block=progress)
    probability, kept = ran.probability, ran.reflectance
    decision = spec.decision(args.threshold, args.comparison, "command line")
    arrays = {"flag": decision.flag(probability), "probability": probability}
    if request.layers:
        arrays.update(_beyond(observation, arrays["flag"], geo["location"], request, beyond, kept))
    attrs = {"title": "EMIT L2B cloud mask (SpecTf), written by l2b-mask",
             "source": Path(args.radiance).name, "cloud_model_version": spec.version,
             "cloud_threshold": decision.threshold,
             "cloud_threshold_comparison": decision.comparison}
    return Computed(prepare(arrays), geo["location"], geo["glt"], attrs)


def _beyond(observation: ObservationGeometry, flag: np.ndarray, location: LocationArrays | None,
            request: Request, settings: BeyondCloudSettings,
            kept: KeptReflectance | None) -> dict[str, np.ndarray]:
    """The buffer distance and the shadow asked for, by the library's `beyond_cloud` when the
    shadow is; the buffer alone otherwise (at the location's pixel size, as the PGE)."""
    from l2b_mask.algorithm.beyond_cloud import beyond_cloud, sun_view_angles
    from l2b_mask.algorithm.cloud_buffer import cloud_buffer_distance
    from l2b_mask.algorithm.geometry import ground_spacing, nominal_ground_spacing

    angles = sun_view_angles(observation)
    if "shadow" in request.layers:
        result = beyond_cloud(flag, angles, location, settings,
                              kept.planes() if kept is not None else None,
                              kept.wavelengths_nm.tolist() if kept is not None else ())
        both = {"buffer_distance": result.buffer_distance, "shadow": result.shadow}
        return {name: both[name] for name in request.layers}
    spacing = (ground_spacing(location.lon, location.lat) if location is not None
               else nominal_ground_spacing())
    return {"buffer_distance": cloud_buffer_distance(flag, angles.solar_zenith, spacing.mean_m,
                                                     settings.buffer_cloud_height_m)}


def _write(request: Request, computed: Computed, stops: _Stops) -> list[Path]:
    """Every file into scratch, then all renamed into place (or none); the final paths."""
    files = request.files()
    with Staging(request.output.parent if str(request.output.parent) else Path()) as staging:
        write_request(request, computed, staging.paths(files))
        staging.publish(files)
        stops.published = True
    return list(files.values())


if __name__ == "__main__":
    sys.exit(main())
