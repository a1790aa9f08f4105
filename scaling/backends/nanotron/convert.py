"""A Nanotron Llama or Qwen2 checkpoint -> a transformers ``LlamaForCausalLM`` folder, on the CPU.

Nanotron's ``LlamaForTraining`` and ``Qwen2ForTraining`` (without bias, MoE or sliding windows)
hold the same parameters under the same module names; ``model_config.json`` tells them apart.

Nanotron (pinned commit, ``serialize/weights.py``) saves each parameter as its own safetensors
file holding one tensor named ``data``::

    CKPT/latest.txt                                   the newest step, e.g. "1000"
    CKPT/1000/model_config.json                       the model's LlamaConfig fields
    CKPT/1000/model/model/decoder/0/pp_block/attn/qkv_proj/
        model_weight_pp-rank-0-of-1_tp-rank-0-of-2.safetensors      one file per TP/PP shard
        model_weight_pp-rank-0-of-1_tp-rank-1-of-2.safetensors
    CKPT/1000/model/model/decoder/0/pp_block/input_layernorm/model_weight.safetensors  (unsharded)

A sharded file's metadata holds ``unsharded_shape`` and ``local_global_slices_pairs``
(``"l0,l1,step|...#g0,g1,step|...;..."``): which slice of the full tensor each local slice is.
Merging follows that metadata, so q/k/v chunks sharded separately (column-parallel with
contiguous chunks) land where they belong. Then ``qkv_proj = cat[q, k, v]`` and
``gate_up_proj = cat[gate, up]`` (rows) are split for transformers. Nanotron's own converter
(``examples/llama/convert_nanotron_to_hf.py``) builds the model on CUDA; this reads the files.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaling.errors import UsageError
from scaling.store import atomic_write_json

if TYPE_CHECKING:
    import torch

_FILE = re.compile(
    r"^model_(?P<name>[A-Za-z0-9]+?)"
    r"(?:_pp-rank-(?P<pp>\d+)-of-\d+_tp-rank-(?P<tp>\d+)-of-\d+(?:_exp-rank-\d+-of-\d+)?)?\.safetensors$"
)


def find_checkpoint(path: str | Path) -> Path:
    """``path`` itself when it holds ``model_config.json``, else ``path/<latest.txt>``."""
    p = Path(path)
    if (p / "model_config.json").exists():
        return p
    latest = p / "latest.txt"
    if latest.exists():
        step = latest.read_text().strip()
        if (p / step / "model_config.json").exists():
            return p / step
        raise UsageError(f"checkpoint: {latest} names step {step} but {p / step} has no model_config.json")
    raise UsageError(f"checkpoint={p}: neither model_config.json nor latest.txt there; give a Nanotron checkpoint folder")


def _parse_slice(text: str) -> slice:
    return slice(*(None if x == "None" else int(x) for x in text.split(",")))


def parse_slices_pairs(text: str) -> list[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """Nanotron's ``SlicesPair.tuple_to_str`` format back to (local, global) slice tuples."""
    pairs = []
    for pair in text.split(";"):
        local, _, glob = pair.partition("#")
        pairs.append((tuple(map(_parse_slice, local.split("|"))), tuple(map(_parse_slice, glob.split("|")))))
    return pairs


def parse_shape(text: str) -> tuple[int, ...]:
    """``"(12, 4)"``, or with numpy 2 scalars ``"(np.int64(12), 4)"`` (Nanotron builds chunked
    shapes with ``np.cumsum`` and writes ``str(tuple(...))``)."""
    out = []
    for part in text.strip().removeprefix("(").removesuffix(")").split(","):
        part = part.strip()
        if not part:
            continue
        m = re.search(r"\((\d+)\)", part) if "np." in part else None
        out.append(int(m.group(1)) if m else int(part))
    return tuple(out)


def load_nanotron_state(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """Every parameter of a Nanotron checkpoint, TP/PP shards merged, by Nanotron name."""
    import torch
    from safetensors import safe_open

    root = find_checkpoint(checkpoint) / "model"
    if not root.is_dir():
        raise UsageError(f"checkpoint: {root} is missing (no model weights saved there)")
    groups: dict[str, list[Path]] = {}
    for f in sorted(root.rglob("*.safetensors")):
        m = _FILE.match(f.name)
        if not m:
            continue
        name = ".".join(f.parent.relative_to(root).parts + (m.group("name"),))
        groups.setdefault(name, []).append(f)
    state: dict[str, torch.Tensor] = {}
    for name, files in groups.items():
        state[name] = _merge(name, files, safe_open, torch)
    return state


def _merge(name: str, files: list[Path], safe_open: Any, torch: Any) -> torch.Tensor:
    if len(files) == 1 and _FILE.match(files[0].name).group("tp") is None:
        with safe_open(files[0], framework="pt", device="cpu") as fi:
            return fi.get_tensor("data")
    full = covered = None
    for f in files:
        with safe_open(f, framework="pt", device="cpu") as fi:
            meta = fi.metadata() or {}
            shard = fi.get_tensor("data")
        if "unsharded_shape" not in meta:
            raise UsageError(f"checkpoint: {f} is a shard without unsharded_shape metadata")
        if full is None:
            shape = parse_shape(meta["unsharded_shape"])
            full = torch.empty(shape, dtype=shard.dtype)
            covered = torch.zeros(shape, dtype=torch.bool)
        for local, glob in parse_slices_pairs(meta["local_global_slices_pairs"]):
            full[glob] = shard[local]
            covered[glob] = True
    if not bool(covered.all()):
        raise UsageError(f"checkpoint: parameter {name} is missing shards ({len(files)} files found)")
    return full


# ---- name mapping -----------------------------------------------------------------------------


def hf_config_from_nanotron(cfg: dict[str, Any], vocab_size: int | None = None) -> dict[str, Any]:
    """transformers ``LlamaConfig`` kwargs from Nanotron's ``model_config.json``."""
    if cfg.get("rope_interleaved"):
        raise UsageError("model_config.rope_interleaved=true: transformers' Llama rotates halves; retrain with false")
    for field in ("attention_bias", "moe_config", "sliding_window_size", "no_rope_layer"):
        if cfg.get(field):  # Qwen2Config options with no transformers Llama equivalent
            raise UsageError(
                f"model_config.{field}={cfg[field]!r}: this checkpoint is not a Llama-shaped model; "
                "only checkpoints without q/k/v bias, MoE, sliding windows or rope-free layers convert"
            )
    heads = int(cfg["num_attention_heads"])
    return {
        "hidden_size": int(cfg["hidden_size"]),
        "intermediate_size": int(cfg["intermediate_size"]),
        "num_hidden_layers": int(cfg["num_hidden_layers"]),
        "num_attention_heads": heads,
        "num_key_value_heads": int(cfg.get("num_key_value_heads") or heads),
        "head_dim": int(cfg["hidden_size"]) // heads,
        "vocab_size": int(vocab_size or cfg["vocab_size"]),
        "max_position_embeddings": int(cfg.get("max_position_embeddings", 2048)),
        "rms_norm_eps": float(cfg.get("rms_norm_eps", 1e-6)),
        "rope_theta": float(cfg.get("rope_theta", 10000.0)),
        "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", False)),
        "hidden_act": cfg.get("hidden_act", "silu"),
        "bos_token_id": cfg.get("bos_token_id"),
        "eos_token_id": cfg.get("eos_token_id"),
        "pad_token_id": cfg.get("pad_token_id"),
        "attention_bias": False,
        "mlp_bias": False,
    }


def to_hf_state(nt: dict[str, torch.Tensor], hf_cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Nanotron names -> transformers names, q/k/v and gate/up split, vocabulary rows trimmed."""
    d, heads, kv = hf_cfg["hidden_size"], hf_cfg["num_attention_heads"], hf_cfg["num_key_value_heads"]
    hd = d // heads
    ffn, vocab = hf_cfg["intermediate_size"], hf_cfg["vocab_size"]

    def take(name: str) -> torch.Tensor:
        if name not in nt:
            raise UsageError(f"checkpoint: parameter {name} not found")
        return nt[name]

    emb = take("model.token_position_embeddings.pp_block.token_embedding.weight")
    out = {"model.embed_tokens.weight": emb[:vocab], "model.norm.weight": take("model.final_layer_norm.pp_block.weight")}
    if not hf_cfg["tie_word_embeddings"]:
        out["lm_head.weight"] = take("model.lm_head.pp_block.weight")[:vocab]
    for i in range(hf_cfg["num_hidden_layers"]):
        nt_p, hf_p = f"model.decoder.{i}.pp_block", f"model.layers.{i}"
        qkv = take(f"{nt_p}.attn.qkv_proj.weight")
        if qkv.shape[0] != (heads + 2 * kv) * hd:
            raise UsageError(f"checkpoint: {nt_p}.attn.qkv_proj has {qkv.shape[0]} rows, expected {(heads + 2 * kv) * hd}")
        q, k, v = qkv.split([heads * hd, kv * hd, kv * hd], dim=0)
        gate, up = take(f"{nt_p}.mlp.gate_up_proj.weight").split([ffn, ffn], dim=0)
        out |= {
            f"{hf_p}.self_attn.q_proj.weight": q,
            f"{hf_p}.self_attn.k_proj.weight": k,
            f"{hf_p}.self_attn.v_proj.weight": v,
            f"{hf_p}.self_attn.o_proj.weight": take(f"{nt_p}.attn.o_proj.weight"),
            f"{hf_p}.mlp.gate_proj.weight": gate,
            f"{hf_p}.mlp.up_proj.weight": up,
            f"{hf_p}.mlp.down_proj.weight": take(f"{nt_p}.mlp.down_proj.weight"),
            f"{hf_p}.input_layernorm.weight": take(f"{nt_p}.input_layernorm.weight"),
            f"{hf_p}.post_attention_layernorm.weight": take(f"{nt_p}.post_attention_layernorm.weight"),
        }
    return {k: v.contiguous() for k, v in out.items()}


def load_hf_model(checkpoint: str | Path, *, vocab_size: int | None = None, dtype: str = "float32"):
    """A transformers ``LlamaForCausalLM`` with the checkpoint's weights (CPU)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    ckpt = find_checkpoint(checkpoint)
    nt_cfg = json.loads((ckpt / "model_config.json").read_text())
    hf_cfg = hf_config_from_nanotron(nt_cfg, vocab_size)
    state = to_hf_state(load_nanotron_state(ckpt), hf_cfg)
    config = LlamaConfig(**hf_cfg)
    model = LlamaForCausalLM(config)  # built on the CPU so buffers (rotary frequencies) are computed
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise UsageError(f"checkpoint: weights do not match the config (missing {missing[:4]}, unexpected {unexpected[:4]})")
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.to(getattr(torch, dtype)).eval()


def convert_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    tokenizer_dir: str | Path | None = None,
    vocab_size: int | None = None,
    dtype: str = "float32",
) -> Path:
    """Write ``out_dir`` (``save_pretrained`` model + tokenizer) atomically: a temp folder, then rename."""
    out = Path(out_dir)
    model = load_hf_model(checkpoint, vocab_size=vocab_size, dtype=dtype)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(tmp)
    atomic_write_json(tmp / "nanotron_source.json", {"checkpoint": str(find_checkpoint(checkpoint).resolve())})
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
