"""The cloud mask of arrays already in memory, as an xarray Dataset.

`mask_radiance`: L1B radiance and observation arrays, streamed through exactly the code the
PGE runs (`SceneInference`: the same band selection, reflectance, batching and compiled
kernel), by presenting the arrays as a `Scene` whose readers slice them. `mask_reflectance`:
TOA reflectance and its wavelengths (what the published `deploy_pt_from_toa` takes), through the
same `CloudModel`. Both add the cloud buffer distance and, with a location, the cloud shadow
when the observation geometry is given (`beyond_cloud`, as the PGE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from l2b_mask.algorithm.beyond_cloud import (
    OBS_VIEW_AZIMUTH,
    OBS_VIEW_ZENITH,
    BeyondCloudSettings,
    beyond_cloud,
    reflectance_bands_needed,
)
from l2b_mask.algorithm.cloud_shadow import SunViewAngles
from l2b_mask.errors import InputProductError
from l2b_mask.inputs.envi import LineReader
from l2b_mask.inputs.location import LOC_FILL, LocationArrays
from l2b_mask.inputs.scene import (
    OBS_BAND_COUNTS,
    OBS_EARTH_SUN_DISTANCE,
    OBS_SOLAR_AZIMUTH,
    OBS_SOLAR_ZENITH,
    Scene,
    check_spectral_axis,
)
from l2b_mask.nodata import FLOAT_NO_VALUE

if TYPE_CHECKING:
    import xarray as xr

    from l2b_mask.algorithm.beyond_cloud import BeyondCloud
    from l2b_mask.algorithm.inference import CloudModel, InferenceSettings
    from l2b_mask.spec import DecisionRule, ModelSpec

RADIANCE = Path("<radiance array>")  # what an error about an array names
OBSERVATION = Path("<observation array>")
REFLECTANCE = Path("<reflectance array>")


@dataclass(frozen=True)
class ArrayRaster:
    """An array described as `Scene` describes a file: size, bands, no-value marker."""

    array: np.ndarray  # (lines, samples, bands)
    name: Path
    nodata: float = FLOAT_NO_VALUE
    band_names: list[str] | None = field(default=None)  # None: EMIT's band positions

    @property
    def lines(self) -> int:
        return int(self.array.shape[0])

    @property
    def samples(self) -> int:
        return int(self.array.shape[1])

    @property
    def bands(self) -> int:
        return int(self.array.shape[2])

    @property
    def header_path(self) -> Path:
        return self.name

    data_path = header_path


class ArrayReader(LineReader):
    """`read_lines` of a (lines, samples, bands) array: the slice, as the file readers return."""

    def __init__(self, raster: ArrayRaster) -> None:
        self.array = raster.array
        self.lines = raster.lines

    def close(self) -> None:
        pass

    def read_lines(self, start: int, stop: int, bands: Sequence[int] | np.ndarray | None = None,
                   dtype: np.dtype | type = np.float32) -> np.ndarray:
        self.check_range(start, stop)
        block = self.array[start:stop] if bands is None else self.array[start:stop][:, :, bands]
        return np.ascontiguousarray(block, dtype)


class ArrayScene(Scene):
    """A `Scene` over arrays: everything downstream (inference, angles) reads it as a file."""

    def radiance_reader(self) -> ArrayReader:  # type: ignore[override]
        return ArrayReader(self.radiance_header)  # type: ignore[arg-type]

    def observation_reader(self) -> ArrayReader:  # type: ignore[override]
        return ArrayReader(self.observation_header)  # type: ignore[arg-type]


def _cube(array: np.ndarray, name: Path, what: str) -> np.ndarray:
    cube = np.asarray(array)
    if cube.ndim != 3 or cube.dtype.kind not in "fiu":
        raise InputProductError(name, f"{what} must be a (lines, samples, bands) numeric array, "
                                      f"not {cube.dtype} {cube.shape}")
    return cube


def array_scene(radiance: np.ndarray, observation: np.ndarray, wavelengths_nm: Sequence[float],
                fwhm_nm: Sequence[float], nodata: float = FLOAT_NO_VALUE) -> ArrayScene:
    """The arrays checked as `Scene.open` checks files: spectral axis, observation bands (EMIT
    order: to-sun zenith at 4, Earth-Sun distance at 10), same lines and samples."""
    rdn = _cube(radiance, RADIANCE, "radiance")
    obs = _cube(observation, OBSERVATION, "observation")
    wl = np.asarray(wavelengths_nm, np.float64)
    fwhm = np.asarray(fwhm_nm, np.float64)
    check_spectral_axis(wl, fwhm, rdn.shape[2], RADIANCE)
    if obs.shape[2] not in OBS_BAND_COUNTS:
        raise InputProductError(OBSERVATION, f"observation has {obs.shape[2]} bands, expected "
                                             "11 or 12 (EMIT's order)")
    if obs.shape[:2] != rdn.shape[:2]:
        raise InputProductError(OBSERVATION, f"observation is {obs.shape[:2]}, the radiance "
                                             f"{rdn.shape[:2]} (lines, samples)")
    return ArrayScene(ArrayRaster(rdn, RADIANCE, nodata), ArrayRaster(obs, OBSERVATION, nodata),
                      wl, fwhm, OBS_SOLAR_ZENITH, OBS_EARTH_SUN_DISTANCE)


def observation_angles(observation: np.ndarray, nodata: float = FLOAT_NO_VALUE) -> SunViewAngles:
    """The four angles of an EMIT-order observation array, NaN where fill (as from a file)."""
    obs = _cube(observation, OBSERVATION, "observation")
    planes = []
    for band in (OBS_SOLAR_ZENITH, OBS_SOLAR_AZIMUTH, OBS_VIEW_ZENITH, OBS_VIEW_AZIMUTH):
        plane = np.array(obs[:, :, band], np.float32)
        plane[(plane == np.float32(nodata)) | (plane <= -9990.0)] = np.nan
        planes.append(plane)
    return SunViewAngles(*planes)


def _location(lon: np.ndarray | None, lat: np.ndarray | None,
              elev: np.ndarray | None) -> LocationArrays | None:
    if lon is None and lat is None:
        return None
    if lon is None or lat is None:
        raise ValueError("give both lon and lat, or neither")
    planes = [np.array(a, np.float64) for a in (lon, lat, np.zeros(np.shape(lon)) if elev is None
                                                else elev)]
    for plane in planes:  # NaN or Inf: no location, as -9999 in the files
        plane[~np.isfinite(plane)] = LOC_FILL
    return LocationArrays(lon=planes[0], lat=planes[1], elev=planes[2])


def _model(spec: ModelSpec | None, settings: InferenceSettings | None
           ) -> tuple[ModelSpec, InferenceSettings, CloudModel]:
    """The spec (v0.1.0 by default), the settings and the loaded model, checksums verified."""
    from l2b_mask.algorithm.inference import CloudModel, InferenceSettings
    from l2b_mask.spec import ModelSpec

    spec = spec or ModelSpec.load()
    settings = settings or InferenceSettings()
    return spec, settings, CloudModel.load(spec, settings)


def mask_radiance(radiance: np.ndarray, observation: np.ndarray, wavelengths_nm: Sequence[float],
                  fwhm_nm: Sequence[float], *, lon: np.ndarray | None = None,
                  lat: np.ndarray | None = None, elev: np.ndarray | None = None,
                  spec: ModelSpec | None = None, settings: InferenceSettings | None = None,
                  threshold: float | None = None, comparison: str | None = None,
                  beyond: BeyondCloudSettings | None = None,
                  nodata: float = FLOAT_NO_VALUE) -> xr.Dataset:
    """Cloud probability, flag and buffer distance (and, given `lon`/`lat`, the cloud shadow)
    of L1B arrays, computed exactly as the PGE computes them.

    `radiance`: (lines, samples, bands) in uW/cm2/sr/nm; `observation`: (lines, samples, 11)
    in EMIT's band order (to-sensor azimuth 1, zenith 2, to-sun azimuth 3, zenith 4, Earth-Sun
    distance 10); `nodata` marks fill in both. `spec`/`settings`: the model (default v0.1.0)
    and device, precision, batch and block sizes. `threshold`, `comparison`: the spec's decision
    rule unless given.
    """
    from l2b_mask.algorithm.inference import SceneInference, no_value_error
    from l2b_mask.dataset import swath_dataset

    scene = array_scene(radiance, observation, wavelengths_nm, fwhm_nm, nodata)
    location = _location(lon, lat, elev)
    beyond = beyond or BeyondCloudSettings()
    spec, settings, model = _model(spec, settings)
    keep = reflectance_bands_needed(beyond, location is not None)
    inference = SceneInference(scene, model, keep_reflectance_nm=keep)
    ran = inference.run_keeping(settings.lines_per_block)
    probability, kept = ran.probability, ran.reflectance
    if not np.isfinite(probability).any():
        raise no_value_error(scene)
    decision = spec.decision(threshold, comparison, "caller")
    flag = decision.flag(probability)
    result = beyond_cloud(flag, observation_angles(scene.observation_header.array, nodata),
                          location, beyond, kept.planes() if kept is not None else None,
                          kept.wavelengths_nm.tolist() if kept is not None else ())
    layers = {"flag": flag, "probability": probability, "buffer_distance": result.buffer_distance}
    if result.shadow is not None:
        layers["shadow"] = result.shadow
    return swath_dataset(layers, location=location, attrs=_attrs(spec, model, decision, result))


def _attrs(spec: ModelSpec, model: CloudModel, decision: DecisionRule,
           result: BeyondCloud | None) -> dict[str, object]:
    """What the Dataset says of how it was made."""
    attrs: dict[str, object] = {
        "cloud_model_version": spec.version,
        "cloud_threshold": decision.threshold,
        "cloud_threshold_comparison": decision.comparison,
        "implementation": model.model.implementation(model.device)}
    if result is not None:
        attrs["cloud_buffer_pixel_size_m"] = float(result.spacing.mean_m)
        if result.shadow_missing:
            attrs["cloud_shadow_not_made"] = result.shadow_missing
    return attrs


def mask_reflectance(reflectance: np.ndarray, wavelengths_nm: Sequence[float], *,
                     observation: np.ndarray | None = None, lon: np.ndarray | None = None,
                     lat: np.ndarray | None = None, elev: np.ndarray | None = None,
                     spec: ModelSpec | None = None, settings: InferenceSettings | None = None,
                     threshold: float | None = None, comparison: str | None = None,
                     beyond: BeyondCloudSettings | None = None,
                     nodata: float = FLOAT_NO_VALUE) -> xr.Dataset:
    """The mask of TOA reflectance (lines, samples, bands) at `wavelengths_nm`: the spec's bands
    kept, pixels with any NaN, Inf or `nodata` in a kept band without value, the rest through the
    PGE's model in batches. With `observation` (EMIT order), also the buffer distance, and with
    `lon`/`lat` the cloud shadow (its darkness test reads the reflectance given)."""
    from l2b_mask.algorithm.bands import kept_bands
    from l2b_mask.dataset import swath_dataset

    rho = _cube(reflectance, REFLECTANCE, "reflectance")
    wl = np.asarray(wavelengths_nm, np.float64)
    if wl.shape != (rho.shape[2],) or not np.all(np.diff(wl) > 0):
        raise InputProductError(REFLECTANCE, f"{wl.size} wavelengths for {rho.shape[2]} bands, "
                                             "or not strictly increasing")
    spec, settings, model = _model(spec, settings)
    probability = _reflectance_probability(rho, wl, kept_bands(wl, spec.drop_ranges_nm),
                                           model, nodata, settings.lines_per_block)
    decision = spec.decision(threshold, comparison, "caller")
    flag = decision.flag(probability)
    layers = {"flag": flag, "probability": probability}
    location, result = _location(lon, lat, elev), None
    if observation is not None:
        beyond = beyond or BeyondCloudSettings()
        needed = reflectance_bands_needed(beyond, location is not None)
        nearest = [int(np.argmin(np.abs(wl - w))) for w in needed]
        planes = [np.array(rho[:, :, i], np.float32) for i in nearest]
        result = beyond_cloud(flag, observation_angles(observation, nodata), location, beyond,
                              planes if needed else None, wl[nearest].tolist())
        layers["buffer_distance"] = result.buffer_distance
        if result.shadow is not None:
            layers["shadow"] = result.shadow
    return swath_dataset(layers, location=location, attrs=_attrs(spec, model, decision, result))


def _reflectance_probability(rho: np.ndarray, wl: np.ndarray, bands: np.ndarray,
                             model: CloudModel,
                             nodata: float, lines_per_block: int) -> np.ndarray:
    """P(cloud) block by block of lines, NaN where a kept band has no value."""
    if bands.size == 0:
        raise InputProductError(REFLECTANCE, "the model's drop ranges leave no band of these "
                                             "wavelengths")
    band_term = model.model.band_term(wl[bands])
    lines, samples = rho.shape[:2]
    out = np.full((lines, samples), np.nan, np.float32)
    batch_size = model.batch_size
    for start in range(0, lines, lines_per_block):
        block = np.ascontiguousarray(rho[start:start + lines_per_block][:, :, bands], np.float32)
        valid = np.isfinite(block).all(axis=-1) & ~(block == np.float32(nodata)).any(axis=-1)
        prediction = model.predict(block[valid], band_term, batch_size)
        batch_size = prediction.batch_size  # a size halved for want of memory stays halved
        out[start:start + lines_per_block][valid] = prediction.probability
    return out
