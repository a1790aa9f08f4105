"""Direct Preference Optimization with TRL's ``DPOTrainer``, starting from the SFT model.

The loss on a pair (Rafailov et al. 2023, eq. 7), with ``h = log pi(y_w|x)/pi_ref(y_w|x) -
log pi(y_l|x)/pi_ref(y_l|x)``:

* ``sigmoid`` (DPO): ``-log sigma(beta h)``;
* ``ipo`` (Azar et al. 2023, eq. 17): ``(h / |y| - 1/(2 beta))^2`` (TRL averages per token);
* ``hinge`` (SLiC, Zhao et al. 2023): ``max(0, 1 - beta h)``.

The reference is the starting model, reloaded by TRL from its saved folder (``ref_model=None``),
so the policy and the reference never share weights. Metrics logged each step include
rewards/chosen, rewards/rejected, rewards/accuracies and rewards/margins (train and eval).

Output folder: ``OUT/spec.json  metrics.jsonl  model/  result.json`` (result.json last).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scaling.align.data import Record
from scaling.errors import UsageError
from scaling.store import RunDir

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "sigmoid_norm")


@dataclass(frozen=True)
class DPOOptions:
    """DPO hyperparameters. ``lr`` is above TRL's 1e-6 default, which suits billion-parameter
    models; the small models here need larger steps to move in a few hundred updates."""

    steps: int = 100
    lr: float = 5e-4
    beta: float = 0.1
    loss_type: str = "sigmoid"
    batch_size: int = 16
    max_length: int = 256
    eval_every: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise UsageError(f"dpo.loss_type={self.loss_type!r}: use one of {', '.join(LOSS_TYPES)}")
        if not self.beta > 0:
            raise UsageError(f"dpo.beta={self.beta}: must be positive (0.1 is usual)")
        for name in ("steps", "batch_size", "max_length", "eval_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"dpo.{name}={getattr(self, name)}: must be at least 1")
        if not self.lr > 0:
            raise UsageError(f"dpo.lr={self.lr}: must be positive")


def run_dpo(
    model_dir: str | Path,
    train: list[Record],
    held_out: list[Record],
    out_dir: str | Path,
    opts: DPOOptions = DPOOptions(),
    source: str | None = None,
) -> dict[str, Any]:
    """Train ``model_dir`` (policy and reference) on ``train`` pairs; write ``out_dir``."""
    import datasets
    from trl import DPOConfig, DPOTrainer

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
    rd.write_spec({"stage": "dpo", "base_model": str(model_dir), "data": source, "options": asdict(opts),
                   "train_records": len(train), "eval_records": len(held_out)})
    rd.mark_running()
    quiet()
    tok = load_tokenizer(model_dir)
    model = load_model(model_dir)
    config = DPOConfig(
        **trainer_kwargs(rd.path, steps=opts.steps, lr=opts.lr, batch_size=opts.batch_size,
                         seed=opts.seed, eval_every=opts.eval_every),
        beta=opts.beta,
        loss_type=[opts.loss_type],
        max_length=opts.max_length,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=None,  # reloaded from model_dir: the frozen starting point
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
    rd.append_metrics([{"step": opts.steps, "final": True,
                        **{k: float(v) for k, v in final_eval.items() if isinstance(v, (int, float))}}])
    save_model(trainer.model, tok, rd.path / "model")
    result = {
        "stage": "dpo",
        "final_loss": tail_loss(rd, float(out.training_loss)),
        "eval_loss": float(final_eval["eval_loss"]),
        "eval_rewards_accuracies": float(final_eval.get("eval_rewards/accuracies", float("nan"))),
        "eval_rewards_margins": float(final_eval.get("eval_rewards/margins", float("nan"))),
        "steps": int(out.global_step),
        "wall_time": wall,
        "model": str(rd.path / "model"),
    }
    rd.write_result(result)
    return result

