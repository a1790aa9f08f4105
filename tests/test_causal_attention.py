"""The compiled causal attention op: PyTorch's attention values and gradients, determinism, and the
fallback to PyTorch's kernels when it cannot be built."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from scaling.backends.local import causal_attention as ca
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def kernel() -> None:
    if not ca.compiler():
        pytest.skip("no C++ compiler here; the fallback is tested below")
    assert ca.available(), "a C++ compiler is present, so the op must build and pass its self-check"


def _qkv(B: int, H: int, T: int, D: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """q and k contiguous, v a strided view into a (B, T, 3, H, D) buffer, as in the fused block."""
    g = torch.Generator().manual_seed(seed)
    buf = torch.randn(B, T, 3, H, D, generator=g).permute(2, 0, 3, 1, 4)
    return buf[0].contiguous(), buf[1].contiguous(), buf[2]


@pytest.mark.parametrize(
    "B,H,T,D",
    [(2, 3, 150, 16), (1, 1, 1, 8), (3, 2, 64, 24), (2, 2, 300, 32), (1, 2, 129, 64)],
    ids=lambda v: str(v),
)
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_pytorch_attention_and_its_gradients(
    kernel: None, B: int, H: int, T: int, D: int, threads: int
) -> None:
    """Blocks of 64 queries, sequences not a multiple of 64, one token, strided v and outputs."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        q, k, v = _qkv(B, H, T, D)
        o, lse = ca.forward(q, k, v)
        qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
        ref = F.scaled_dot_product_attention(qr, kr, vr, is_causal=True)
        torch.testing.assert_close(o, ref.detach(), rtol=1e-5, atol=1e-6)
        s = (q @ k.transpose(-1, -2)) / D**0.5
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        torch.testing.assert_close(lse, torch.logsumexp(s, -1), rtol=1e-5, atol=1e-5)
        assert o.transpose(1, 2).is_contiguous()  # (B, T, H, D) memory: heads merge without a copy

        g = torch.Generator().manual_seed(1)
        dout = torch.randn(B, T, H, D, generator=g).transpose(1, 2)
        ref.backward(dout)
        grads = torch.full((3, B, T, H, D), float("nan")).permute(0, 1, 3, 2, 4)  # strided, garbage-filled
        ca.backward(dout, q, k, v, o, lse, *grads.unbind(0))
        for name, ours, want in zip("qkv", grads, (qr.grad, kr.grad, vr.grad), strict=True):
            torch.testing.assert_close(ours, want, rtol=1e-4, atol=1e-5, msg=f"d{name}")

        again = torch.full_like(grads, float("nan"))
        ca.backward(dout, q, k, v, o, lse, *again.unbind(0))
        assert torch.equal(again, grads) and torch.equal(ca.forward(q, k, v)[0], o)  # same inputs, same bits
    finally:
        torch.set_num_threads(before)


def test_rejects_what_it_cannot_compute(kernel: None) -> None:
    q, k, v = _qkv(1, 2, 16, 8)
    with pytest.raises(RuntimeError, match="float32"):
        ca.forward(q.double(), k.double(), v.double())
    with pytest.raises(RuntimeError, match="last dimension"):
        ca.forward(q.transpose(-1, -2).contiguous().transpose(-1, -2), k, v)
    with pytest.raises(RuntimeError, match="shape"):
        ca.forward(q, k[:, :, :8], v)


def _probe(env: dict[str, str]) -> subprocess.CompletedProcess:
    code = (
        "import warnings, torch\n"
        "from scaling.backends.local import causal_attention as ca\n"
        "from scaling.backends.local.model import build_model\n"
        "from scaling.shapes import ModelShape\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    ok = ca.available()\n"
        "m = build_model(ModelShape(layers=1, hidden=32, heads=2, vocab=64, seq_len=16))\n"
        "ids = torch.randint(0, 64, (2, 17))\n"
        "m.loss(ids[:, :-1], ids[:, 1:]).backward()\n"
        "print(ok, len(w), *(str(x.message) for x in w))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


def test_falls_back_to_pytorch_kernels_when_it_cannot_build(tmp_path) -> None:
    """A failing compiler (``CXX=false``) leaves training on PyTorch's kernels, with one warning."""
    proc = _probe({"CXX": "false", "SCALING_KERNEL_CACHE": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    ok, n, *msg = proc.stdout.split(maxsplit=2)
    assert (ok, n) == ("False", "1") and "compiling causal_attention.cpp failed" in msg[0]
    assert not list(tmp_path.glob("*.so"))


def test_can_be_turned_off(tmp_path) -> None:
    proc = _probe({"SCALING_ATTENTION_KERNEL": "0", "SCALING_KERNEL_CACHE": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "0"]
    assert not list(tmp_path.iterdir())
