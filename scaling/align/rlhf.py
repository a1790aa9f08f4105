"""RLHF with TRL's ``RLOOTrainer`` (REINFORCE leave-one-out, Ahmadian et al. 2024), the reward model
as the reward: for each prompt, ``k`` sampled replies; a reply's advantage is its reward minus the
mean reward of the prompt's other ``k - 1`` replies, and the KL to the SFT reference is a penalty
``beta * KL`` on the reward (TRL 1.16 has no PPO; RLOO is its maintained on-policy method).

Generation is set for tiny models and short answers: ``max_completion_length`` tokens at most,
sampled at ``temperature``. Per step, the store's metrics hold ``reward``, ``kl``, ``entropy`` and
``completions/mean_length`` (TRL's names), beside the loss and the learning rate.

Output folder: ``OUT/spec.json  metrics.jsonl  model/  result.json`` (result.json last).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from scaling.align.data import Record
from scaling.align.model import StageOptions
from scaling.errors import UsageError
from scaling.store import RunDir


@dataclass(frozen=True)
class RLOptions(StageOptions):
    """RLOO hyperparameters. ``batch_size`` counts replies (prompts x ``num_generations``)."""

    steps: int = 16
    lr: float = 2e-3
    eval_every: int = 8
    num_generations: int = 4
    max_completion_length: int = 10
    temperature: float = 1.0
    kl_beta: float = 0.05

    STAGE: ClassVar[str] = "rlhf"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_generations < 2:
            raise UsageError(f"rlhf.num_generations={self.num_generations}: need at least 2 (leave-one-out)")
        if self.batch_size % self.num_generations:
            raise UsageError(f"rlhf.batch_size={self.batch_size}: must be a multiple of "
                             f"rlhf.num_generations={self.num_generations}")
        if self.max_completion_length < 1 or not self.temperature > 0 or self.kl_beta < 0:
            raise UsageError("rlhf: max_completion_length >= 1, temperature > 0 and kl_beta >= 0 are required")


def run_rlhf(
    model_dir: str | Path,
    prompts: list[Record],
    reward_model_dir: str | Path,
    out_dir: str | Path,
    opts: RLOptions = RLOptions(),
    source: str | None = None,
) -> dict[str, Any]:
    """RLOO of the policy ``model_dir`` (also the KL reference) on ``prompts`` against the reward model."""
    from trl import RLOOConfig, RLOOTrainer

    from scaling.align.model import load_model, load_tokenizer, match_eos, train_stage

    reward_tok = load_tokenizer(reward_model_dir)
    reward_model = match_eos(load_model(reward_model_dir, "reward"), reward_tok)

    def make(model: Any, tok: Any, common: dict, train_ds: Any, eval_ds: Any, callbacks: list) -> Any:
        common = {**common, "per_device_eval_batch_size": opts.num_generations}
        config = RLOOConfig(**common, num_generations=opts.num_generations, beta=opts.kl_beta,
                            max_completion_length=opts.max_completion_length, temperature=opts.temperature)
        return RLOOTrainer(model=model, reward_funcs=reward_model, args=config, train_dataset=train_ds,
                           processing_class=tok, reward_processing_classes=reward_tok, callbacks=callbacks)

    result = train_stage("rlhf", model_dir, [{"prompt": r["prompt"]} for r in prompts], None, out_dir,
                         opts, source, make)
    result["reward_model"] = str(reward_model_dir)
    RunDir(out_dir).write_result(result)
    return result
