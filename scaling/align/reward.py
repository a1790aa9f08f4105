"""A reward model with TRL's ``RewardTrainer``: the SFT model's body with a scalar head, trained on
preference pairs by the Bradley-Terry loss ``-log sigma(r(x, y_w) - r(x, y_l))`` (Ouyang et al.
2022, eq. 1), evaluated by held-out pairwise accuracy (the share of pairs with ``r(x, y_w) >
r(x, y_l)``) and mean margin ``r(x, y_w) - r(x, y_l)``.

Two are trained per alignment: the *reward model* RL optimizes against, and a *judge* on a
disjoint split of pairs that scores every stage's held-out answers, so an RL policy that games
the first (reward hacking) does not score itself.

Output folder: ``OUT/spec.json  metrics.jsonl  model/  result.json`` (result.json last).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from scaling.align.data import Record
from scaling.align.model import StageOptions
from scaling.store import RunDir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class RewardOptions(StageOptions):
    """Reward model hyperparameters (the head starts at random, so a larger LR than SFT's helps).
    48 steps of 16 pairs: three passes over the 256 built-in preference pairs (24 steps, one and a
    half, left the training pairs themselves at 0.65 accuracy)."""

    steps: int = 48
    lr: float = 5e-3
    eval_every: int = 16

    STAGE: ClassVar[str] = "reward"


def run_reward(
    model_dir: str | Path,
    train: list[Record],
    held_out: list[Record],
    out_dir: str | Path,
    opts: RewardOptions = RewardOptions(),
    source: str | None = None,
    stage: str = "reward",
) -> dict[str, Any]:
    """Train a reward model from ``model_dir`` on prompt/chosen/rejected ``train`` pairs."""
    from trl import RewardConfig, RewardTrainer

    from scaling.align.model import train_stage

    def make(model: Any, tok: Any, common: dict, train_ds: Any, eval_ds: Any, callbacks: list) -> Any:
        config = RewardConfig(**common, max_length=opts.max_length)
        return RewardTrainer(model=model, args=config, train_dataset=train_ds, eval_dataset=eval_ds,
                             processing_class=tok, callbacks=callbacks)

    result = train_stage(stage, model_dir, train, held_out, out_dir, opts, source, make, model_kind="reward")
    result["eval_accuracy"] = result["eval"].get("eval_accuracy")
    result["eval_margin"] = result["eval"].get("eval_margin")
    RunDir(out_dir).write_result(result)
    return result


def reward_scores(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: Sequence[Any], replies: Sequence[str],
    batch_size: int = 32,
) -> list[float]:
    """The reward model's score of each (prompt, reply), rendered as TRL renders them: a chat prompt
    with the reply as the assistant turn through the chat template, a plain prompt followed by the reply."""
    import torch

    texts = [tok.apply_chat_template(p + [{"role": "assistant", "content": r}], tokenize=False)
             if isinstance(p, list) else p + r for p, r in zip(prompts, replies, strict=True)]
    device = next(model.parameters()).device
    out: list[float] = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i : i + batch_size], return_tensors="pt", padding=True, padding_side="right",
                      add_special_tokens=False).to(device)
            out.extend(model(**enc).logits[:, 0].float().tolist())
    return out


def pairwise_accuracy(model: PreTrainedModel, tok: PreTrainedTokenizerBase, pairs: Sequence[Record],
                      seed: int = 0) -> dict[str, Any]:
    """Held-out pairwise accuracy (ties count one half) with its bootstrap 95% interval, and the mean margin."""
    from scaling.align.compare import bootstrap_ci

    def reply(m: Any) -> str:
        return m[-1]["content"] if isinstance(m, list) else m

    prompts = [p["prompt"] for p in pairs]
    chosen = reward_scores(model, tok, prompts, [reply(p["chosen"]) for p in pairs])
    rejected = reward_scores(model, tok, prompts, [reply(p["rejected"]) for p in pairs])
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    wins = [1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins]
    n = max(1, len(wins))
    return {"eval_accuracy": sum(wins) / n, "eval_accuracy_ci": list(bootstrap_ci(wins, seed=seed)),
            "eval_margin": sum(margins) / n, "eval_pairs": len(wins)}
