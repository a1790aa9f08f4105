"""Test-only: write a transformers Llama in Nanotron's on-disk checkpoint layout.

This mirrors what Nanotron at the pinned commit writes (``serialize/weights.py::save_weights``,
``serialize/utils.py::get_path``, ``parallel/parameters.py::SlicesPair``, ``models/llama.py``
module names, ``trainer.py::save_checkpoint`` for ``latest.txt`` and ``model_config.json``), so
the converter can be tested without CUDA. It is written independently of
``scaling.backends.nanotron.convert`` (fused q/k/v and gate/up built here, shards cut here) and
is never used outside tests.

Sharding, as Nanotron's tensor-parallel modules do it:
* column-parallel with contiguous chunks (``qkv_proj``: q, k, v; ``gate_up_proj``: gate, up):
  rows split into ``tp`` blocks *within each chunk*; ``lm_head`` and the embedding: rows split
  into ``tp`` blocks;
* row-parallel (``o_proj``, ``down_proj``): columns split into ``tp`` blocks;
* norms: not sharded, one ``model_weight.safetensors``;
* tied embeddings: only the embedding's file is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def _slice_str(s: slice) -> str:
    return ",".join("None" if x is None else str(x) for x in (s.start, s.stop, s.step))


def _pairs_str(pairs: list[tuple[tuple[slice, ...], tuple[slice, ...]]]) -> str:
    return ";".join(
        "|".join(map(_slice_str, local)) + "#" + "|".join(map(_slice_str, glob)) for local, glob in pairs
    )


ALL = slice(None, None, None)


def _shard_rows(full: torch.Tensor, chunks: list[int] | None, tp: int, rank: int):
    """Rows split in tp blocks, within each contiguous chunk when ``chunks`` is given
    (``parallel/sharded_parameters.py::create_sharded_parameter_from_config``). Returns the local
    tensor, its slice pairs and the unsharded shape as Nanotron records it (numpy scalars from
    ``np.cumsum`` in the chunked case)."""
    if chunks is None:
        n = full.shape[0] // tp
        return full[rank * n : (rank + 1) * n], [((ALL, ALL), (slice(rank * n, (rank + 1) * n, None), ALL))], tuple(full.shape)
    parts, pairs = [], []
    offsets = np.cumsum((0, *chunks))
    for c, g0, l0, l1 in zip(chunks, offsets[:-1], offsets[:-1] // tp, offsets[1:] // tp, strict=True):
        n = c // tp
        parts.append(full[int(g0) + rank * n : int(g0) + (rank + 1) * n])
        pairs.append(((slice(l0, l1, None), ALL), (slice(rank * n + g0, (rank + 1) * n + g0, None), ALL)))
    return torch.cat(parts, 0), pairs, (offsets[-1], full.shape[1])


def _shard_cols(full: torch.Tensor, tp: int, rank: int):
    n = full.shape[1] // tp
    return full[:, rank * n : (rank + 1) * n], [((ALL, ALL), (ALL, slice(rank * n, (rank + 1) * n, None)))], tuple(full.shape)


def _save(root: Path, name: str, tensor: torch.Tensor, tp: int | None, rank: int = 0, pairs=None, full_shape=None):
    *folders, leaf = name.split(".")
    folder = root.joinpath(*folders)
    folder.mkdir(parents=True, exist_ok=True)
    if tp is None:
        save_file({"data": tensor.contiguous()}, str(folder / f"model_{leaf}.safetensors"))
        return
    meta = {
        "version": "1.5",
        "local_global_slices_pairs": _pairs_str(pairs),
        "unsharded_shape": str(tuple(full_shape)),  # numpy 2 writes "(np.int64(12), 4)"
    }
    fname = f"model_{leaf}_pp-rank-0-of-1_tp-rank-{rank}-of-{tp}.safetensors"
    save_file({"data": tensor.contiguous()}, str(folder / fname), metadata=meta)


QWEN2_FIELDS = {  # Qwen2Config's fields beyond the Llama ones, as Nanotron dumps them (dataclass asdict)
    "rope_seq_len_interpolation_factor": None, "flex_attention_mask": None, "sliding_window_size": None,
    "no_rope_layer": None, "_fused_rotary_emb": False, "_fused_rms_norm": False, "_use_qkv_packed": False,
    "_use_doc_masking": False, "log_attn_probs": False, "ring_attn_heads_k_stride": None, "moe_config": None,
}  # fmt: skip


def write_nanotron_checkpoint(model, checkpoints_dir: str | Path, *, tp: int = 1, step: int = 10,
                              model_class: str = "llama") -> Path:  # fmt: skip
    """Write ``model`` (transformers LlamaForCausalLM) as Nanotron would at ``step`` from a
    ``LlamaForTraining`` or a ``Qwen2ForTraining`` (``model_class``: the same module names and
    files; only ``model_config.json`` differs); return the step folder."""
    cfg = model.config
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    d, h, kv = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
    hd = d // h
    ckpt = Path(checkpoints_dir) / str(step)
    root = ckpt / "model"

    def column(name, full, chunks):
        for r in range(tp):
            local, pairs, shape = _shard_rows(full, chunks, tp, r)
            _save(root, name, local, tp, r, pairs, shape)

    def row(name, full):
        for r in range(tp):
            local, pairs, shape = _shard_cols(full, tp, r)
            _save(root, name, local, tp, r, pairs, shape)

    column("model.token_position_embeddings.pp_block.token_embedding.weight", sd["model.embed_tokens.weight"], None)
    if not cfg.tie_word_embeddings:
        column("model.lm_head.pp_block.weight", sd["lm_head.weight"], None)
    _save(root, "model.final_layer_norm.pp_block.weight", sd["model.norm.weight"], None)
    for i in range(cfg.num_hidden_layers):
        p, q = f"model.layers.{i}", f"model.decoder.{i}.pp_block"
        qkv = torch.cat([sd[f"{p}.self_attn.{x}_proj.weight"] for x in "qkv"], 0)
        column(f"{q}.attn.qkv_proj.weight", qkv, [h * hd, kv * hd, kv * hd])
        row(f"{q}.attn.o_proj.weight", sd[f"{p}.self_attn.o_proj.weight"])
        gate_up = torch.cat([sd[f"{p}.mlp.gate_proj.weight"], sd[f"{p}.mlp.up_proj.weight"]], 0)
        column(f"{q}.mlp.gate_up_proj.weight", gate_up, [cfg.intermediate_size] * 2)
        row(f"{q}.mlp.down_proj.weight", sd[f"{p}.mlp.down_proj.weight"])
        _save(root, f"{q}.input_layernorm.weight", sd[f"{p}.input_layernorm.weight"], None)
        _save(root, f"{q}.post_attention_layernorm.weight", sd[f"{p}.post_attention_layernorm.weight"], None)
    nt_cfg = {
        "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "hidden_act": "silu",
        "hidden_size": d, "initializer_range": 0.02, "intermediate_size": cfg.intermediate_size,
        "is_llama_config": True, "max_position_embeddings": cfg.max_position_embeddings,
        "num_attention_heads": h, "num_hidden_layers": cfg.num_hidden_layers, "attention_bias": False,
        "num_key_value_heads": kv, "pad_token_id": None, "pretraining_tp": 1, "rms_norm_eps": cfg.rms_norm_eps,
        "rope_scaling": None, "rope_theta": 10000.0, "rope_interleaved": False,
        "tie_word_embeddings": cfg.tie_word_embeddings, "use_cache": True, "vocab_size": cfg.vocab_size,
        "_attn_implementation": "flash_attention_2", "z_loss_enabled": False, "z_loss_coefficient": 0.0001,
    }  # fmt: skip
    if model_class == "qwen2":
        nt_cfg = {"is_qwen2_config": True, **{k: v for k, v in nt_cfg.items() if k != "is_llama_config"}, **QWEN2_FIELDS}
        nt_cfg["_attn_implementation"] = "sdpa"
    (ckpt / "model_config.json").write_text(json.dumps(nt_cfg))
    (ckpt / "checkpoint_metadata.json").write_text(json.dumps({"version": "1.5", "tp": tp, "dp": 1, "cp": 1}))
    (Path(checkpoints_dir) / "latest.txt").write_text(str(step))
    return ckpt
