"""``scaling align STUDY|MODEL``: SFT then DPO with TRL, evaluated on held-out data before and after."""

from __future__ import annotations

import argparse
from typing import Any

from scaling.commands import add_json_flag, emit_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scaling.align.dpo import LOSS_TYPES

    p.add_argument("model", help="a model folder (save_pretrained + tokenizer) or a study folder (uses select.json)")
    p.add_argument("--sft", metavar="DATA", help="SFT data: .jsonl/.parquet/folder/hf:NAME[@SPLIT] "
                   "with prompt/completion or messages (default: built-in demo task)")
    p.add_argument("--dpo", metavar="DATA", help="DPO data with prompt/chosen/rejected (default: built-in demo task)")
    p.add_argument("--out", help="output folder (default: STUDY/align, or align/ beside the model)")
    p.add_argument("--beta", type=float, default=0.1, help="DPO beta (default 0.1)")
    p.add_argument("--loss-type", default="sigmoid", choices=LOSS_TYPES, help="DPO loss (default sigmoid)")
    p.add_argument("--sft-steps", type=int, default=60, help="SFT optimizer steps (default 60)")
    p.add_argument("--dpo-steps", type=int, default=40, help="DPO optimizer steps (default 40)")
    p.add_argument("--sft-lr", type=float, default=1e-3, help="SFT peak learning rate (default 1e-3)")
    p.add_argument("--dpo-lr", type=float, default=5e-4, help="DPO peak learning rate (default 5e-4)")
    p.add_argument("--batch-size", type=int, default=16, help="records per step (default 16)")
    p.add_argument("--max-length", type=int, default=256, help="tokens per sequence (prompt + completion)")
    p.add_argument("--eval-frac", type=float, default=0.1, help="held-out fraction of user data (default 0.1)")
    p.add_argument("--demo-train", type=int, default=512, help="built-in task: training records")
    p.add_argument("--demo-eval", type=int, default=128, help="built-in task: held-out records")
    p.add_argument("--corpus", default="builtin:default", help="text the built-in tasks are cut from")
    p.add_argument("--skip-sft", action="store_true", help="DPO straight from the pretrained model")
    p.add_argument("--skip-dpo", action="store_true", help="stop after SFT")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    add_json_flag(p)


def run(args: Any) -> int:
    from scaling.align.dpo import DPOOptions
    from scaling.align.run import DemoOptions, align, format_table
    from scaling.align.sft import SFTOptions

    common = {"batch_size": args.batch_size, "max_length": args.max_length, "seed": args.seed}
    summary = align(
        args.model,
        args.out,
        sft_data=args.sft,
        dpo_data=args.dpo,
        beta=args.beta,
        loss_type=args.loss_type,
        sft=SFTOptions(steps=args.sft_steps, lr=args.sft_lr, eval_every=max(1, args.sft_steps // 4), **common),
        dpo=DPOOptions(steps=args.dpo_steps, lr=args.dpo_lr, eval_every=max(1, args.dpo_steps // 4), **common),
        demo=DemoOptions(n_train=args.demo_train, n_eval=args.demo_eval, corpus=args.corpus),
        eval_frac=args.eval_frac,
        skip_sft=args.skip_sft,
        skip_dpo=args.skip_dpo,
        seed=args.seed,
        threads=args.threads,
    )
    if args.json:
        emit_json(summary)
        return 0
    from rich.console import Console
    from rich.table import Table

    rows = format_table(summary)
    table = Table(title=f"held-out evaluation (DPO {summary['loss_type']}, beta={summary['beta']})")
    for h in rows[0]:
        table.add_column(h)
    for r in rows[1:]:
        table.add_row(*r)
    console = Console()
    console.print(table)
    last = summary["table"][-1]
    for s in last["samples"][:2]:
        console.print(f"{last['stage']}: ...{s['prompt'][-60:]!r} -> {s['generation']!r}", markup=False, highlight=False)
    console.print(f"summary: {summary['out']}/summary.json", markup=False)
    return 0
