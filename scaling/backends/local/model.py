"""A Llama-style decoder built from a :class:`~scaling.shapes.ModelShape`, for fast training.

The module computes exactly what transformers' ``LlamaForCausalLM`` computes (RMSNorm, rotary
positions, grouped-query SDPA attention with a causal mask, SwiGLU MLP, untied or tied
``lm_head``), with the same parameters, but in a lean form for tiny models where per-op overhead
dominates: q/k/v live in one ``qkv`` matrix and gate/up in one ``gate_up`` matrix (one matmul
each), rotary tables are computed once, and no attention mask is materialised.
:func:`to_hf_state_dict` splits them into transformers' names, so the final model is saved with
``LlamaForCausalLM.save_pretrained`` and loads in transformers and TRL; a test checks that both
give the same logits. Training in fp32 on the CPU runs each block through
:class:`~scaling.backends.local.fused.FusedBlock` (the same function with a hand-written backward;
``model.fused = False`` turns it off).

Initialisation (GPT-2 / Megatron convention, as in OLMo and nanoGPT): every matrix
``N(0, std)`` with ``std = spec.init_std`` (0.02 by default), the two residual output projections
of each block (attention ``o_proj`` and MLP ``down_proj``) ``N(0, std / sqrt(2 L))`` so that the
residual stream's variance does not grow with depth (Radford et al. 2019, sec. 2.3), norms at 1,
biases at 0. The embedding and ``lm_head`` use ``std`` too.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scaling.shapes import ModelShape
from scaling.store import apply_umask

from .fused import can_fuse, fused_block, linear

ROPE_THETA = 10000.0
RMS_EPS = 1e-5


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = RMS_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # transformers' LlamaRMSNorm: normalise in fp32, cast back, then scale
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def rope_tables(seq_len: int, head_dim: int, theta: float = ROPE_THETA) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles ``pos * theta^(-2i/d)``, shape (seq, head_dim/2) (Su et al.
    2021), computed as transformers computes them."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = torch.outer(torch.arange(seq_len, dtype=torch.int64).float(), inv)
    return freqs.cos(), freqs.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs ``(x[2i], x[2i+1])`` of the last dimension by the rotary angles.

    Our q/k channels are stored pair-interleaved (Meta's original layout); :func:`to_hf_state_dict`
    permutes them into transformers' half-split layout, where the same rotation is
    ``x cos + rotate_half(x) sin``. On the CPU in fp32 the rotation is one complex multiply (a
    third of the time of the real-valued form, backward included); elsewhere the real form.
    """
    pairs = x.unflatten(-1, (-1, 2))
    if x.device.type == "cpu" and x.dtype == torch.float32 and not torch.compiler.is_compiling():
        cis = torch.complex(cos, sin)
        return torch.view_as_real(torch.view_as_complex(pairs) * cis).flatten(-2)
    a, b = pairs.unbind(-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, s: ModelShape) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.d_head = s.heads, s.n_kv_heads, s.d_head
        self.q_dim, self.kv_dim = s.q_dim, s.kv_dim
        self.input_layernorm = RMSNorm(s.hidden)
        self.qkv = nn.Linear(s.hidden, s.q_dim + 2 * s.kv_dim, bias=s.qkv_bias)
        self.o_proj = nn.Linear(s.q_dim, s.hidden, bias=False)
        self.post_attention_layernorm = RMSNorm(s.hidden)
        self.glu = s.glu
        self.d_ffn = s.d_ffn
        self.gate_up = nn.Linear(s.hidden, (2 if s.glu else 1) * s.d_ffn, bias=False)
        self.down_proj = nn.Linear(s.d_ffn, s.hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        qkv = self.qkv(self.input_layernorm(x))
        if self.n_kv == self.n_heads:
            # (3, B, H, T, D) views; q and k rotated together in one op
            qkv = qkv.view(B, T, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
            q, k = apply_rope(qkv[:2], cos, sin).unbind(0)
            v = qkv[2]
        else:
            q, k, v = qkv.split([self.q_dim, self.kv_dim, self.kv_dim], dim=-1)
            q = apply_rope(q.view(B, T, self.n_heads, self.d_head).transpose(1, 2), cos, sin)
            k = apply_rope(k.view(B, T, self.n_kv, self.d_head).transpose(1, 2), cos, sin)
            v = v.view(B, T, self.n_kv, self.d_head).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_kv != self.n_heads)
        x = x + self.o_proj(a.transpose(1, 2).reshape(B, T, self.q_dim))
        h = self.gate_up(self.post_attention_layernorm(x))
        if self.glu:
            g, u = h.split(self.d_ffn, dim=-1)
            h = F.silu(g) * u
        else:
            h = F.silu(h)
        return x + self.down_proj(h)


class LlamaLM(nn.Module):
    """Decoder-only LM; ``forward(ids)`` returns logits, ``loss(ids, targets)`` the mean CE."""

    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.shape = shape
        self.embed_tokens = nn.Embedding(shape.vocab, shape.hidden)
        self.layers = nn.ModuleList(Block(shape) for _ in range(shape.layers))
        self.norm = RMSNorm(shape.hidden)
        self.lm_head = nn.Linear(shape.hidden, shape.vocab, bias=False)
        if shape.tied:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rope_tables(shape.seq_len, shape.d_head)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.fused = True  # fp32 CPU training through :mod:`.fused` where it applies

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        x = self.embed_tokens(ids)
        cos, sin = self.rope_cos[:T].to(x.dtype), self.rope_sin[:T].to(x.dtype)
        cis = None
        for block in self.layers:
            if self.fused and can_fuse(block, x):
                cis = torch.complex(cos, sin) if cis is None else cis
                x = fused_block(block, x, cis)
            else:
                x = block(x, cos, sin)
        return self.norm(x)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.hidden_states(ids))

    def loss(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy, logits in fp32 (as transformers upcasts them)."""
        h = self.hidden_states(ids)
        return linear_cross_entropy(h.reshape(-1, h.shape[-1]), self.lm_head.weight, targets.reshape(-1))

    def init_weights(self, std: float, generator: torch.Generator | None = None) -> None:
        """N(0, std) everywhere, std/sqrt(2L) on residual outputs, norms 1, biases 0."""
        out_std = std / math.sqrt(2 * self.shape.layers)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.ndim == 1:
                    p.fill_(1.0 if name.endswith("layernorm.weight") or name == "norm.weight" else 0.0)
                elif name.endswith(("o_proj.weight", "down_proj.weight")):
                    p.normal_(0.0, out_std, generator=generator)
                else:
                    p.normal_(0.0, std, generator=generator)


class _LinearCrossEntropy(torch.autograd.Function):
    """``mean(CE(h W^T, y))`` with its gradient computed in the forward pass.

    ``dL/dlogits = (softmax - onehot(y)) / N`` (the softmax/CE identity), so the backward needs
    no stored logits and no second log-softmax: one ``log_softmax``, one in-place ``exp_`` and a
    scatter replace transformers' log-softmax, NLL and their two backward kernels, which cost a
    tenth of a step at vocabulary 1024 and hidden 64. On the CPU in fp32 one ``softmax`` pass
    gives both ``p`` and the loss ``-log p_y`` (falling back to ``log_softmax`` if a ``p_y``
    underflows). Gradients are exact (not approximated).
    """

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cpu32 = h.dtype == torch.float32 and h.device.type == "cpu"
        logits = (linear(h, w) if cpu32 else h @ w.t()).float()
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        if cpu32 and need_grad:
            # one softmax pass; -log p_y is exact to fp32 rounding unless p_y underflows
            p = torch.softmax(logits, dim=-1)
            py = p.gather(1, y[:, None])
            loss = -py.log().mean() if bool(py.min() > 1e-30) else F.cross_entropy(logits, y)
        else:
            logp = torch.log_softmax(logits, dim=-1)
            loss = -logp.gather(1, y[:, None]).mean()
            p = logp.exp_() if need_grad else None
        if p is not None:
            p.scatter_add_(1, y[:, None], torch.full((y.shape[0], 1), -1.0, dtype=p.dtype, device=p.device))
            p = p.to(h.dtype)
            ctx.save_for_backward(p @ w, p.t() @ h)
            ctx.n = y.shape[0]
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        gh, gw = ctx.saved_tensors
        scale = grad / ctx.n
        return gh * scale.to(gh.dtype), gw * scale.to(gw.dtype), None


def linear_cross_entropy(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the logits ``h @ w.T`` against ``y`` (fused forward/backward)."""
    if torch.is_grad_enabled() and (h.requires_grad or w.requires_grad):
        return _LinearCrossEntropy.apply(h, w, y)
    return F.cross_entropy((h @ w.t()).float(), y)


def build_model(shape: ModelShape, init_std: float = 0.02, seed: int = 0) -> LlamaLM:
    """A freshly initialised model; the same seed gives the same weights on every machine."""
    model = LlamaLM(shape)
    model.init_weights(init_std, torch.Generator().manual_seed(seed))
    return model


def count_params(model: nn.Module) -> int:
    """Unique parameters (a tied ``lm_head`` counts once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# ---- transformers interop ---------------------------------------------------------------------


def hf_config(shape: ModelShape, **extra: Any) -> Any:
    """``LlamaConfig``; ``Qwen2Config`` when the shape has q/k/v biases (Llama's
    ``attention_bias`` would also add an ``o_proj`` bias that the shape does not count)."""
    from transformers import LlamaConfig, Qwen2Config

    if not shape.glu:
        raise ValueError("shape.glu=False: transformers' Llama has a SwiGLU MLP only; set glu: true")
    cfg = {k: v for k, v in shape.to_hf_config().items() if k not in ("model_type", "architectures")}
    cfg["rope_theta"] = ROPE_THETA
    cfg["rms_norm_eps"] = RMS_EPS
    if shape.qkv_bias:
        for k in ("attention_bias", "mlp_bias"):
            cfg.pop(k)
        return Qwen2Config(**cfg, use_sliding_window=False, **extra)
    return LlamaConfig(**cfg, **extra)


def _to_half_split(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of q or k from our pair-interleaved rotary layout to transformers' half-split one:
    channel ``2i`` -> ``i``, ``2i+1`` -> ``i + d/2`` within each head (the permutation of
    transformers' ``convert_llama_weights_to_hf``, inverted)."""
    rest = w.shape[1:]
    return w.reshape(heads, -1, 2, *rest).transpose(1, 2).reshape(w.shape)


def to_hf_state_dict(model: LlamaLM) -> dict[str, torch.Tensor]:
    """Our parameters under ``LlamaForCausalLM``'s names (qkv and gate_up split, q/k rows
    permuted to the half-split rotary layout)."""
    s = model.shape
    out: dict[str, torch.Tensor] = {"model.embed_tokens.weight": model.embed_tokens.weight.detach()}
    for i, b in enumerate(model.layers):
        p = f"model.layers.{i}."
        for kind in ("weight", "bias"):
            t = getattr(b.qkv, kind)
            if t is None:
                continue
            q, k, v = t.detach().split([s.q_dim, s.kv_dim, s.kv_dim])
            out[f"{p}self_attn.q_proj.{kind}"] = _to_half_split(q, s.heads)
            out[f"{p}self_attn.k_proj.{kind}"] = _to_half_split(k, s.n_kv_heads)
            out[f"{p}self_attn.v_proj.{kind}"] = v
        out[p + "self_attn.o_proj.weight"] = b.o_proj.weight.detach()
        g, u = b.gate_up.weight.detach().split(s.d_ffn)
        out |= {p + "mlp.gate_proj.weight": g, p + "mlp.up_proj.weight": u}
        out[p + "mlp.down_proj.weight"] = b.down_proj.weight.detach()
        out[p + "input_layernorm.weight"] = b.input_layernorm.weight.detach()
        out[p + "post_attention_layernorm.weight"] = b.post_attention_layernorm.weight.detach()
    out["model.norm.weight"] = model.norm.weight.detach()
    if not s.tied:
        out["lm_head.weight"] = model.lm_head.weight.detach()
    return {k: v.contiguous() for k, v in out.items()}


def to_hf_model(model: LlamaLM, dtype: torch.dtype = torch.float32) -> Any:
    """A transformers ``LlamaForCausalLM`` (``Qwen2ForCausalLM`` with q/k/v biases; SDPA
    attention) holding this model's weights."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_config(hf_config(model.shape), attn_implementation="sdpa")
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    allowed = {"lm_head.weight"} if model.shape.tied else set()
    if set(missing) - allowed or unexpected:
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    if model.shape.tied:
        hf.tie_weights()
    return hf.to(dtype)


def _special_ids(tokenizer_dir: Path) -> dict[str, int | None]:
    """bos/eos/pad ids from a saved tokenizer folder's JSON files (no transformers import)."""
    cfg = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    vocab = {
        t["content"]: t["id"]
        for t in json.loads((tokenizer_dir / "tokenizer.json").read_text())["added_tokens"]
    }
    out: dict[str, int | None] = {}
    for k in ("bos", "eos", "pad"):
        tok = cfg.get(f"{k}_token")
        tok = tok.get("content") if isinstance(tok, dict) else tok
        out[f"{k}_token_id"] = vocab.get(tok) if tok is not None else None
    if out["eos_token_id"] is None:
        raise KeyError("eos_token")
    return out


def save_hf_model(model: LlamaLM, tokenizer_dir: str | Path, out: str | Path) -> None:
    """Write ``out`` as ``LlamaForCausalLM.save_pretrained`` + ``tokenizer.save_pretrained`` do.

    Llama models are written directly (config.json, generation_config.json, model.safetensors with
    transformers' parameter names, the tokenizer's files), which spares each run the seconds of
    importing transformers; a test loads the folder with ``AutoModelForCausalLM`` and
    ``AutoTokenizer`` and compares logits. Other cases (q/k/v biases -> Qwen2, tokenizers without
    a ``tokenizer.json``) go through transformers' own ``save_pretrained``.
    """
    from safetensors.torch import save_file

    tokenizer_dir, out = Path(tokenizer_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        ids = _special_ids(tokenizer_dir)
    except (OSError, KeyError, ValueError):
        ids = {}
    if model.shape.qkv_bias or not ids:
        _save_with_transformers(model, tokenizer_dir, out)
        apply_umask(out)
        return
    s = model.shape
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "attention_dropout": 0.0,
        **ids,
        "dtype": "float32",
        "head_dim": s.d_head,
        "hidden_act": "silu",
        "hidden_size": s.hidden,
        "initializer_range": 0.02,
        "intermediate_size": s.d_ffn,
        "max_position_embeddings": s.seq_len,
        "mlp_bias": False,
        "num_attention_heads": s.heads,
        "num_hidden_layers": s.layers,
        "num_key_value_heads": s.n_kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": RMS_EPS,
        "rope_parameters": {"rope_theta": ROPE_THETA, "rope_type": "default"},
        "rope_theta": ROPE_THETA,
        "tie_word_embeddings": s.tied,
        "use_cache": True,
        "vocab_size": s.vocab,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    gen = {"_from_model_config": True, **ids, "use_cache": True}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n")
    tensors = {k: v.float().cpu() for k, v in to_hf_state_dict(model).items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    for f in tokenizer_dir.iterdir():
        if f.is_file():
            shutil.copyfile(f, out / f.name)
    apply_umask(out)  # safetensors writes its file 0600; a team reads the exported model


def _save_with_transformers(model: LlamaLM, tokenizer_dir: Path, out: Path) -> None:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf = to_hf_model(model)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(hf.config, k, getattr(tok, k))
        setattr(hf.generation_config, k, getattr(tok, k))
    hf.save_pretrained(str(out))
    tok.save_pretrained(str(out))
