"""What ``scaling design`` buys: 95% interval widths of the designed grid beside the plain 4x5 grid of
the same compute, predicted by simulation and realised by fitting.

    python benchmarks/design_gain.py [--pilot studies/quickstart_old] [--designed studies/quickstart] [--only synthetic|cpu|trend]

(a) Synthetic truth: a Chinchilla-form law in non-embedding N (E 3.2, A 29, alpha 0.44, B 2.8e5,
    beta 0.99: a = 0.69, near what the CPU ladder reaches on the built-in corpus) with noise sd
    0.006 of log loss, on the ladder of ``sweeps/quickstart.yaml``. Allowance: the FLOPs of the plain
    grid, ``sweeps/quickstart_4x5.yaml``.
    Predicted: geometric-mean widths over simulations (approach 2: 200; approach 3: ``--draws3`` with 200
    bootstrap resamples each). Realised: the study's own fitters on independent draws (other seeds).
    (a2) The families at the same allowance, criterion n_opt: the best IsoFLOP design without
    repeats, the best with 1-2 repeated seeds at each budget's optimum (their runs priced in; the
    fits then use the noise they measure), and the best WSD-branch design (approach 3 only),
    predicted and realised beside the plain grid, with realised / predicted and plain / design.
(b) This machine's CPU study: the pilot (a finished ``scaling run sweeps/quickstart_4x5.yaml --out
    studies/quickstart_old``) is
    the prior (its approach-3 fit, its residual scale as the noise) and the plain grid; its own fits
    give the realised widths. With ``--designed``, a finished study of the designed grid too.

(c) ``--only trend``: the synthetic truth with a noise that rises toward few tokens per parameter (as
    on the CPU runs): approach 2's predicted half-widths with one constant noise (the baseline) and
    with the trend, beside those the study's fitters realise under it.

Printed per approach and count of N: the half-width of the interval on the allocation exponent a
and the hi/lo ratio of N* at the target (1.6e12 FLOPs), designed and plain, plain / designed, and
the share of draws that fitted (approach 2 refuses a draw with a budget not interior).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling.design import Prior, choose_design, load_prior, predict_widths, realised_widths
from scaling.design.space import Allowance, Design, Pricing, design_points, spec_points
from scaling.fit.artifacts import read_fit
from scaling.fit.noise import NoiseTrend
from scaling.laws.base import ParametricLaw
from scaling.sweep.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
PLAIN_SPEC = ROOT / "sweeps" / "quickstart_4x5.yaml"  # the plain 4x5 grid: baseline and allowance
TARGET = 1.6e12
TRUTH = dict(E=3.2, A=29.0, B=2.8e5, alpha=0.44, beta=0.99)
SIGMA = 0.006
ROW = "{:<34} {:>10} {:>10} {:>8}   {:>10} {:>10} {:>8}   {:>9}"


def _row(label: str, d: object, p: object) -> str:
    da, pa = d.exponent_half, p.exponent_half
    dn, pn = math.exp(d.log_n_opt), math.exp(p.log_n_opt)
    return ROW.format(label, f"{da:.3f}", f"{pa:.3f}", f"{pa / da:.2f}x", f"{dn:.3g}x", f"{pn:.3g}x",
                      f"{math.log(pn) / math.log(dn):.2f}x", f"{d.interior:.0%}/{p.interior:.0%}")


def _table(title: str, designed: list, plain: list) -> None:
    print(f"\n{title}")
    print(ROW.format("", "a +- des.", "a +- plain", "ratio", "N* des.", "N* plain", "ln ratio", "fitted"))
    for d in designed:
        p = next((w for w in plain if w.approach == d.approach and w.count == d.count), None)
        if p is not None and math.isfinite(d.exponent) and math.isfinite(p.exponent):
            print(_row(f"approach {d.approach}, N {d.count}", d, p))


def synthetic(draws: int, draws3: int) -> None:
    base = load_spec(ROOT / "sweeps" / "quickstart.yaml")
    law = ParametricLaw("synthetic", "benchmark truth", **TRUTH, param_convention="non_embedding",
                        flops_convention="6N_non_embedding")
    prior = Prior(law, SIGMA, "synthetic", "assumed")
    flops = spec_points(load_spec(PLAIN_SPEC), Pricing()).cost["flops"]
    t = time.perf_counter()
    ch = choose_design(base, prior, Allowance("flops", float(flops)), Pricing(), TARGET, criterion="exponent",
                       sims=200, sims3=draws3, bootstrap=200, seed=0, family={"min_steps": 150}, families=("isoflop",))
    print(f"(a) synthetic truth, allowance {flops:.3g} FLOPs (the plain 4x5 grid's): {ch.considered} designs, "
          f"{time.perf_counter() - t:.0f} s to choose")
    print(f"  designed: {ch.chosen.design.describe()}, {ch.chosen.cost['flops']:.3g} FLOPs")
    print(f"  plain:    {ch.plain.design.describe()}, {ch.plain.cost['flops']:.3g} FLOPs")
    _table("  predicted (simulation, seed 0)", ch.chosen_widths, ch.plain_widths)
    real_d = realised_widths(ch.chosen, prior, TARGET, draws=draws, seed=1000, approaches=("2",))
    real_p = realised_widths(ch.plain, prior, TARGET, draws=draws, seed=2000, approaches=("2",))
    real_d += realised_widths(ch.chosen, prior, TARGET, draws=draws3, seed=3000, approaches=("3",))
    real_p += realised_widths(ch.plain, prior, TARGET, draws=draws3, seed=4000, approaches=("3",))
    _table(f"  realised (study fitters, independent draws: {draws} approach 2, {draws3} approach 3)", real_d, real_p)
    print("\n  realised / predicted, designed grid:")
    for r in real_d:
        p = next(w for w in ch.chosen_widths if w.approach == r.approach and w.count == r.count)
        print(f"    approach {r.approach}, N {r.count:<14} a: {r.exponent / p.exponent:.2f}   ln N*: {r.log_n_opt / p.log_n_opt:.2f}")
    _families(base, prior, flops, draws, draws3)


FAM_ROW = "{:<30} {:<16} {:>9} {:>9} {:>6} {:>7}   {:>8} {:>8} {:>6} {:>7}"


def _families(base, prior, flops: float, draws: int, draws3: int) -> None:
    """The families side by side at the same allowance: the plain grid, the best IsoFLOP design
    without repeats, the best with repeats (1-2 seeds at each budget's optimum, priced in), and
    the best WSD-branch design; predicted and realised widths, and plain / design (realised)."""
    allowance = Allowance("flops", float(flops))
    kw = dict(criterion="n_opt", sims=200, sims3=draws3, bootstrap=200, seed=0)
    t = time.perf_counter()
    none = choose_design(base, prior, allowance, Pricing(), TARGET, family={"min_steps": 150, "repeats": (0,)},
                         families=("isoflop",), **kw)
    rep = choose_design(base, prior, allowance, Pricing(), TARGET, family={"min_steps": 150, "repeats": (1, 2)},
                        families=("isoflop",), **kw)
    wsd = choose_design(base, prior, allowance, Pricing(), TARGET, family={"min_steps": 150}, families=("wsd",), **kw)
    print(f"\n(a2) families at {flops:.3g} FLOPs, criterion n_opt ({time.perf_counter() - t:.0f} s to choose); "
          f"realised: {draws} draws approach 2, {draws3} approach 3")
    rows = [("plain 4x5", none.plain, none.plain_widths), ("IsoFLOP, no repeats", none.chosen, none.chosen_widths),
            ("IsoFLOP with repeats", rep.chosen, rep.chosen_widths), ("WSD branches", wsd.chosen, wsd.chosen_widths)]
    real = {}
    for i, (label, p, _) in enumerate(rows):
        real[label] = (realised_widths(p, prior, TARGET, draws=draws, seed=5000 + i, approaches=("2",))
                       + realised_widths(p, prior, TARGET, draws=draws3, seed=6000 + i, approaches=("3",)))
        print(f"  {label:<22} {p.design.describe()}; {p.cost['flops']:.3g} FLOPs, {len(p.fitted)} points")
    print(FAM_ROW.format("", "fit, N", "a+- pred", "a+- real", "r/p", "plain/", "lnN* pr", "lnN* re", "r/p", "plain/"))
    plain_real = {(w.approach, w.count): w for w in real["plain 4x5"]}
    for label, _, pred in rows:
        for r in real[label]:
            w = next(x for x in pred if x.approach == r.approach and x.count == r.count)
            q = plain_real.get((r.approach, r.count))
            print(FAM_ROW.format(label, f"{r.approach}, {r.count}", f"{w.exponent_half:.3f}", f"{r.exponent_half:.3f}",
                                 f"{r.exponent / w.exponent:.2f}", f"{q.exponent / r.exponent:.2f}x" if q else "-",
                                 f"{w.log_n_opt:.3f}", f"{r.log_n_opt:.3f}", f"{r.log_n_opt / w.log_n_opt:.2f}",
                                 f"{q.log_n_opt / r.log_n_opt:.2f}x" if q else "-"))


def _study_widths(study: Path) -> list:
    """The study's own fits as widths (exponent and N* at the target intervals)."""
    from scaling.design.simulate import Widths

    out = []
    for kind, approach in (("approach2", "2"), ("approach3", "3")):
        for count in ("total", "non_embedding"):
            fit = read_fit(study, kind, count)
            if fit is None:
                continue
            lo, hi = fit.n_exponent()["ci"]
            n_lo, n_hi = fit.allocation(TARGET)["ci"]["params"]
            out.append(Widths(approach, count, hi - lo, math.log(n_hi / n_lo), math.nan, 1.0, 1))
    return out


def cpu_study(pilot: Path, designed: Path | None, draws3: int) -> None:
    fit = pilot / "fit" / "approach3_non_embedding.json"
    if not fit.exists():
        raise SystemExit(f"--pilot {pilot}: no finished study there; make it with `scaling run "
                         f"sweeps/quickstart_4x5.yaml --out {pilot}` (a whole study, 10-15 min on 2 cores), or run --only synthetic")
    prior = load_prior(f"fit:{fit}")
    print(f"\n(b) CPU study: prior {pilot} approach 3 (N non-embedding), noise {prior.sigma:.4f} ({prior.sigma_source})")
    for label, study in (("pilot (plain 4x5)", pilot), ("designed", designed)):
        if study is None:
            continue
        pts = spec_points(load_spec(study), Pricing())
        pred = predict_widths(pts, prior, TARGET, sims=200, sims3=draws3, bootstrap=200, seed=0)
        real = _study_widths(study)
        print(f"  {label}: {pts.design.describe()}, {pts.cost['flops']:.3g} FLOPs")
        print(ROW.format("", "a +- pred", "a +- real", "real/pred", "N* pred", "N* real", "ln r/p", ""))
        for r in real:
            p = next(w for w in pred if w.approach == r.approach and w.count == r.count)
            print(ROW.format(f"approach {r.approach}, N {r.count}", f"{p.exponent_half:.3f}", f"{r.exponent_half:.3f}",
                             f"{r.exponent / p.exponent:.2f}x", f"{math.exp(p.log_n_opt):.3g}x",
                             f"{math.exp(r.log_n_opt):.3g}x", f"{r.log_n_opt / p.log_n_opt:.2f}x", ""))


# The noise trend in tokens per parameter of tests/test_design_noise.py: sd 0.14 of the loss at 10,
# 0.018 at 40, a floor of 0.01 (the shape of the quickstart's CPU runs).
TREND = NoiseTrend(floor=0.01, rise=0.05, r_ref=20.0, slope=-1.5, r_lo=5.0, r_hi=3000.0, p_value=0.0)
TREND_ROW = "{:<44} {:<14} {:>10} {:>10} {:>10} {:>10} {:>8}"


def trend(draws: int) -> None:
    """(c) Under a noise that rises toward few tokens per parameter: the grid a one-constant
    simulation prefers and a grid repeating each optimum and largest size, each predicted with the
    constant (the baseline), predicted with the trend (each simulated study fitting its own trend
    and redrawing its own resamples), and realised by the study's fitters on draws with the trend."""
    warnings.simplefilter("ignore", RuntimeWarning)  # a wild resample's power law overflows; it is dropped
    base = load_spec(ROOT / "sweeps" / "quickstart.yaml")
    law = ParametricLaw("synthetic", "benchmark truth", **TRUTH, param_convention="non_embedding",
                        flops_convention="6N_non_embedding")
    with_trend = Prior(law, SIGMA, "synthetic", "assumed", trend=TREND)
    budgets = (1.25e10, 2.5e10, 5e10, 1e11, 2e11)
    repeated = design_points(base, Design(budgets, ((0, 2, 4), (1, 3, 5), (2, 4, 6), (3, 5, 7), (5, 7, 9)),
                                          "5x3 stride 2", 2, repeat_at=("optimum", "largest")), Pricing(), with_trend)
    c = repeated
    level = float(np.median(with_trend.log_sd(c.params("non_embedding"), c.tokens, c.flops)))
    constant = Prior(law, level, "synthetic", "assumed")
    naive = choose_design(base, constant, Allowance("flops", 3e12), Pricing(), TARGET, criterion="exponent", sims=120,
                          sims3=0, seed=0, family={"min_steps": 150, "n_budgets": (5,), "repeats": (0,)}).chosen
    print(f"\n(c) noise rising toward few tokens per parameter (sd {TREND.sd_at(10.0):.3g} of the loss at D/N = 10, "
          f"{TREND.sd_at(300.0):.3g} at 300); the constant: its median over the runs, sd of log L {level:.4f}; "
          f"realised: {draws} draws")
    print(TREND_ROW.format("", "N", "a+- const", "a+- trend", "a+- real", "real/const", "real/tr"))
    for label, p in ((f"constant's choice: {naive.design.describe()}", naive),
                     ("5x3, 2 seeds at each optimum and largest", repeated)):
        for count in ("total", "non_embedding"):
            got = [next(w for w in ws if w.approach == "2") for ws in (
                predict_widths(p, constant, TARGET, sims=200, seed=0, counts=(count,)),
                predict_widths(p, with_trend, TARGET, sims=200, seed=0, counts=(count,)),
                realised_widths(p, with_trend, TARGET, draws=draws, seed=202, counts=(count,)))]
            print(TREND_ROW.format(label[:44], count, *(f"{w.exponent_half:.3f}" for w in got),
                                   f"{got[2].exponent / got[0].exponent:.2f}", f"{got[2].exponent / got[1].exponent:.2f}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pilot", type=Path, default=ROOT / "studies" / "quickstart_old",
                    help="a finished study of the old 4x5 quickstart grid")
    ap.add_argument("--designed", type=Path, help="a finished study of the designed grid")
    ap.add_argument("--draws", type=int, default=40, help="independent draws, approach 2")
    ap.add_argument("--draws3", type=int, default=8, help="simulations and draws, approach 3 (each a 200-resample bootstrap)")
    ap.add_argument("--only", choices=("synthetic", "cpu", "trend"), help="run one part")
    a = ap.parse_args()
    if a.only == "trend":
        trend(a.draws)
        return
    if a.only != "cpu":
        synthetic(a.draws, a.draws3)
    if a.only == "synthetic":
        return
    cpu_study(a.pilot, a.designed, a.draws3)


if __name__ == "__main__":
    main()
