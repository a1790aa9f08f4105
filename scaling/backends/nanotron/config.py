"""RunSpec -> a Nanotron config (the pinned commit's schema), plus the backend's options.

Nanotron parses its YAML with dacite ``strict=True``: unknown keys fail, so every key written here
exists in ``nanotron.config.Config`` at :data:`~scaling.backends.nanotron.NANOTRON_COMMIT` (the
test suite checks each generated config against a schema fixture read from that source).

Mapping (Nanotron's names on the right):

* shape -> ``model.model_config``, a ``Qwen2Config`` or a ``LlamaConfig`` (:func:`model_path`),
  either with no q/k/v bias and ``rope_interleaved: false`` so the weights convert to a
  transformers Llama unchanged, RMSNorm eps 1e-5 as :meth:`scaling.shapes.ModelShape.to_hf_config`;
  ``make_vocab_size_divisible_by: 1`` so the vocabulary is not padded and the parameter count
  equals :mod:`scaling.flops`'s.
* tokens/batch -> ``tokens``: ``train_steps = ceil(tokens / batch_tokens)``, ``micro_batch_size``
  and ``batch_accumulation_per_replica`` from the parallelism plan
  (``batch = dp x micro_batch x accumulation`` sequences).
* schedule -> ``optimizer.learning_rate_scheduler`` with an explicit ``lr_decay_steps``:
  cosine decays from the end of warmup to the last step; WSD holds the LR until
  ``lr_decay_starting_step = steps - decay_steps`` then decays (Hägele et al. 2024); constant
  sets ``min_decay_lr = learning_rate``.
* ``weight_decay_exclude_named_params`` is left empty: at the pinned commit a non-empty list
  raises ``NameError`` in ``helpers.get_custom_weight_decay_for_named_parameters`` for the first
  untied parameter (``tied_name`` unbound), so Nanotron decays norm weights too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scaling.errors import UsageError, one_line
from scaling.hardware import DEFAULT_MFU
from scaling.runspec import RunSpec
from scaling.shapes import ModelShape

from .parallelism import ParallelPlan, plan_parallelism


class NanotronOptions(BaseModel):
    """``backend_options`` of a nanotron run (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nodes: int = Field(default=1, ge=1)
    gpus_per_node: int = Field(default=8, ge=1)
    gpu: str = "H100"
    gpu_memory_gb: float = Field(default=80.0, gt=0)
    peak_tflops: float | None = Field(default=None, gt=0, description="bf16 dense peak per GPU; default by gpu")
    assumed_mfu: float = Field(default=DEFAULT_MFU, gt=0, le=1,
                               description="for GPU-hour estimates until runs of the study have measured theirs")
    tp: int | None = Field(default=None, ge=1)
    pp: int | None = Field(default=None, ge=1)
    dp: int | None = Field(default=None, ge=1)
    recompute: bool | None = None
    zero_stage: Literal[0, 1] = 0
    dtype: Literal["bfloat16", "float32"] = "bfloat16"
    model: Literal["auto", "qwen2", "llama"] = Field(default="auto", description="Nanotron model class; auto: qwen2")
    attention: Literal["auto", "flash_attention_2", "sdpa"] = Field(
        default="auto", description="auto: flash_attention_2 where flash-attn is installed, else sdpa"
    )
    pp_engine: Literal["1f1b", "afab"] = "1f1b"
    init_scaling: Literal["NONE", "NUM_LAYERS"] = "NUM_LAYERS"
    checkpoint_interval: int | None = Field(default=None, ge=1)
    overhead_gib: float = Field(default=3.0, ge=0)
    data_dir: str | None = None
    torchrun: str = "torchrun"
    rdzv_port: int = Field(default=29500, ge=1024, le=64535, description="base; plus a hash of the job id")
    cpus_per_task: int | None = Field(default=None, ge=1)
    final_loss_steps: int | None = Field(default=None, ge=1, description="default: steps // 20, as local runs")
    result_wait_s: float = Field(default=3600.0, gt=0, description="how long nodes > 0 wait for result.json")
    slurm_stop_wait_s: float = Field(default=120.0, ge=0, description="wait for Slurm's SIGKILL after its SIGTERM")

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


def options_of(spec: RunSpec) -> NanotronOptions:
    try:
        return NanotronOptions(**spec.options)
    except ValidationError as e:  # one line naming the field
        raise UsageError(f"backend_options: {one_line(e)}") from None


def check_spec(spec: RunSpec) -> None:
    """What the backend's Nanotron models (converted to a transformers Llama) cannot express."""
    shape = spec.model_shape
    if shape.qkv_bias:
        raise UsageError("shape.qkv_bias=true: the nanotron backend trains Llama-shaped models without q/k/v bias; set qkv_bias: false")
    if not shape.glu:
        raise UsageError("shape.glu=false: Nanotron's Llama and Qwen2 MLPs are SwiGLU; set glu: true")
    if shape.d_head * shape.heads != shape.hidden:
        raise UsageError(
            f"shape.head_dim={shape.d_head}: Nanotron uses hidden/heads={shape.hidden // shape.heads}; "
            "drop head_dim or make heads x head_dim = hidden"
        )
    if spec.branch_of is not None:
        raise UsageError("branch_of: WSD cooldown branches run on the local backend; use backend: local")


# ---- the model class and its attention -----------------------------------------------------------

LLAMA_NEEDS_FLASH = (
    "Nanotron's Llama (models/llama.py at the pinned commit) calls flash-attn's varlen attention, "
    "rotary and Triton RMSNorm whatever _attn_implementation says"
)


@dataclass(frozen=True)
class ModelPath:
    """The Nanotron model class that trains a run and the attention it really runs.

    * ``qwen2`` + ``flash_attention_2``: Nanotron's packed path (``_use_qkv_packed``): flash-attn's
      varlen attention and rotary, its Triton RMSNorm;
    * ``qwen2`` + ``sdpa``: ``_use_qkv_packed: false``, unfused rotary and RMSNorm: torch's
      ``scaled_dot_product_attention`` through Nanotron's ``CoreAttention``, no flash-attn kernel
      (the entry point supplies the unpacked attention forward, :mod:`.qwen2_sdpa`);
    * ``llama`` + ``flash_attention_2`` only (:data:`LLAMA_NEEDS_FLASH`).

    Both classes hold the same weights under the same names; :mod:`.convert` reads either.
    """

    model: Literal["qwen2", "llama"]
    attention: Literal["flash_attention_2", "sdpa"]

    @property
    def needs_flash_attn(self) -> bool:
        return self.attention == "flash_attention_2"


def flash_attn_installed() -> bool:
    from scaling.backends.nanotron.missing_kernels import missing_packages

    return "flash_attn" not in missing_packages()


def model_path(opts: NanotronOptions, *, flash_attn: bool | None = None) -> ModelPath:
    """Resolve ``backend_options.model`` and ``attention``: ``auto`` model is ``qwen2``; ``auto``
    attention is ``flash_attention_2`` where flash-attn is installed (``flash_attn``; default:
    looked up on this machine), else ``sdpa``. An attention the class does not run exits 2."""
    model = "qwen2" if opts.model == "auto" else opts.model
    if model == "llama" and opts.attention == "sdpa":
        raise UsageError(
            f"backend_options.attention=sdpa: {LLAMA_NEEDS_FLASH}; use model: qwen2 (or auto) for sdpa, "
            "or attention: flash_attention_2"
        )
    attention = opts.attention
    if attention == "auto":
        have = flash_attn_installed() if flash_attn is None else flash_attn
        attention = "flash_attention_2" if have or model == "llama" else "sdpa"
    return ModelPath(model, attention)


def written_model_path(model_config: dict[str, Any]) -> ModelPath:
    """The :class:`ModelPath` of a ``model.model_config`` section this module wrote."""
    model = "qwen2" if model_config.get("is_qwen2_config") else "llama"
    return ModelPath(model, model_config["_attn_implementation"])


def plan_for(spec: RunSpec, options: NanotronOptions | None = None) -> ParallelPlan:
    """Validate the spec against Nanotron and choose its parallelism."""
    opts = options or options_of(spec)
    check_spec(spec)
    model_path(opts, flash_attn=True)  # the model/attention pair, whatever this machine has
    return plan_parallelism(
        spec.model_shape,
        batch_size=spec.batch_size,
        gpus=opts.gpus,
        gpus_per_node=opts.gpus_per_node,
        gpu_memory_gib=opts.gpu_memory_gb * 1e9 / 1024**3,
        tp=opts.tp,
        pp=opts.pp,
        dp=opts.dp,
        micro_batch=spec.micro_batch,
        recompute=opts.recompute,
        zero_stage=opts.zero_stage,
        overhead_gib=opts.overhead_gib,
        dtype=opts.dtype,
    )


# ---- sections ---------------------------------------------------------------------------------


def model_config(shape: ModelShape, path: ModelPath, *, bos: int = 1, eos: int = 2, init_std: float = 0.02) -> dict:
    """Nanotron ``Qwen2Config`` or ``LlamaConfig`` fields for ``shape`` (every field written, so
    nothing defaults silently)."""
    common = {
        "bos_token_id": bos,
        "eos_token_id": eos,
        "hidden_act": "silu",
        "hidden_size": shape.hidden,
        "initializer_range": init_std,
        "intermediate_size": shape.d_ffn,
        "max_position_embeddings": shape.seq_len,
        "num_attention_heads": shape.heads,
        "num_hidden_layers": shape.layers,
        "num_key_value_heads": shape.n_kv_heads,
        "pad_token_id": None,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-5,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "rope_interleaved": False,
        "tie_word_embeddings": shape.tied,
        "use_cache": True,
        "vocab_size": shape.vocab,
        "_attn_implementation": path.attention,
        "attention_bias": False,
        "z_loss_enabled": False,
        "z_loss_coefficient": 0.0001,
    }
    if path.model == "llama":
        return {"is_llama_config": True, **common}
    fused = path.attention == "flash_attention_2"
    return {
        "is_qwen2_config": True,
        **common,
        "rope_seq_len_interpolation_factor": None,
        "flex_attention_mask": None,
        "sliding_window_size": None,
        "no_rope_layer": None,
        "_fused_rotary_emb": fused,
        "_fused_rms_norm": fused,
        "_use_qkv_packed": fused,
        "_use_doc_masking": False,
        "log_attn_probs": False,  # True returns and logs every layer's attention probabilities
        "ring_attn_heads_k_stride": None,
        "moe_config": None,
    }


def lr_schedule(spec: RunSpec) -> dict:
    """``LRSchedulerArgs`` over exactly ``spec.steps`` steps (module docstring)."""
    steps, lr, sch = spec.steps, spec.optimizer.lr, spec.schedule
    warmup = min(round(sch.warmup_frac * steps), steps - 1)
    out: dict[str, Any] = {
        "learning_rate": lr,
        "lr_warmup_steps": warmup,
        "lr_warmup_style": "linear",
        "min_decay_lr": sch.final_frac * lr,
    }
    if sch.kind == "cosine":
        out |= {"lr_decay_style": "cosine", "lr_decay_starting_step": warmup, "lr_decay_steps": max(1, steps - warmup)}
    elif sch.kind == "wsd":
        decay = max(1, round(sch.decay_frac * steps))
        start = steps - decay
        if start < warmup:
            raise UsageError(
                f"schedule.decay_frac={sch.decay_frac}: the decay ({decay} steps) overlaps the warmup "
                f"({warmup} steps) of a {steps}-step run; lower decay_frac or warmup_frac"
            )
        out |= {"lr_decay_style": sch.decay_shape, "lr_decay_starting_step": start, "lr_decay_steps": decay}
    else:  # constant: a decay to the same LR
        out |= {
            "lr_decay_style": "linear",
            "lr_decay_starting_step": warmup,
            "lr_decay_steps": max(1, steps - warmup),
            "min_decay_lr": lr,
        }
    return out


def nanoset_dataset(train_folder: str, tokenizer_dir: str, vocab: int) -> dict:
    """``NanosetDatasetsArgs`` for one folder of ``.ds`` token files (see :mod:`.data`)."""
    return {
        "dataset_folder": [train_folder],
        "dataset_weights": [1.0],
        "tokenizer_name": tokenizer_dir,
        "vocab_size": vocab,
        "token_size_in_bytes": 2 if vocab <= 65536 else 4,
        "return_positions": False,
        "skip_in_stream": True,
        "pad_samples_to_global_batch_size": False,
        "shuffle_files": False,
        "use_old_brrr_dataloader": False,
    }


def optimizer_section(spec: RunSpec, opts: NanotronOptions) -> dict[str, Any]:
    """``OptimizerArgs``: AdamW with the spec's settings and :func:`lr_schedule`."""
    o = spec.optimizer
    return {
        "optimizer_factory": {
            "adam_eps": o.eps,
            "adam_beta1": o.beta1,
            "adam_beta2": o.beta2,
            "torch_adam_is_fused": True,
            "name": "adamW",
        },
        "zero_stage": opts.zero_stage,
        "weight_decay": o.weight_decay,
        "clip_grad": o.grad_clip,
        "accumulate_grad_in_fp32": opts.dtype == "bfloat16",  # Nanotron asserts non-fp32 params for it
        "learning_rate_scheduler": lr_schedule(spec),
        "weight_decay_exclude_named_params": [],
    }


def checkpoints_section(ckpt: str, interval: int) -> dict[str, Any]:
    """``CheckpointsArgs``: every ``interval`` steps and at the end; resumed from ``ckpt`` itself."""
    return {
        "checkpoints_path": ckpt,
        "checkpoint_interval": interval,
        "save_initial_state": False,
        "save_final_state": True,
        "resume_checkpoint_path": ckpt,  # latest.txt there -> resume after a requeue
        "load_lr_scheduler": True,
        "load_optimizer": True,
        "checkpoints_path_is_shared_file_system": True,
    }


def parallelism_section(plan: ParallelPlan, opts: NanotronOptions) -> dict[str, Any]:
    """Nanotron's ``parallelism`` section: the planner's dp/tp/pp split, sequence parallelism as
    reduce-scatter TP, and recomputation."""
    return {
        "dp": plan.dp,
        "pp": plan.pp,
        "tp": plan.tp,
        "pp_engine": opts.pp_engine,
        "tp_mode": "REDUCE_SCATTER" if plan.sequence_parallel else "ALL_REDUCE",
        "tp_linear_async_communication": plan.sequence_parallel,
        "recompute_layer": plan.recompute,
        "tp_recompute_allgather": True,
        "expert_parallel_size": 1,
        "context_parallel_size": 1,
    }


def build_config(
    spec: RunSpec,
    *,
    run_dir: str | Path,
    train_folder: str | Path,
    tokenizer_dir: str | Path,
    plan: ParallelPlan | None = None,
    options: NanotronOptions | None = None,
    path: ModelPath | None = None,
    special_tokens: tuple[int, int] = (1, 2),
) -> dict[str, Any]:
    """The whole Nanotron config as a plain dict (dump it with :func:`to_yaml`); ``path``
    defaults to :func:`model_path` resolved on this machine."""
    opts = options or options_of(spec)
    plan = plan or plan_for(spec, opts)
    path = path or model_path(opts)
    shape = spec.model_shape
    run_dir = Path(run_dir).resolve()
    ckpt = str(run_dir / "checkpoints")
    interval = spec.checkpoint_every or opts.checkpoint_interval or max(1, math.ceil(spec.steps / 10))
    return {
        "general": {
            "project": spec.group or "scaling",
            "run": spec.run_id,
            "seed": spec.seed,
            "step": None,
            "consumed_train_samples": None,
            "benchmark_csv_path": None,
            "ignore_sanity_checks": True,
        },
        "parallelism": parallelism_section(plan, opts),
        "model": {
            "model_config": model_config(
                shape, path, bos=special_tokens[0], eos=special_tokens[1], init_std=spec.init_std
            ),
            "init_method": {"std": spec.init_std, "scaling_method": opts.init_scaling},
            "dtype": opts.dtype,
            "make_vocab_size_divisible_by": 1,
            "ddp_bucket_cap_mb": 25,
        },
        "tokenizer": {
            "tokenizer_name_or_path": str(tokenizer_dir),
            "tokenizer_revision": None,
            "tokenizer_max_length": None,
        },
        "checkpoints": checkpoints_section(ckpt, interval),
        "logging": {"log_level": "info", "log_level_replica": "info", "iteration_step_info_interval": 1},
        "tokens": {
            "sequence_length": shape.seq_len,
            "train_steps": spec.steps,
            "micro_batch_size": plan.micro_batch,
            "batch_accumulation_per_replica": plan.accumulation,
            "val_check_interval": -1,
            "limit_val_batches": 0,
            "limit_test_batches": 0,
        },
        "optimizer": optimizer_section(spec, opts),
        "data_stages": [
            {
                "name": "stable",
                "start_training_step": 1,
                "data": {
                    "dataset": nanoset_dataset(str(train_folder), str(tokenizer_dir), shape.vocab),
                    "seed": spec.seed,
                    "num_loading_workers": 1,
                },
                "sequence_length": shape.seq_len,  # Nanotron fills in tokens.sequence_length otherwise
            }
        ],
    }


def to_yaml(config: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False)
