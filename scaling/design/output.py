"""A design choice as a summary (what ``scaling design --json`` prints) and as a sweep spec file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from scaling.design.prior import Prior
from scaling.design.search import DesignChoice
from scaling.design.simulate import trend_sd
from scaling.design.space import Allowance, DesignPoints, Pricing, design_mapping, ladder
from scaling.design.wsd import wsd_mapping
from scaling.errors import UsageError
from scaling.store import atomic_write_text
from scaling.sweep.grid import expand
from scaling.sweep.spec import SweepSpec, parse_spec


def _tag(r: Any) -> str:
    return f"L{r.model_shape.layers} d{r.model_shape.hidden}"


def _grid(p: DesignPoints, widths: list[Any], prior: Prior) -> dict[str, Any]:
    """One design as JSON: its family, grid, runs (those its spec expands to, and the repeats the
    sweep adds, and where), the noise its study will fit (``noise_model``), cost and widths. A WSD
    design lists its trunks' sizes and branches' tokens."""
    rows = []
    for w in widths:
        d = w.to_dict()
        d["n_opt_ratio"] = math.exp(w.log_n_opt) if math.isfinite(w.log_n_opt) else math.nan
        rows.append(d)
    out: dict[str, Any] = {"family": p.design.family, "grid": p.design.describe(), "label": p.design.label,
                           "runs": len(p.runs), "added_runs": len(p.added), "points": len(p.fitted),
                           "repeats": p.design.repeats, "repeat_at": list(getattr(p.design, "repeat_at", ())) or None,
                           "noise_model": noise_model(p, prior), "cost": p.cost, "widths": rows}
    if p.design.family == "wsd":
        trunks = [r for r in p.runs if r.branch_of is None]
        out.update(budgets=[], sizes=[_tag(r) for r in trunks],
                   tokens=sorted({r.steps * r.batch_tokens for r in p.runs if r.branch_of is not None}))
    else:
        out.update(budgets=list(p.design.budgets),
                   sizes={f"{c:.6g}": [_tag(r) for r in p.runs if r.budget == c] for c in p.design.budgets})
    return out


def noise_model(p: DesignPoints, prior: Prior) -> str:
    """What noise the design's study will fit: none (no repeats), one per budget, or the trend."""
    if not p.has_repeats:
        return "none (no repeats): intervals from the fit's own scatter"
    if p.design.family == "isoflop" and trend_sd(p, prior) is not None:
        return "its trend in tokens per parameter, fitted on the repeats"
    return "pooled per budget from the repeats, one noise for every size"


def design_summary(choice: DesignChoice, prior: Prior, allowance: Allowance, pricing: Pricing,
                   target: float) -> dict[str, Any]:
    """The chosen and plain grids with their costs and predicted widths (``n_opt_ratio``: hi/lo of N*)."""
    return {"prior": prior.describe(), "allowance": allowance.describe(), "allowance_kind": allowance.kind,
            "gpu": f"{pricing.gpu} MFU {pricing.mfu:g}", "timing_model": pricing.timing.to_dict() if pricing.timing else None,
            "allowance_value": allowance.value, "target": target, "criterion": choice.criterion,
            "considered": choice.considered, "chosen": _grid(choice.chosen, choice.chosen_widths, prior),
            "plain": _grid(choice.plain, choice.plain_widths, prior), "family": choice.chosen.design.family,
            "families": {f: _grid(p, w, prior) for f, (p, w) in choice.families.items()}}


def design_header(summary: dict[str, Any]) -> str:
    """Comment lines for the written spec: how it was chosen and what it is predicted to give."""
    c, p, pr = summary["chosen"], summary["plain"], summary["prior"]

    def widths(g: dict[str, Any]) -> str:
        return "; ".join(f"approach {w['approach']} N {w['count'].replace('_', '-')}: a +-{w['exponent_half_width']:.3f}, "
                         f"N* hi/lo {w['n_opt_ratio']:.3g}x" for w in g["widths"])

    others = [f"best {f} design: {g['grid']}" for f, g in summary.get("families", {}).items() if f != summary["family"]]
    lines = [
        f"Designed by `scaling design` for {summary['allowance']}, target {summary['target']:.3g} FLOPs, "
        f"criterion {summary['criterion']}; family {summary['family']} won"
        + (f" on the widest interval its study reports ({'; '.join(others)})" if others else "") + ".",
        f"Prior {pr['law']} with noise sd {pr['sigma']:.3g} of log loss ({pr['sigma_source']})"
        + (", growing toward few tokens per parameter (its trend)" if pr.get("trend") else "")
        + (f", {pr['branch_share']:g} of its variance shared by the branches of one trunk" if summary["family"] == "wsd" else "")
        + ".",
        f"This grid: {c['grid']}. Predicted 95% widths: {widths(c)}.",
        f"Plain grid of the same allowance: {p['grid']}. Predicted: {widths(p)}.",
    ]
    return "".join(f"# {line}\n" for line in lines)


def write_design(path: Path, base: SweepSpec, choice: DesignChoice, header: str, name: str | None = None) -> Path:
    """Write the designed spec (``header`` + YAML), after checking it loads and expands as written."""
    design = choice.chosen.design
    mapping = (wsd_mapping if design.family == "wsd" else design_mapping)(base, design, ladder(base), name)
    text = header + yaml.safe_dump(mapping, sort_keys=False, default_flow_style=None, width=120)
    spec = parse_spec(text, str(path))
    if len(expand(spec)) != len(choice.chosen.runs):
        raise UsageError(f"{path}: the written spec expands to other runs than the design priced; report this")
    atomic_write_text(path, text)
    return path
