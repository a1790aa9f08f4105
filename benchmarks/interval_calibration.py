"""Are the 95% intervals of approaches 2 and 3 as wide as the spread of their estimates? Synthetic truth, known noise.

    python benchmarks/interval_calibration.py [--sims 40] [--bootstrap 200] [--sigma 0.01] [--outliers 2] [--rise 10]

Each simulation draws an IsoFLOP grid from Hoffmann et al.'s approach-3 law (eq. 10: E = 1.69,
A = 406.4, B = 410.7, alpha = 0.34, beta = 0.28) at 4 budgets (1e18-3e19 FLOPs), 6 sizes each
(1/3x-3x the optimum), ``--repeats`` seeds per point with Gaussian loss noise ``--sigma``; measures
the noise from the repeats, fits approach 3 with it (``fit(noise=)``: weights and a bootstrap
that redraws the losses around the fit) and approach 2 with it (weighted parabolas, the means
redrawn), and keeps the estimate and the 95% interval of the allocation exponent
``a = beta / (alpha + beta)`` (approach 2: the slope of log N* on log C).

``--rise R`` makes the noise grow toward few tokens per parameter r = D/N, as on the CPU runs:
``sd(r) = sigma sqrt(1 + R^2 (r_min / r)^2)`` (R times sigma at the grid's fewest, ~sigma at its
optimum). The fits are then run with the noise model of :mod:`scaling.fit.noise` (a trend in r
where its likelihood-ratio test adopts it) and, as the baseline, with one constant noise pooled
over every repeat (``estimate_noise(trend=False)``).

``--outliers K`` moves every seed of K points (the largest size of the first K budgets, where
short runs lose steeply) 15 noise sds above the law: those points bias the estimate, so no
interval built on the noise holds the truth at 95% (approach 3's widening by the lack of fit
brings it to about half); the lack-of-fit test, which rejects the law, and the points it names
(``info["noise"]["lack_of_fit"]["worst_points"]``) are what to read then.

Printed, each beside its baseline from the same simulations:

* the median interval width beside the realised spread of the estimates over the simulations,
  ``2 x 1.96 x sd(a_hat)`` (the width a calibrated interval has), and their ratio (target: 1);
* how often the interval holds the true ``a`` (target: 0.95);
* the same two for approach 3 without the noise (its bootstrap resamples the runs), and for
  approach 2 with and without it (without: the OLS t interval through the vertices).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scaling.fit import Approach2, Approach3  # noqa: E402
from scaling.fit.data import FitRefusal, FitWarning  # noqa: E402
from scaling.fit.noise import estimate_noise  # noqa: E402

E, A, ALPHA, B, BETA = 1.69, 406.4, 0.34, 410.7, 0.28  # Hoffmann et al. 2022, eq. 10
BUDGETS = (1e18, 3e18, 1e19, 3e19)
TRUE_A = BETA / (ALPHA + BETA)


def n_opt(c: float) -> float:
    """Eq. 4 of Hoffmann et al. 2022: N* = G (C / 6)^(beta / (alpha + beta))."""
    g = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
    return g * (c / 6) ** TRUE_A


def grid(rng: np.random.Generator, sigma: float, repeats: int, outliers: int = 0, sizes: int = 6,
         spread: float = 3.0, rise: float = 0.0) -> pd.DataFrame:
    rows = []
    r_min = min(c / (6 * (n_opt(c) * spread) ** 2) for c in BUDGETS)  # the fewest tokens per parameter
    for i, c in enumerate(BUDGETS):
        for j, n in enumerate(n_opt(c) * np.geomspace(1 / spread, spread, sizes)):
            d = c / (6 * n)
            off = 15 * sigma if i < outliers and j == sizes - 1 else 0.0
            sd = sigma * np.sqrt(1 + rise**2 * (r_min / (d / n)) ** 2)
            for _ in range(repeats):
                loss = E + A / n**ALPHA + B / d**BETA + off + sd * rng.standard_normal()
                rows.append({"params": n, "tokens": d, "flops": c, "budget": c, "loss": loss})
    return pd.DataFrame(rows)


def _one(approach: str, data: pd.DataFrame, bootstrap: int, seed: int, noise_model: str) -> tuple[float, float, float]:
    """The estimate of ``a`` and its 95% interval, with the noise measured as ``noise_model`` says
    (``trend``: the study's model; ``constant``: one pooled value; ``none``)."""
    noise = None if noise_model == "none" else estimate_noise(data, trend=noise_model == "trend")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        if approach == "2":
            fit = Approach2(bootstrap=bootstrap, seed=seed).fit(data, noise=noise)
            e = fit.n_exponent()
            return e["a"], *e["ci"]
        fit = Approach3(bootstrap=bootstrap, seed=seed).fit(data, noise=noise)
    lo, hi = fit.conf_int()["a"]
    return fit.params["beta"] / (fit.params["alpha"] + fit.params["beta"]), lo, hi


def simulate(approach: str, sims: int, bootstrap: int, sigma: float, repeats: int, noise_model: str,
             outliers: int = 0, rise: float = 0.0) -> dict[str, float]:
    est, widths, hits, refused = [], [], 0, 0
    for k in range(sims):
        data = grid(np.random.default_rng(1000 + k), sigma, repeats, outliers, rise=rise)
        try:
            a, lo, hi = _one(approach, data, bootstrap, k, noise_model)
        except FitRefusal:  # approach 2: a budget's lowest loss fell at an edge in this draw
            refused += 1
            continue
        est.append(a)
        widths.append(hi - lo)
        hits += lo <= TRUE_A <= hi
    spread = 2 * 1.96 * float(np.std(est, ddof=1))
    width = float(np.median(widths))
    return {"width": width, "spread": spread, "ratio": width / spread, "coverage": hits / len(est), "refused": refused}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sims", type=int, default=40)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--sigma", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--outliers", type=int, default=0)
    ap.add_argument("--rise", type=float, default=0.0)
    args = ap.parse_args()
    print(f"{args.sims} simulations: 4 budgets x 6 sizes x {args.repeats} seeds, noise {args.sigma}"
          + (f" rising {args.rise}x toward few tokens per parameter" if args.rise else "")
          + f", bootstrap {args.bootstrap}, {args.outliers} points off the law; true a = {TRUE_A:.4f}")
    print(f"{'fit':<28}{'median 95% width':>18}{'realised 2x1.96 sd':>20}{'ratio':>8}{'coverage':>10}{'refused':>9}{'s':>6}")
    rows = [("3", "3 with the measured noise", "trend"), ("3", "3 without (runs resampled)", "none"),
            ("2", "2 with the measured noise", "trend"), ("2", "2 without (OLS t)", "none")]
    if args.rise:
        rows[1:1] = [("3", "3 with one constant noise", "constant")]
        rows[-1:-1] = [("2", "2 with one constant noise", "constant")]
    for approach, label, noise_model in rows:
        t = time.time()
        r = simulate(approach, args.sims, args.bootstrap, args.sigma, args.repeats, noise_model, args.outliers,
                     args.rise)
        print(f"{label:<28}{r['width']:>18.4f}{r['spread']:>20.4f}{r['ratio']:>8.2f}{r['coverage']:>10.2f}"
              f"{r['refused']:>9}{time.time() - t:>6.0f}")


if __name__ == "__main__":
    main()
