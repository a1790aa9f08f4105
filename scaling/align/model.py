"""Loading a transformers-format model folder for fine-tuning, and what TRL needs on a CPU.

A model folder holds a causal LM saved with ``save_pretrained`` and its tokenizer. TRL's CPU
pitfalls (checked with TRL 1.16): bf16 must be off, gradient (activation) checkpointing off, ``use_cpu`` on
where there is no accelerator, and ``report_to="none"`` so no logger integration is imported.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaling.errors import UsageError

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
    return tok


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(str(check_model_dir(path))))


def load_model(path: str | Path) -> PreTrainedModel:
    """The causal LM in float32 (CPU training; TRL on CPU needs bf16 off)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(check_model_dir(path)), dtype=torch.float32)


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
    """TrainingArguments shared by SFT and DPO: full precision, per-step logs, no checkpoints."""
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
    import datasets
    import transformers

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
    losses = [r["loss"] for r in run_dir.read_metrics() if "loss" in r and not r.get("final")]
    tail = losses[-max(1, len(losses) // 10) :]
    return sum(tail) / len(tail) if tail else default
