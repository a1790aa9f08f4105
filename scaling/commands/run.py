"""``scaling run SPEC``: the whole study, resumable (see :mod:`scaling.pipeline`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scaling.commands import add_json_flag, emit_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="a sweep spec YAML (e.g. sweeps/quickstart.yaml)")
    p.add_argument("--out", help="study folder (default studies/<spec name>)")
    p.add_argument("--executor", choices=["debug", "local", "slurm"], help="where the runs go (default: the spec's)")
    p.add_argument("--max-parallel", type=int, help="runs at once (default: the cores shared out)")
    p.add_argument("--bootstrap", type=int, help="bootstrap resamples for the fit intervals (default 1000)")
    p.add_argument("--report", help="report path (default reports/<study>.html)")
    p.add_argument("--no-align", action="store_true", help="stop after the fit, backtest and report")
    p.add_argument("--force", metavar="STAGE", help="rerun STAGE and every stage after it")
    p.add_argument("--add", action="store_true",
                   help="--out holds another sweep: add this spec's runs to it (sweep.yaml becomes this spec)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    add_json_flag(p)


def _print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title=f"study {s['study']}: {s['minutes']:.1f} min", show_header=True)
    t.add_column("stage")
    t.add_column("minutes", justify="right")
    for k, v in s["stage_minutes"].items():
        t.add_row(k, f"{v:.2f}")
    con.print(t)
    b = Table(title="IsoFLOP budgets", show_header=True)
    for c in ("FLOPs", "best run (N total / non-emb)", "best loss", "parabola N* (total)", "interior"):
        b.add_column(c)
    for r in s["budgets"]:
        n_opt = f"{r['n_opt']:,.0f}" if r.get("n_opt") else "-"
        b.add_row(f"{r['flops']:.3g}", f"{r['best_params']:,.0f} / {r['best_non_embedding_params']:,.0f}",
                  f"{r['best_loss']:.4f}", n_opt, "yes" if r["interior"] else "NO")
    con.print(b)
    bt = s["backtest"]
    if bt.get("predicted_loss") is not None:
        base = bt.get("baselines") or {}
        con.print(
            f"backtest at C={bt['budget']:.3g} ({bt['form']} form, {bt['param_convention']} N): predicted "
            f"{bt['predicted_loss']:.4f}, achieved {bt['achieved_loss']:.4f}, error {100 * bt['error']:+.2f}% "
            f"(previous budget {100 * base['previous_budget']['error']:+.2f}%, power law on minima "
            f"{100 * base['power_law_on_minima']['error']:+.2f}%); N* predicted {bt['n_opt_predicted']:,.0f} "
            f"({bt['n_opt_form']} form, {bt['n_opt_param_convention']} N), "
            f"observed {bt['n_opt_observed'] or float('nan'):,.0f}"
        )
    from scaling.fit.artifacts import exponent_value, exponent_where

    for e in s["exponents"]:
        con.print(f"N* ~ C^a: {exponent_value(e)}; {exponent_where(e)}")
    if s.get("chosen"):
        con.print(f"chosen model: {s['chosen'].get('name')} ({s['chosen'].get('run_id')})")
    con.print(f"report: {s['report']}")


def run(args: argparse.Namespace) -> int:
    from scaling.errors import UsageError
    from scaling.pipeline import run_study

    if not Path(args.spec).exists():
        raise UsageError(f"spec {args.spec}: no such file (try sweeps/quickstart.yaml)")
    summary = run_study(
        args.spec, args.out, force=args.force, quiet=args.quiet, add=args.add, executor=args.executor,
        max_parallel=args.max_parallel, bootstrap=args.bootstrap, report=args.report,
        align=False if args.no_align else None,
    )
    if args.json:
        emit_json(summary)
    else:
        _print_summary(summary)
    return 0
