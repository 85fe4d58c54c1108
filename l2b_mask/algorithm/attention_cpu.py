"""Multi-head attention for training on the CPU: heads of a few dimensions, a cache-sized group
of spectra at a time.

Why: torch's fused CPU attention (SDPA) computes the products with matrix kernels whose inner or
outer dimension is the head width (8 for v0.1.0), a shape they run far below the FMA peak, and
its backward pass is 2.5 times its forward. Here the heads are laid out "heads-last" as
(spectra, heads, head_dim, tokens), so every product has the head width as its row count
(`V^T P^T`, `dO^T P`, `K^T dS^T`, `Q^T dS`), the orientation the CPU's matrix kernels run
fastest, and the token x token matrices of one group (about 2 MB: one spectrum of v0.1.0) stay in
the cache between the product that makes them, the softmax and the product that uses them. The
backward pass recomputes the attention probabilities group by group instead of keeping them
(2.3 MB a spectrum for v0.1.0): recomputing is cheaper than the memory traffic.

It computes the same function as `F.scaled_dot_product_attention` (no mask, no dropout, default
scale) to float32 rounding, forward and gradients (tests/training/test_attention_cpu.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.autograd.function import once_differentiable

#: bytes of one group's token x token matrix: small enough to stay in a core's share of the cache
#: (1 MB of L2 per Zen 3 core, and the L3 shared by the cores beside it)
GROUP_BYTES = 2_500_000

_pool_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}


def group_size(heads: int, tokens: int, element_bytes: int = 4) -> int:
    """Spectra per group: as many as keep a (group x heads) x tokens x tokens matrix within
    GROUP_BYTES, at least one."""
    return max(1, GROUP_BYTES // (heads * tokens * tokens * element_bytes))


def _pool(workers: int) -> ThreadPoolExecutor:
    with _pool_lock:
        if workers not in _pools:
            _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="attention")
        return _pools[workers]


def _single_threaded(work: Callable[[int, int], None], start: int, stop: int) -> None:
    torch.set_num_threads(1)  # this worker's torch ops: no inner thread team to wait for
    with torch.no_grad():  # grad mode is per thread: a worker's is on, the caller's off
        work(start, stop)


def for_groups(n: int, group: int, work: Callable[[int, int], None]) -> None:
    """work(s, e) for each group s:e of n spectra. With several torch threads the groups are
    split between that many workers, each running its torch operations on one thread: one
    synchronisation per pass instead of one per operation (thousands per step, each a stall
    when another process holds a core)."""
    starts = list(range(0, n, group))
    threads = torch.get_num_threads()
    workers = min(threads, len(starts))

    def run(first: int, last: int) -> None:
        for s in starts[first:last]:
            work(s, min(s + group, n))

    if workers <= 1:
        run(0, len(starts))
        return
    bounds = [len(starts) * i // workers for i in range(workers + 1)]
    torch.set_num_threads(1)
    try:
        jobs = [_pool(workers).submit(_single_threaded, run, a, b)
                for a, b in zip(bounds, bounds[1:], strict=False)]
        for job in jobs:
            job.result()
    finally:
        torch.set_num_threads(threads)


def _group(qkv: torch.Tensor, heads: int, s: int, e: int,
           scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q (scaled), K, V of spectra s:e of a heads-last (n, 3 heads, d, t) tensor, each
    (group x heads, d, t)."""
    g = qkv[s:e]
    d, t = qkv.shape[2:]
    q, k, v = (g[:, i * heads:(i + 1) * heads].reshape(-1, d, t) for i in range(3))
    return q * scale, k, v


def _probabilities(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T) of heads-last (g, d, t) tensors, Q already scaled: (g, t, t)."""
    return torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)


class HeadsLastAttention(torch.autograd.Function):
    """softmax(Q K^T / sqrt(d)) V per head, from the (n, 3 heads, d, t) tensor of the rows of
    Q, K and V (heads-last); returns (n, heads, d, t)."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, heads: int,  # type: ignore[override]
                group: int) -> torch.Tensor:
        n, _, d, t = qkv.shape
        scale = d ** -0.5
        out = qkv.new_empty(n, heads, d, t)

        def work(s: int, e: int) -> None:
            q, k, v = _group(qkv, heads, s, e, scale)
            out[s:e] = torch.bmm(v, _probabilities(q, k).transpose(1, 2)).view(e - s, heads, d, t)

        for_groups(n, group, work)
        ctx.save_for_backward(qkv, out)
        ctx.heads, ctx.group, ctx.scale = heads, group, scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout: torch.Tensor):  # type: ignore[override]
        qkv, out = ctx.saved_tensors
        n, _, d, t = qkv.shape
        h = ctx.heads
        dout = dout.contiguous()
        # rowsum(dP * P) of the softmax backward, = dO . O per token
        delta = (dout * out).sum(dim=2).unsqueeze(-1)
        dqkv = torch.empty_like(qkv)

        def work(s: int, e: int) -> None:
            q, k, v = _group(qkv, h, s, e, ctx.scale)
            do = dout[s:e].flatten(0, 1)
            p = _probabilities(q, k)
            ds = torch.bmm(do.transpose(1, 2), v).sub_(delta[s:e].flatten(0, 1)).mul_(p)
            shape = (e - s, h, d, t)
            dqkv[s:e, :h] = torch.bmm(k, ds.transpose(1, 2)).mul_(ctx.scale).view(shape)
            dqkv[s:e, h:2 * h] = torch.bmm(q, ds).view(shape)
            dqkv[s:e, 2 * h:] = torch.bmm(do, p).view(shape)

        for_groups(n, ctx.group, work)
        return dqkv, None, None


@torch.compiler.disable  # torch.compile would unroll the groups; it compiles around this call
def heads_last_attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """Attention of the heads-last (n, 3 heads, d, t) rows of Q, K, V, grouped to fit the
    cache: (n, heads, d, t)."""
    group = group_size(heads, qkv.shape[3], qkv.element_size())
    return HeadsLastAttention.apply(qkv.contiguous(), heads, group)
