"""Direct Preference Optimization with TRL's ``DPOTrainer``, starting from the SFT model.

The loss on a pair (Rafailov et al. 2023, eq. 7), with ``h = log pi(y_w|x)/pi_ref(y_w|x) -
log pi(y_l|x)/pi_ref(y_l|x)``:

* ``sigmoid`` (DPO): ``-log sigma(beta h)``;
* ``ipo`` (Azar et al. 2023, eq. 17): ``(h / |y| - 1/(2 beta))^2`` (TRL averages per token);
* ``hinge`` (SLiC, Zhao et al. 2023): ``max(0, 1 - beta h)``.

``sft_weight`` > 0 adds ``sft_weight * (-log pi(y_w|x)) / |y_w|``, the chosen reply's per-token NLL
(RPO, Pang et al. 2024, eq. 3): DPO alone can lower the likelihood of both replies while it widens
their gap, which a small model pays for in right answers it no longer gives.

The reference is the starting model, reloaded by TRL from its saved folder (``ref_model=None``),
so the policy and the reference never share weights. Metrics logged each step include
rewards/chosen, rewards/rejected, rewards/accuracies and rewards/margins (train and eval).

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

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "sigmoid_norm")


@dataclass(frozen=True)
class DPOOptions(StageOptions):
    """DPO hyperparameters. ``lr`` is far above TRL's 1e-6 default, which suits
    billion-parameter models; the small models here need larger steps to move in a hundred updates."""

    steps: int = 30
    lr: float = 2e-3
    eval_every: int = 10
    beta: float = 0.1
    loss_type: str = "sigmoid"
    sft_weight: float = 0.0

    STAGE: ClassVar[str] = "dpo"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_type not in LOSS_TYPES:
            raise UsageError(f"dpo.loss_type={self.loss_type!r}: use one of {', '.join(LOSS_TYPES)}")
        if not self.beta > 0:
            raise UsageError(f"dpo.beta={self.beta}: must be positive (0.1 is usual)")
        if not self.sft_weight >= 0:
            raise UsageError(f"dpo.sft_weight={self.sft_weight}: must be 0 (plain DPO) or positive (1.0 in RPO)")


def run_dpo(
    model_dir: str | Path,
    train: list[Record],
    held_out: list[Record],
    out_dir: str | Path,
    opts: DPOOptions = DPOOptions(),
    source: str | None = None,
) -> dict[str, Any]:
    """Train ``model_dir`` (policy and reference) on ``train`` pairs; write ``out_dir``."""
    from trl import DPOConfig, DPOTrainer

    from scaling.align.model import train_stage

    def make(model: Any, tok: Any, common: dict, train_ds: Any, eval_ds: Any, callbacks: list) -> Any:
        losses = [opts.loss_type] + (["sft"] if opts.sft_weight else [])
        config = DPOConfig(**common, beta=opts.beta, loss_type=losses, loss_weights=[1.0, opts.sft_weight][: len(losses)],
                           max_length=opts.max_length)
        # ref_model=None: TRL reloads the reference from model_dir, the frozen starting point
        return DPOTrainer(model=model, ref_model=None, args=config, train_dataset=train_ds, eval_dataset=eval_ds,
                          processing_class=tok, callbacks=callbacks)

    result = train_stage("dpo", model_dir, train, held_out, out_dir, opts, source, make)
    result["eval_rewards_accuracies"] = result["eval"].get("eval_rewards/accuracies")
    result["eval_rewards_margins"] = result["eval"].get("eval_rewards/margins")
    result["sft_weight"] = opts.sft_weight  # > 0: eval_loss holds the chosen replies' NLL too, not DPO's alone
    RunDir(out_dir).write_result(result)
    return result
