"""Loading a transformers-format model folder for fine-tuning, and what TRL needs on a CPU.

A model folder holds a causal LM saved with ``save_pretrained`` and its tokenizer. TRL's CPU
pitfalls (checked with TRL 1.16): bf16 must be off, gradient (activation) checkpointing off, ``use_cpu`` on
where there is no accelerator, and ``report_to="none"`` so no logger integration is imported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from scaling.errors import UsageError


@dataclass(frozen=True)
class StageOptions:
    """Hyperparameters every TRL stage shares; ``stage`` names them in error messages."""

    steps: int = 100
    lr: float = 1e-3
    batch_size: int = 16
    max_length: int = 256
    eval_every: int = 25
    seed: int = 0

    STAGE: ClassVar[str] = "stage"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "max_length", "eval_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"{self.STAGE}.{name}={getattr(self, name)}: must be at least 1")
        if not self.lr > 0:
            raise UsageError(f"{self.STAGE}.lr={self.lr}: must be positive")


if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# A ChatML-like template for tokenizers that have none. Each turn ends with the EOS token so the
# model learns where a reply stops; ``add_generation_prompt`` opens the assistant turn. The
# ``{% generation %}`` markers let TRL mask everything but assistant turns if asked to.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


END_OF_TURN = "<|im_end|>"  # the local backend's ChatML template (scaling.backends.local.data)
TEXT_END = "<|endoftext|>"


def check_model_dir(path: str | Path) -> Path:
    p = Path(path)
    if not (p / "config.json").exists():
        raise UsageError(f"model={p}: no config.json here; give a folder written by save_pretrained")
    if not any((p / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        raise UsageError(f"model={p}: no tokenizer files here; save the tokenizer beside the model")
    return p


def prepare_tokenizer(tok: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give the tokenizer an EOS, a pad token and a chat template when it lacks them."""
    if tok.eos_token is None:
        raise UsageError("tokenizer: no eos_token; set one (e.g. tokenizer.eos_token = '</s>') and save it")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHAT_TEMPLATE
    if END_OF_TURN in tok.get_vocab() and END_OF_TURN in tok.chat_template and tok.eos_token != END_OF_TURN:
        # ChatML ends a turn with <|im_end|>, not with the end-of-text token documents end with:
        # generation (TRL's RL included) stops there, and the reward model scores up to there
        tok.eos_token = END_OF_TURN
    return tok


def stop_ids(tok: PreTrainedTokenizerBase) -> list[int]:
    """Token ids that end a reply: the end of turn and the end of text."""
    ids = [tok.eos_token_id, tok.convert_tokens_to_ids(TEXT_END) if TEXT_END in tok.get_vocab() else None]
    return [i for i in dict.fromkeys(ids) if i is not None]


def match_eos(model: Any, tok: PreTrainedTokenizerBase) -> Any:
    """The model's config and generation config stop where the tokenizer's turns end."""
    model.config.eos_token_id = tok.eos_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = stop_ids(tok)
        model.generation_config.pad_token_id = tok.pad_token_id
    return model


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(str(check_model_dir(path))))


def load_model(path: str | Path, kind: str = "causal") -> PreTrainedModel:
    """The causal LM (``kind="causal"``) or a reward model, a sequence classifier with one output
    (``kind="reward"``: a fresh scalar head on a causal LM's body), in float32 (TRL on CPU needs bf16 off)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    path = check_model_dir(path)
    if kind == "reward":
        return AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)


def save_model(model: PreTrainedModel, tok: PreTrainedTokenizerBase, path: str | Path) -> None:
    """``save_pretrained`` of model and tokenizer into a fresh folder, renamed into place at the end."""
    import shutil

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available()


def trainer_kwargs(
    out_dir: Path,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    eval_every: int,
    warmup_frac: float = 0.1,
) -> dict[str, Any]:
    """TrainingArguments every TRL stage shares: full precision, per-step logs, no checkpoints."""
    cuda = has_accelerator()
    return {
        "output_dir": str(out_dir / "trainer"),
        "max_steps": steps,
        "learning_rate": lr,
        "lr_scheduler_type": "cosine",
        "warmup_steps": max(0, math.ceil(warmup_frac * steps)),
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "per_device_train_batch_size": batch_size,
        "per_device_eval_batch_size": batch_size,
        "gradient_accumulation_steps": 1,
        "logging_steps": 1,
        "eval_strategy": "steps",
        "eval_steps": eval_every,
        "save_strategy": "no",
        "seed": seed,
        "data_seed": seed,
        "bf16": cuda and _bf16_ok(),
        "fp16": False,
        "use_cpu": not cuda,
        # TRL configs default gradient checkpointing on; it only slows tiny models (and transformers
        # 5 names it activation_checkpointing, the old name being a deprecated alias)
        "activation_checkpointing": False,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "remove_unused_columns": True,
    }


def _bf16_ok() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


# TRL/Trainer log keys -> the store's names (metrics.jsonl uses `lr`, like pretraining)
_RENAME = {"learning_rate": "lr"}


def metrics_callback(run_dir: Any) -> Any:
    """A ``TrainerCallback`` that appends every log (train and eval) to ``run_dir``'s metrics.jsonl
    at full precision, one row per logging event with ``step`` and ``stage``."""
    from transformers import TrainerCallback

    class _StoreMetrics(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
            if not logs:
                return
            row: dict[str, Any] = {"step": int(state.global_step), "epoch": state.epoch}
            for k, v in logs.items():
                if isinstance(v, (int, float)):
                    row[_RENAME.get(k, k)] = float(v)
            if "num_tokens" in row:
                row["tokens"] = int(row["num_tokens"])
            run_dir.append_metrics([row])

    return _StoreMetrics()


def quiet() -> None:
    """No progress bars from datasets/transformers: the store and the CLI report progress."""
    import warnings

    import datasets
    import transformers

    # TRL 1.16's DPOTrainer reads a property transformers 5 renamed; nothing for users to act on
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def drop_printer(trainer: Any) -> None:
    """With tqdm off, Trainer prints every log dict to stdout; the store keeps them instead."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def tail_loss(run_dir: Any, default: float) -> float:
    """Mean train loss of the last tenth of the logged steps (less noisy than the last step)."""
    losses = [r["loss"] for r in run_dir.read_metrics() if "loss" in r]
    tail = losses[-max(1, len(losses) // 10) :]
    return sum(tail) / len(tail) if tail else default


def stage_spec(stage: str, model_dir: Any, source: str | None, opts: Any, n_train: int, n_eval: int) -> dict[str, Any]:
    """What a stage's result depends on; a finished stage with the same spec is reused."""
    from dataclasses import asdict

    return {"stage": stage, "base_model": str(model_dir), "base_weights": weights_fingerprint(model_dir),
            "data": source, "options": asdict(opts), "train_records": n_train, "eval_records": n_eval}


def weights_fingerprint(model_dir: Any) -> list[list[Any]]:
    """Name, size and modification time of each weights file: a stage whose input model was
    rewritten since (a new SFT model at the same path, say) is not reused."""
    from pathlib import Path

    files = sorted(p for p in Path(model_dir).glob("*") if p.suffix in (".safetensors", ".bin"))
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def train_stage(
    stage: str,
    model_dir: Any,
    train: list[dict[str, Any]],
    held_out: list[dict[str, Any]],
    out_dir: Any,
    opts: Any,
    source: str | None,
    make_trainer: Any,
    model_kind: str = "causal",
) -> dict[str, Any]:
    """Run one TRL stage into a store folder: spec, per-step metrics, final held-out eval, model, result.

    ``make_trainer(model, tokenizer, common_args, train_ds, eval_ds, callbacks)`` builds the
    trainer; ``opts`` has steps, lr, batch_size, seed and eval_every. Returns the result dict
    with the final held-out metrics under ``eval``.
    """
    import time

    import datasets

    from scaling.store import RunDir

    rd = RunDir(out_dir)
    rd.path.mkdir(parents=True, exist_ok=True)
    rd.write_spec(stage_spec(stage, model_dir, source, opts, len(train), len(held_out or [])))
    rd.mark_running()
    quiet()
    tok = load_tokenizer(model_dir)
    common = trainer_kwargs(rd.path, steps=opts.steps, lr=opts.lr, batch_size=opts.batch_size,
                            seed=opts.seed, eval_every=opts.eval_every)
    if not held_out:
        common["eval_strategy"] = "no"
    model = match_eos(load_model(model_dir, model_kind), tok)
    trainer = make_trainer(model, tok, common, datasets.Dataset.from_list(train),
                           datasets.Dataset.from_list(held_out) if held_out else None, [metrics_callback(rd)])
    drop_printer(trainer)
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    final = _final_eval(rd, trainer, int(out.global_step)) if held_out else {}
    save_model(trainer.model, tok, rd.path / "model")
    return {
        "stage": stage,
        "final_loss": tail_loss(rd, float(out.training_loss)),
        "eval_loss": final.get("eval_loss"),
        "steps": int(out.global_step),
        "wall_time": wall,
        "model": str(rd.path / "model"),
        "eval": final,
    }


def _final_eval(run_dir: Any, trainer: Any, step: int) -> dict[str, float]:
    """Held-out metrics after the last step: the in-training evaluation at that step when there
    was one, else a fresh ``evaluate()`` (logged to the store by the metrics callback)."""
    def last() -> dict[str, Any] | None:
        rows = [r for r in run_dir.read_metrics() if "eval_loss" in r and r.get("step") == step]
        return rows[-1] if rows else None

    row = last()
    if row is None:
        trainer.evaluate()
        row = last() or {}
    return {k: float(v) for k, v in row.items() if k.startswith("eval_")}
