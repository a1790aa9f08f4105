"""Supervised fine-tuning with TRL's ``SFTTrainer``: loss on completions only, held-out eval loss,
full-precision metrics in the store (``metrics.jsonl``, the pretraining layout), the model saved
with ``save_pretrained`` beside its tokenizer.

Output folder::

    OUT/spec.json  metrics.jsonl  model/  result.json   (result.json last: the stage is done)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scaling.align.data import Record
from scaling.errors import UsageError
from scaling.store import RunDir


@dataclass(frozen=True)
class SFTOptions:
    """SFT hyperparameters. ``lr`` is higher than TRL's 2e-5 default: these are tiny models
    trained in a few hundred steps, not billion-parameter ones."""

    steps: int = 100
    lr: float = 1e-3
    batch_size: int = 16
    max_length: int = 256
    eval_every: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "max_length", "eval_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"sft.{name}={getattr(self, name)}: must be at least 1")
        if not self.lr > 0:
            raise UsageError(f"sft.lr={self.lr}: must be positive")


def run_sft(
    model_dir: str | Path,
    train: list[Record],
    held_out: list[Record],
    out_dir: str | Path,
    opts: SFTOptions = SFTOptions(),
    source: str | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model_dir`` on ``train`` (prompt/completion records); write ``out_dir``."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    from scaling.align.model import (
        drop_printer,
        load_model,
        load_tokenizer,
        metrics_callback,
        quiet,
        save_model,
        tail_loss,
        trainer_kwargs,
    )

    rd = RunDir(out_dir)
    rd.path.mkdir(parents=True, exist_ok=True)
    rd.write_spec({"stage": "sft", "base_model": str(model_dir), "data": source, "options": asdict(opts),
                   "train_records": len(train), "eval_records": len(held_out)})
    rd.mark_running()
    quiet()
    tok = load_tokenizer(model_dir)
    model = load_model(model_dir)
    config = SFTConfig(
        **trainer_kwargs(rd.path, steps=opts.steps, lr=opts.lr, batch_size=opts.batch_size,
                         seed=opts.seed, eval_every=opts.eval_every),
        max_length=opts.max_length,
        completion_only_loss=True,
        packing=False,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=datasets.Dataset.from_list(train),
        eval_dataset=datasets.Dataset.from_list(held_out),
        processing_class=tok,
        callbacks=[metrics_callback(rd)],
    )
    drop_printer(trainer)
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    final_eval = trainer.evaluate()
    rd.append_metrics([{"step": opts.steps, "eval_loss": float(final_eval["eval_loss"]), "final": True}])
    save_model(trainer.model, tok, rd.path / "model")
    result = {
        "stage": "sft",
        "final_loss": tail_loss(rd, float(out.training_loss)),
        "eval_loss": float(final_eval["eval_loss"]),
        "steps": int(out.global_step),
        "wall_time": wall,
        "model": str(rd.path / "model"),
    }
    rd.write_result(result)
    return result
