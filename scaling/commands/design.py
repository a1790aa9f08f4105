"""``scaling design``: the sweep (IsoFLOP, with or without repeats, or WSD branches) that pins N*
(or the exponent, or the loss) best for an allowance.

Examples::

    scaling design sweeps/quickstart.yaml --allowance 9min --target 1.6e12 \\
        --prior fit:studies/quickstart/fit/approach3_non_embedding.json --out sweeps/designed.yaml
    scaling design sweeps/ladder.yaml --allowance 2000gpuh --gpu h100 --target 1e22 \\
        --prior chinchilla --noise 0.01 --criterion loss --json

The spec gives the model family, training settings and the ladder of sizes (``grid.sizes``); the
written spec is that spec with the designed grid, ready for ``scaling sweep plan|launch`` and
``scaling run``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from typing import Any

from scaling.commands import add_json_flag, emit_json
from scaling.commands._args import accept_negative_numbers, integer, number, output_file
from scaling.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    accept_negative_numbers(p)
    p.add_argument("spec", help="a sweep spec with an isoflop grid listing the ladder of sizes (grid.sizes)")
    p.add_argument("--allowance", required=True,
                   help="what the sweep may spend: FLOPs (4e12), minutes on this machine (9min), or GPU-hours (200gpuh)")
    p.add_argument("--target", required=True, metavar="C", help="the budget to predict N* and the loss at (FLOPs)")
    p.add_argument("--prior", required=True, help="a published law (chinchilla, ...) or a pilot fit: fit:STUDY/fit/approach3_<count>.json")
    p.add_argument("--noise", metavar="SIGMA", help="sd of log loss between runs (default: the pilot study's)")
    p.add_argument("--criterion", default="n_opt", choices=("n_opt", "exponent", "loss"),
                   help="what to narrow: ln N* at the target (default), the allocation exponent, or the loss at the target")
    p.add_argument("--min-steps", default="0", metavar="S", help="leave out sizes whose runs would take fewer steps")
    p.add_argument("--families", default="isoflop,wsd",
                   help="design families to search: isoflop (with or without repeated seeds), wsd (WSD trunks with "
                        "cooldown branches, fitted by approach 3; needs --sims3 > 0); default both")
    p.add_argument("--branch-share", default=None, metavar="S",
                   help="share of the noise variance the cooldown branches of one WSD trunk have in common "
                        "(default 0.5, assumed)")
    p.add_argument("--out", help="write the designed spec here (YAML)")
    p.add_argument("--name", help="the written spec's name (default: the spec's)")
    p.add_argument("--sims", default="200", help="simulations per design, approach 2 (default 200)")
    p.add_argument("--sims3", default="12", help="simulations of approach 3 for the finalists and plain grid (default 12)")
    p.add_argument("--bootstrap", default="200", help="bootstrap resamples per approach-3 simulation (default 200)")
    p.add_argument("--seed", default="0", help="random seed of the simulations")
    p.add_argument("--max-parallel", type=int, help="runs at once, for the minutes (default: the spec's executor)")
    p.add_argument("--gpu", default="h100", help="accelerator for GPU-hours (default h100)")
    p.add_argument("--mfu", default="0.4", help="model FLOPs utilisation for GPU-hours (default 0.4)")
    add_json_flag(p)


def _pricing(spec: Any, max_parallel: int | None, gpu: str, mfu: float, timed: bool) -> Any:
    """The sweep planner's cost model: with ``timed``, the backend's timing model of the spec's own
    runs (probed once per machine, as ``scaling sweep plan`` does) on the executor's parallel
    slots; the GPU for GPU-hours."""
    from scaling.backends.base import backend_class
    from scaling.design.space import Pricing
    from scaling.hardware import check_mfu, get_gpu
    from scaling.sweep.executors import parallelism
    from scaling.sweep.grid import expand

    try:
        get_gpu(gpu)
        check_mfu(mfu)
    except ValueError as e:
        raise UsageError(f"--gpu/--mfu: {e}") from None
    runs = expand(spec)
    slots, threads = parallelism(spec.executor.kind, spec.executor, len(runs), max_parallel)
    timing = None
    if not timed:
        return Pricing(slots=slots, gpu=gpu, mfu=mfu)
    with contextlib.suppress(ImportError):  # a backend whose own dependencies are missing here: no minutes
        make = getattr(backend_class(spec.backend)(), "timing_model", None)
        timing = make(runs, threads) if callable(make) else None
    return Pricing(timing=timing, slots=slots, gpu=gpu, mfu=mfu)


def run(args: argparse.Namespace) -> int:
    from scaling.design import choose_design, load_prior, parse_allowance
    from scaling.design.output import design_header, design_summary, write_design
    from scaling.design.space import ladder
    from scaling.sweep.spec import load_spec

    target = number("--target", args.target)
    if target is None or target <= 0:
        raise UsageError(f"--target {args.target}: give the budget in FLOPs, a positive number (e.g. 1.6e12)")
    noise = number("--noise", args.noise)
    sims, sims3, boot, seed = (integer(f, v) for f, v in (("--sims", args.sims), ("--sims3", args.sims3),
                                                          ("--bootstrap", args.bootstrap), ("--seed", args.seed)))
    if not (sims and sims >= 20) or sims3 is None or sims3 < 0 or not (boot and boot >= 50):
        raise UsageError("--sims must be at least 20, --sims3 at least 0 and --bootstrap at least 50")
    min_steps = number("--min-steps", args.min_steps) or 0.0
    mfu = number("--mfu", args.mfu) or 0.0
    out = output_file("--out", args.out, ".yaml")
    allowance = parse_allowance(args.allowance)
    base = load_spec(args.spec)
    ladder(base)  # refuse a spec without a ladder before any work
    prior = load_prior(args.prior, noise)
    share = number("--branch-share", args.branch_share)
    if share is not None:
        if not 0 <= share < 1:
            raise UsageError(f"--branch-share {args.branch_share}: give a share of the noise variance in [0, 1), e.g. 0.5")
        prior = dataclasses.replace(prior, branch_share=float(share))
    families = tuple(f.strip() for f in str(args.families).split(",") if f.strip())
    pricing = _pricing(base, args.max_parallel, args.gpu, mfu, timed=allowance.kind == "seconds")
    choice = choose_design(base, prior, allowance, pricing, float(target), criterion=args.criterion, sims=int(sims),
                           sims3=int(sims3), bootstrap=int(boot), seed=int(seed or 0), family={"min_steps": min_steps},
                           families=families)
    summary = design_summary(choice, prior, allowance, pricing, float(target))
    if out is not None:
        summary["written"] = str(write_design(out, base, choice, design_header(summary), args.name))
    if args.json:
        emit_json(summary)
    else:
        _print(summary)
    return 0


def _print(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(soft_wrap=False, width=max(110, Console().width))
    p = summary["prior"]
    con.print(f"prior {p['law']} (N {p['param_convention'].replace('_', '-')}), noise sd of log L {p['sigma']:.3g}: {p['sigma_source']}")
    if p.get("trend"):
        tr = p["trend"]
        con.print(f"  the noise follows its trend in tokens per parameter r: sd(r)^2 = {tr['floor']:.3g}^2 + "
                  f"{tr['rise']:.3g}^2 (r / {tr['r_ref']:.3g})^{2 * tr['slope']:.3g}, r in [{tr['r_lo']:.3g}, {tr['r_hi']:.3g}]")
    con.print(f"allowance {summary['allowance']}; target {summary['target']:.3g} FLOPs; criterion {summary['criterion']}; "
              f"{summary['considered']} affordable designs simulated")
    grids = {f"{f} best" + (" (chosen)" if f == summary["family"] else ""): g for f, g in summary["families"].items()}
    grids["plain"] = summary["plain"]
    for which, d in grids.items():
        cost = d["cost"]
        minutes = "" if cost["seconds"] is None else f", {cost['seconds'] / 60:.1f} min here"
        con.print(f"{which:>20}: {d['grid']}; {cost['flops']:.3g} FLOPs{minutes}, {cost['gpu_hours']:.3g} GPU-hours at {summary['gpu']}")
    if len(summary["families"]) > 1:
        con.print(f"family {summary['family']} won: the narrowest widest interval (over the fits its study makes)")
    t = Table(title="predicted 95% interval widths (geometric mean over simulations)")
    for c in ("grid", "fit", "N", "a +-", "a +- needed", "N* hi/lo", "L* width", "interior"):
        t.add_column(c, justify="left" if c in ("grid", "fit", "N") else "right")
    for which, d in grids.items():
        for w in d["widths"]:
            need = w["exponent_spread"] / 2
            t.add_row(which, f"approach {w['approach']}", w["count"].replace("_", "-"), f"{w['exponent_half_width']:.3f}",
                      "" if need != need else f"{need:.3f}", f"{w['n_opt_ratio']:.3g}x",
                      "" if w["loss"] != w["loss"] else f"{w['loss']:.3g}", f"{w['interior']:.0%}")
    con.print(t)
    con.print("a +- needed: half the width a calibrated interval would have, from the estimates' scatter over the "
              "simulations; a design is judged by the wider of the two")
    chosen = summary["chosen"]
    if chosen["family"] == "wsd":
        con.print(f"trunks: {', '.join(chosen['sizes'])}; branches at D = {', '.join(f'{t:.3g}' for t in chosen['tokens'])}")
    else:
        con.print(f"budgets: {', '.join(f'{c:.3g}' for c in chosen['budgets'])}"
                  + (f"; {chosen['repeats']} repeat seed(s) at each budget's {' and '.join(chosen['repeat_at'])}"
                     if chosen["repeats"] else "") + f"; noise fitted: {chosen['noise_model']}")
    if summary.get("written"):
        con.print(f"wrote {summary['written']}: scaling sweep plan {summary['written']}")
