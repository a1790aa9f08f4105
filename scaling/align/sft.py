"""Supervised fine-tuning with TRL's ``SFTTrainer``: loss on completions only, held-out eval loss,
full-precision metrics in the store (``metrics.jsonl``, the pretraining layout), the model saved
with ``save_pretrained`` beside its tokenizer.

Output folder::

    OUT/spec.json  metrics.jsonl  model/  result.json   (result.json last: the stage is done)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from scaling.align.data import Record
from scaling.align.model import StageOptions
from scaling.store import RunDir


@dataclass(frozen=True)
class SFTOptions(StageOptions):
    """SFT hyperparameters. ``lr`` is far above TRL's 2e-5 default: these are tiny models
    (pretrained at ``min(1e-2, 0.32/hidden)``) trained in tens of steps, not billion-parameter ones."""

    steps: int = 60
    lr: float = 5e-3
    eval_every: int = 20

    STAGE: ClassVar[str] = "sft"


def run_sft(
    model_dir: str | Path,
    train: list[Record],
    held_out: list[Record],
    out_dir: str | Path,
    opts: SFTOptions = SFTOptions(),
    source: str | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model_dir`` on ``train`` (prompt/completion records); write ``out_dir``."""
    from trl import SFTConfig, SFTTrainer

    from scaling.align.model import train_stage

    def make(model: Any, tok: Any, common: dict, train_ds: Any, eval_ds: Any, callbacks: list) -> Any:
        config = SFTConfig(**common, max_length=opts.max_length, completion_only_loss=True, packing=False)
        return SFTTrainer(model=model, args=config, train_dataset=train_ds, eval_dataset=eval_ds,
                          processing_class=tok, callbacks=callbacks)

    result = train_stage("sft", model_dir, train, held_out, out_dir, opts, source, make)
    RunDir(out_dir).write_result(result)
    return result
