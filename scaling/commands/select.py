"""``scaling select STUDY``: the finished run nearest the fitted compute-optimal frontier."""

from __future__ import annotations

import argparse
from typing import Any

from scaling.commands import add_json_flag, emit_json
from scaling.errors import UsageError


def _budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--budget {text!r}: a number of FLOPs, e.g. 6e11") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--budget {text}: must be positive")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="the study (sweep) folder with runs/ and fit/")
    p.add_argument("--fit", help="a fit JSON from `scaling fit` (default: the study's fit/approach3_*.json)")
    p.add_argument("--budget", type=_budget, help="compute budget C in FLOPs (default: the largest with runs)")
    p.add_argument("--train-optimal", action="store_true",
                   help="train a new run at the law's N*(C), D*(C) instead of picking an existing one")
    add_json_flag(p)


def run(args: Any) -> int:
    from pathlib import Path

    from scaling.align.select import select

    if not Path(args.study).is_dir():
        raise UsageError(f"study={args.study}: no such folder; give the folder a sweep wrote")
    choice = select(args.study, fit=args.fit, budget=args.budget, train_optimal=args.train_optimal)
    if args.json:
        emit_json(choice)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"runs at C = {choice['budget']:.3g} FLOPs ({choice['param_convention']} N)")
    for col in ("run", "N", "N / N*", "loss", ""):
        table.add_column(col, no_wrap=True)
    for c in choice["candidates"]:
        mark = "chosen" if c["run_id"] == choice["run_id"] else ""
        loss = f"{c['loss']:.4f}" if c["loss"] is not None else "-"
        table.add_row(c["run_id"], f"{c['n']:.4g}", f"{c['n'] / choice['n_opt']:.2f}", loss, mark)
    console = Console(soft_wrap=True)
    console.print(table)
    console.print(choice["reason"], markup=False)
    console.print(f"model: {choice['model_dir']}", markup=False)
    return 0
