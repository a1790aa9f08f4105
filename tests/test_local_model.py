"""The lean Llama model: exact parameter counts, transformers equivalence, initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from scaling.backends.local.model import build_model, count_params, linear_cross_entropy, to_hf_model
from scaling.shapes import ModelShape

torch.set_num_threads(1)

SHAPES = [
    dict(layers=2, hidden=64, heads=2, vocab=1024, seq_len=128),
    dict(layers=3, hidden=96, heads=6, kv_heads=2, vocab=777, seq_len=32),
    dict(layers=1, hidden=32, heads=2, tied=True, vocab=512, seq_len=16),
    dict(layers=2, hidden=64, heads=4, kv_heads=2, qkv_bias=True, vocab=300, seq_len=16),
    dict(layers=1, hidden=48, heads=3, ffn=100, head_dim=8, vocab=300, seq_len=16),
]


@pytest.mark.parametrize(
    "kw", SHAPES, ids=lambda kw: "x".join(str(kw[k]) for k in ("hidden", "layers", "vocab"))
)
def test_param_count_and_logits_match_transformers(kw: dict) -> None:
    shape = ModelShape(**kw)
    model = build_model(shape, seed=3)
    hf = to_hf_model(model)
    assert count_params(model) == shape.params
    assert sum(p.numel() for p in hf.parameters()) == shape.params
    ids = torch.randint(0, shape.vocab, (2, shape.seq_len))
    with torch.no_grad():
        ours, theirs = model(ids), hf(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_init_std_and_scaled_residual() -> None:
    shape = ModelShape(layers=8, hidden=256, heads=4, vocab=1024, seq_len=16)
    m = build_model(shape, init_std=0.02, seed=0)
    assert m.embed_tokens.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert m.layers[0].qkv.weight.std().item() == pytest.approx(0.02, rel=0.02)
    # residual outputs: std / sqrt(2 L) (Radford et al. 2019)
    want = 0.02 / math.sqrt(2 * 8)
    assert m.layers[3].o_proj.weight.std().item() == pytest.approx(want, rel=0.05)
    assert m.layers[3].down_proj.weight.std().item() == pytest.approx(want, rel=0.05)
    assert torch.all(m.norm.weight == 1)
    # same seed, same weights
    m2 = build_model(shape, init_std=0.02, seed=0)
    assert torch.equal(m.lm_head.weight, m2.lm_head.weight)


def test_fused_cross_entropy_matches_autograd() -> None:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(50, 16, generator=g, requires_grad=True)
    w = (0.3 * torch.randn(40, 16, generator=g)).requires_grad_()
    y = torch.randint(0, 40, (50,), generator=g)
    ref = torch.nn.functional.cross_entropy(h @ w.t(), y)
    gh, gw = torch.autograd.grad(2.5 * ref, [h, w])
    ours = linear_cross_entropy(h, w, y)
    oh, ow = torch.autograd.grad(2.5 * ours, [h, w])
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(oh, gh)
    torch.testing.assert_close(ow, gw)
