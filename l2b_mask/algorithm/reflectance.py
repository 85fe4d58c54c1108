"""Top-of-atmosphere reflectance from L1B radiance.

rho = pi * L * d^2 / (E_band * cos(solar zenith)), E_band being the solar irradiance at 1 AU
seen through each band's Gaussian response. The per-band irradiance is computed once per
scene; the per-block work is one fused multiply in float64, rounded once to float32, which is
how the published implementation reaches its float32 reflectance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from l2b_mask.errors import AncillaryError

# sigma = FWHM / FWHM_TO_SIGMA, the constant of the resampling routine the published
# implementation calls (2 sqrt(2 ln 2) = 2.3548..., rounded there to 2.355).
FWHM_TO_SIGMA = 2.355
# Plausible peak of solar spectral irradiance at 1 AU in uW/cm2/nm (about 200 near 450-500 nm);
# a file in W/m2/nm (peak ~2) or mW/m2/nm (peak ~2000) falls outside and is refused.
_IRRADIANCE_PEAK_RANGE = (100.0, 400.0)


def load_irradiance(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(wavelength_nm, irradiance uW/cm2/nm at 1 AU) from the (N, 2) float array file."""
    p = Path(path)
    try:
        table = np.load(p, allow_pickle=False)
    except FileNotFoundError:
        raise AncillaryError(p, "irradiance file not found") from None
    except (OSError, ValueError, EOFError) as exc:
        raise AncillaryError(p, f"irradiance file unreadable ({exc})") from None
    if table.ndim != 2 or table.shape[1] != 2 or table.shape[0] < 2:
        raise AncillaryError(p, f"irradiance must be an (N, 2) array, found shape {table.shape}")
    if not np.issubdtype(table.dtype, np.floating):
        raise AncillaryError(p, f"irradiance must be floating point, found {table.dtype}")
    wl, irr = table[:, 0].astype(np.float64), table[:, 1].astype(np.float64)
    if not (np.all(np.isfinite(wl)) and np.all(np.isfinite(irr))):
        raise AncillaryError(p, "irradiance holds NaN or Inf")
    if np.any(np.diff(wl) <= 0):
        raise AncillaryError(p, "irradiance wavelengths are not strictly increasing")
    if np.any(irr < 0):
        raise AncillaryError(p, "irradiance holds negative values")
    lo, hi = _IRRADIANCE_PEAK_RANGE
    if not lo <= irr.max() <= hi:
        raise AncillaryError(
            p, f"irradiance peak {irr.max():.4g} outside {lo}-{hi}: not uW/cm2/nm at 1 AU?"
        )
    return wl, irr


def band_irradiance(
    grid_nm: np.ndarray, irradiance: np.ndarray, centres_nm: np.ndarray, fwhm_nm: np.ndarray
) -> np.ndarray:
    """Irradiance per band: the grid weighted by each band's normalised Gaussian response."""
    sigma = np.asarray(fwhm_nm, np.float64) / FWHM_TO_SIGMA
    u = (grid_nm[None, :] - np.asarray(centres_nm, np.float64)[:, None]) / sigma[:, None]
    response = np.exp(-0.5 * u * u)
    total = response.sum(axis=1)
    if np.any(total <= 0):
        bad = np.flatnonzero(total <= 0)
        raise AncillaryError(None, f"bands {bad.tolist()} have no response on the irradiance grid")
    response /= total[:, None]
    return response @ irradiance


def toa_reflectance(
    radiance: np.ndarray, solar_zenith_deg: np.ndarray, earth_sun_au: float, band_irr: np.ndarray,
    chunk: int = 2048,
) -> np.ndarray:
    """Float32 reflectance for pixels x bands radiance and per-pixel solar zenith (degrees).

    Computed in float64 (radiance x pi / cos(zenith), then x d^2 / irradiance, rounded once to
    float32), `chunk` pixels at a time so that the float64 intermediate stays in the core's cache
    instead of making three passes over a block-sized array in memory; the same operations in the
    same order per element, so the same values."""
    pixel_factor = np.pi / np.cos(np.deg2rad(np.asarray(solar_zenith_deg, np.float64)))
    band_factor = 1.0 / (np.asarray(band_irr, np.float64) / (earth_sun_au * earth_sun_au))
    radiance = np.asarray(radiance)
    rho = np.empty(radiance.shape, np.float32)
    flat_rdn = radiance.reshape(-1, radiance.shape[-1]) if radiance.ndim > 1 else radiance[None]
    flat_rho = rho.reshape(flat_rdn.shape)
    flat_pf = np.broadcast_to(pixel_factor, radiance.shape[:-1]).reshape(-1)
    work = np.empty((min(chunk, flat_rdn.shape[0]), flat_rdn.shape[1]), np.float64)
    for s in range(0, flat_rdn.shape[0], chunk):
        e = min(s + chunk, flat_rdn.shape[0])
        w = work[:e - s]
        np.multiply(flat_rdn[s:e], flat_pf[s:e, None], out=w, dtype=np.float64)
        w *= band_factor
        flat_rho[s:e] = w
    return rho
