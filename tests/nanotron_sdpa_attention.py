"""Test-only, run in its own process (stand-ins for flash_attn/triton, as the entry point has them).

``python tests/nanotron_sdpa_attention.py '{"attention_kv": [2], "flops": [{...}]}'`` prints JSON:

* ``attention``: the unpacked Qwen2 attention of :mod:`scaling.backends.nanotron.qwen2_sdpa`,
  built from Nanotron's own ``RotaryEmbedding`` and ``CoreAttention`` (``sdpa``), against
  transformers' ``LlamaAttention`` with the same weights: the largest absolute difference;
* ``flops``: Nanotron's own FLOP count (``models/qwen.py::get_flops``, what its MFU divides by)
  for each shape, per sequence.

Nanotron's tensor-parallel linears need a process group; with tp = 1 they are plain matrix
products, so ``torch.nn.Linear`` layers take their place. ``RotaryEmbedding.__init__`` puts its
inverse frequencies on CUDA; here they are set on the CPU with the formula it uses,
``1 / theta^(2i / head_dim)``.
"""

from __future__ import annotations

import json
import sys
import types

from scaling.backends.nanotron.missing_kernels import install


def attention_difference(kv_heads: int) -> dict:
    import torch
    from nanotron.config.models_config import Qwen2Config
    from nanotron.models.qwen import CoreAttention
    from nanotron.nn.rotary import RotaryEmbedding
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

    from scaling.backends.nanotron.qwen2_sdpa import unpacked_forward

    torch.manual_seed(0)
    hidden, heads, b, s = 64, 4, 2, 12
    d = hidden // heads
    cfg = Qwen2Config(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      _attn_implementation="sdpa", _use_qkv_packed=False, _fused_rotary_emb=False,
                      _fused_rms_norm=False, log_attn_probs=False, max_position_embeddings=s)  # fmt: skip
    group = types.SimpleNamespace(size=lambda: 1)
    mod = torch.nn.Module()
    mod.qkv_proj = torch.nn.Linear(hidden, (heads + 2 * kv_heads) * d, bias=False)
    mod.o_proj = torch.nn.Linear(heads * d, hidden, bias=False)
    mod.local_q_size, mod.local_kv_size = heads * d, kv_heads * d
    mod.local_num_heads, mod.local_num_kv_heads, mod.head_dim = heads, kv_heads, d
    rot = RotaryEmbedding.__new__(RotaryEmbedding)
    torch.nn.Module.__init__(rot)
    rot.dim, rot.max_seq_len, rot.interleaved, rot.seq_len_scaling_factor, rot.fused = d, s, False, None, False
    rot.register_buffer("freqs_cis", 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float) / d)), persistent=False)
    rot.register_buffer("cos_values", None, persistent=False)
    rot.register_buffer("sin_values", None, persistent=False)
    mod.rotary_emb = rot
    mod.attention = CoreAttention(cfg, tp_pg=group, cp_pg=group, layer_idx=0)

    hf_cfg = LlamaConfig(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         intermediate_size=96, max_position_embeddings=s, rope_theta=cfg.rope_theta)  # fmt: skip
    hf_cfg._attn_implementation = "sdpa"
    ref = LlamaAttention(hf_cfg, layer_idx=0).eval()
    q, k, v = mod.qkv_proj.weight.detach().split([heads * d, kv_heads * d, kv_heads * d])
    with torch.no_grad():
        ref.q_proj.weight.copy_(q)
        ref.k_proj.weight.copy_(k)
        ref.v_proj.weight.copy_(v)
        ref.o_proj.weight.copy_(mod.o_proj.weight)
        x = torch.randn(b, s, hidden)
        positions = torch.arange(s).repeat(b, 1)
        ours = unpacked_forward(mod, x.reshape(b * s, hidden), positions)["hidden_states"].reshape(b, s, hidden)
        theirs = ref(x, position_embeddings=LlamaRotaryEmbedding(hf_cfg)(x, positions), attention_mask=None)[0]
    return {"max_abs_diff": float((ours - theirs).abs().max()), "scale": float(theirs.abs().max())}


def main(request: dict) -> dict:
    install()
    from nanotron.models.qwen import get_flops

    return {
        "attention": [attention_difference(kv) for kv in request.get("attention_kv", [])],
        "flops": [get_flops(batch_size=1, **shape)[0] for shape in request.get("flops", [])],
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
