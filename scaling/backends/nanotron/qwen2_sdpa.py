"""Nanotron's Qwen2 attention without flash-attn: the unpacked path the pinned commit leaves out.

At :data:`~scaling.backends.nanotron.NANOTRON_COMMIT`, ``models/qwen.py``'s ``Qwen2Attention``
has two paths chosen by ``Qwen2Config._use_qkv_packed``. The packed one (the default) calls
flash-attn's rotary and varlen attention whatever ``_attn_implementation`` says. The unpacked
one, which would run ``_attn_implementation`` (``sdpa``) through Nanotron's ``CoreAttention``, is
commented out in ``forward``, and its constructor reads ``config.rope_seq_len_scaling_factor``,
a field ``Qwen2Config`` does not have. :func:`patch` makes that path run, used only by the
training entry point for runs whose config says ``_use_qkv_packed: false``:

* the constructor sees ``rope_seq_len_scaling_factor`` = the config's
  ``rope_seq_len_interpolation_factor`` (``None`` in every config this backend writes);
* ``forward`` (when unpacked) splits the fused ``qkv_proj`` output into q, k, v, rotates q and k
  with Nanotron's own unfused ``RotaryEmbedding`` (halves rotated, ``rope_interleaved: false``:
  the convention of transformers' Llama, so the weights convert unchanged), and runs Nanotron's
  ``CoreAttention`` (``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with
  ``is_causal``, grouped KV heads expanded by torch) before ``o_proj``.

Every kernel is Nanotron's or torch's; nothing here computes attention itself. Context
parallelism is not supported on this path (the backend always writes ``context_parallel_size: 1``).
"""

from __future__ import annotations

from typing import Any

_PATCHED = "_scaling_unpacked_patch"


def unpacked_forward(self: Any, hidden_states: Any, position_ids: Any, cu_seqlens: Any = None) -> dict[str, Any]:
    """``Qwen2Attention.forward`` for ``_use_qkv_packed: false`` (``self`` is the attention module)."""
    seq_length = position_ids.shape[1]
    qkv = self.qkv_proj(hidden_states)  # [b*s, (local heads + 2 local kv heads) * head_dim]
    q, k, v = qkv.split([self.local_q_size, self.local_kv_size, self.local_kv_size], dim=-1)
    q = q.reshape(-1, self.local_num_heads, self.head_dim)
    k = k.reshape(-1, self.local_num_kv_heads, self.head_dim)
    v = v.reshape(-1, self.local_num_kv_heads, self.head_dim).contiguous()
    freqs = self.rotary_emb(seq_length=seq_length)  # [s, head_dim]
    q = self.rotary_emb.apply_rotary_pos_emb(q, freqs, seq_length=seq_length)  # [b, s, heads, head_dim]
    k = self.rotary_emb.apply_rotary_pos_emb(k, freqs, seq_length=seq_length)
    out = self.attention(
        q.reshape(-1, self.local_num_heads, self.head_dim),
        k.reshape(-1, self.local_num_kv_heads, self.head_dim),
        v,
        position_ids=position_ids.reshape(-1),
        seq_length=seq_length,
    )  # [b*s, local heads * head_dim]
    return {"hidden_states": self.o_proj(out), "position_ids": position_ids}


def patch() -> None:
    """Make ``nanotron.models.qwen.Qwen2Attention`` run unpacked configs (idempotent)."""
    from nanotron.models import qwen

    cls = qwen.Qwen2Attention
    if getattr(cls, _PATCHED, False):
        return
    packed_forward, original_init = cls.forward, cls.__init__

    def __init__(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        if not config._use_qkv_packed and not hasattr(config, "rope_seq_len_scaling_factor"):
            config.rope_seq_len_scaling_factor = config.rope_seq_len_interpolation_factor
        original_init(self, config, *args, **kwargs)

    def forward(self: Any, hidden_states: Any, position_ids: Any, cu_seqlens: Any = None) -> dict[str, Any]:
        if self._use_qkv_packed:
            return packed_forward(self, hidden_states=hidden_states, position_ids=position_ids, cu_seqlens=cu_seqlens)
        return unpacked_forward(self, hidden_states, position_ids, cu_seqlens)

    cls.__init__, cls.forward = __init__, forward
    setattr(cls, _PATCHED, True)
