"""One PGE run as named steps: pre-process, run, post-process.

Each step takes the run's state (`PgeRun`), does one job and records its time, so each can be
tested alone and a failure names the step it happened in. Everything is written in scratch
and moved into the output folder only after it has been read back and validated; nothing
here computes science, it calls `l2b_mask` for that.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from l2b_mask.envi import read_header
from l2b_mask.errors import InputProductError, OutputError
from l2b_mask.inference import CloudModel, InferenceSettings, SceneInference, cloud_flag
from l2b_mask.products.browse import write_browse_png
from l2b_mask.products.envi import read_envi_product, write_envi_product
from l2b_mask.products.glt import Glt, read_glt
from l2b_mask.products.naming import ProductFiles, parse_identity, product_files, product_stem
from l2b_mask.products.netcdf import (
    LocationArrays,
    emit_global_attributes,
    location_bounds,
    read_location,
    read_netcdf_product,
    write_netcdf_product,
)
from l2b_mask.products.ortho import orthorectify, write_ortho_geotiff
from l2b_mask.products.summary import CloudFraction, cloud_fraction
from l2b_mask.products.ummg import (
    build_ummg,
    day_night_flag,
    mean_solar_angles,
    swath_polygon,
    write_ummg,
)
from l2b_mask.scene import Scene, parse_emit_time
from l2b_mask.spec import ModelSpec, sha256_of, verify_sha256
from pge import logging as pge_logging
from pge import provenance
from pge.errors import OutputProductError
from pge.locking import OWNER_LOCK, FileLock, acquire_acquisition_lock, scratch_is_live
from pge.runconfig import RunConfig

EMIT_TIME = "%Y-%m-%dT%H:%M:%S%z"
PROGRESS_EVERY_S = 10.0
# A full disk (ENOSPC), a file-size limit (EFBIG, once SIGXFSZ is ignored) or a quota (EDQUOT):
# wherever the write happens (product, metadata, the log file), it is an output failure.
DISK_FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
# An output failure of these steps is checked for a cause (`write_failure_cause`); those of the
# others (product exists, lock held, name collides) are decisions, not failed writes.
WRITE_STEPS = frozenset({"write_products", "validate_products", "write_metadata",
                         "write_granule_metadata", "write_provenance", "publish"})
# Less free space than this after a failed write, with no errno to say so: the disk is the cause.
LOW_SPACE_BYTES = 64 * 2**20
JOURNAL = "publish_journal.json"
BACKUP = "backup"


@dataclass
class PgeRun:
    """The state of one run, filled in step by step."""

    runconfig_path: Path
    run_command: str
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    timings_s: dict[str, float] = field(default_factory=dict)
    config: RunConfig | None = None
    config_bytes: bytes = b""
    stem: str = ""
    scratch: Path | None = None
    staged: ProductFiles | None = None
    final: ProductFiles | None = None
    scene: Scene | None = None
    glt: Glt | None = None
    location: LocationArrays | None = None
    solar_angles: tuple[float | None, float | None] = (None, None)
    spec: ModelSpec | None = None
    threshold: float = 0.0
    inference: SceneInference | None = None
    probability: np.ndarray | None = None
    flag: np.ndarray | None = None
    fraction: CloudFraction | None = None
    published: list[Path] = field(default_factory=list)
    lock: FileLock | None = None
    owner_lock: FileLock | None = None
    publish_lock: FileLock | None = None
    publish_dir: Path | None = None
    committed: bool = False
    # False from the commit of the publication on: a signal then no longer stops the run
    interruptible: bool = True
    radiance_not_finite: int = 0
    # product files the configuration asks for but this run could not make, with the reason
    skipped: dict[str, str] = field(default_factory=dict)
    radiance_no_value: int = 0
    geometry_no_value: int = 0

    @property
    def log(self) -> Any:
        return pge_logging.get_logger()


@contextmanager
def step(run: PgeRun, name: str) -> Iterator[None]:
    """Time a step and log its start and end; a full disk anywhere in it is an output failure."""
    with output_failure(run, name):
        run.log.info("step_started", step=name)
        t0 = time.perf_counter()
        yield
        run.timings_s[name] = time.perf_counter() - t0
        run.log.info("step_finished", step=name, seconds=round(run.timings_s[name], 3))


@contextmanager
def output_failure(run: PgeRun, name: str) -> Iterator[None]:
    """The one place where write failures get their cause: an OSError of a full disk or a file
    size limit becomes an output failure (exit 7), and an output failure of a step that writes
    (the libraries' own, e.g. netCDF's bare 'HDF error') is completed with the cause the
    system can tell: little space left on the filesystem, or a file size limit in force."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        where = exc.filename or run.scratch or (run.config.output.directory if run.config else None)
        cause = write_failure_cause(run, where, exc.errno)
        raise OutputProductError(where, f"cannot write ({exc.strerror}): " + (
            cause or "output disk full or file size limit reached")) from None
    except (OutputError, OutputProductError) as exc:
        if name not in WRITE_STEPS:
            raise
        cause = write_failure_cause(run, exc.path or run.scratch)
        if cause is None or cause in exc.problem:
            raise
        raise OutputProductError(exc.path, f"{exc.problem} ({cause})") from None


def write_failure_cause(run: PgeRun, where: Path | str | None,
                        err: int | None = None) -> str | None:
    """Why writing under `where` failed, as far as the system says, or None.

    `err` is the errno when known. Without one (a library that words its own failure), a file
    size limit counts when it is set and small enough for a product file to reach it, and the
    filesystem when under `LOW_SPACE_BYTES` is free (the failed file is already removed, so
    'full' cannot mean zero bytes).
    """
    causes = []
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    limited = soft != resource.RLIM_INFINITY
    if limited and (err == errno.EFBIG or err is None and soft < _largest_file(run)):
        causes.append(f"file size limit {soft} bytes reached")
    folder = _existing_folder(where)
    if folder is not None and err != errno.EFBIG:
        try:
            stat = os.statvfs(folder)
        except OSError:
            stat = None
        if stat is not None:
            free = stat.f_bavail * stat.f_frsize
            if stat.f_files > 0 and stat.f_favail == 0 and err in (None, errno.ENOSPC):
                causes.append(f"no free inodes left on {_mount_point(folder)}")
            elif err == errno.ENOSPC or (err is None and free < LOW_SPACE_BYTES):
                causes.append(f"no space left: {_human_bytes(free)} free on {_mount_point(folder)}")
    return "; ".join(causes) or None


def _largest_file(run: PgeRun) -> int:
    """A bound on the size of any file the run writes: a few dozen bytes per pixel (flag,
    probability, location, GLT), plus headers and attributes."""
    pixels = run.scene.lines * run.scene.samples if run.scene is not None else 2_000_000
    return 64 * pixels + 2**20


def _existing_folder(where: Path | str | None) -> Path | None:
    if where is None:
        return None
    path = Path(where)
    while not path.is_dir():
        if path.parent == path:
            return None
        path = path.parent
    return path


def _mount_point(folder: Path) -> Path:
    path = folder.absolute()
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return path


def _human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 2**20:
        return f"{n // 1024} KiB"
    return f"{n / 2**20:.1f} MiB"


# --------------------------------------------------------------------------------------------
# Pre-process


def load_config(run: PgeRun) -> None:
    """Read and validate the run configuration, then start logging at its level."""
    run.config, run.config_bytes = RunConfig.read(run.runconfig_path)
    pge_logging.configure(run.config.log_level, console=sys.stdout)


def prepare_output(run: PgeRun) -> None:
    """Output folder usable, the acquisition locked, leftovers of killed runs recovered, no
    product in the way (unless overwrite), scratch ready, log open."""
    cfg = run.config
    assert cfg is not None
    out = cfg.output.directory
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputProductError(out, f"cannot create output folder ({exc.strerror})") from None
    if not out.is_dir():
        raise OutputProductError(out, "output folder is not a folder")
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputProductError(out, "output folder is not writable")
    run.stem = product_stem(cfg.input_files.radiance, cfg.output.product_version)
    run.final = product_files(run.stem, out)
    inputs = {p.resolve() for p in _input_paths(cfg).values()}
    clash = [p for p in run.final.all() if p.resolve() in inputs]
    if clash:
        raise OutputProductError(clash[0], "product name collides with an input file")
    run.lock = acquire_acquisition_lock(out, run.stem)
    parent = cfg.output.scratch_directory or out
    for folder in dict.fromkeys((out, parent)):
        recover_leftovers(run, folder)
    existing = [p for p in run.final.all() if p.exists()]
    if existing and not cfg.output.overwrite:
        problem = product_problem(run.final)
        if problem is None:
            raise OutputProductError(
                existing[0], "product already exists; set output.overwrite to true to replace it")
        raise OutputProductError(
            existing[0], f"an incomplete product is in the way ({problem}); set "
                         "output.overwrite to true to replace it")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        run.scratch = Path(tempfile.mkdtemp(prefix=f".{run.stem}.", suffix=".scratch", dir=parent))
        run.owner_lock = FileLock(run.scratch / OWNER_LOCK, remove=False)
        run.owner_lock.try_acquire()
    except OSError as exc:
        raise OutputProductError(parent, f"cannot create scratch folder ({exc.strerror})") from None
    run.staged = product_files(run.stem, run.scratch)
    pge_logging.open_file(run.staged.log)
    run.log.info("run_configuration", path=str(run.runconfig_path), product=run.stem,
                 output=str(out), scratch=str(run.scratch), overwrite=cfg.output.overwrite)


def recover_leftovers(run: PgeRun, folder: Path) -> None:
    """Finish what killed runs of this acquisition left in `folder`.

    Called with the acquisition lock held. A scratch folder `.<stem>.*.scratch` whose owner
    lock is free belongs to a dead run: if it holds a publish journal, the publication is
    rolled back (old product restored) or, when it was committed, left as it is; then the
    folder is removed. Live scratch folders (another output folder sharing the scratch
    directory) are left alone.
    """
    assert run.final is not None
    for scratch in sorted(folder.glob(f".{glob_escape(run.stem)}.*.scratch")):
        if not scratch.is_dir() or scratch_is_live(scratch):
            continue
        journal = _read_journal(scratch)
        if journal is not None and Path(journal.get("output", "")) == run.final.envi_data.parent:
            outcome = "kept the committed product" if journal.get("state") == "committed" else (
                "rolled back the interrupted publication")
            if journal.get("state") != "committed":
                try:
                    _roll_back(scratch, run.final, journal)
                except OSError as exc:
                    raise OutputProductError(
                        scratch, f"cannot restore the product of a killed run ({exc.strerror}); "
                                 "its backup is kept there") from None
            run.log.warning("recovered_killed_run", scratch=str(scratch), action=outcome)
        else:
            run.log.warning("removed_killed_run_scratch", scratch=str(scratch))
        shutil.rmtree(scratch, ignore_errors=True)


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def product_problem(files: ProductFiles) -> str | None:
    """None when the product in place is complete: its provenance exists and every output it
    lists is there with the recorded size and sha256. Otherwise what is wrong, in words."""
    try:
        record = json.loads(files.provenance.read_text(encoding="utf-8"))
        outputs = record["outputs"]
    except FileNotFoundError:
        return f"{files.provenance.name} is missing"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{files.provenance.name} is unreadable ({type(exc).__name__})"
    return _checksum_problem(outputs, files.envi_data.parent)


def _checksum_problem(outputs: Any, folder: Path) -> str | None:
    if not isinstance(outputs, dict) or not outputs:
        return "the provenance lists no outputs"
    for key, entry in outputs.items():
        if not isinstance(entry, dict) or "sha256" not in entry:
            continue  # the log: written after the record, so it has no checksum
        path = folder / Path(str(entry.get("path", ""))).name
        if not path.is_file():
            return f"{path.name} ({key}) is missing"
        if path.stat().st_size != entry.get("size_bytes") or sha256_of(path) != entry["sha256"]:
            return f"{path.name} ({key}) does not match its checksum in the provenance"
    return None


def validate_inputs(run: PgeRun) -> None:
    """Open the scene (every header and size check) and the optional geolocation files."""
    cfg = run.config
    assert cfg is not None
    run.scene = Scene.open(cfg.input_files.radiance, cfg.input_files.observation)
    _check_time_range(run)
    for name in ("location", "glt"):
        path = getattr(cfg.input_files, name)
        if path is None:
            continue
        if name == "glt":  # read whole (it is small): every entry must point inside this swath
            run.glt = read_glt(path, (run.scene.lines, run.scene.samples))
            continue
        h = read_header(path)
        if (h.lines, h.samples) != (run.scene.lines, run.scene.samples):
            raise InputProductError(
                h.header_path, f"location is {h.lines} x {h.samples} but the radiance is "
                               f"{run.scene.lines} x {run.scene.samples}")
    run.log.info("inputs_valid", lines=run.scene.lines, samples=run.scene.samples,
                 bands=run.scene.radiance_header.bands,
                 observation_bands=run.scene.observation_header.bands)


def _check_time_range(run: PgeRun) -> None:
    """The acquisition's stop must not precede its start: the granule's temporal extent would be
    reversed. `Scene` compares the two header times; this covers a start that only the EMIT
    file name gives."""
    scene = run.scene
    assert scene is not None and run.config is not None
    identity = parse_identity(run.config.input_files.radiance)
    if scene.acquisition_start is not None or identity is None or scene.acquisition_stop is None:
        return
    if scene.acquisition_stop < identity.start_time:
        raise InputProductError(
            scene.radiance_header.header_path,
            f"'emit acquisition stop time' {_timestamp(scene.acquisition_stop)} is before the "
            f"acquisition start {_timestamp(identity.start_time)} (from the file name)")


def validate_ancillary(run: PgeRun) -> None:
    """Model spec, weights and irradiance checksums, the model on its device, scene constants."""
    cfg = run.config
    assert cfg is not None and run.scene is not None
    run.spec = ModelSpec.load(cfg.ancillary_files.spec_path())
    anc = cfg.ancillary_files
    verify_sha256(anc.model_weights, run.spec.weights_sha256, "model weights")
    verify_sha256(anc.irradiance, run.spec.irradiance_sha256, "solar irradiance")
    if cfg.processing.threads is not None:
        torch.set_num_threads(cfg.processing.threads)
    settings = _settings(cfg)
    model = CloudModel.load(run.spec, settings, anc.model_weights, verify_checksum=False)
    run.inference = SceneInference(run.scene, model, anc.irradiance, verify_checksum=False)
    run.threshold = cfg.algorithm.threshold_for(run.spec)
    run.log.info("ancillary_valid", model_version=run.spec.version, device=str(model.device),
                 precision=model.precision, implementation=model.model.implementation(model.device),
                 threads=torch.get_num_threads(),
                 threshold=run.threshold, comparison=cfg.algorithm.comparison,
                 model_bands=int(run.inference.bands.size),
                 earth_sun_distance_au=run.inference.earth_sun_au)


def preprocess(run: PgeRun) -> None:
    with step(run, "load_config"):
        load_config(run)
    with step(run, "prepare_output"):
        prepare_output(run)
    with step(run, "validate_inputs"):
        validate_inputs(run)
    with step(run, "validate_ancillary"):
        validate_ancillary(run)


# --------------------------------------------------------------------------------------------
# Run


def infer(run: PgeRun) -> None:
    """Stream the scene through the model, logging progress with rate and ETA."""
    cfg, inference, scene = run.config, run.inference, run.scene
    assert cfg is not None and inference is not None and scene is not None
    t0 = time.perf_counter()
    last = [t0]
    valid_done = [0]

    def progress(block: Any) -> None:
        valid_done[0] += int(np.count_nonzero(~np.isnan(block.probability)))
        run.radiance_not_finite += getattr(block, "radiance_not_finite", 0)
        now = time.perf_counter()
        if now - last[0] < PROGRESS_EVERY_S and block.stop != scene.lines:
            return
        last[0] = now
        elapsed = now - t0
        rate = block.stop * scene.samples / elapsed if elapsed > 0 else 0.0
        remaining = (scene.lines - block.stop) * scene.samples
        run.log.info("inference_progress", lines_done=block.stop, lines_total=scene.lines,
                     pixels_per_s=round(rate, 1), eta_s=round(remaining / rate, 1) if rate else None,
                     pixels_with_value=valid_done[0])

    run.probability = inference.run(cfg.processing.lines_per_block, on_block=progress)
    if run.radiance_not_finite:
        run.log.warning("radiance_not_finite", pixels=run.radiance_not_finite,
                        detail="pixels with NaN or Inf radiance in a model band have no value")
    if not np.isfinite(run.probability).any():
        raise _no_value_error(scene)


def _no_value_error(scene: Scene) -> InputProductError:
    """Exit 4 when the scene streamed but no pixel got a value: name the file to blame."""
    nodata = scene.observation_nodata
    sun_up = 0
    with scene.observation_reader() as reader:
        for start in range(0, scene.lines, 512):
            sza = reader.read_band(start, min(start + 512, scene.lines), scene.solar_zenith_band)
            sun_up += int(np.count_nonzero(np.isfinite(sza) & (sza != nodata) & (sza >= 0)
                                           & (sza < 90)))
    if sun_up == 0:
        return InputProductError(scene.observation_header.header_path,
                                 "no pixel has a value: the solar zenith is fill, not finite or "
                                 ">= 90 degrees in every pixel")
    return InputProductError(scene.radiance_header.header_path,
                             "no pixel has a value: every pixel with the sun up has -9999, NaN or "
                             "Inf radiance in a model band")


# --------------------------------------------------------------------------------------------
# Post-process


def write_products(run: PgeRun) -> None:
    cfg, staged = run.config, run.staged
    assert cfg is not None and staged is not None and run.probability is not None
    run.flag = cloud_flag(run.probability, run.threshold, cfg.algorithm.comparison)
    run.fraction = cloud_fraction(run.flag)
    if cfg.output.write_ummg and parse_emit_time(_emit_common(run)["emit acquisition start time"]) is None:
        run.skipped["ummg"] = ("the radiance has no EMIT name and its header no 'emit acquisition "
                               "start time': a granule record needs the acquisition time")
        run.log.warning("granule_metadata_skipped", reason=run.skipped["ummg"])
    if cfg.output.write_envi:
        write_envi_product(staged.envi_data, run.probability, run.flag, _emit_common(run))
    if cfg.input_files.location is not None:
        run.location = read_location(cfg.input_files.location, (run.scene.lines, run.scene.samples))
    run.solar_angles = mean_solar_angles(cfg.input_files.observation)
    if cfg.output.write_netcdf:
        base = emit_global_attributes(product_version=cfg.output.product_version,
                                      radiance_path=cfg.input_files.radiance,
                                      day_night_flag=day_night_flag(run.solar_angles[0]))
        write_netcdf_product(staged.netcdf, run.probability, run.flag, base_attrs=base,
                             global_attrs=_netcdf_attrs(run), location=run.location, glt=run.glt)
    if cfg.output.write_browse:
        write_browse_png(staged.browse, cfg.input_files.radiance, run.flag)
    if cfg.output.write_ortho:
        assert run.glt is not None  # the run configuration refuses write_ortho without a GLT
        write_ortho_geotiff(staged.ortho_flag, run.flag, run.probability, run.glt)
    run.log.info("products_written", cloud_fraction_percent=round(run.fraction.percent_of_valid, 4),
                 pixels_with_value=run.fraction.valid_pixels, pixels=run.fraction.total_pixels)


def validate_products(run: PgeRun) -> None:
    """Read each product back and compare it with what was computed."""
    cfg, staged = run.config, run.staged
    assert cfg is not None and staged is not None
    readers: list[tuple[Path, Callable[[Path], tuple[np.ndarray, np.ndarray]]]] = []
    if cfg.output.write_envi:
        readers.append((staged.envi_data, read_envi_product))
    if cfg.output.write_netcdf:
        readers.append((staged.netcdf, read_netcdf_product))
    for path, reader in readers:
        try:
            flag, probability = reader(path)
        except Exception as exc:  # a product that cannot be read back is an output failure
            raise OutputProductError(path, f"product does not read back ({exc})") from None
        _compare(path, flag, probability, run.flag, run.probability)
    checked = [p.name for p, _ in readers]
    if cfg.output.write_ortho:
        _compare_ortho(run)
        checked += [staged.ortho_flag.name, staged.ortho_probability.name]
    if cfg.output.write_browse:
        _check_browse(staged.browse)
        checked.append(staged.browse.name)
    run.log.info("products_valid", files=checked)


def _compare_ortho(run: PgeRun) -> None:
    """The GeoTIFFs hold exactly the swath product resampled through the GLT."""
    from osgeo import gdal

    staged = run.staged
    expected = orthorectify(run.flag, run.probability, run.glt)
    for path, want in ((staged.ortho_flag, expected[0]), (staged.ortho_probability, expected[1])):
        try:
            ds = gdal.Open(str(path))
            got = ds.GetRasterBand(1).ReadAsArray()
            ds = None
        except Exception as exc:  # noqa: BLE001 - unreadable is an output failure
            raise OutputProductError(path, f"product does not read back ({exc})") from None
        if not np.array_equal(got, want):
            raise OutputProductError(path, "orthorectified values differ from the swath product's")


def _check_browse(path: Path) -> None:
    from osgeo import gdal

    try:
        ds = gdal.Open(str(path))
        size = (ds.RasterXSize, ds.RasterYSize, ds.RasterCount, ds.GetDriver().ShortName)
        ds = None
    except Exception as exc:  # noqa: BLE001 - unreadable is an output failure
        raise OutputProductError(path, f"browse image does not read back ({exc})") from None
    if size[3] != "PNG" or max(size[:2]) > 1000 or size[2] not in (3, 4):
        raise OutputProductError(path, f"browse image is not a PNG of at most 1000 px with 3-4 "
                                       f"bands ({size})")


def _compare(path: Path, flag: np.ndarray, probability: np.ndarray, expected_flag: np.ndarray,
             expected_probability: np.ndarray) -> None:
    if flag.shape != expected_flag.shape or probability.shape != expected_probability.shape:
        raise OutputProductError(path, f"read back as {flag.shape}, expected {expected_flag.shape}")
    no_value = np.isnan(expected_probability)
    if not np.array_equal(np.isnan(probability), no_value):
        raise OutputProductError(path, "pixels without a value differ from those computed")
    if not np.array_equal(flag, expected_flag):
        raise OutputProductError(path, "cloud flag differs from the one computed")
    values = probability[~no_value]
    if not np.array_equal(values, expected_probability[~no_value]):
        raise OutputProductError(path, "cloud probability differs from the one computed")
    if values.size and (values.min() < 0 or values.max() > 1):
        raise OutputProductError(path, "cloud probability outside [0, 1]")


def write_metadata(run: PgeRun) -> None:
    cfg, staged, fraction, spec = run.config, run.staged, run.fraction, run.spec
    assert cfg is not None and staged is not None and fraction is not None and spec is not None
    identity = parse_identity(cfg.input_files.radiance)
    meta = {
        "product": run.stem,
        "product_version": cfg.output.product_version,
        "acquisition_id": identity.acquisition_id if identity else None,
        "acquisition_start_time": identity.start_time.isoformat() if identity else None,
        "lines": run.scene.lines,
        "samples": run.scene.samples,
        "model": {"name": spec.name, "version": spec.version},
        "threshold": run.threshold,
        "threshold_comparison": cfg.algorithm.comparison,
        "cloud_fraction": {
            "percent_of_valid_pixels": fraction.percent_of_valid,
            "percent_of_all_pixels": fraction.percent_of_all,
            "cloudy_pixels": fraction.cloudy_pixels,
            "pixels_with_value": fraction.valid_pixels,
            "pixels": fraction.total_pixels,
        },
        "files": {k: p.name for k, p in _written(run, staged).items()},
    }
    staged.metadata.write_text(json.dumps(meta, indent=2) + "\n")


def write_granule_metadata(run: PgeRun) -> None:
    """The UMM-G record the DAAC ingests: the data files (checksummed as staged), cloud cover,
    time, extent from the GLT grid or the located pixels, day or night."""
    cfg, staged, fraction = run.config, run.staged, run.fraction
    assert cfg is not None and staged is not None and fraction is not None
    emit = _emit_common(run)
    data = [p for k, p in _written(run, staged).items() if k not in ("metadata", "ummg")]
    data.sort(key=lambda p: p.suffix != ".nc")  # the netCDF, when written, is the granule's file
    bounds = (run.glt.grid_bounds() if run.glt is not None
              else location_bounds(run.location) if run.location is not None else None)
    polygon = swath_polygon(run.location.lon, run.location.lat) if run.location is not None else None
    no_value_percent = 100.0 * (fraction.total_pixels - fraction.valid_pixels) / fraction.total_pixels
    record = build_ummg(
        product_version=cfg.output.product_version,
        identity=parse_identity(cfg.input_files.radiance), files=data,
        # EMIT's convention: pixels without a value count as cloud cover (nothing is seen there)
        cloud_cover_percent=min(fraction.percent_of_all + no_value_percent, 100.0),
        bounds=bounds, polygon=polygon, pge_name=cfg.pge.pge_name,
        pge_version=emit["emit pge version"], production_time=datetime.now(UTC),
        start_time=parse_emit_time(emit["emit acquisition start time"]),
        end_time=parse_emit_time(emit["emit acquisition stop time"]),
        day_night=day_night_flag(run.solar_angles[0]), solar_zenith=run.solar_angles[0],
        solar_azimuth=run.solar_angles[1],
        software_build_version=cfg.pge.software_build_version,
        software_delivery_version=emit["emit pge version"])
    write_ummg(staged.ummg, record)
    run.log.info("granule_metadata_written", granule_ur=record["GranuleUR"],
                 cloud_cover=record["CloudCover"])


def write_provenance(run: PgeRun) -> None:
    cfg, staged = run.config, run.staged
    assert cfg is not None and staged is not None and run.inference is not None
    outputs = {k: run.final.as_dict()[k] for k in _written(run, staged)}
    record = provenance.build_record(
        runconfig_path=run.runconfig_path, runconfig_bytes=run.config_bytes,
        run_command=run.run_command, inputs=_input_paths(cfg),
        ancillary=_ancillary_paths(run),
        outputs={k: staged.as_dict()[k] for k in outputs},
        processing={"device": str(run.inference.cloud_model.device),
                    "precision": run.inference.cloud_model.precision,
                    "implementation": run.inference.cloud_model.model.implementation(
                        run.inference.cloud_model.device),
                    "batch_size": cfg.processing.batch_size,
                    "lines_per_block": cfg.processing.lines_per_block,
                    "torch_threads": torch.get_num_threads(),
                    "threshold": run.threshold, "threshold_comparison": cfg.algorithm.comparison,
                    "model_version": run.spec.version,
                    "earth_sun_distance_au": run.inference.earth_sun_au,
                    "model_bands": int(run.inference.bands.size)},
        timings_s=run.timings_s, started=run.started.isoformat(),
        finished=datetime.now(UTC).isoformat())
    # Checksums were taken in scratch; the record names the files where they will live.
    for key, path in outputs.items():
        record["outputs"][key]["path"] = str(path.resolve())
    record["outputs"]["log"] = {"path": str(run.final.log.resolve())}
    if run.skipped:
        record["skipped_outputs"] = dict(run.skipped)
    staged.provenance.write_text(json.dumps(record, indent=2) + "\n")


def verify_staged(run: PgeRun) -> None:
    """The staged files match the checksums their provenance records, before anything moves."""
    staged = run.staged
    assert staged is not None
    problem = product_problem(staged)
    if problem is not None:
        raise OutputProductError(staged.provenance, f"staged product fails its provenance check "
                                                    f"({problem}); nothing was published")
    run.log.info("staged_product_verified", folder=str(run.scratch))


def publish(run: PgeRun) -> None:
    """Swap the validated product into the output folder so that a reader, or a later run after
    a crash, sees the old product or the new one, never a mix.

    1. The staged files reach a publish folder inside the output folder (the scratch itself when
       it lives there; a copy, re-verified, when the scratch is elsewhere).
    2. A journal listing the product files already in place is written atomically.
    3. Those old files move into `backup/` of the publish folder.
    4. The new files move in, provenance and log last, and are verified against the provenance.
    5. The journal is marked committed (from then on a signal no longer stops the run) and the
       publish folder, backup included, is removed.
    A failure or signal in 2-4 restores the old product (`_roll_back`); a kill in 2-4 leaves the
    journal, and the next run on the acquisition rolls back the same way (`recover_leftovers`).
    """
    cfg, staged, final = run.config, run.staged, run.final
    assert cfg is not None and staged is not None and final is not None
    out = final.envi_data.parent
    pge_logging.close_file()
    order = [*(k for k in _written(run, staged)), "provenance", "log"]
    names = [final.as_dict()[k].name for k in order]
    if run.scratch is not None and run.scratch.parent.resolve() == out.resolve():
        run.publish_dir = run.scratch
    else:
        run.publish_dir = Path(tempfile.mkdtemp(prefix=f".{run.stem}.", suffix=".scratch", dir=out))
        run.publish_lock = FileLock(run.publish_dir / OWNER_LOCK, remove=False)
        run.publish_lock.try_acquire()
        for key in order:
            _move(staged.as_dict()[key], run.publish_dir / staged.as_dict()[key].name)
        problem = product_problem(product_files(run.stem, run.publish_dir))
        if problem is not None:
            raise OutputProductError(run.publish_dir, f"copy for publication is damaged ({problem})")
    pub = run.publish_dir
    for name in names:
        _fsync(pub / name)
    # Files of an earlier product that this run does not write (an optional product switched
    # off) leave with the old product, or they would sit beside it unaccounted for.
    stale = [p.name for p in final.all() if p.name not in names and p.exists()]
    old = [name for name in names if (out / name).exists()] + stale
    journal = {"output": str(out), "stem": run.stem, "names": names + stale, "old": old}
    _write_journal(pub, {**journal, "state": "swapping"})
    (pub / BACKUP).mkdir(exist_ok=True)
    for name in old:
        _rename(out / name, pub / BACKUP / name)
    for name in names:
        _rename(pub / name, out / name)
    _fsync_dir(out)
    problem = product_problem(final)
    if problem is not None:
        raise OutputProductError(out, f"published product fails its provenance check ({problem})")
    run.interruptible = False
    _write_journal(pub, {**journal, "state": "committed"})
    run.committed = True
    run.published = [final.as_dict()[k] for k in order]


def _rename(src: Path, dst: Path) -> None:
    try:
        src.replace(dst)
    except OSError as exc:
        raise OutputProductError(dst, f"cannot move product file into place ({exc.strerror})") from None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:
        pass  # some filesystems refuse fsync on folders; the renames are still atomic


def _write_journal(folder: Path, record: dict[str, Any]) -> None:
    tmp = folder / (JOURNAL + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(folder / JOURNAL)
    _fsync_dir(folder)


def _read_journal(folder: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / JOURNAL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _roll_back(pub: Path, final: ProductFiles, journal: dict[str, Any]) -> None:
    """Put the output folder back as the journal found it, from the filesystem's state alone
    (so it works in-process after any interruption, and in a later run after a kill).

    Every old file moved into backup/ before any new file moved in, so: a name in backup/ is
    restored over whatever is in its place; a name that was not there before and is there now
    is a new file and is removed; an old name not in backup/ never moved.
    """
    out = final.envi_data.parent
    old = set(journal.get("old", []))
    for name in journal.get("names", []):
        name = Path(str(name)).name
        saved, target = pub / BACKUP / name, out / name
        if saved.exists():
            saved.replace(target)
        elif name not in old:
            target.unlink(missing_ok=True)


def postprocess(run: PgeRun) -> None:
    with step(run, "write_products"):
        write_products(run)
    with step(run, "validate_products"):
        validate_products(run)
    with step(run, "write_metadata"):
        write_metadata(run)
    if "ummg" in _written(run, run.staged):  # asked for, and the acquisition time is known
        with step(run, "write_granule_metadata"):
            write_granule_metadata(run)
    run.log.info("run_finished", product=run.stem,
                 timings_s={k: round(v, 3) for k, v in run.timings_s.items()},
                 cloud_fraction_percent=round(run.fraction.percent_of_valid, 4))
    with step(run, "write_provenance"):
        write_provenance(run)
        verify_staged(run)
    with output_failure(run, "publish"):
        publish(run)


def cleanup(run: PgeRun) -> None:
    """Whatever happened: close the log, undo an unfinished publication, remove scratch and the
    publish folder, release the locks. Each part runs even if another fails."""
    pge_logging.close_file()
    pub, keep = run.publish_dir, None
    try:
        if pub is not None and not run.committed and run.final is not None:
            journal = _read_journal(pub)
            if journal is not None:
                _roll_back(pub, run.final, journal)
    except Exception as exc:  # noqa: BLE001 - keep the backup; the next run rolls back again
        keep = pub
        try:
            run.log.error("rollback_failed", publish_folder=str(pub), error=str(exc))
        except Exception:  # noqa: BLE001 - logging must not mask the run's own failure
            pass
    finally:
        for folder in dict.fromkeys(f for f in (run.publish_dir, run.scratch) if f is not None):
            if folder != keep and folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
        for lock in (run.publish_lock, run.owner_lock, run.lock):
            if lock is not None:
                lock.release()


def execute(run: PgeRun) -> None:
    try:
        preprocess(run)
        with step(run, "run"):
            infer(run)
        postprocess(run)
    finally:
        cleanup(run)


# --------------------------------------------------------------------------------------------
# Helpers


def _settings(cfg: RunConfig) -> InferenceSettings:
    p = cfg.processing
    return InferenceSettings(device=p.device, precision=p.precision, batch_size=p.batch_size,
                             lines_per_block=p.lines_per_block)


def _input_paths(cfg: RunConfig) -> dict[str, Path]:
    files = {"radiance": cfg.input_files.radiance, "observation": cfg.input_files.observation,
             "location": cfg.input_files.location, "glt": cfg.input_files.glt}
    out: dict[str, Path] = {}
    for key, path in files.items():
        if path is None:
            continue
        header = read_header(path)
        out[f"{key}_header"], out[f"{key}_data"] = header.header_path, header.data_path
    return out


def _ancillary_paths(run: PgeRun) -> dict[str, Path]:
    anc = run.config.ancillary_files
    return {"model_weights": anc.model_weights, "irradiance": anc.irradiance,
            "model_spec": run.spec.path}


def _written(run: PgeRun, staged: ProductFiles) -> dict[str, Path]:
    """The product files of this run other than provenance and log, as staged."""
    return {k: staged.as_dict()[k] for k in run.config.output.product_keys() if k not in run.skipped}


def _move(src: Path, dst: Path) -> None:
    """Atomic within a filesystem; across filesystems, copy beside the target then rename."""
    try:
        src.replace(dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise OutputProductError(dst, f"cannot move product into place ({exc.strerror})") from None
        tmp = dst.with_name(f".{dst.name}.part")
        try:
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
        except OSError as exc2:
            tmp.unlink(missing_ok=True)
            raise OutputProductError(dst, f"cannot copy product into place ({exc2.strerror})") from None


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime(EMIT_TIME)


def _emit_common(run: PgeRun) -> dict[str, Any]:
    """The facts both formats record, keyed by their EMIT ENVI header names."""
    cfg, spec = run.config, run.spec
    identity = parse_identity(cfg.input_files.radiance)
    rdn_meta = run.scene.radiance_header.meta
    start = rdn_meta.get("emit acquisition start time") or (
        _timestamp(identity.start_time) if identity else None)
    inputs = [f"{k}={v}" for k, v in (
        ("radiance_file", cfg.input_files.radiance),
        ("observation_parameters_file", cfg.input_files.observation),
        ("pixel_locations_file", cfg.input_files.location),
        ("geolocation_table_file", cfg.input_files.glt),
        ("model_weights_file", cfg.ancillary_files.model_weights),
        ("solar_irradiance_file", cfg.ancillary_files.irradiance)) if v is not None]
    return {
        "emit acquisition start time": start,
        "emit acquisition stop time": rdn_meta.get("emit acquisition stop time"),
        "emit pge name": cfg.pge.pge_name,
        "emit pge version": provenance.package_version(),
        "emit pge input files": inputs,
        "emit pge run command": run.run_command,
        "emit software build version": cfg.pge.software_build_version,
        "emit documentation version": cfg.pge.documentation_version,
        "emit data product creation time": _timestamp(datetime.now(UTC)),
        "emit data product version": cfg.output.product_version,
        "emit acquisition cloud fraction": f"{run.fraction.percent_of_valid:.4f}",
        "cloud threshold": run.threshold,
        "cloud threshold comparison": cfg.algorithm.comparison,
        "cloud model": f"SpecTf cloud {spec.version}",
        "cloud model version": spec.version,
    }


def _netcdf_attrs(run: PgeRun) -> dict[str, Any]:
    emit = _emit_common(run)
    return {
        "time_coverage_start": emit["emit acquisition start time"],
        "time_coverage_end": emit["emit acquisition stop time"],
        "software_build_version": emit["emit software build version"],
        "software_delivery_version": emit["emit pge version"],
        "history": f"PGE Run Command: {{{run.run_command}}}, "
                   f"PGE Input Files: {{{', '.join(emit['emit pge input files'])}}}",
        "cloud_threshold": run.threshold,
        "cloud_threshold_comparison": emit["cloud threshold comparison"],
        "cloud_model": emit["cloud model"],
        "cloud_model_version": emit["cloud model version"],
        "cloud_fraction_percent_of_valid": run.fraction.percent_of_valid,
        "cloud_fraction_percent_of_all": run.fraction.percent_of_all,
    }
