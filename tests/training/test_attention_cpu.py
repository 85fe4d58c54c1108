"""The heads-last attention that training on the CPU runs computes the function of torch's fused
attention (the formulation before it): the same outputs and gradients to float32 rounding, the
same parameters and state_dict keys, the same probabilities from the official weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from l2b_mask.algorithm.attention_cpu import HeadsLastAttention, for_groups, group_size
from l2b_mask.algorithm.model import SelfAttention, SpecTf, load_model
from l2b_mask.spec import ModelSpec, default_spec_path


@pytest.fixture
def formulation():
    """Restores the class-wide choice after a test switches it."""
    before = SelfAttention.cpu_training_formulation
    yield lambda name: setattr(SelfAttention, "cpu_training_formulation", name)
    SelfAttention.cpu_training_formulation = before


def sdpa_of_heads_last(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """The reference: torch's attention on the same heads-last rows, back in heads-last layout."""
    q, k, v = (t.transpose(-1, -2) for t in qkv.split(heads, dim=1))
    return F.scaled_dot_product_attention(q, k, v).transpose(-1, -2)


@pytest.mark.parametrize("group", [1, 2, 5])  # one spectrum, a ragged last group, all at once
def test_heads_last_matches_sdpa_forward_and_gradients(group):
    """Against the float64 result, as close as torch's float32 attention is (float32 rounding)."""
    torch.manual_seed(0)
    n, h, d, t = 5, 3, 8, 37
    qkv = (torch.randn(n, 3 * h, d, t, dtype=torch.float64) * 2).requires_grad_()
    grad = torch.randn(n, h, d, t, dtype=torch.float64)
    exact = sdpa_of_heads_last(qkv, h)
    (g_exact,) = torch.autograd.grad(exact, qkv, grad)
    exact = exact.detach()
    results = {}
    for name, fn in (("ours", lambda x: HeadsLastAttention.apply(x, h, group)),
                     ("sdpa", lambda x: sdpa_of_heads_last(x, h))):
        x = qkv.detach().float().requires_grad_()
        out = fn(x)
        (g,) = torch.autograd.grad(out, x, grad.float())
        results[name] = (float((out.detach().double() - exact).abs().max()),
                         float((g.double() - g_exact).abs().max()))
    (out_err, grad_err), (sdpa_out_err, sdpa_grad_err) = results["ours"], results["sdpa"]
    assert out_err <= 2 * sdpa_out_err + 1e-6 and out_err < 1e-5, results
    assert grad_err <= 2 * sdpa_grad_err + 1e-6 and grad_err < 1e-4, results


def test_groups_split_between_threads_give_the_same_bits():
    torch.manual_seed(4)
    qkv = torch.randn(5, 6, 8, 21, requires_grad=True)
    grad = torch.randn(5, 2, 8, 21)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            out = HeadsLastAttention.apply(qkv, 2, 1)
            results.append((out, *torch.autograd.grad(out, qkv, grad)))
            assert torch.get_num_threads() == n  # restored after the workers
    finally:
        torch.set_num_threads(threads)
    for one, several in zip(*results, strict=True):
        assert torch.equal(one, several)


def test_group_workers_cover_every_spectrum_once_without_grad_mode():
    """Grad mode is per thread: a worker that kept it on would build a graph inside forward."""
    seen: list[tuple[int, int, bool, int]] = []
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch.no_grad():
            for_groups(7, 2, lambda s, e: seen.append((s, e, torch.is_grad_enabled(),
                                                       torch.get_num_threads())))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert sorted((s, e) for s, e, _, _ in seen) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    assert not any(grad for _, _, grad, _ in seen) and {n for *_, n in seen} == {1}


def test_heads_last_gradients_are_exact_in_float64():
    torch.manual_seed(1)
    qkv = torch.randn(3, 6, 2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: HeadsLastAttention.apply(x, 2, 2), (qkv,))


def test_group_size_keeps_a_group_near_the_cache_budget():
    assert group_size(8, 268) == 1           # v0.1.0: one spectrum's 8 x 268 x 268 floats
    assert group_size(2, 22) > 100           # the tests' small model: many spectra at once
    assert group_size(64, 4000) == 1         # never zero


def ran_heads_last(out: torch.Tensor) -> bool:
    """Whether the autograd graph of `out` holds the heads-last attention."""
    seen, todo = set(), [out.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == "HeadsLastAttentionBackward":
            return True
        todo.extend(n for n, _ in node.next_functions)
    return False


def spec_v010() -> ModelSpec:
    return dataclasses.replace(ModelSpec.load(), path=default_spec_path())


def logits_and_gradients(model: SpecTf, x: torch.Tensor, band: torch.Tensor,
                         y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    logits = model.logits(x, band)
    F.cross_entropy(logits, y).backward()
    return logits.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


def test_training_model_computes_the_former_function(formulation):
    """Same parameters and keys; logits and every parameter's gradient as close to the float64
    network's as with SDPA (float32 rounding)."""
    torch.manual_seed(2)
    spec = spec_v010()
    model = SpecTf(spec).train()
    keys = list(model.state_dict())
    x, band = torch.rand(6, 268) * 0.6, torch.linspace(-1.2, 1.2, 268)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    exact_model = SpecTf(spec).double().train()
    exact_model.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    exact_logits, exact_grads = logits_and_gradients(exact_model, x.double(), band.double(), y)
    errors = {}
    for name in ("sdpa", "heads-last"):
        formulation(name)
        logits, grads = logits_and_gradients(model, x, band, y)
        assert ran_heads_last(model.logits(x, band)) == (name == "heads-last")
        errors[name] = {"logits": float((logits.double() - exact_logits).abs().max())} | {
            k: float((g.double() - exact_grads[k]).abs().max() / exact_grads[k].abs().max())
            for k, g in grads.items()}
    assert list(model.state_dict()) == keys and list(errors["heads-last"]) == list(errors["sdpa"])
    for what, err in errors["heads-last"].items():
        assert err <= 3 * errors["sdpa"][what] + 1e-6, (what, err, errors["sdpa"][what])
        assert err < 1e-4, (what, err)


def test_official_weights_give_the_same_probabilities_when_trained_on(spec, formulation):
    """v0.1.0 weights with gradients on (the training path) against the torch inference path."""
    model = load_model(spec).requires_grad_(True)
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.uniform(0.0, 0.8, (16, 268)).astype(np.float32))
    band = model.band_term(np.linspace(381.0, 2493.0, 268))
    formulation("heads-last")
    trained = torch.softmax(model.logits(x, band), -1)[:, 1]
    assert ran_heads_last(trained)
    with torch.inference_mode():
        inferred = model.forward_torch(x, band)
    torch.testing.assert_close(trained.detach(), inferred, rtol=0, atol=2e-6)
