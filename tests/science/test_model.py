"""The SpecTf network: strict loading of the official weights, and its attention maths."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from l2b_mask.algorithm.model import SpecTf, load_model
from l2b_mask.errors import AncillaryError
from l2b_mask.spec import ModelSpec, default_spec_path, verify_sha256


def test_both_official_versions_load_strictly(spec):
    for version, threshold in (("0.1.0", 0.51), ("0.0.1", 0.52)):
        s = ModelSpec.load(default_spec_path(version))
        assert s.threshold == threshold and s.comparison == ">"
        verify_sha256(s.weights_path, s.weights_sha256, "weights")
        verify_sha256(s.irradiance_path, s.irradiance_sha256, "irradiance")
        m = load_model(s)
        assert not m.training and sum(p.numel() for p in m.parameters()) > 25_000


def test_checksum_mismatch(spec, tmp_path):
    bad = tmp_path / "w.pt"
    bad.write_bytes(spec.weights_path.read_bytes()[:-1] + b"x")
    with pytest.raises(AncillaryError, match="sha256 mismatch"):
        verify_sha256(bad, spec.weights_sha256, "model weights")


def test_truncated_weights(spec, tmp_path):
    bad = tmp_path / "w.pt"
    bad.write_bytes(spec.weights_path.read_bytes()[:5000])
    with pytest.raises(AncillaryError, match="unreadable"):
        load_model(spec, bad)


def test_other_keys_and_shapes(spec, tmp_path):
    state = torch.load(spec.weights_path, map_location="cpu", weights_only=True)
    renamed = dict(state)
    renamed["head.extra"] = renamed.pop("head.bias")
    torch.save(renamed, tmp_path / "keys.pt")
    message = r"missing keys \['head.bias'\]; unexpected keys \['head.extra'\]"
    with pytest.raises(AncillaryError, match=message):
        load_model(spec, tmp_path / "keys.pt")
    reshaped = dict(state)
    reshaped["head.weight"] = torch.zeros(3, 64)
    torch.save(reshaped, tmp_path / "shape.pt")
    with pytest.raises(AncillaryError, match=r"wrong shapes head.weight \(3, 64\) != \(2, 64\)"):
        load_model(spec, tmp_path / "shape.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(AncillaryError, match="not a state_dict"):
        load_model(spec, tmp_path / "list.pt")


def test_spec_rejects_inconsistent_values(tmp_path):
    text = default_spec_path().read_text().replace("threshold = 0.51", "threshold = 1.5")
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(AncillaryError, match="threshold 1.5 outside"):
        ModelSpec.load(tmp_path / "s.toml")
    (tmp_path / "t.toml").write_text("[model]\n")
    with pytest.raises(AncillaryError, match="lacks or mistypes"):
        ModelSpec.load(tmp_path / "t.toml")


def test_fused_attention_equals_the_standard_module():
    torch.manual_seed(0)
    spec = dataclasses.replace(ModelSpec.load(), path=default_spec_path())
    m = SpecTf(spec).eval()
    attn = m.layers[0].attention
    x = torch.randn(7, 30, 64)
    with torch.inference_mode():
        ours = attn(x)
        theirs, _ = attn.attention(x, x, x, need_weights=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_forward_matches_the_written_architecture(spec):
    """An unfused transcription of the published description, step by step."""
    m = load_model(spec)
    torch.manual_seed(1)
    rho = torch.rand(5, 268) * 0.8
    band = torch.linspace(-1.7, 1.7, 268)
    L = m.layers[0]
    mha = L.attention.attention
    with torch.inference_mode():
        x = torch.tanh(torch.stack((rho, band.expand(5, -1)), -1) @ m.spectral_embed.linear.weight.T
                       + m.spectral_embed.linear.bias)
        h = F.layer_norm(x, (64,), L.norm1.weight, L.norm1.bias, 1e-5)
        a, _ = mha(h, h, h, need_weights=False)
        z = F.layer_norm(a, (64,), L.norm2.weight, L.norm2.bias, 1e-5)
        y = L.ff.linear2(F.gelu(L.ff.linear1(z), approximate="none"))
        p_expected = torch.softmax(m.head(y.max(dim=1).values), -1)[:, 1]
        p = m(rho, band)
    torch.testing.assert_close(p, p_expected, rtol=0, atol=2e-6)
    assert p.dtype == torch.float32 and ((p > 0) & (p < 1)).all()
