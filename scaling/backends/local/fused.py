"""A decoder block with a hand-written backward, for training in fp32 on the CPU.

On two CPU cores a small Llama spends a third of its step outside the matrix multiplies: in
autograd's bookkeeping, in the many elementwise passes of RMSNorm, rotary embeddings and SwiGLU,
and in the copies that glue q/k/v and gate/up gradients back together. :class:`FusedBlock`
computes exactly the block of :class:`~scaling.backends.local.model.Block` (same parameters, same
function) with fewer passes over memory:

* RMSNorm's weight ``w`` is folded into the next matrix: ``(x̂ ⊙ w) Wᵀ = x̂ (W diag w)ᵀ``, so the
  normalised activations are scaled once, and both weight gradients come from one product
  ``G = dYᵀ x̂``: ``dW = G diag w`` and ``dw = Σ_rows (G ⊙ W)``;
* the residual additions are done in place on the products' outputs;
* attention runs :mod:`.causal_attention`'s compiled op, which skips the masked key blocks and
  writes q/k/v gradients straight into their buffer (PyTorch's CPU flash-attention kernels, called
  directly, where that op is unavailable);
* products with a weight go to oneDNN's fp32 matmul (PyTorch's ``mkldnn`` linear op) where this
  PyTorch has it: the forward ``x Wᵀ`` directly, the backward ``dY W`` as ``dY (Wᵀ)ᵀ`` with ``Wᵀ``
  copied contiguous (a small copy). On the AMD EPYC cores measured here oneDNN runs the forward
  shapes 20-40% faster than the MKL ``sgemm`` behind ``torch.mm``, and the backward ones made a
  step 1-4% faster at hidden 128-256 (1-5% slower at 64; both block versions alternating step by
  step in one process). Weight gradients ``dYᵀ X`` stay on ``torch.mm``, for which oneDNN would
  need a transposed copy of ``X``;
* q/k/v and gate/up gradients are written into one preallocated buffer each (no ``cat``), so the
  two halves of SwiGLU take one product each for their weight and their input gradients;
* RMSNorm's backward is ``dx = r (dx̂ - x̂ mean(dx̂ ⊙ x̂))`` with ``r = 1/rms(x)`` (Zhang &
  Sennrich 2019), SwiGLU's ``d silu(g) = dh ⊙ u ⊙ σ(g)(1 + g(1 - σ(g)))`` via ``silu_backward``.

A test compares losses and every gradient with autograd through the plain module. The fused path
is used for fp32 CPU training of multi-head (not grouped-query) SwiGLU blocks without q/k/v
biases; everything else takes the plain module.
"""

from __future__ import annotations

from typing import Any

import torch

from . import causal_attention

_aten = torch.ops.aten
_onednn: bool | None = None


def _onednn_linear_ok() -> bool:
    """Whether ``torch.ops.mkldnn._linear_pointwise`` exists here and computes ``x Wᵀ``."""
    global _onednn
    if _onednn is None:
        try:
            x, w = torch.randn(8, 16), torch.randn(4, 16)
            y = torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
            _onednn = bool(torch.backends.mkldnn.is_available() and torch.allclose(y, x @ w.t(), atol=1e-5))
        except (AttributeError, RuntimeError, NotImplementedError):
            _onednn = False
    return _onednn


def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w.T`` for 2-D fp32 CPU tensors, by oneDNN where available (see module doc)."""
    if x.is_contiguous() and w.is_contiguous() and _onednn_linear_ok():
        return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
    return x @ w.t()


def matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w`` for a small weight ``w``: oneDNN on ``wᵀ`` copied contiguous (see module doc)."""
    return linear(x, w.t().contiguous()) if _onednn_linear_ok() else x @ w


def _rms_scale(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x / rms(x), 1 / rms(x))`` row-wise, ``rms(x) = sqrt(mean(x²) + eps)``."""
    r = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.shape[-1]).add_(eps).rsqrt_()
    return x * r, r


def _rms_backward(
    dxh: torch.Tensor, xh: torch.Tensor, r: torch.Tensor, residual: torch.Tensor
) -> torch.Tensor:
    """``residual + r (dx̂ - x̂ mean(dx̂ ⊙ x̂))``, computed in place in ``dxh``."""
    c = torch.linalg.vecdot(dxh, xh).unsqueeze_(-1).div_(-xh.shape[-1])
    return dxh.addcmul_(xh, c).mul_(r).add_(residual)


def _weight_grads(G: torch.Tensor, W: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``W`` and of the norm weight ``w`` from ``G = dYᵀ x̂`` (see module doc)."""
    return G * w, (G * W).sum(0)


class FusedBlock(torch.autograd.Function):
    """``x + attn(norm(x)) -> h; h + mlp(norm(h))`` on (B, T, d) fp32 CPU tensors."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        w_in: torch.Tensor,
        w_qkv: torch.Tensor,
        w_o: torch.Tensor,
        w_post: torch.Tensor,
        w_gu: torch.Tensor,
        w_down: torch.Tensor,
        cis: torch.Tensor,
        heads: int,
        eps: float,
    ) -> torch.Tensor:
        B, T, d = x.shape
        D = w_qkv.shape[0] // (3 * heads)  # head size (heads x D need not equal d)
        F = w_down.shape[1]
        x2d = x.reshape(B * T, d)
        xh1, r1 = _rms_scale(x2d, eps)
        W1 = w_qkv * w_in
        qkv = linear(xh1, W1).view(B, T, 3, heads, D // 2, 2).permute(2, 0, 3, 1, 4, 5)
        qk = torch.view_as_real(torch.view_as_complex(qkv[:2]) * cis)  # rotary positions on q and k
        q, k, v = qk[0].flatten(-2), qk[1].flatten(-2), qkv[2].flatten(-2)
        compiled = causal_attention.available()  # the backward must use the same op (lse layouts differ)
        if compiled:
            o, lse = causal_attention.forward(q, k, v)
        else:
            o, lse = _aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True)
        a = o.transpose(1, 2).reshape(B * T, heads * D)
        h = linear(a, w_o).add_(x2d)
        xh2, r2 = _rms_scale(h, eps)
        W2 = w_gu * w_post
        g, u = linear(xh2, W2[:F]), linear(xh2, W2[F:])  # two products: contiguous halves for silu
        sg = torch.nn.functional.silu(g)
        act = sg * u
        out = linear(act, w_down).add_(h)
        # fmt: off
        ctx.save_for_backward(
            xh1, r1, W1, w_qkv, w_in, q, k, v, o, lse, a, w_o, xh2, r2, W2, w_gu, w_post, g, u, sg, act, w_down, cis
        )
        # fmt: on
        ctx.dims = (B, T, d, heads, D, F)
        ctx.compiled = compiled
        return out.view(B, T, d)

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        # fmt: off
        (xh1, r1, W1, w_qkv, w_in, q, k, v, o, lse, a, w_o, xh2, r2, W2, w_gu, w_post, g, u, sg, act, w_down,
         cis) = ctx.saved_tensors
        # fmt: on
        B, T, d, heads, D, F = ctx.dims
        M = B * T
        dy = dout.reshape(M, d)
        # MLP: out = h + act Wdᵀ, act = silu(g) ⊙ u, [g u] = x̂2 W2ᵀ
        d_down = dy.t() @ act
        dact = matmul(dy, w_down)
        dgu = torch.empty(M, 2 * F, dtype=dy.dtype)  # [dg du]: one product each for dW2 and dx̂2
        torch.mul(dact, sg, out=dgu[:, F:])
        _aten.silu_backward.grad_input(dact.mul_(u), g, grad_input=dgu[:, :F])
        d_gu, d_post = _weight_grads(dgu.t() @ xh2, w_gu, w_post)
        dh = _rms_backward(matmul(dgu, W2), xh2, r2, dy)
        # attention: h = x + a Woᵀ, a = flash(rope(q), rope(k), v), [q k v] = x̂1 W1ᵀ
        d_o = dh.t() @ a
        da = matmul(dh, w_o).view(B, T, heads, D).transpose(1, 2)
        dqkv = torch.empty(M, 3 * heads * D, dtype=dy.dtype)
        slots = dqkv.view(B, T, 3, heads, D // 2, 2).permute(2, 0, 3, 1, 4, 5)
        inv = cis.conj()
        if ctx.compiled:  # writes dq, dk, dv into their slots; un-rotate in place
            causal_attention.backward(da, q, k, v, o, lse, *slots.flatten(-2).unbind(0))
            for i in (0, 1):
                torch.view_as_complex(slots[i]).mul_(inv)
        else:
            dq, dk, dv = _aten._scaled_dot_product_flash_attention_for_cpu_backward(
                da, q, k, v, o, lse, 0.0, True
            )
            for i, g_ in enumerate((dq, dk)):
                torch.mul(
                    torch.view_as_complex(g_.unflatten(-1, (-1, 2))), inv, out=torch.view_as_complex(slots[i])
                )
            slots[2].copy_(dv.unflatten(-1, (-1, 2)))
        d_qkv, d_in = _weight_grads(dqkv.t() @ xh1, w_qkv, w_in)
        dx = _rms_backward(matmul(dqkv, W1), xh1, r1, dh)
        return dx.view(B, T, d), d_in, d_qkv, d_o, d_post, d_gu, d_down, None, None, None


def fused_block(block: Any, x: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    """Run ``block`` (a :class:`~scaling.backends.local.model.Block`) through :class:`FusedBlock`."""
    return FusedBlock.apply(
        x.contiguous(),
        block.input_layernorm.weight,
        block.qkv.weight,
        block.o_proj.weight,
        block.post_attention_layernorm.weight,
        block.gate_up.weight,
        block.down_proj.weight,
        cis,
        block.n_heads,
        block.input_layernorm.eps,
    )


def can_fuse(block: Any, x: torch.Tensor) -> bool:
    """Whether :func:`fused_block` computes ``block(x)`` here (fp32 CPU training, MHA, SwiGLU, no
    q/k/v bias)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and block.glu
        and block.n_kv == block.n_heads
        and block.qkv.bias is None
        and block.d_head % 2 == 0
    )
