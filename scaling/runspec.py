"""The resolved configuration of one training run: the contract between sweep, backends and store.

Everything that changes the loss is here: shape, token budget, batch size in tokens, LR and its
schedule, optimizer, seed, data source and tokenizer, backend and its settings. ``run_id`` is a short hash of these fields, so relaunching the same spec finds the same
runs. Labels (``name``, ``budget``, ``group``, ``added``) describe the run but do not change its loss and are
not hashed.

Pure: imports pydantic only.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scaling.shapes import ModelShape


class StrictModel(BaseModel):
    """Unknown keys are errors; instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ShapeSpec(StrictModel):
    """:class:`scaling.shapes.ModelShape` as a validated model."""

    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int | None = Field(default=None, gt=0)
    ffn: int | None = Field(default=None, gt=0)
    vocab: int = Field(default=32000, gt=0)
    seq_len: int = Field(default=2048, gt=0)
    tied: bool = False
    qkv_bias: bool = False
    head_dim: int | None = Field(default=None, gt=0)
    glu: bool = True

    def to_shape(self) -> ModelShape:
        return ModelShape(**self.model_dump())

    @classmethod
    def from_shape(cls, shape: ModelShape) -> ShapeSpec:
        return cls(**shape.to_dict())

    @model_validator(mode="after")
    def _valid(self) -> ShapeSpec:
        self.to_shape()  # raises ShapeError with the field name
        return self


class ScheduleSpec(StrictModel):
    """Learning-rate schedule over exactly the run's token budget.

    * ``cosine``: linear warmup, then cosine from ``lr`` to ``final_frac * lr`` at the last token.
    * ``wsd``: warmup, stable at ``lr``, then a decay over the last ``decay_frac`` of the tokens
      to ``final_frac * lr`` (Hägele et al. 2024; ``decay_shape`` linear, cosine or 1-sqrt).
    * ``constant``: warmup then ``lr`` (for the stable trunk of a WSD-branch sweep).
    """

    kind: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_frac: float = Field(default=0.05, ge=0, lt=1)
    final_frac: float = Field(default=0.1, ge=0, le=1)
    decay_frac: float = Field(default=0.2, gt=0, le=1)
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = "linear"


class OptimizerSpec(StrictModel):
    """AdamW with decoupled weight decay (Loshchilov & Hutter 2019); no decay on norms and biases."""

    name: Literal["adamw"] = "adamw"
    lr: float = Field(gt=0)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.95, ge=0, lt=1)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    grad_clip: float | None = Field(default=1.0, gt=0)


class DataSpec(StrictModel):
    """Where the tokens come from and how they are tokenized.

    ``source``: ``builtin:shakespeare``, ``builtin:bible``, ``builtin:default`` (both), a local
    file or folder of text, a ``.jsonl``/``.parquet`` file (``text_column``), or ``hf:NAME`` (a
    Hugging Face dataset, online only). ``tokenizer``: ``bpe`` (a byte-level BPE of
    ``vocab`` entries trained on the training split) or a path to a transformers tokenizer folder.
    """

    source: str = "builtin:default"
    text_column: str = "text"
    tokenizer: str = "bpe"
    val_frac: float = Field(default=0.02, gt=0, lt=0.5)
    max_chars: int | None = Field(default=None, gt=0)
    hf_split: str = "train"


class RunSpec(StrictModel):
    """One training run, fully resolved."""

    shape: ShapeSpec
    tokens: int = Field(gt=0, description="training tokens D")
    batch_tokens: int = Field(gt=0, description="tokens per optimizer step (global batch x seq_len)")
    micro_batch: int | None = Field(default=None, gt=0, description="sequences per forward pass")
    optimizer: OptimizerSpec
    schedule: ScheduleSpec = ScheduleSpec()
    data: DataSpec = DataSpec()
    seed: int = 0
    init_std: float = Field(default=0.02, gt=0)
    eval_every: int | None = Field(default=None, gt=0, description="steps between eval losses")
    eval_tokens: int = Field(default=65536, gt=0)
    checkpoint_every: int | None = Field(default=None, gt=0, description="steps between checkpoints")
    backend: str = Field(default="local", min_length=1, description="a name in scaling.backends.base's registry")
    backend_options: dict[str, Any] = Field(default_factory=dict, description="options that change the loss")
    execution_options: dict[str, Any] = Field(default_factory=dict, description="options that do not (not hashed)")
    # WSD cooldown branch: start from the stable trunk's checkpoint at ``branch_from_tokens``.
    branch_of: str | None = None
    branch_from_tokens: int | None = Field(default=None, ge=0)
    # ---- labels (not hashed) -------------------------------------------------------------
    name: str | None = None
    budget: float | None = Field(default=None, description="the IsoFLOP budget this run belongs to")
    group: str | None = None
    flops_convention: str = "6N"
    added: str | None = Field(default=None, description="why the sweep added this run after its grid (extension, repeat)")

    LABELS: ClassVar[tuple[str, ...]] = ("name", "budget", "group", "flops_convention", "added")
    UNHASHED: ClassVar[tuple[str, ...]] = (*LABELS, "execution_options")

    @model_validator(mode="before")
    @classmethod
    def _split_execution_options(cls, d: Any) -> Any:
        """Move the backend's execution options from ``backend_options`` to ``execution_options``."""
        if not isinstance(d, dict) or not isinstance(d.get("backend_options"), dict):
            return d
        from scaling.backends.base import execution_option_names

        names = execution_option_names(str(d.get("backend", "local")))
        moved = {k: v for k, v in d["backend_options"].items() if k in names}
        if not moved:
            return d
        kept = {k: v for k, v in d["backend_options"].items() if k not in names}
        return {**d, "backend_options": kept, "execution_options": {**moved, **(d.get("execution_options") or {})}}

    @field_validator("tokens", "batch_tokens", mode="before")
    @classmethod
    def _intlike(cls, v: Any) -> Any:
        if isinstance(v, float) and math.isfinite(v) and v > 0:
            return int(round(v))
        return v

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        seq = self.shape.seq_len
        if self.batch_tokens % seq:
            raise ValueError(
                f"batch_tokens={self.batch_tokens} must be a multiple of shape.seq_len={seq} "
                f"(try {max(seq, round(self.batch_tokens / seq) * seq)})"
            )
        if self.tokens < self.batch_tokens:
            raise ValueError(
                f"tokens={self.tokens} is smaller than one batch (batch_tokens={self.batch_tokens}): "
                "raise tokens or lower batch_tokens"
            )
        return self

    # ---- derived -------------------------------------------------------------------------------
    @property
    def model_shape(self) -> ModelShape:
        return self.shape.to_shape()

    @property
    def steps(self) -> int:
        """Optimizer steps: ``ceil(tokens / batch_tokens)``; the last step is full-size."""
        return math.ceil(self.tokens / self.batch_tokens)

    @property
    def start_step(self) -> int:
        """The step this run starts training at: a WSD cooldown branch resumes its trunk's
        checkpoint at ``branch_from_tokens``; every other run starts at 0."""
        return (self.branch_from_tokens or 0) // self.batch_tokens if self.branch_of is not None else 0

    @property
    def trained_steps(self) -> int:
        """The steps this run itself trains, ``steps - start_step``: what it costs (a branch
        pays for its cooldown only; its trunk paid for the rest)."""
        return self.steps - self.start_step

    @property
    def batch_size(self) -> int:
        """Sequences per optimizer step."""
        return self.batch_tokens // self.shape.seq_len

    @property
    def params(self) -> int:
        return self.model_shape.params

    @property
    def non_embedding_params(self) -> int:
        return self.model_shape.non_embedding_params

    def flops(self, convention: str | None = None) -> float:
        from scaling.flops import training_flops

        return training_flops(self.model_shape, self.steps * self.batch_tokens, convention or self.flops_convention)

    def trained_flops(self, convention: str | None = None) -> float:
        """The FLOPs this run itself spends, over its :attr:`trained_steps` (``flops()`` counts
        every token its final model saw, the C of its point on a law)."""
        from scaling.flops import training_flops

        return training_flops(self.model_shape, self.trained_steps * self.batch_tokens, convention or self.flops_convention)

    @property
    def options(self) -> dict[str, Any]:
        """Every backend option, hashed or not: what a backend reads."""
        return {**self.backend_options, **self.execution_options}

    def flops_fields(self, tokens: int) -> dict[str, Any]:
        """``result.json``'s compute for ``tokens`` trained: ``flops`` counted as the run's
        ``flops_convention`` says (the count its budget and its metrics use), named beside it,
        and ``flops_non_embedding`` (``6 N_non-emb D``) for the other parameter count."""
        from scaling.flops import training_flops

        return {
            "flops": training_flops(self.model_shape, tokens, self.flops_convention),
            "flops_convention": self.flops_convention,
            "flops_non_embedding": training_flops(self.model_shape, tokens, "6N_non_embedding"),
        }

    def hashed_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        for k in self.UNHASHED:
            d.pop(k, None)
        return d

    @property
    def run_id(self) -> str:
        """12 hex characters of SHA-256 over the canonical JSON of the hashed fields."""
        blob = json.dumps(self.hashed_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def to_json_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        d["run_id"] = self.run_id
        d["derived"] = {
            "params": self.params,
            "non_embedding_params": self.non_embedding_params,
            "steps": self.steps,
            "flops": self.flops(),
        }
        return d

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> RunSpec:
        d = {k: v for k, v in d.items() if k not in ("run_id", "derived")}
        return cls.model_validate(d)
