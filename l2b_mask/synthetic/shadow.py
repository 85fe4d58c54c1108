"""Cloud shadows of the synthetic scenes: where the direct sun is blocked, and by how much.

Cloud tops sit on a few height levels (a cloud deck per level) chosen by a smooth random field,
so each cloud has one height and clouds far apart differ. Everything is a closed-form function
of fractional (line, sample), like the rest of the generator, so any block of lines is rendered
alone and the result does not depend on the block size.

The geometry is written from the physical picture, independently of `l2b_mask.algorithm.cloud_shadow`
(which tests check against it): the instrument sees a cloud element at height h at ground pixel
G; the element itself is at C = G + h tan(VZA) u(VAA) (up the line of sight towards the
sensor); the sun ray through C reaches the ground at S = C - h tan(SZA) u(SAA). For a ground
pixel P the shading cloud element at level h is therefore seen at G = P - (S - G), solved with
the angles at G by two fixed-point steps (the angles turn slowly across the scene).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

# The true shadow: direct sun blocked by at least this fraction by a thick or ice cloud.
SHADOW_TRUTH_OPACITY = 0.5
HEIGHT_LEVELS = 5

__all__ = ["HEIGHT_LEVELS", "SHADOW_TRUTH_OPACITY", "cast_shadows", "diffuse_fraction",
           "shade_factor"]


class _Field(Protocol):
    def at(self, lines: np.ndarray, samples: np.ndarray) -> np.ndarray: ...


class ShadowScene(Protocol):
    """What the shadow renderer needs of the generator's scene (`synthetic._Scene`)."""

    cloud_heights_m: tuple[float, float]
    height_field: _Field
    lines: int
    samples: int

    def is_fill(self, line: np.ndarray, sample: np.ndarray) -> np.ndarray: ...

    def solar_zenith(self, line: np.ndarray, sample: np.ndarray) -> np.ndarray: ...
    def solar_azimuth(self, line: np.ndarray, sample: np.ndarray) -> np.ndarray: ...
    def view_angles(self, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
    def ground_to_grid(self, d_east: np.ndarray, d_north: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]: ...
    def cloud_opacity_at(self, line: np.ndarray, sample: np.ndarray, mu0: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def diffuse_fraction(wavelengths_nm: np.ndarray) -> np.ndarray:
    """Share of the ground's illumination that is diffuse skylight, which a shadow keeps:
    large in the blue (Rayleigh), small in the SWIR."""
    return 0.12 + 0.3 * (450.0 / np.asarray(wavelengths_nm, np.float64)) ** 2


def shade_factor(opacity: np.ndarray, wavelengths_nm: np.ndarray) -> np.ndarray:
    """(n, m, bands) float32 factor on the surface reflectance: the diffuse light plus the
    direct light that gets through, 1 - (1 - diffuse) x opacity."""
    direct = 1.0 - diffuse_fraction(wavelengths_nm)
    return (1.0 - opacity[..., None] * direct).astype(np.float32)


def level_heights(scene: ShadowScene) -> np.ndarray:
    """The cloud-top height (m) of each level, evenly spread over the scene's range."""
    lo, hi = scene.cloud_heights_m
    return lo + (hi - lo) * (np.arange(HEIGHT_LEVELS) + 0.5) / HEIGHT_LEVELS


def height_level(scene: ShadowScene, line: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Level index (0..HEIGHT_LEVELS-1) of the cloud deck at fractional points."""
    u = 0.5 * (1.0 + np.tanh(0.9 * scene.height_field.at(line, sample)))
    return np.clip(np.floor(u * HEIGHT_LEVELS), 0, HEIGHT_LEVELS - 1).astype(np.int64)


def _seen_at(scene: ShadowScene, line: np.ndarray, sample: np.ndarray, h: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """Where the instrument sees the cloud element at height h whose shadow falls on
    (line, sample): G with G + offset(G) = P."""
    gl, gs = line, sample
    for _ in range(2):
        sza = np.deg2rad(scene.solar_zenith(gl, gs))
        saa = np.deg2rad(scene.solar_azimuth(gl, gs))
        _, vza, vaa = scene.view_angles(gs)
        vza, vaa = np.deg2rad(vza), np.deg2rad(vaa)
        # C - G: up the line of sight; S - C: down the sun ray.
        c_east, c_north = h * np.tan(vza) * np.sin(vaa), h * np.tan(vza) * np.cos(vaa)
        s_east = c_east - h * np.tan(sza) * np.sin(saa)
        s_north = c_north - h * np.tan(sza) * np.cos(saa)
        d_line, d_sample = scene.ground_to_grid(s_east, s_north)
        gl, gs = line - d_line, sample - d_sample
    return gl, gs


def _seen_in_scene(scene: ShadowScene, gl: np.ndarray, gs: np.ndarray) -> np.ndarray:
    """Whether the instrument has a pixel with a value where it sees (gl, gs)."""
    il, js = np.rint(gl).astype(np.int64), np.rint(gs).astype(np.int64)
    inside = (il >= 0) & (il < scene.lines) & (js >= 0) & (js < scene.samples)
    seen = np.zeros(gl.shape, bool)
    seen[inside] = ~scene.is_fill(il[inside], js[inside])
    return seen


def cast_shadows(scene: ShadowScene, ln: np.ndarray, sm: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For the pixels (ln x sm): (opacity, opaque, opaque_seen, cloud height), each (n, m).

    opacity: fraction of the direct sun stopped by any cloud; opaque: by thick or ice clouds
    only (the truth threshold applies to it); opaque_seen: by those of them the scene has a
    pixel with a value for (a shadow cast from outside the scene or from under fill cannot be
    found from this scene); cloud height: the height (m) of the deck a cloud there sits on.
    """
    line, sample = np.meshgrid(np.asarray(ln, np.float64), np.asarray(sm, np.float64),
                               indexing="ij")
    heights = level_heights(scene)
    own_height = heights[height_level(scene, line, sample)]
    mu0 = np.cos(np.deg2rad(scene.solar_zenith(line, sample)))
    opacity = np.zeros(line.shape)
    opaque = np.zeros(line.shape)
    opaque_seen = np.zeros(line.shape)
    for level, h in enumerate(heights):
        gl, gs = _seen_at(scene, line, sample, float(h))
        cloudy, opaque_g, opacity_g = scene.cloud_opacity_at(gl, gs, mu0)
        here = cloudy & (height_level(scene, gl, gs) == level)
        opaque = np.maximum(opaque, np.where(here, opaque_g, 0.0))
        opacity = np.maximum(opacity, np.where(here, opacity_g, 0.0))
        seen = here & _seen_in_scene(scene, gl, gs)
        opaque_seen = np.maximum(opaque_seen, np.where(seen, opaque_g, 0.0))
    return opacity, opaque, opaque_seen, own_height
