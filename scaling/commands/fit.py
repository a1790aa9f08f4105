"""``scaling fit DATA``: fit a scaling law (approach 1, 2, 3 or Kaplan) to losses, with uncertainty.

DATA is a CSV, parquet or JSONL file with ``params, tokens, loss`` (optionally ``flops``,
``step``, ``run_id``), or a sweep folder (its ``eval_loss`` by default). ``--json`` prints the
fit as one object; ``--out`` writes it with its bootstrap draws, for ``scaling plan --law fit:PATH``.
``--predict`` fits every candidate law and keeps the one (or the weighting) that best predicts
the largest sizes or budgets when fitted without them (:mod:`scaling.fit.crossval`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from scaling.commands import add_json_flag, emit_json
from scaling.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", metavar="DATA", help="CSV/parquet/JSONL file or sweep folder")
    p.add_argument("--approach", choices=["1", "2", "3", "kaplan"], default="3")
    p.add_argument("--estimator", choices=["grid", "mle"], default="grid", help="approach 3: Huber grid or Huber MLE")
    p.add_argument(
        "--search",
        choices=["projected", "hoffmann"],
        default="projected",
        help="grid estimator: exponent pairs by variable projection (fast), or all 4,500 Hoffmann starts",
    )
    p.add_argument("--loss-type", choices=["huber", "mse"], default="huber", help="approach 3 objective")
    p.add_argument("--delta", type=float, default=1e-3, help="Huber threshold (log-loss units)")
    p.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE", help="approach 3: pin a parameter")
    p.add_argument("--bootstrap", type=int, default=0, metavar="B", help="bootstrap resamples (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", choices=["auto", "none"], default="auto",
                   help="approaches 2 and 3 (grid): weight by the run-to-run noise measured from repeated seeds "
                        "when the data repeat a point, and print the lack of fit against it (none: unweighted)")
    p.add_argument("--kaplan-form", choices=["n", "d", "joint", "compute"], default="joint")
    p.add_argument("--offset", action="store_true", help="Kaplan forms: add an irreducible loss E")
    p.add_argument("--backtest", action="store_true", help="also fit without the largest budget and predict it")
    p.add_argument(
        "--predict",
        action="store_true",
        help="choose the law that predicts: candidates scored on the largest sizes (or budgets) left out",
    )
    p.add_argument("--combine", choices=["select", "stack", "bag"], default="stack",
                   help="--predict: keep the best, weight them by stacking, or by how often the bootstrap selects each")
    p.add_argument("--folds", type=int, default=2, help="--predict: levels left out in turn, largest first")
    p.add_argument("--cv-axis", choices=["auto", "params", "budget", "tokens", "flops"], default="auto",
                   help="--predict: what a level is (auto: budget for IsoFLOP grids, size for ladders)")
    p.add_argument("--e-fixed", type=float, default=None, metavar="E",
                   help="--predict: add a candidate with E pinned (e.g. 1.6934, Hoffmann et al. 2022)")
    p.add_argument("--params-col", default="params", help="column of N (non_embedding_params: Kaplan's convention)")
    p.add_argument("--param-convention", choices=["total", "non_embedding"], default=None,
                   help="what N counts (default: non_embedding for the non_embedding_params column, else total)")
    p.add_argument("--flops-convention", default=None, metavar="NAME",
                   help="how the FLOPs column counts C, e.g. 6N, 6N_non_embedding (default: a sweep "
                        "folder's runs say; a file's is 6 N D with N as counted)")
    p.add_argument("--tokens-col", default="tokens")
    p.add_argument("--flops-col", default="flops")
    p.add_argument("--loss-col", default=None, help="default: loss (files), eval_loss (sweep folders)")
    p.add_argument("--out", default=None, metavar="PATH", help="write the fit as JSON (atomic)")
    add_json_flag(p)


def _fixed(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise UsageError(f"--fix: {item!r} is not NAME=VALUE (e.g. --fix alpha=0.34)")
    return out


# Options only some approaches read, with their defaults: given to another approach, they are refused.
_APPROACH3_OPTIONS = {"fix": [], "bootstrap": 0, "estimator": "grid", "search": "projected", "loss_type": "huber",
                      "delta": 1e-3}
_KAPLAN_OPTIONS = {"kaplan_form": "joint", "offset": False}
_PREDICT_OPTIONS = {"combine": "stack", "folds": 2, "cv_axis": "auto", "e_fixed": None}


def check_options(args: argparse.Namespace) -> None:
    """Refuse, before any fitting, options the chosen approach would ignore and outputs that
    cannot be written."""
    from scaling.commands._args import output_file
    from scaling.fit.bootstrap import MAX_BOOTSTRAP

    output_file("--out", args.out)
    if not 0 <= args.bootstrap <= MAX_BOOTSTRAP:
        raise UsageError(f"--bootstrap={args.bootstrap}: give 0 to {MAX_BOOTSTRAP:,} resamples (1,000-2,000 are usual)")
    if args.predict and args.approach != "3":
        raise UsageError(f"--approach {args.approach}: --predict fits its own candidates; drop one of the two")
    uses_approach3 = args.approach == "3" or args.backtest or args.predict
    for name, default in _APPROACH3_OPTIONS.items():
        if not uses_approach3 and getattr(args, name) != default:
            raise UsageError(f"--{name.replace('_', '-')}: approach {args.approach} does not use it (approach 3, "
                             "--backtest and --predict do); drop it or pass --approach 3")
    for name, default in _PREDICT_OPTIONS.items():
        if not args.predict and getattr(args, name) != default:
            raise UsageError(f"--{name.replace('_', '-')}: only --predict uses it; drop it or add --predict")
    for name, default in _KAPLAN_OPTIONS.items():
        if args.approach != "kaplan" and getattr(args, name) != default:
            raise UsageError(f"--{name.replace('_', '-')}: only --approach kaplan uses it; drop it or pass --approach kaplan")
    if args.combine == "bag" and args.bootstrap < 1:
        raise UsageError("--combine bag: needs --bootstrap B, the resamples it counts the choices over (e.g. 100)")
    if args.seed != 0 and args.bootstrap == 0:
        raise UsageError("--seed: only the bootstrap draws random numbers; add --bootstrap B or drop --seed")


def _convention(args: argparse.Namespace, frame: Any, is_sweep: bool) -> Any:
    """The declared counts: flags first, then a sweep folder's runs, then the column's default."""
    from scaling.convention import Convention
    from scaling.fit import Columns

    params = args.param_convention or Columns(params=args.params_col).declared().params
    flops = args.flops_convention
    if flops is None and "flops_convention" in frame and args.flops_col == "flops":
        found = sorted(set(frame["flops_convention"].dropna()))
        if len(found) > 1:
            raise UsageError(f"--flops-convention: the runs count FLOPs as {', '.join(found)}; fit one kind at a time")
        # runs that predate the key counted result.json's flops as 6 N_total D
        flops = found[0] if found else ("6N" if is_sweep else None)
    return Convention(params, flops or Convention.six_nd(params).flops)


def _fitter(args: argparse.Namespace, cols: Any) -> Any:
    """The fitter ``--approach`` names."""
    from scaling.fit import Approach1, Approach2, KaplanFit

    if args.approach == "2":
        return Approach2(columns=cols)
    if args.approach == "1":
        return Approach1(columns=cols)
    if args.approach == "kaplan":
        return KaplanFit(form=args.kaplan_form, offset=args.offset, columns=cols)
    return _approach3(args, cols)


def _approach3(args: argparse.Namespace, cols: Any) -> Any:
    from scaling.fit import Approach3

    return Approach3(estimator=args.estimator, loss=args.loss_type, delta=args.delta, fixed=_fixed(args.fix),
                     bootstrap=args.bootstrap, seed=args.seed, search=args.search, columns=cols)


def fit_from_args(args: argparse.Namespace) -> tuple[Any, dict[str, Any] | None]:
    from scaling.fit import Columns, read_table

    frame, is_sweep = read_table(args.data, curves=args.approach == "1")
    loss_col = args.loss_col or ("eval_loss" if is_sweep and args.approach != "1" else "loss")
    conv = _convention(args, frame, is_sweep)
    # a sweep folder's runs hold both counts: --param-convention picks the column, not just the label
    params_col = conv.n_column if is_sweep and args.params_col == "params" else args.params_col
    cols = Columns(params=params_col, tokens=args.tokens_col, flops=args.flops_col, loss=loss_col, convention=conv)
    if args.predict:
        from scaling.fit import Predictor

        if args.folds < 1:
            raise UsageError("--folds: must be >= 1")
        with _subset_fits():
            fit = Predictor(e_fixed=args.e_fixed, combine=args.combine, folds=args.folds, axis=args.cv_axis,
                            bootstrap=args.bootstrap, seed=args.seed, columns=cols,
                            fitter=replace(_approach3(args, cols), bootstrap=0, columns=Columns())).fit(frame)
    else:
        fitter = _fitter(args, cols)
        noise = _noise(args, frame, cols)
        fit = fitter.fit(frame, noise=noise) if noise is not None else fitter.fit(frame)
    bt = None
    if args.backtest:
        from scaling.fit import backtest

        with _subset_fits():
            bt = backtest(frame, columns=cols, fitter=_approach3(args, cols))
    return fit, bt


def _noise(args: argparse.Namespace, frame: Any, cols: Any) -> Any:
    """The noise the fit weights by: measured from repeated points (``--noise auto``), for
    approach 2, approach 3's grid estimator and Kaplan's forms in N and D; None otherwise."""
    from scaling.fit import normalise
    from scaling.fit.noise import estimate_noise

    weighs = (args.approach == "2" or (args.approach == "3" and args.estimator == "grid")
              or (args.approach == "kaplan" and args.kaplan_form != "compute"))
    if args.noise == "none" or not weighs:
        return None
    return estimate_noise(normalise(frame, cols).frame)


@contextlib.contextmanager
def _subset_fits() -> Iterator[None]:
    """Silence FitWarnings of fits on subsets of the data (folds, the backtest's training part):
    they describe a subset the user did not give."""
    from scaling.fit.data import FitWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        yield


def run(args: argparse.Namespace) -> int:
    from scaling.fit.data import FitWarning
    from scaling.store import atomic_write_json

    check_options(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FitWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy overflow while the optimiser explores
        fit, bt = fit_from_args(args)
    for w in caught:
        if issubclass(w.category, FitWarning):
            print(f"warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if args.out:
        atomic_write_json(args.out, fit.to_dict())
    if args.json:
        out = fit.to_dict(include_draws=False)
        noise = out.pop("info", {}).get("noise")
        if noise is not None:
            out["noise"] = noise
        if bt is not None:
            out["backtest"] = bt
        emit_json(out)
        return 0
    print(fit.summary())
    if fit.form in ("chinchilla", "predictive"):
        top = float(fit.info.get("max_flops") or 1e21)
        for c in (top, 10 * top, 100 * top):
            a = fit.optimal_allocation(c)
            print(f"C = {c:.3g}: N* = {a.params:.4g}, D* = {a.tokens:.4g} ({a.tokens_per_param:.1f} tokens/param)")
    if bt is not None:
        print(
            f"backtest at C = {bt['budget']:.4g}: predicted {bt['predicted_loss']:.4f}, achieved "
            f"{bt['achieved_loss']:.4f} (error {100 * bt['error']:+.2f}%); previous budget "
            f"{100 * bt['baselines']['previous_budget']['error']:+.2f}%, power law on minima "
            f"{100 * bt['baselines']['power_law_on_minima']['error']:+.2f}%"
        )
    if args.out:
        print(f"wrote {args.out}")
    return 0
