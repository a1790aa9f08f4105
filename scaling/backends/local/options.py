"""Run options (``RunSpec.options``: ``backend_options`` and ``execution_options``), input checks and the learning-rate schedule.

No torch import here, so ``scaling train`` rejects bad input in a fraction of a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling.errors import UsageError
from scaling.runspec import RunSpec

OPTION_KEYS = {
    "threads": "int, CPU threads (default: all cores)",
    "device": "auto | cpu | cuda",
    "compile": "bool, torch.compile the model",
    "dtype": "auto | float32 | bfloat16 (autocast; auto = bfloat16 on CUDA, float32 on CPU)",
    "log_every": "int, steps between host syncs for metrics (default 1 on CPU, 10 on CUDA)",
    "keep_checkpoints": "bool, keep every checkpoint (default: only for constant-LR trunks)",
    "token_dtype": "auto | uint16 | uint32",
    "save_model": "bool, save the final transformers model to model/ (default true)",
}


# ---- options and schedule ------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    threads: int | None = None
    device: str = "auto"
    compile: bool = False
    dtype: str = "auto"
    log_every: int | None = None
    keep_checkpoints: bool | None = None
    token_dtype: str | None = None
    save_model: bool = True

    @classmethod
    def from_spec(cls, spec: RunSpec) -> Options:
        opts = spec.options
        unknown = set(opts) - set(OPTION_KEYS)
        if unknown:
            known = "; ".join(f"{k}: {v}" for k, v in OPTION_KEYS.items())
            raise UsageError(f"backend_options: unknown key(s) {sorted(unknown)}; known: {known}")
        o = cls(**opts)
        if o.threads is not None and (not isinstance(o.threads, int) or o.threads < 1):
            raise UsageError(f"backend_options.threads={o.threads!r}: a positive integer")
        if o.device not in ("auto", "cpu", "cuda") and not str(o.device).startswith("cuda:"):
            raise UsageError(f"backend_options.device={o.device!r}: auto, cpu or cuda")
        if o.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise UsageError(f"backend_options.dtype={o.dtype!r}: auto, float32, bfloat16 or float16")
        if o.log_every is not None and (not isinstance(o.log_every, int) or o.log_every < 1):
            raise UsageError(f"backend_options.log_every={o.log_every!r}: a positive integer")
        return o

    def torch_device(self) -> Any:
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"backend_options.device={self.device!r}: no CUDA device here; use auto or cpu")
        return torch.device(self.device)

    def autocast_dtype(self, device: Any) -> Any:
        """The autocast dtype, or None for plain fp32."""
        import torch

        name = self.dtype
        if name == "auto":
            name = "bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
        return None if name == "float32" else getattr(torch, name)


def warmup_steps(spec: RunSpec) -> int:
    return round(spec.schedule.warmup_frac * spec.steps)


def decay_start(spec: RunSpec) -> int:
    """First step of the WSD decay phase: the last ``decay_frac`` of the steps (at least one)."""
    return spec.steps - max(1, round(spec.schedule.decay_frac * spec.steps))


def lr_at(spec: RunSpec, step: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based) over exactly ``spec.steps`` steps.

    Linear warmup ``lr (step+1)/W``; then ``cosine``: ``f + (1-f)(1 + cos(pi p))/2`` times lr with
    ``p`` from 0 after warmup to 1 at the last step (so the last step uses ``final_frac * lr``);
    ``wsd``: lr until :func:`decay_start`, then ``linear`` / ``cosine`` / ``1-sqrt`` decay
    (Hägele et al. 2024, eq. 1) reaching ``final_frac * lr`` at the last step; ``constant``: lr.
    """
    sch, peak, n = spec.schedule, spec.optimizer.lr, spec.steps
    w = warmup_steps(spec)
    if step < w:
        return peak * (step + 1) / w
    f = sch.final_frac
    if sch.kind == "constant":
        return peak
    if sch.kind == "cosine":
        span = n - 1 - w
        p = 1.0 if span <= 0 else min(1.0, (step - w) / span)
        return peak * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * p)))
    start = max(decay_start(spec), w)
    if step < start:
        return peak
    p = min(1.0, (step - start + 1) / max(1, n - start))
    if sch.decay_shape == "linear":
        g = 1 - p
    elif sch.decay_shape == "cosine":
        g = 0.5 * (1 + math.cos(math.pi * p))
    else:  # 1-sqrt
        g = 1 - math.sqrt(p)
    return peak * (f + (1 - f) * g)


def validate_spec(spec: RunSpec) -> Options:
    """Every check that needs no data or torch work; raises :class:`UsageError` naming the field."""
    from .corpus import BUILTINS
    from .data import SPECIAL_TOKENS, token_dtype

    opts = Options.from_spec(spec)
    if not spec.shape.glu:
        raise UsageError("shape.glu=false: the local backend trains Llama (SwiGLU) models; set glu: true")
    if spec.backend != "local":
        raise UsageError(f"backend={spec.backend!r}: this is the local backend; set backend: local")
    if spec.micro_batch is not None and spec.batch_size % spec.micro_batch:
        raise UsageError(
            f"micro_batch={spec.micro_batch}: must divide the batch of {spec.batch_size} sequences "
            f"(batch_tokens / seq_len); try {math.gcd(spec.batch_size, spec.micro_batch)}"
        )
    head_dim = spec.model_shape.d_head
    if head_dim % 2:
        raise UsageError(
            f"shape.heads={spec.shape.heads}: head size hidden/heads={head_dim} is odd; rotary positions rotate "
            "channel pairs, so pick heads giving an even head size"
        )
    token_dtype(spec.shape.vocab, opts.token_dtype)
    src = spec.data.source
    if src.startswith("builtin:") and src.removeprefix("builtin:") not in BUILTINS:
        raise UsageError(
            f"data.source={src!r}: builtin corpora are {', '.join('builtin:' + b for b in BUILTINS)}"
        )
    if not src.startswith(("builtin:", "hf:")) and not Path(src).expanduser().exists():
        raise UsageError(
            f"data.source={src!r}: no such file or folder; give a text file or folder, .jsonl/.parquet, hf:NAME or builtin:default"
        )
    if spec.data.tokenizer == "bpe" and spec.shape.vocab < 256 + len(SPECIAL_TOKENS):
        raise UsageError(
            f"shape.vocab={spec.shape.vocab}: a byte-level BPE needs at least {256 + len(SPECIAL_TOKENS)} entries"
        )
    if spec.branch_of is not None and spec.branch_from_tokens is None:
        raise UsageError("branch_from_tokens: required with branch_of (the trunk's token count to branch at)")
    return opts
