"""``scaling align STUDY|MODEL``: SFT, a reward model, RLHF (RLOO) and DPO with TRL, side by side on
held-out tasks."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from scaling.commands import add_json_flag, emit_json

# flag -> (stage, option field); defaults are the option classes' own (None: not given)
STAGE_FLAGS: dict[str, tuple[str, str, type, str]] = {
    "--sft-steps": ("sft", "steps", int, "SFT optimizer steps"),
    "--sft-lr": ("sft", "lr", float, "SFT peak learning rate"),
    "--rm-steps": ("reward", "steps", int, "reward model (and judge) steps"),
    "--rm-lr": ("reward", "lr", float, "reward model peak learning rate"),
    "--rl-steps": ("rlhf", "steps", int, "RLOO steps"),
    "--rl-lr": ("rlhf", "lr", float, "RLOO peak learning rate"),
    "--kl-beta": ("rlhf", "kl_beta", float, "RLOO KL penalty to the SFT model"),
    "--num-generations": ("rlhf", "num_generations", int, "RLOO replies sampled per prompt"),
    "--max-completion-length": ("rlhf", "max_completion_length", int, "RLOO reply tokens (and the eval budget)"),
    "--temperature": ("rlhf", "temperature", float, "RLOO sampling temperature"),
    "--dpo-steps": ("dpo", "steps", int, "DPO optimizer steps"),
    "--dpo-lr": ("dpo", "lr", float, "DPO peak learning rate"),
    "--beta": ("dpo", "beta", float, "DPO beta"),
    "--dpo-sft-weight": ("dpo", "sft_weight", float, "weight of the chosen reply's NLL added to the DPO loss (RPO)"),
}
SHARED_FLAGS = {"--batch-size": ("batch_size", int, "records per step, every stage"),
                "--max-length": ("max_length", int, "tokens per sequence (prompt + reply), every stage")}
TASK_FLAGS = {"--tasks-sft": "n_sft", "--tasks-pref": "n_pref", "--tasks-judge": "n_judge", "--tasks-eval": "n_eval",
              "--task-variants": "variants"}


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scaling.align.dpo import LOSS_TYPES
    from scaling.align.tasks import KINDS

    p.add_argument("model", help="a model folder (save_pretrained + tokenizer) or a study folder (uses select.json)")
    p.add_argument("--sft", metavar="DATA", help="SFT data: .jsonl/.parquet/folder/hf:NAME[@SPLIT] "
                   "with prompt/completion or messages (default: built-in tasks)")
    p.add_argument("--dpo", metavar="DATA", help="preference data, prompt/chosen/rejected, for the reward models "
                   "and DPO (default: built-in tasks)")
    p.add_argument("--prompts", metavar="DATA", help="RL prompts, records with a prompt (default: the preference prompts)")
    p.add_argument("--out", help="output folder (default: STUDY/align, or align/ beside the model)")
    p.add_argument("--loss-type", choices=LOSS_TYPES, help="DPO loss (default sigmoid)")
    from scaling.align.run import StageSettings

    base = StageSettings()
    for flag, (stage, field, typ, text) in STAGE_FLAGS.items():
        p.add_argument(flag, type=typ, help=f"{text} (default {getattr(getattr(base, stage), field)})")
    for flag, (field, typ, text) in SHARED_FLAGS.items():
        p.add_argument(flag, type=typ, help=f"{text} (default {getattr(base.sft, field)})")
    p.add_argument("--eval-frac", type=float, default=0.1, help="held-out fraction of user data (default 0.1)")
    p.add_argument("--judge-frac", type=float, default=0.25,
                   help="share of the user's training pairs that train the judge reward model (default 0.25)")
    for flag, field in TASK_FLAGS.items():
        text = ("tasks per passage in the training splits (its prefixes)" if field == "variants"
                else f"{field.removeprefix('n_')} split size")
        p.add_argument(flag, type=int, help=f"built-in tasks: {text}")
    p.add_argument("--task-kinds", help=f"built-in task kinds, comma-separated ({','.join(KINDS)})")
    p.add_argument("--task-rejected", choices=("sampled", "built-in"),
                   help="rejected replies of the built-in pairs: the SFT model's wrong samples, or the tasks' own "
                        "wrong replies (default sampled)")
    p.add_argument("--corpus", help="text the built-in tasks are cut from (default: the model's pretraining corpus)")
    p.add_argument("--skip-sft", action="store_true", help="align the pretrained model without SFT")
    p.add_argument("--skip-rlhf", action="store_true", help="no reward model and no RLHF")
    p.add_argument("--skip-dpo", action="store_true", help="no DPO")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    add_json_flag(p)


def settings_from_args(args: Any) -> Any:
    """Each stage's options: the option class defaults, then the flags given."""
    from scaling.align.run import StageSettings

    given: dict[str, dict[str, Any]] = {"sft": {}, "reward": {}, "rlhf": {}, "dpo": {}}
    for flag, (stage, field, _, _) in STAGE_FLAGS.items():
        if getattr(args, _dest(flag)) is not None:
            given[stage][field] = getattr(args, _dest(flag))
    if args.loss_type is not None:
        given["dpo"]["loss_type"] = args.loss_type
    base = StageSettings()
    out = {}
    for stage, fields in given.items():
        opts = getattr(base, stage)
        shared = {f: getattr(args, _dest(flag)) for flag, (f, _, _) in SHARED_FLAGS.items()
                  if getattr(args, _dest(flag)) is not None}
        if "steps" in fields:
            fields.setdefault("eval_every", max(1, fields["steps"] // 4))
        out[stage] = replace(opts, seed=args.seed, **shared, **fields)
    return StageSettings(**out)


def tasks_from_args(args: Any) -> Any:
    from scaling.align.tasks import TaskOptions

    given: dict[str, Any] = {f: getattr(args, _dest(flag)) for flag, f in TASK_FLAGS.items()
                             if getattr(args, _dest(flag)) is not None}
    if args.task_kinds:
        given["kinds"] = tuple(k.strip() for k in args.task_kinds.split(",") if k.strip())
    if args.corpus:
        given["corpus"] = args.corpus
    if args.task_rejected:
        given["rejected"] = args.task_rejected
    return TaskOptions(**given)


def run(args: Any) -> int:
    from scaling.align.compare import format_table
    from scaling.align.run import align

    summary = align(
        args.model, args.out, sft_data=args.sft, dpo_data=args.dpo, prompts_data=args.prompts,
        settings=settings_from_args(args), tasks=tasks_from_args(args), eval_frac=args.eval_frac,
        judge_frac=args.judge_frac, skip_sft=args.skip_sft, skip_rlhf=args.skip_rlhf, skip_dpo=args.skip_dpo,
        seed=args.seed, threads=args.threads,
    )
    if args.json:
        emit_json(summary)
        return 0
    from rich.console import Console
    from rich.table import Table

    rows = format_table(summary)
    table = Table(title="held-out tasks: base, SFT, RLHF, DPO side by side")
    for h in rows[0]:
        table.add_column(h)
    for r in rows[1:]:
        table.add_row(*r)
    console = Console()
    console.print(table)
    for f in summary["flags"]:
        console.print(f"NOT LEARNED {f['stage']}: {f['reason']}", markup=False, highlight=False)
    console.print(f"summary: {summary['out']}/summary.json", markup=False)
    return 0
