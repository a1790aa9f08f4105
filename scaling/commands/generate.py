"""``scaling generate MODEL|STUDY --prompt TEXT``: each stage's answer to the same prompt, side by side."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scaling.commands import add_json_flag, emit_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model folder, an alignment folder (summary.json) or a study folder")
    p.add_argument("--prompt", required=True, action="append",
                   help="the user's message (repeat for several prompts)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="reply budget in tokens (default 48)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    add_json_flag(p)


def stage_models(target: str | Path) -> dict[str, Path]:
    """``{stage: model folder}``: base, SFT, RLHF, DPO of an alignment (or a study's ``align/``),
    or the one model of a model folder."""
    from scaling.errors import UsageError
    from scaling.store import read_json

    p = Path(target)
    if (p / "config.json").exists():
        return {p.name: p}
    summary = read_json(p / "summary.json") if (p / "summary.json").exists() else None
    if not (summary or {}).get("table") or "stage" not in (summary["table"][0] if summary["table"] else {}):
        summary = read_json(p / "align" / "summary.json")
    if not summary or not summary.get("table"):
        raise UsageError(f"model={p}: no config.json, and no alignment summary (summary.json or align/summary.json) "
                         "here; give a model folder or run `scaling align` first")
    return {r["stage"]: Path(r["model"]) for r in summary["table"]}


def run(args: Any) -> int:
    from scaling.errors import UsageError

    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens={args.max_new_tokens}: must be at least 1")
    models = stage_models(args.model)  # bad input is refused before torch is imported
    from scaling.align.compare import generate_replies
    from scaling.align.model import load_model, load_tokenizer, match_eos, quiet, set_threads

    set_threads(args.threads)
    quiet()
    prompts = [[{"role": "user", "content": text}] for text in args.prompt]
    answers: dict[str, list[dict[str, Any]]] = {}
    for stage, path in models.items():
        tok = load_tokenizer(path)
        replies = generate_replies(match_eos(load_model(path), tok), tok, prompts, max_new_tokens=args.max_new_tokens)
        answers[stage] = [{"reply": r.text, "ended": r.ended} for r in replies]
    if args.json:
        emit_json({"prompts": args.prompt, "models": {k: str(v) for k, v in models.items()}, "replies": answers})
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text  # replies are shown as typed, never read as markup

    console = Console()
    for i, text in enumerate(args.prompt):
        table = Table(title=Text(text), title_justify="left", show_lines=True)
        table.add_column("stage")
        table.add_column("reply")
        table.add_column("ended turn")
        for stage, rs in answers.items():
            table.add_row(stage, Text(rs[i]["reply"]), "yes" if rs[i]["ended"] else "no")
        console.print(table)
    return 0
