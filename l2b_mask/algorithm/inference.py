"""Streaming inference: blocks of lines in, cloud probability blocks out.

For each block: read radiance (kept bands only) and solar zenith, decide which pixels have a
value, convert only those to reflectance, run them through the model in batches, and hand
back a (lines, samples) probability block with NaN where a pixel has no value. Nothing here
knows about product formats; memory is bounded by one block whatever the scene length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from l2b_mask.algorithm.background import BackgroundWriter, prefetch
from l2b_mask.algorithm.bands import kept_bands
from l2b_mask.algorithm.model import PRECISIONS, SpecTf, load_model
from l2b_mask.algorithm.reflectance import band_irradiance, load_irradiance, toa_reflectance
from l2b_mask.errors import AncillaryError, InputProductError, ProcessingError
from l2b_mask.inputs.observation import ObservationGeometry, read_observation
from l2b_mask.inputs.scene import Scene
from l2b_mask.spec import DecisionRule, ModelSpec, verify_sha256

# What an allocation failure of the device raises. torch.OutOfMemoryError only exists from torch
# 2.5 (pyproject allows 2.3); torch.cuda.OutOfMemoryError exists since 1.13, and from 2.5 on it
# is the very same class (so it also catches the CPU allocator's failure there).
OUT_OF_MEMORY: type[Exception] = torch.cuda.OutOfMemoryError


@dataclass(frozen=True)
class InferenceSettings:
    device: str = "auto"
    precision: str = "float32"
    batch_size: int = 4096
    lines_per_block: int = 64

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.batch_size < 1 or self.lines_per_block < 1:
            raise ValueError("batch_size and lines_per_block must be positive")


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; an explicit CUDA device must exist. The published
    tool's device numbers are accepted too: -1 is the CPU, N >= 0 is cuda:N."""
    name = name.strip().lower()
    if name.lstrip("+-").isdigit():
        number = int(name)
        if number < -1:
            raise ProcessingError(None, f"unknown device {name!r} (-1 for the CPU, N >= 0 for cuda:N)")
        name = "cpu" if number == -1 else f"cuda:{number}"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ProcessingError(None, f"unknown device {name!r} (cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ProcessingError(None, f"device {name!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ProcessingError(
                None, f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
    elif device.type != "cpu":
        raise ProcessingError(None, f"unsupported device {name!r} (cpu, cuda, cuda:N or auto)")
    return device


def iter_line_blocks(lines: int, lines_per_block: int) -> Iterator[tuple[int, int]]:
    """[start, stop) ranges covering 0..lines exactly once, in order."""
    for start in range(0, lines, lines_per_block):
        yield start, min(start + lines_per_block, lines)


def pixels_with_value(radiance: np.ndarray, solar_zenith: np.ndarray, rdn_nodata: float,
                      obs_nodata: float) -> np.ndarray:
    """(lines, samples) bool: the model may see this pixel.

    No value when any model band is nodata or not finite, or the solar geometry is invalid
    (nodata, not finite, negative, or the sun at or below the horizon).
    """
    ok = np.isfinite(radiance).all(axis=-1)
    ok &= ~(radiance == rdn_nodata).any(axis=-1)
    return ok & sun_up(solar_zenith, obs_nodata)


def sun_up(solar_zenith: np.ndarray, obs_nodata: float) -> np.ndarray:
    """The solar geometry is valid: not nodata, finite, not negative, the sun above the horizon."""
    return (np.isfinite(solar_zenith) & (solar_zenith != obs_nodata) & (solar_zenith >= 0.0)
            & (solar_zenith < 90.0))


def no_value_error(scene: Scene, lines_per_block: int = 512,
                   observation: ObservationGeometry | None = None) -> InputProductError:
    """Why a scene that streamed gave no pixel a value, naming the file to blame: the
    observation when the sun is down (or fill) everywhere, else the radiance. The solar zenith
    is `observation`'s when the file was read already, else read here."""
    sunlit = 0
    if observation is not None:
        sunlit = int(np.count_nonzero(sun_up(observation.solar_zenith.astype(np.float64),
                                             scene.observation_nodata)))
    else:
        with scene.observation_reader() as reader:
            for start, stop in iter_line_blocks(scene.lines, lines_per_block):
                sza = reader.read_band(start, stop, scene.solar_zenith_band)
                sunlit += int(np.count_nonzero(sun_up(sza, scene.observation_nodata)))
    if sunlit == 0:
        return InputProductError(scene.observation_header.header_path,
                                 "no pixel has a value: the solar zenith is fill, not finite or "
                                 ">= 90 degrees in every pixel")
    return InputProductError(scene.radiance_header.header_path,
                             "no pixel has a value: every pixel with the sun up has -9999, NaN or "
                             "Inf radiance in a model band")


@dataclass(frozen=True)
class Prediction:
    """P(cloud) of a set of spectra, and the batch size the model ran them at: the one asked
    for, or a smaller one after a CUDA out-of-memory halving (the next call should start there)."""

    probability: np.ndarray  # (N,) float32
    batch_size: int


class CloudModel:
    """A loaded model on its device, with the band selection and batching around it.

    `batch_size` is the batch size asked for; it never changes: a prediction that had to run
    smaller batches says so in its result (`Prediction.batch_size`).
    """

    def __init__(self, spec: ModelSpec, model: SpecTf, device: torch.device, precision: str,
                 batch_size: int) -> None:
        self.spec = spec
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.model = model.to(device).set_precision(precision)
        self._pinned: torch.Tensor | None = None   # CUDA only: the page-locked staging buffer

    @classmethod
    def load(cls, spec: ModelSpec, settings: InferenceSettings, weights: Path | str | None = None,
             verify_checksum: bool = True) -> CloudModel:
        path = Path(weights) if weights is not None else spec.weights_path
        if verify_checksum:
            verify_sha256(path, spec.weights_sha256, "model weights")
        device = resolve_device(settings.device)
        return cls(spec, load_model(spec, path), device, settings.precision, settings.batch_size)

    def predict(self, reflectance: np.ndarray, band_term: torch.Tensor,
                batch_size: int | None = None) -> Prediction:
        """P(cloud) float32 for (N, T) float32 reflectance, in batches of `batch_size` spectra
        (default: the model's).

        On a CUDA device that runs out of memory, the batch that failed is retried at half
        the batch size, down to 1; the smaller size is kept for the following batches and
        returned with the result. Out of memory on the CPU, or on CUDA at batch size 1, is a
        ProcessingError.
        """
        size = batch_size or self.batch_size
        n = reflectance.shape[0]
        out = np.empty(n, np.float32)
        start = 0
        while start < n:
            stop = min(start + size, n)
            try:
                out[start:stop] = self._forward(reflectance[start:stop], band_term)
            except OUT_OF_MEMORY:
                if self.device.type != "cuda":
                    raise ProcessingError(
                        None, f"out of memory on {self.device} at batch size {size} "
                              "(lower processing.batch_size or lines_per_block)") from None
                if size == 1:
                    raise ProcessingError(
                        None, f"out of memory on {self.device} even at batch size 1") from None
                torch.cuda.empty_cache()
                size = max(1, size // 2)
                continue
            start = stop
        return Prediction(out, size)

    @torch.inference_mode()
    def _forward(self, reflectance: np.ndarray, band_term: torch.Tensor) -> np.ndarray:
        """One batch through the model on its device (`.to` is free once a tensor is there)."""
        if self.device.type == "cuda":
            x = self._staged(reflectance).to(self.device, non_blocking=True)
        else:
            x = torch.from_numpy(reflectance)
        return self.model(x, band_term.to(self.device)).cpu().numpy()

    def _staged(self, reflectance: np.ndarray) -> torch.Tensor:
        """The batch copied into a page-locked buffer kept between batches, so that the copy to the
        GPU is a direct asynchronous transfer. Reusing it is safe: the `.cpu()` at the end of each
        batch waits for the GPU, so the previous transfer has finished."""
        n, t = reflectance.shape
        buf = self._pinned
        if buf is None or buf.shape[0] < n or buf.shape[1] != t:
            buf = self._pinned = torch.empty((max(n, self.batch_size), t), dtype=torch.float32,
                                             pin_memory=True)
        staged = buf[:n]
        staged.numpy()[...] = reflectance
        return staged


@dataclass(frozen=True)
class ProbabilityBlock:
    """Lines [start, stop) of the cloud probability, NaN where a pixel has no value."""

    start: int
    stop: int
    probability: np.ndarray  # (stop - start, samples) float32
    batch_size: int  # what the model's batches ran at (less than asked after a CUDA OOM)
    radiance_not_finite: int = 0  # pixels with NaN or Inf in a model band (they have no value)
    # (stop - start, samples, k) float32 TOA reflectance of the kept bands, NaN without value;
    # None unless the inference was asked to keep some (`keep_reflectance_nm`)
    reflectance: np.ndarray | None = None
    # (stop - start, samples, k) float32 radiance of the bands `keep_radiance_bands`, as read
    # (every pixel, fill values included); None unless asked
    radiance: np.ndarray | None = None


@dataclass(frozen=True)
class PreparedBlock:
    """Lines [start, stop) made ready for the model: which pixels have a value and their TOA
    reflectance (the only per-pixel work before the model), built off the model's thread."""

    start: int
    stop: int
    valid: np.ndarray  # (lines, samples) bool
    reflectance: np.ndarray  # (valid pixels, model bands) float32
    radiance_not_finite: int
    kept: np.ndarray | None  # (lines, samples, k) float32 kept bands, NaN without value; or None
    kept_radiance: np.ndarray | None = None  # (lines, samples, k) float32 as read; or None


@dataclass(frozen=True)
class KeptReflectance:
    """TOA reflectance of a few bands over the whole scene, collected while streaming (so that
    science after the model, such as the cloud shadow's darkness test, needs no second pass
    over the radiance): about 6 MB per band for a full 1280 x 1242 scene."""

    wavelengths_nm: np.ndarray  # (k,) centres of the scene bands kept, nearest those asked
    reflectance: np.ndarray  # (lines, samples, k) float32, NaN where a pixel has no value

    def planes(self) -> list[np.ndarray]:
        """One (lines, samples) array per kept band, in the order asked."""
        return [self.reflectance[:, :, i] for i in range(self.reflectance.shape[2])]


@dataclass(frozen=True)
class SceneProbability:
    """What streaming a whole scene gave: the probability, the kept reflectance when asked,
    and the batch size the model ended at (the one asked for unless a CUDA device ran out of
    memory and halved it: what the provenance must record)."""

    probability: np.ndarray  # (lines, samples) float32, NaN where a pixel has no value
    reflectance: KeptReflectance | None
    batch_size: int
    # (lines, samples, k) float32 radiance of `keep_radiance_bands` as read, or None
    radiance: np.ndarray | None = None


class SceneInference:
    """Everything computed once per scene before streaming: bands, irradiance, distance.

    `observation`: the observation file already read (`read_observation`, as a PGE run does):
    the Earth-Sun distance and the solar zenith are taken from it, and the file is not read
    again; without it, both are read from the file here.

    `keep_radiance_bands`: radiance band indices (0-based, in the file) whose values, as read,
    the stream keeps for the whole scene, so that a product drawn from them (the browse image)
    need not read the radiance again; kept only when the model reads every one of them
    (`keeps_radiance`), since the stream reads the model's bands alone.
    """

    def __init__(self, scene: Scene, cloud_model: CloudModel, irradiance: Path | str | None = None,
                 keep_all_bands: bool = False, verify_checksum: bool = True,
                 keep_reflectance_nm: Sequence[float] = (),
                 observation: ObservationGeometry | None = None,
                 keep_radiance_bands: Sequence[int] = ()) -> None:
        spec = cloud_model.spec
        irr_path = Path(irradiance) if irradiance is not None else spec.irradiance_path
        if verify_checksum:
            verify_sha256(irr_path, spec.irradiance_sha256, "solar irradiance")
        grid, irr = load_irradiance(irr_path)
        self.scene = scene
        self.cloud_model = cloud_model
        self.bands = (np.arange(scene.radiance_header.bands) if keep_all_bands
                      else kept_bands(scene.wavelengths_nm, spec.drop_ranges_nm))
        if self.bands.size == 0:
            raise AncillaryError(spec.path, "the drop ranges leave no band for the model")
        wl = scene.wavelengths_nm[self.bands]
        self.band_irradiance = band_irradiance(grid, irr, wl, scene.fwhm_nm[self.bands])
        self.band_term = cloud_model.model.band_term(wl)
        self.observation = observation
        self.earth_sun_au = (observation.earth_sun_distance() if observation is not None
                             else scene.earth_sun_distance())
        # Positions among the model's bands of those nearest each wavelength to keep (the
        # reflectance is computed for the model anyway: keeping a few columns costs a copy).
        self.keep_reflectance = np.array(
            [int(np.argmin(np.abs(wl - target))) for target in keep_reflectance_nm], np.intp)
        self.kept_wavelengths_nm = wl[self.keep_reflectance]
        position = {int(band): i for i, band in enumerate(self.bands)}
        wanted = [int(band) for band in keep_radiance_bands]
        self.keep_radiance = np.array([position[band] for band in wanted]
                                      if all(band in position for band in wanted) else [], np.intp)

    @property
    def keeps_radiance(self) -> bool:
        """Whether the stream keeps the radiance bands asked for (none asked: False)."""
        return bool(self.keep_radiance.size)

    def read_blocks(self, lines_per_block: int) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        """(start, stop, radiance of the kept bands, solar zenith) for each block of lines.

        Both files are opened, read and closed by whichever thread iterates this (the read-ahead
        thread in `blocks`): netCDF-C is not thread-safe, and nothing else reads a granule
        while the scene streams (`run`'s writer thread only sees probability blocks). With the
        observation read already, its solar zenith plane is sliced (float64, as read) instead.
        """
        scene, kept = self.scene, self.observation
        with (scene.radiance_reader() as rdn,
              scene.observation_reader() if kept is None else nullcontext() as obs):
            for start, stop in iter_line_blocks(scene.lines, lines_per_block):
                sza = (obs.read_band(start, stop, scene.solar_zenith_band) if kept is None
                       else kept.solar_zenith[start:stop].astype(np.float64))
                yield start, stop, rdn.read_lines(start, stop, self.bands), sza

    def blocks(self, lines_per_block: int, read_ahead: int = 2) -> Iterator[ProbabilityBlock]:
        """Probability blocks in order. The next blocks are read and prepared (which pixels have a
        value, their reflectance) on a background thread, so that the model's threads only wait
        for the first: the preparation overlaps the previous block's inference."""
        prepared: Iterator[PreparedBlock] = (self.prepare(*read)
                                             for read in self.read_blocks(lines_per_block))
        if read_ahead > 0:
            prepared = prefetch(prepared, read_ahead)
        batch_size = self.cloud_model.batch_size
        for prepared_block in prepared:
            block = self.infer(prepared_block, batch_size)
            batch_size = block.batch_size  # a size halved for want of memory stays halved
            yield block

    def prepare(self, start: int, stop: int, radiance: np.ndarray,
                solar_zenith: np.ndarray) -> PreparedBlock:
        """What the model needs of one block, from its (lines, samples, kept bands) radiance and
        solar zenith (the radiance is not kept)."""
        valid = pixels_with_value(radiance, solar_zenith, self.scene.radiance_nodata,
                                  self.scene.observation_nodata)
        rho = toa_reflectance(radiance[valid], solar_zenith[valid], self.earth_sun_au,
                              self.band_irradiance)
        not_finite = int(np.count_nonzero(~np.isfinite(radiance).all(axis=-1)))
        kept = None
        if self.keep_reflectance.size:
            kept = np.full((*valid.shape, self.keep_reflectance.size), np.nan, np.float32)
            kept[valid] = rho[:, self.keep_reflectance]
        kept_radiance = radiance[:, :, self.keep_radiance] if self.keeps_radiance else None
        return PreparedBlock(start, stop, valid, rho, not_finite, kept, kept_radiance)

    def infer(self, block: PreparedBlock, batch_size: int | None = None) -> ProbabilityBlock:
        """The model over a prepared block's pixels with a value, in batches of `batch_size`
        (default: the model's); NaN elsewhere."""
        probability = np.full(block.valid.shape, np.nan, np.float32)
        prediction = self.cloud_model.predict(block.reflectance, self.band_term, batch_size)
        probability[block.valid] = prediction.probability
        return ProbabilityBlock(block.start, block.stop, probability, prediction.batch_size,
                                block.radiance_not_finite, block.kept, block.kept_radiance)

    def block(self, radiance: np.ndarray, solar_zenith: np.ndarray, start: int,
              stop: int, batch_size: int | None = None) -> ProbabilityBlock:
        """One block from its (lines, samples, kept bands) radiance and solar zenith, the model
        run in batches of `batch_size` (default: the model's)."""
        return self.infer(self.prepare(start, stop, radiance, solar_zenith), batch_size)

    def run(self, lines_per_block: int,
            on_block: Callable[[ProbabilityBlock], None] | None = None) -> np.ndarray:
        """The whole (lines, samples) probability.

        `on_block` sees each block as it is done, on a background writer thread, so a callback
        that writes to disk overlaps the next block's compute.
        """
        return self.run_keeping(lines_per_block, on_block).probability

    def run_keeping(self, lines_per_block: int,
                    on_block: Callable[[ProbabilityBlock], None] | None = None
                    ) -> SceneProbability:
        """`run`, with the reflectance of the bands `keep_reflectance_nm` and the radiance of
        `keep_radiance_bands` asked for (None when none was asked: then nothing more is computed
        or held than by `run`) and the batch size the model ran at."""
        lines, samples = self.scene.lines, self.scene.samples
        out = np.empty((lines, samples), np.float32)
        kept = (np.empty((lines, samples, self.keep_reflectance.size), np.float32)
                if self.keep_reflectance.size else None)
        kept_radiance = (np.empty((lines, samples, self.keep_radiance.size), np.float32)
                         if self.keeps_radiance else None)
        batch_size = self.cloud_model.batch_size
        with BackgroundWriter(on_block or (lambda block: None)) as sink:
            for block in self.blocks(lines_per_block):
                out[block.start:block.stop] = block.probability
                if kept is not None and block.reflectance is not None:
                    kept[block.start:block.stop] = block.reflectance
                if kept_radiance is not None and block.radiance is not None:
                    kept_radiance[block.start:block.stop] = block.radiance
                batch_size = block.batch_size
                sink.submit(block)
        reflectance = (KeptReflectance(self.kept_wavelengths_nm.copy(), kept)
                       if kept is not None else None)
        return SceneProbability(out, reflectance, batch_size, kept_radiance)


def cloud_flag(probability: np.ndarray, threshold: float, comparison: str = ">") -> np.ndarray:
    """uint8 flag: 1 cloud, 0 clear, 255 where the probability is NaN (no value); the rule is
    `DecisionRule`'s (a run resolves one from its model specification and uses it throughout)."""
    try:
        rule = DecisionRule(threshold, comparison, "caller")
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return rule.flag(probability)


def cloud_probability(radiance: Path | str, observation: Path | str,
                      spec: ModelSpec | None = None,
                      settings: InferenceSettings | None = None) -> np.ndarray:
    """Library entry point: the (lines, samples) P(cloud) of an acquisition, NaN without value.

    `radiance` and `observation` are the SDS's ENVI rasters (.img or .hdr) or the LP DAAC's
    `EMIT_L1B_RAD_*.nc` / `EMIT_L1B_OBS_*.nc` granules (`Scene.open` tells them by content).
    """
    spec = spec or ModelSpec.load()
    settings = settings or InferenceSettings()
    scene = Scene.open(radiance, observation)
    model = CloudModel.load(spec, settings)
    # the observation read in one pass (the Earth-Sun distance and the solar zenith from it)
    return SceneInference(scene, model, observation=read_observation(scene)).run(settings.lines_per_block)
