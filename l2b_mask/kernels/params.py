"""The kernel's parameter block: the network's weights as plain arrays, folded and packed in the
order `spectf.cpp` unpacks them. The model hands over a `KernelWeights`; nothing here knows the
model's module names."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KernelWeights:
    """One encoder layer's weights (float arrays, nn.Linear layouts: [out, in])."""

    embed_w: np.ndarray      # [D, 2]: reflectance and band-term columns
    embed_b: np.ndarray      # [D]
    norm1_w: np.ndarray      # [D]
    norm1_b: np.ndarray      # [D]
    in_w: np.ndarray         # [3D, D]: Q, K, V rows
    in_b: np.ndarray         # [3D]
    out_w: np.ndarray        # [D, D]
    out_b: np.ndarray        # [D]
    norm2_w: np.ndarray      # [D]
    norm2_b: np.ndarray      # [D]
    ff1_w: np.ndarray        # [F, D]
    ff1_b: np.ndarray        # [F]
    ff2_w: np.ndarray        # [D, F]
    ff2_b: np.ndarray        # [D]
    head_w: np.ndarray       # [2, D]
    head_b: np.ndarray       # [2]
    num_heads: int

    @classmethod
    def random(cls, seed: int = 0, d: int = 64, ff: int = 64, heads: int = 8) -> KernelWeights:
        """Weights of the kernel's shape with nn.Linear-like magnitudes: the calibration times the
        variants on these (the kernel's cost does not depend on the values)."""
        g = np.random.default_rng(seed)

        def u(*shape: int) -> np.ndarray:
            return g.uniform(-1, 1, shape) / np.sqrt(shape[-1])

        return cls(u(d, 2), u(d), 1 + 0.1 * u(d), 0.1 * u(d), u(3 * d, d), u(3 * d), u(d, d), u(d),
                   1 + 0.1 * u(d), 0.1 * u(d), u(ff, d), u(ff), u(d, ff), u(d), u(2, d), u(2), heads)


def pack_parameters(w: KernelWeights, band_term: np.ndarray) -> np.ndarray:
    """The kernel's parameter block for a (T,) band term (layout: spectf.cpp `unpack`).

    LayerNorm affine terms are folded into the projection after them and the query rows are
    scaled by log2(e)/sqrt(head width) (the kernel's softmax works in base 2), in float64. The
    per-band embedding constant is computed in float32, as nn.Linear computes it.
    """
    def f64(a: np.ndarray) -> np.ndarray:
        return np.asarray(a, np.float64)

    d = w.embed_w.shape[0]
    hd = d // w.num_heads
    we = np.asarray(w.embed_w, np.float32)
    band = np.asarray(band_term, np.float32)
    t = band.shape[0]
    tp = (t + 7) // 8 * 8
    ct = np.zeros((d, tp), np.float32)
    ct[:, :t] = band[None, :] * we[:, 1:2] + np.asarray(w.embed_b, np.float32)[:, None]

    win, bin_ = f64(w.in_w), f64(w.in_b)
    win_f, bin_f = win * f64(w.norm1_w)[None, :], bin_ + win @ f64(w.norm1_b)
    qscale = np.log2(np.e) / np.sqrt(hd)
    win_f[:d] *= qscale
    bin_f[:d] *= qscale
    w1, b1 = f64(w.ff1_w), f64(w.ff1_b)
    parts = [
        we[:, 0], ct, win_f, bin_f, f64(w.out_w), f64(w.out_b),
        w1 * f64(w.norm2_w)[None, :], b1 + w1 @ f64(w.norm2_b),
        f64(w.ff2_w), f64(w.ff2_b), f64(w.head_w), f64(w.head_b),
    ]
    return np.ascontiguousarray(np.concatenate([np.asarray(p, np.float32).ravel() for p in parts]))
