"""The AVX2 16-bit kernel (`mixed-i16-avx2`) does the int16 arithmetic of `mixed-i16pv`.

The AVX-512 build cannot run on an AVX2-only CPU, so the two are compared through a numpy model of
the documented quantisation (spectf_quant.h, spectf_mixed.h): weights per row to 12 bits,
activations per token to 13, queries per token and keys per head to 14, probabilities to PMAX and
values per head dimension to VMAX with exact integer sums. The model computes everything else in
float64, so it differs from the kernel only where a float32 rounding moves a value across an
integer boundary: the kernel must be several times closer to it than to the unquantised network,
i.e. it quantises the way the model does, not merely within the bfloat16 bound.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import erf
from test_kernels import _model_input
from threadpoolctl import threadpool_limits

import l2b_mask.kernels as kernels
from l2b_mask.algorithm.model import kernel_weights, load_model

VARIANT = "mixed-i16-avx2"
pytestmark = pytest.mark.skipif(kernels.variant_reason(VARIANT) is not None,
                                reason=f"{VARIANT}: {kernels.variant_reason(VARIANT)}")
D, H, F = 64, 8, 64
HD = D // H
W12, X13, Q14 = 4095.0, 8191.0, 16383.0


def _unpack(p: np.ndarray, t: int) -> dict[str, np.ndarray]:
    tp = (t + 7) // 8 * 8
    sizes = [("w0", D), ("ct", D * tp), ("win", 3 * D * D), ("bin", 3 * D), ("wout", D * D), ("bout", D),
             ("w1", F * D), ("b1", F), ("w2", D * F), ("b2", D), ("wh", 2 * D), ("bh", 2)]
    out, at = {}, 0
    for name, n in sizes:
        out[name] = p[at:at + n].astype(np.float64)
        at += n
    shapes = {"ct": (D, tp), "win": (3 * D, D), "wout": (D, D), "w1": (F, D), "w2": (D, F), "wh": (2, D)}
    for name, shape in shapes.items():
        out[name] = out[name].reshape(shape)
    out["ct"] = out["ct"][:, :t]
    return out


def _layer_norm(x: np.ndarray) -> np.ndarray:       # [C, T], over channels, no affine (folded)
    return (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)


def _scale(a: np.ndarray, limit: float) -> np.ndarray:
    return np.divide(limit, a, out=np.zeros_like(a), where=a > 0)


def _project(w: np.ndarray, b: np.ndarray, x: np.ndarray, quantised: bool) -> np.ndarray:
    if not quantised:
        return w @ x + b[:, None]
    wa = np.abs(w).max(1)
    wq = np.rint(w * _scale(wa, W12)[:, None])
    xa = np.abs(x).max(0)
    xq = np.rint(x * _scale(xa, X13)[None, :])
    return (wq @ xq) * (wa / W12)[:, None] * (xa / X13)[None, :] + b[:, None]


def _attention(qkv: np.ndarray, t: int, quantised: bool) -> np.ndarray:
    """softmax(Q K^T) V per head, base 2 (the query rows carry log2 e / sqrt 8)."""
    out = np.empty((D, t))
    budget = 0.99 * 2147483647.0 / (2.0 * ((t + 1) // 2))
    pmax = min(16383.0, np.floor(np.sqrt(16.0 * budget)))
    vmax = min(32767.0, np.floor(budget / pmax))
    for h in range(H):
        q, k, v = (qkv[s * D + h * HD:s * D + (h + 1) * HD] for s in range(3))
        if not quantised:
            s = q.T @ k
            e = np.exp2(s - s.max(1, keepdims=True))
            out[h * HD:(h + 1) * HD] = (e @ v.T / e.sum(1, keepdims=True)).T
            continue
        kmax = np.abs(k).max()
        kq = np.rint(k * (Q14 / kmax))
        qa = np.abs(q).max(0)
        qq = np.rint(q * _scale(qa, Q14)[None, :])
        s = qq.T @ kq                                          # exact integers
        c = (qa * (kmax / Q14) / Q14)[:, None]
        p = np.rint(np.exp2((s - s.max(1, keepdims=True)) * c + np.log2(pmax)))
        va = np.abs(v).max(1)
        vq = np.rint(v * _scale(va, vmax)[:, None])
        out[h * HD:(h + 1) * HD] = ((p @ vq.T) / p.sum(1, keepdims=True) * (va / vmax)[None, :]).T
    return out


def reference(params: np.ndarray, rho: np.ndarray, quantised: bool) -> np.ndarray:
    """P(cloud) of the kernel's network in float64, with or without the int16 quantisation."""
    n, t = rho.shape
    p = _unpack(params, t)
    result = np.empty(n)
    for i in range(n):
        x = _layer_norm(np.tanh(rho[i][None, :] * p["w0"][:, None] + p["ct"]))
        a = _attention(_project(p["win"], p["bin"], x, quantised), t, quantised)
        y = _layer_norm(_project(p["wout"], p["bout"], a, quantised))
        f = _project(p["w1"], p["b1"], y, quantised)
        f = 0.5 * f * (1 + erf(f / np.sqrt(2)))
        y = _project(p["w2"], p["b2"], f, quantised)
        logits = p["wh"] @ y.max(1) + p["bh"]
        result[i] = 1 / (1 + np.exp(logits[0] - logits[1]))
    return result


@pytest.fixture(scope="module")
def model(spec):
    return load_model(spec)


@pytest.fixture(scope="module")
def spectra(spec, tmp_path_factory):
    """Reflectance and band term of realistic pixels (a synthetic acquisition, half cloud)."""
    from l2b_mask.synthetic.scene import generate_acquisition

    acq = generate_acquisition(tmp_path_factory.mktemp("i16"), lines=8, samples=40, seed=3,
                               cloud_fraction=0.45)
    rho, band_term = _model_input(spec, acq.radiance, acq.observation)
    return np.ascontiguousarray(rho[:48].numpy(), np.float32), band_term.numpy()


@pytest.mark.parametrize("tokens", [268, 261])
def test_avx2_int16_kernel_quantises_as_the_avx512_one(model, spectra, tokens):
    """Measured at 268 tokens: max |dP| 2.3e-4 (rms 3.3e-5) to the int16 model, 7.6e-4 (rms 1.2e-4)
    to the unquantised network. Odd and non-multiple-of-8 token counts exercise the zero key of the
    last pair and the masked keys of the last block."""
    rho = np.ascontiguousarray(spectra[0][:, :tokens])
    params = kernels.pack_parameters(kernel_weights(model), spectra[1][:tokens])
    got = kernels.load_variant(VARIANT).forward(params, torch.from_numpy(rho), 2, 5).numpy()
    with threadpool_limits(1):          # small matrices: BLAS threads only contend
        quantised = reference(params, rho, quantised=True)
        exact = reference(params, rho, quantised=False)

    def rms(a: np.ndarray) -> float:
        return float(np.sqrt(np.mean(a ** 2)))

    to_model, to_exact = got - quantised, got - exact
    print(f"T={tokens}: |dP| to the int16 model max {np.abs(to_model).max():.1e} rms {rms(to_model):.1e}; "
          f"to float64 max {np.abs(to_exact).max():.1e} rms {rms(to_exact):.1e}")
    assert np.abs(got - exact).max() <= 0.05                 # the bfloat16 precision's bound
    assert rms(got - quantised) <= 0.5 * rms(got - exact)
    assert np.abs(got - quantised).max() <= 1e-3


def test_avx2_int16_kernel_with_scores_far_below_the_maximum(model, spectra):
    """Query weights x8 spread a query's scores over hundreds of powers of 2, so that most blocks
    of 8 queries take the kernel's raise of the lowest scores (attention8) and many probabilities
    underflow; they must still be the int16 model's (exp2z alone is only valid from -125 up)."""
    tokens = 268
    rho = np.ascontiguousarray(spectra[0][:16, :tokens])
    params = kernels.pack_parameters(kernel_weights(model), spectra[1][:tokens]).copy()
    tp = (tokens + 7) // 8 * 8
    win = D + D * tp                                   # the query rows of win, then those of bin
    params[win:win + D * D] *= 8
    params[win + 3 * D * D:win + 3 * D * D + D] *= 8
    got = kernels.load_variant(VARIANT).forward(params, torch.from_numpy(rho), 2, 5).numpy()
    with threadpool_limits(1):
        quantised = reference(params, rho, quantised=True)
    spread = _score_spread(params, rho[0], tokens)
    assert spread > 250                                # log2 units: far past the -125 floor
    assert np.isfinite(got).all()
    assert np.abs(got - quantised).max() <= 1e-3


def _score_spread(params: np.ndarray, rho: np.ndarray, t: int) -> float:
    """The largest max - min of one query's scores (log2 units) in the first pixel, any head."""
    p = _unpack(params, t)
    x = _layer_norm(np.tanh(rho[None, :] * p["w0"][:, None] + p["ct"]))
    qkv = _project(p["win"], p["bin"], x, quantised=False)
    spread = 0.0
    for h in range(H):
        s = qkv[h * HD:(h + 1) * HD].T @ qkv[D + h * HD:D + (h + 1) * HD]
        spread = max(spread, float((s.max(1) - s.min(1)).max()))
    return spread
