"""Rich tables for ``scaling plan``: one law as a two-column card, several side by side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scaling.planner import Plan


def si(x: float | None, unit: str = "") -> str:
    """72.2B, 1.33T, 404k: three significant digits with an SI-style suffix."""
    if x is None:
        return "-"
    for div, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}{unit}"
    return f"{x:.3g}{unit}"


def _shape(p: Plan) -> str:
    s = p.shape
    if s is None:
        return "-"
    kv = f"/{s.n_kv_heads}" if s.n_kv_heads != s.heads else ""
    return f"{s.layers}x{s.hidden} h{s.heads}{kv} ffn {s.d_ffn}"


def _row(p: Plan) -> dict[str, str]:
    s = p.shape
    return {
        "N*": si(p.params),
        "D*": si(p.tokens),
        "D/N": f"{p.tokens_per_param:.3g}",
        "loss": "-" if p.loss is None else f"{p.loss:.4f}",
        "shape": _shape(p),
        "shape N (total / non-emb)": "-" if s is None else f"{si(s.params)} / {si(s.non_embedding_params)}",
        "batch": "-" if p.batch_tokens is None else f"{si(p.batch_tokens)} tok ({p.batch_size} seq)",
        "LR": "-" if p.lr is None else f"{p.lr:.2e}" + (" *" if p.extrapolated else ""),
        "GPU-hours": si(p.gpu_hours),
        "epochs": "-" if p.epochs is None else f"{p.epochs:.3g}",
        "inference FLOPs": "-" if p.inference_flops is None else f"{p.inference_flops:.3g}",
        "days": "-" if p.wall_clock_days is None else f"{p.wall_clock_days:.3g}",
        "cost": "-" if p.cost_usd is None else f"${si(p.cost_usd)}",
    }


def _compact(p: Plan, show_days: bool, show_cost: bool) -> list[str]:
    s = p.shape
    cells = [
        p.law,
        si(p.params),
        si(p.tokens),
        f"{p.tokens_per_param:.3g}",
        "-" if p.loss is None else f"{p.loss:.3f}",
        "-" if s is None else f"{s.layers}x{s.hidden}",
        "-" if s is None else si(s.count(p.param_convention)),
        "-" if p.batch_tokens is None else si(p.batch_tokens),
        "-" if p.lr is None else f"{p.lr:.1e}" + ("*" if p.extrapolated else ""),
        si(p.gpu_hours),
    ]
    if p.unique_tokens is not None:
        cells.append(f"{p.epochs:.3g}")
    if p.inference_tokens is not None:
        cells.append(f"{p.flops + (p.inference_flops or 0.0):.3g}")
    if show_days:
        cells.append("-" if p.wall_clock_days is None else f"{p.wall_clock_days:.3g}")
    if show_cost:
        cells.append("-" if p.cost_usd is None else f"${si(p.cost_usd)}")
    return cells


def render(plans: Sequence[Plan], skipped: dict[str, str] | None = None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if len(plans) > 1 and not console.is_terminal and console.width < 140:
        # piped or captured: print whole rows rather than truncate them to 80 columns
        console = Console(width=140)
    first = plans[0]
    same_c = len({p.flops for p in plans}) == 1
    budget = f"C = {first.flops:.3g} FLOPs" if same_c else "C per law"
    title = f"{first.mode.replace('_', ' ')} plan, {budget}, {first.gpu} at MFU {first.mfu:g}"
    if len(plans) == 1:
        table = Table(title=f"{first.law}: {title}", show_header=False)
        table.add_column("", style="bold")
        table.add_column("")
        if first.mode != "compute_optimal":
            table.add_row("C", f"{first.flops:.4g} FLOPs")
        for k, v in _row(first).items():
            if v != "-" or k in ("loss", "days", "cost"):
                table.add_row(k, v)
        table.add_row("law", first.citation)
        console.print(table)
    else:
        show_days = any(p.wall_clock_days is not None for p in plans)
        show_cost = any(p.cost_usd is not None for p in plans)
        table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
        heads = ["law", "N*", "D*", "D/N", "loss", "shape", "N shape", "batch", "LR", "GPU-h"]
        heads += ["epochs"] * (first.unique_tokens is not None)
        heads += ["train+inf C"] * (first.inference_tokens is not None)
        heads += ["days"] * show_days + ["cost"] * show_cost
        if not same_c:
            heads.insert(1, "C")
        for h in heads:
            table.add_column(h, justify="left" if h in ("law", "shape") else "right", no_wrap=True)
        for p in plans:
            cells = _compact(p, show_days, show_cost)
            if not same_c:
                cells.insert(1, f"{p.flops:.3g}")
            table.add_row(*cells)
        console.print(table)
    notes = sorted({n for p in plans for n in p.notes})
    if any(p.extrapolated for p in plans):
        notes.append(
            "* batch size and LR extrapolate DeepSeek's laws beyond the 1e17-1e20 FLOPs they were fitted on"
        )
    if len(plans) > 1 and any(p.param_convention == "non_embedding" for p in plans):
        notes.append("kaplan and deepseek count non-embedding parameters (N*, N shape); the others count all")
    if len(plans) > 1 and any(p.law == "kaplan" and p.loss is not None for p in plans):
        notes.append(
            "kaplan's loss is on WebText2 with GPT-2's tokenizer: compare its N* and D*, not its loss"
        )
    for name, why in (skipped or {}).items():
        notes.append(f"{name}: skipped ({why.split(': ', 1)[-1]})")
    for n in notes:
        console.print(f"  {n}", style="dim", highlight=False)
