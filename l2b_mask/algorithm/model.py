"""The SpecTf cloud model in PyTorch, and loading the official weights as published.

Module names mirror the published state_dict keys, so the official files load strictly.
Each band of a reflectance spectrum is one token [reflectance, normalised band centre];
one pre-norm encoder layer without residual connections; max over tokens; a 2-class head.

Two implementations of the same forward pass: on the CPU, the compiled kernel of
`l2b_mask.kernels` (the whole pass per pixel in cache; the variant this CPU runs fastest, chosen by
measurement) when one is available; otherwise, and on CUDA, the torch path below (fused SDPA
attention). The model hands the kernels its weights as a `KernelWeights` (`kernel_weights`).
`SpecTf.set_precision` picks the arithmetic:

* ``float32``: faithful (kernel: max |dP| ~1e-5 against the float64 network on realistic scenes,
  as close as the torch float32 path; 1.2e-5 against the published float32 reference);
* ``float32-fastexp``: float32 with a degree-3 exp2 in the softmax (kernel only; max |dP| ~2.4e-4
  measured on realistic scenes, bound 2e-3 and 0.1% of flags); where the kernel is not used it
  runs the float32 torch path;
* ``bfloat16``: the fastest kernel inside its bound (max |dP| 0.05, 0.1% of flags), measured on
  this CPU among the 16-bit builds (int16 projections and Q.K^T, bfloat16 or int16 P.V: AVX-512
  VNNI/BF16, or AVX2 `vpmaddwd`; max |dP| 0.022 and 1 flip of 1847 on the reference scene) and the
  float32 ones, so never slower than ``float32`` where a kernel runs. Where none runs (not x86-64,
  no compiler), and on CUDA, bfloat16 attention products in the torch path (0.034 and 1 flip;
  slow on CPUs without bfloat16 hardware).
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import l2b_mask.kernels as kernels
from l2b_mask.errors import AncillaryError
from l2b_mask.kernels import selection
from l2b_mask.spec import ModelSpec

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "float32-fastexp", "bfloat16")
BACKENDS = ("auto", "kernel", "torch")


class SpectralEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2, dim)


class SelfAttention(nn.Module):
    """Holds the published multi-head attention parameters; the product uses fused SDPA.

    `product_dtype` sets the precision of the two attention products (Q.K^T and P.V), the
    bulk of the arithmetic. Only there does bfloat16 stay close to float32: rounding the
    embedding or the projections to bfloat16 moves P(cloud) by up to 0.2 on the reference
    scene, because this network has no residual path to dilute the error.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.product_dtype: torch.dtype | None = None

    #: how training on the CPU computes the attention (with gradients, float32 products):
    #: "heads-last" (`attention_cpu`, faster there) or "sdpa" (torch's fused attention, what
    #: every other case runs). Both compute the same function to float32 rounding.
    cpu_training_formulation: str = "heads-last"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mha = self.attention
        n, t, d = x.shape
        h = mha.num_heads
        if self._heads_last(x):
            return self._heads_last_forward(x)
        qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)
        q, k, v = qkv.view(n, t, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        if self.product_dtype is not None:
            q, k, v = q.to(self.product_dtype), k.to(self.product_dtype), v.to(self.product_dtype)
        a = F.scaled_dot_product_attention(q, k, v).to(x.dtype)
        return mha.out_proj(a.transpose(1, 2).reshape(n, t, d))

    def _heads_last_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The attention of `attention_cpu`: the projections are batched products that write
        (and read) the heads-last layout directly, so no tensor is transposed in memory."""
        # imported here, on training's path only: `attention_cpu` marks itself opaque to
        # torch.compile, which loads torch._dynamo (about a second of every PGE start otherwise)
        from l2b_mask.algorithm.attention_cpu import heads_last_attention

        mha = self.attention
        n, t, d = x.shape
        h = mha.num_heads
        w, b = mha.in_proj_weight, mha.in_proj_bias
        # (n, 3d, t) = W x^T + b: rows are q, k, v, each head's head_dim rows together
        qkv = torch.baddbmm(b.view(1, 3 * d, 1).expand(n, 3 * d, t), w.expand(n, 3 * d, d),
                            x.transpose(1, 2))
        a = heads_last_attention(qkv.view(n, 3 * h, d // h, t), h).view(n, d, t)
        wo, bo = mha.out_proj.weight, mha.out_proj.bias
        return torch.baddbmm(bo.expand(n, t, d), a.transpose(1, 2), wo.t().expand(n, d, d))

    def _heads_last(self, x: torch.Tensor) -> bool:
        return (self.cpu_training_formulation == "heads-last" and x.device.type == "cpu"
                and torch.is_grad_enabled() and x.requires_grad and self.product_dtype is None
                and x.dtype == torch.float32)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.gelu(self.linear1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.attention = SelfAttention(dim, heads)
        self.ff = FeedForward(dim, hidden)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # No residual connections: this is the published architecture, not an omission.
        return self.ff(self.norm2(self.attention(self.norm1(x))))


class SpecTf(nn.Module):
    """Cloud probability from TOA reflectance spectra (pixels x bands)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.spectral_embed = SpectralEmbed(spec.embed_dim)
        self.layers = nn.ModuleList(
            EncoderLayer(spec.embed_dim, spec.num_heads, spec.ff_dim, spec.layer_norm_eps)
            for _ in range(spec.num_layers)
        )
        self.head = nn.Linear(spec.embed_dim, 2)

    precision: str = "float32"
    backend: str = "auto"
    #: threads of the CPU kernel; None: torch.get_num_threads()
    num_threads: int | None = None

    def set_precision(self, precision: str, backend: str | None = None) -> SpecTf:
        """Arithmetic (one of PRECISIONS) and, optionally, the CPU implementation (BACKENDS).

        backend ``auto`` uses the compiled kernel on the CPU when it is available (else the torch
        path, logged once), ``kernel`` requires it, ``torch`` never uses it.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        backend = self.backend if backend is None else backend
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        if backend == "kernel":
            why = kernels.supports(self.spec) or selection.unavailable_reason(precision)
            if why:
                raise RuntimeError(f"CPU kernel requested but unavailable: {why}")
        dtype = torch.bfloat16 if precision == "bfloat16" else None
        for layer in self.layers:
            layer.attention.product_dtype = dtype
        self.precision, self.backend = precision, backend
        return self

    def uses_kernel(self, device: torch.device | str = "cpu") -> bool:
        """Whether forward() on this device runs the compiled CPU kernel."""
        return self._kernel(device) is not None

    def implementation(self, device: torch.device | str = "cpu") -> str:
        """Which code computes forward() on this device, for logs and provenance: the arithmetic of
        `bfloat16` differs between them (docs/ATBD.md section 9)."""
        kernel = self._kernel(device)
        if kernel is None:
            return f"torch ({torch.device(device).type})"
        return (f"cpu kernel, {kernel.variant.name} build: {kernel.variant.description}, "
                f"exp2 degree {kernels.EXP_DEGREE[self.precision]}")

    def _kernel(self, device: torch.device | str = "cpu") -> kernels.Kernel | None:
        if torch.device(device).type != "cpu" or self.backend == "torch" or kernels.supports(self.spec):
            return None
        return selection.for_precision(self.precision)

    def _kernel_parameters(self, band_term: torch.Tensor) -> np.ndarray:
        key = (tuple((p.data_ptr(), p._version) for p in self.parameters()),
               band_term.detach().cpu().numpy().tobytes())
        cached = getattr(self, "_packed", None)
        if cached is None or cached[0] != key:
            band = band_term.detach().to("cpu", torch.float32).numpy()
            cached = (key, kernels.pack_parameters(kernel_weights(self), band))
            self._packed = cached
        return cached[1]

    def band_term(self, wavelengths_nm: np.ndarray) -> torch.Tensor:
        """The second token feature, computed in float32 as the published implementation does."""
        wl = torch.as_tensor(np.asarray(wavelengths_nm, np.float32))
        offset = torch.tensor(self.spec.wavelength_offset_nm, dtype=torch.float32)
        scale = torch.tensor(self.spec.wavelength_scale_nm, dtype=torch.float32)
        return (wl - offset) / scale

    def forward(self, reflectance: torch.Tensor, band_term: torch.Tensor) -> torch.Tensor:
        """P(cloud) for (N, T) reflectance and the (T,) band term; float32 out."""
        kernel = self._kernel(reflectance.device)
        if kernel is not None:
            threads = self.num_threads or torch.get_num_threads()
            return kernel.forward(self._kernel_parameters(band_term), reflectance, threads,
                                  kernels.EXP_DEGREE[self.precision])
        return self.forward_torch(reflectance, band_term)

    def forward_torch(self, reflectance: torch.Tensor, band_term: torch.Tensor) -> torch.Tensor:
        """The torch implementation (CPU fallback, CUDA): fused SDPA attention."""
        return torch.softmax(self.logits(reflectance, band_term).float(), dim=-1)[:, 1]

    def logits(self, reflectance: torch.Tensor, band_term: torch.Tensor) -> torch.Tensor:
        """(N, 2) class scores of the torch implementation: what training differentiates (the
        cross-entropy wants them, not P) and what forward_torch turns into P(cloud)."""
        n, t = reflectance.shape
        tokens = torch.stack((reflectance, band_term.to(reflectance).expand(n, t)), dim=-1)
        x = torch.tanh(self.spectral_embed.linear(tokens))
        for layer in self.layers:
            x = layer(x)
        return self.head(x.amax(dim=1))


def kernel_weights(model: SpecTf) -> kernels.KernelWeights:
    """The first encoder layer's weights as the compiled kernels take them."""
    layer = model.layers[0]
    mha = layer.attention.attention

    def a(t: torch.Tensor) -> np.ndarray:
        return t.detach().to("cpu", torch.float32).numpy()

    return kernels.KernelWeights(
        a(model.spectral_embed.linear.weight), a(model.spectral_embed.linear.bias),
        a(layer.norm1.weight), a(layer.norm1.bias), a(mha.in_proj_weight), a(mha.in_proj_bias),
        a(mha.out_proj.weight), a(mha.out_proj.bias), a(layer.norm2.weight), a(layer.norm2.bias),
        a(layer.ff.linear1.weight), a(layer.ff.linear1.bias), a(layer.ff.linear2.weight),
        a(layer.ff.linear2.bias), a(model.head.weight), a(model.head.bias), model.spec.num_heads)


def load_model(spec: ModelSpec, weights: Path | str | None = None) -> SpecTf:
    """A SpecTf model on the CPU in eval mode with the official weights loaded strictly."""
    path = Path(weights) if weights is not None else spec.weights_path
    if not path.is_file():
        raise AncillaryError(path, "model weights not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
            ValueError, AttributeError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AncillaryError(path, f"model weights unreadable ({detail[:200]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AncillaryError(path, "model weights are not a state_dict of tensors")
    model = SpecTf(spec)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if state[k].shape != expected[k].shape)
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    if wrong:
        problems.append(
            "wrong shapes " + ", ".join(
                f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in wrong[:5])
        )
    if problems:
        raise AncillaryError(path, f"weights do not match the SpecTf {spec.version} architecture: "
                             + "; ".join(problems))
    bad = [k for k, v in state.items() if not v.is_floating_point() or not torch.isfinite(v).all()]
    if bad:
        raise AncillaryError(path, f"weights hold non-float or non-finite tensors: {bad[:5]}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval().requires_grad_(False)
