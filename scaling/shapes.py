"""Model shapes for Llama-style decoders and their exact parameter counts.

A :class:`ModelShape` is everything about a decoder-only transformer that changes its parameter
count or its FLOPs per token. The parameter count is exact for the Llama family (RMSNorm without
bias, SwiGLU MLP with gate/up/down projections, rotary positions, optional GQA, optional q/k/v
bias as in Qwen2, optional tied embeddings): it equals ``sum(p.numel() for p in
LlamaForCausalLM(config).parameters())`` for the matching transformers config.

Conventions (see ``flops.py``):
* ``embedding_params``: the vocabulary matrices, i.e. the input embedding and, when untied, the
  output projection (``lm_head``). Kaplan et al. (2020, sec. 2.1) exclude "all vocabulary and
  positional embeddings"; Porian et al. (2024) and Pearce & Song (2024) show that this choice is
  most of the Kaplan/Chinchilla disagreement at small scale.
* ``non_embedding_params = params - embedding_params`` (norms included).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

Count = Literal["total", "non_embedding"]


class ShapeError(ValueError):
    """A shape that cannot exist (names the field and the fix)."""


@dataclass(frozen=True)
class ModelShape:
    """A Llama-style decoder.

    ``ffn`` is the MLP intermediate size: three matrices of ``hidden x ffn`` with SwiGLU
    (``glu=True``, Llama), two otherwise.
    ``head_dim`` defaults to ``hidden // heads``.
    """

    layers: int
    hidden: int
    heads: int
    kv_heads: int | None = None
    ffn: int | None = None
    vocab: int = 32000
    seq_len: int = 2048
    tied: bool = False
    qkv_bias: bool = False
    head_dim: int | None = None
    glu: bool = True  # SwiGLU (3 FFN matrices, Llama); False: a 2-matrix MLP (GPT-2, Chinchilla)

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "heads", "vocab", "seq_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ShapeError(f"shape.{name}={v!r}: must be a positive integer")
        kv = self.kv_heads if self.kv_heads is not None else self.heads
        if kv < 1 or self.heads % kv:
            raise ShapeError(f"shape.kv_heads={kv}: must divide heads={self.heads} (grouped-query attention)")
        if self.head_dim is None and self.hidden % self.heads:
            raise ShapeError(
                f"shape.heads={self.heads}: must divide hidden={self.hidden} "
                f"(pick heads from {_divisors(self.hidden)} or set head_dim)"
            )
        if self.ffn is not None and self.ffn < 1:
            raise ShapeError(f"shape.ffn={self.ffn}: must be a positive integer")

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads if self.kv_heads is not None else self.heads

    @property
    def d_head(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden // self.heads

    @property
    def d_ffn(self) -> int:
        return self.ffn if self.ffn is not None else default_ffn(self.hidden)

    @property
    def q_dim(self) -> int:
        """Width of the query projection, heads x head size (Chinchilla's ``kq``)."""
        return self.heads * self.d_head

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.d_head

    @property
    def aspect_ratio(self) -> float:
        return self.hidden / self.layers

    # ---- exact parameter counts ------------------------------------------------------------
    @property
    def attention_params_per_layer(self) -> int:
        d = self.hidden
        weights = d * self.q_dim + 2 * d * self.kv_dim + self.q_dim * d
        bias = (self.q_dim + 2 * self.kv_dim) if self.qkv_bias else 0
        return weights + bias

    @property
    def mlp_params_per_layer(self) -> int:
        return (3 if self.glu else 2) * self.hidden * self.d_ffn

    @property
    def params_per_layer(self) -> int:
        # two RMSNorm weight vectors per block
        return self.attention_params_per_layer + self.mlp_params_per_layer + 2 * self.hidden

    @property
    def embedding_params(self) -> int:
        """Vocabulary matrices: input embedding plus untied output projection."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def non_embedding_params(self) -> int:
        """Transformer blocks plus the final norm (Kaplan's N)."""
        return self.layers * self.params_per_layer + self.hidden

    @property
    def params(self) -> int:
        """All parameters (Chinchilla's N): non-embedding plus vocabulary matrices."""
        return self.non_embedding_params + self.embedding_params

    def count(self, convention: Count = "total") -> int:
        if convention == "total":
            return self.params
        if convention == "non_embedding":
            return self.non_embedding_params
        raise ShapeError(f"count={convention!r}: use 'total' or 'non_embedding'")

    # ---- conversions --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kv_heads"] = self.n_kv_heads
        d["ffn"] = self.d_ffn
        d["head_dim"] = self.d_head
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelShape:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ShapeError(f"shape: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(d))

    def replace(self, **changes: Any) -> ModelShape:
        return replace(self, **changes)

    def to_hf_config(self) -> dict[str, Any]:
        """A transformers ``LlamaConfig`` dict (``model_type: llama``) with this shape."""
        return {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "num_hidden_layers": self.layers,
            "hidden_size": self.hidden,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.d_head,
            "intermediate_size": self.d_ffn,
            "vocab_size": self.vocab,
            "max_position_embeddings": self.seq_len,
            "tie_word_embeddings": self.tied,
            "attention_bias": self.qkv_bias,
            "mlp_bias": False,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
        }

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any] | str | Path, seq_len: int | None = None) -> ModelShape:
        """Build from a Hugging Face ``config.json`` (Llama, Mistral, Qwen2 families).

        Qwen2 always has q/k/v biases; Llama/Mistral have them only with ``attention_bias``.
        """
        source = "config.json"
        if not isinstance(config, Mapping):
            source = str(config)
            config = read_hf_config(config)
        mt = str(config.get("model_type", "llama"))
        if mt not in {"llama", "mistral", "qwen2", "qwen3", "smollm", "olmo2"}:
            raise ShapeError(f"{source}: model_type={mt!r}: supported families are llama, mistral, qwen2")

        def whole(key: str, default: int | None = None) -> int:
            return _hf_int(config, key, source, default)

        def flag(key: str) -> bool:
            v = config.get(key, False)
            if v is not None and not isinstance(v, bool):
                raise ShapeError(f"{source}: {key}={json.dumps(v)}: must be true or false")
            return bool(v)

        heads = whole("num_attention_heads")
        return cls(
            layers=whole("num_hidden_layers"),
            hidden=whole("hidden_size"),
            heads=heads,
            kv_heads=whole("num_key_value_heads", heads),
            ffn=whole("intermediate_size"),
            vocab=whole("vocab_size"),
            seq_len=seq_len or whole("max_position_embeddings", 2048),
            tied=flag("tie_word_embeddings"),
            qkv_bias=flag("attention_bias") or mt == "qwen2",
            head_dim=whole("head_dim", 0) or None,
        )


def read_hf_config(path: str | Path) -> Mapping[str, Any]:
    """A ``config.json`` (or the one in a folder) as a mapping; anything else is a :class:`ShapeError`."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise ShapeError(f"--hf-config {p}: no such file (give a config.json or its folder)")
    try:
        config = json.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ShapeError(f"--hf-config {p}: byte {e.start} is not UTF-8 text; give a Hugging Face config.json") from None
    except json.JSONDecodeError as e:
        raise ShapeError(f"--hf-config {p}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); fix the file") from None
    if not isinstance(config, Mapping):
        raise ShapeError(
            f"--hf-config {p}: a JSON {type(config).__name__}, not an object; give a config.json with hidden_size, ..."
        )
    return config


def _hf_int(config: Mapping[str, Any], key: str, source: str, default: int | None = None) -> int:
    """``config[key]`` as a whole number (``default`` when absent or null; required without one).

    A fraction, a boolean or a string is refused, never truncated."""
    v = config.get(key)
    if v is None:
        if default is None:
            raise ShapeError(f"{source}: missing field {key!r}; add it (a Hugging Face config.json has it)")
        return default
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ShapeError(f"{source}: {key}={json.dumps(v)}: must be a whole number")
    return v


def default_ffn(hidden: int, multiple_of: int = 256, mult: float = 8 / 3) -> int:
    """Llama's SwiGLU width: ``8/3 * hidden`` rounded up to ``multiple_of`` (Touvron et al. 2023).

    ``multiple_of`` is capped at the hidden size so tiny models keep ffn ~ 8/3 d.
    """
    m = max(8, min(multiple_of, 2 ** int(math.log2(max(hidden, 8)))))
    return int(m * math.ceil(mult * hidden / m))


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, min(n, 64) + 1) if n % k == 0]


# ---- ladders: from a target parameter count to a concrete shape -------------------------------


@dataclass(frozen=True)
class LadderRule:
    """How a target N becomes a shape.

    The aspect ratio hidden/layers follows Kaplan et al. (2020, fig. 5: loss is flat for
    aspect ratios 20-200) and common practice (Llama 2 7B: 128; Chinchilla: 64-160). Heads have
    ``head_dim`` channels; ``kv_ratio`` query heads share one key/value head (GQA);
    ``hidden`` is a multiple of ``hidden_multiple`` and of ``head_dim x kv_ratio``; the FFN is
    ``8/3 hidden`` rounded up to ``ffn_multiple``.
    """

    aspect_ratio: float = 64.0
    head_dim: int = 64
    kv_ratio: int = 1
    hidden_multiple: int = 64
    ffn_multiple: int = 256
    min_layers: int = 1
    max_layers: int = 128
    tied: bool = False

    @property
    def width_step(self) -> int:
        """Widths the ladder tries: multiples of ``hidden_multiple`` that also hold a whole number
        of key/value groups (``head_dim x kv_ratio``), so GQA divides evenly."""
        return math.lcm(self.hidden_multiple, self.head_dim * self.kv_ratio)

    def heads_for(self, hidden: int) -> tuple[int, int]:
        """(query heads, key/value heads) for a width: ``hidden / head_dim`` heads, rounded down to
        a divisor of ``hidden``; ``heads / kv_ratio`` kv heads, rounded down to a divisor of heads."""
        heads = max(1, hidden // self.head_dim)
        while hidden % heads:
            heads -= 1
        kv = max(1, heads // self.kv_ratio)
        while heads % kv:
            kv -= 1
        return heads, kv

    def count(self, layers: int, hidden: int, vocab: int, convention: Count = "total") -> int:
        """``self.shape(...).count(convention)`` without building the shape (the ladder's inner loop)."""
        return _rule_count(self, layers, hidden, vocab, convention)

    def _count(self, layers: int, hidden: int, vocab: int, convention: Count) -> int:
        heads, kv = self.heads_for(hidden)
        d_head = hidden // heads
        attn = 2 * hidden * heads * d_head + 2 * hidden * kv * d_head
        per_layer = attn + 3 * hidden * default_ffn(hidden, self.ffn_multiple) + 2 * hidden
        n = layers * per_layer + hidden
        if convention == "total":
            n += vocab * hidden * (1 if self.tied else 2)
        return n

    def shape(self, layers: int, hidden: int, vocab: int, seq_len: int) -> ModelShape:
        heads, kv = self.heads_for(hidden)
        return ModelShape(
            layers=layers,
            hidden=hidden,
            heads=heads,
            kv_heads=kv,
            ffn=default_ffn(hidden, self.ffn_multiple),
            vocab=vocab,
            seq_len=seq_len,
            tied=self.tied,
        )


@functools.lru_cache(maxsize=65536)
def _rule_count(rule: LadderRule, layers: int, hidden: int, vocab: int, convention: Count) -> int:
    # cached: a plan under every law probes the same (depth, width) pairs again and again
    return rule._count(layers, hidden, vocab, convention)


def shape_for_params(
    target: float,
    *,
    vocab: int = 32000,
    seq_len: int = 2048,
    count: Count = "total",
    rule: LadderRule | None = None,
) -> ModelShape:
    """The shape whose ``count`` parameters are nearest ``target`` under ``rule``.

    For each depth L the width is the multiple of ``rule.width_step`` nearest the target; among
    those, the pair closest to the rule's aspect ratio wins unless another is more than 5%
    nearer the target count. Deterministic.
    """
    if not (target > 0 and math.isfinite(target)):
        raise ShapeError(f"target params={target!r}: must be a positive number")
    rule = rule or LadderRule()
    best: tuple[float, int, int] | None = None  # (score, layers, hidden); ties go to fewer layers
    start = _start_depth(target, rule)
    # Walk away from the rule's depth both ways; stop once the aspect penalty alone exceeds the
    # best score and can only grow (width shrinks as depth grows, so hidden/layers is monotone).
    for depths, beyond in (
        (range(start, rule.max_layers + 1), -1),
        (range(start - 1, rule.min_layers - 1, -1), 1),
    ):
        for layers in depths:
            penalties = []
            for hidden in _widths_near(target, layers, vocab, count, rule):
                n = rule.count(layers, hidden, vocab, count)
                miss = abs(math.log(n / target))
                log_aspect = math.log(hidden / layers / rule.aspect_ratio)
                score = miss / 0.05 + abs(log_aspect)  # 5% of count error weighs like one e-fold of aspect
                if best is None or (score, layers) < best[:2]:
                    best = (score, layers, hidden)
                penalties.append(log_aspect * beyond)
            if best is not None and min(penalties) > best[0]:
                break
    assert best is not None
    return rule.shape(best[1], best[2], vocab, seq_len)


def _start_depth(target: float, rule: LadderRule) -> int:
    """The depth at which ``12 L (aspect x L)^2 = target``, clipped to the rule's limits."""
    l0 = round((target / (12.0 * rule.aspect_ratio**2)) ** (1.0 / 3.0))
    return min(rule.max_layers, max(rule.min_layers, l0))


def _widths_near(target: float, layers: int, vocab: int, count: Count, rule: LadderRule) -> Iterable[int]:
    """The two multiples of ``rule.width_step`` whose counts bracket ``target`` at this depth."""
    m = rule.width_step
    # Every block holds at least 10 hidden^2 weights (attention >= 2 h^2, SwiGLU MLP 8 h^2), so
    # this width already reaches the target: bisect below it on multiples of m.
    lo, hi = 1, max(2, math.ceil(math.sqrt(target / (10.0 * layers)) / m) + 1)
    while lo < hi:
        mid = (lo + hi) // 2
        if rule.count(layers, mid * m, vocab, count) < target:
            lo = mid + 1
        else:
            hi = mid
    return [k * m for k in sorted({max(1, lo - 1), lo})]


def ladder(
    targets: Iterable[float],
    *,
    vocab: int = 32000,
    seq_len: int = 2048,
    count: Count = "total",
    rule: LadderRule | None = None,
) -> list[ModelShape]:
    """Shapes for several target sizes (duplicates removed, order kept)."""
    out: list[ModelShape] = []
    for t in targets:
        s = shape_for_params(t, vocab=vocab, seq_len=seq_len, count=count, rule=rule)
        if s not in out:
            out.append(s)
    return out
