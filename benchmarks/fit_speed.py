"""Speed of the approach-3 Huber fit and bootstrap on Epoch's 240 points, beside plain scipy.

    python benchmarks/fit_speed.py [--baseline-starts 90] [--baseline-resamples 100] [--full]

Ours: ``Approach3(estimator="grid")`` (variable-projection search over Hoffmann's grid, batched
Levenberg-Marquardt, polished to a standstill) and a 4,000-resample bootstrap (batched, warm-started).

Baselines, written here as a user would: one ``scipy.optimize.minimize(method="L-BFGS-B")`` per
start of Hoffmann's 4,500-start grid on the summed Huber loss (numerical gradient, as Besiroglu
et al. ran it), keeping the best; and one ``minimize(method="BFGS")`` per bootstrap resample from
Hoffmann's estimates. A full baseline grid takes minutes, so by default it runs a seeded random
subset of the starts (and of the resamples) and extrapolates linearly to the full count; the
output says so. ``--full`` runs every start and every resample, and our batched solver from all 4,500 starts. Wall and CPU seconds are both
printed: on a busy machine the CPU seconds are the steadier figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from scipy.optimize import minimize

from analysis.chinchilla_replication import load
from scaling.fit import Approach3
from scaling.fit.approach3 import HOFFMANN_THETA
from scaling.fit.optim import huber_grid

DELTA = 1e-3


def huber_objective(theta: np.ndarray, logn: np.ndarray, logd: np.ndarray, logl: np.ndarray) -> float:
    """Sum over points of Huber(LSE(a - alpha log N, b - beta log D, e) - log L), delta 1e-3."""
    a, b, e, alpha, beta = theta
    pred = np.log(np.exp(a - alpha * logn) + np.exp(b - beta * logd) + np.exp(e))
    r = pred - logl
    return float(np.sum(np.where(np.abs(r) <= DELTA, 0.5 * r * r, DELTA * (np.abs(r) - 0.5 * DELTA))))


def baseline_grid(starts: np.ndarray, logn, logd, logl) -> tuple[float, np.ndarray]:
    best, best_x = np.inf, None
    with np.errstate(all="ignore"):
        for x0 in starts:
            res = minimize(huber_objective, x0, args=(logn, logd, logl), method="L-BFGS-B")
            if res.success and res.fun < best:
                best, best_x = float(res.fun), res.x
    return best, best_x


def baseline_bootstrap(indices: np.ndarray, logn, logd, logl) -> np.ndarray:
    out = []
    with np.errstate(all="ignore"):
        for idx in indices:
            res = minimize(huber_objective, HOFFMANN_THETA, args=(logn[idx], logd[idx], logl[idx]), method="BFGS")
            out.append(res.x)
    return np.array(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline-starts", type=int, default=90, help="random subset of the 4,500 starts")
    p.add_argument("--baseline-resamples", type=int, default=100, help="random subset of the 4,000 resamples")
    p.add_argument("--resamples", type=int, default=4000)
    p.add_argument("--full", action="store_true", help="run the whole baseline grid and bootstrap")
    args = p.parse_args(argv)

    data = load()
    logn = np.log(data["params"].to_numpy())
    logd = np.log((data["flops"] / (6 * data["params"])).to_numpy())
    logl = np.log(data["loss"].to_numpy())
    Approach3().fit(data.iloc[::10])  # warm imports and caches outside the timings

    t, c = time.perf_counter(), time.process_time()
    ours = Approach3(estimator="grid").fit(data)
    t_ours, c_ours = time.perf_counter() - t, time.process_time() - c

    grid = huber_grid()
    rng = np.random.default_rng(0)
    k = len(grid) if args.full else min(args.baseline_starts, len(grid))
    subset = grid if args.full else grid[np.sort(rng.choice(len(grid), k, replace=False))]
    t, c = time.perf_counter(), time.process_time()
    base_best, base_x = baseline_grid(subset, logn, logd, logl)
    t_base = (time.perf_counter() - t) * len(grid) / k
    c_base = (time.process_time() - c) * len(grid) / k

    print(f"Huber grid fit, Epoch's {len(data)} points (delta 1e-3, summed)")
    print(f"  ours (variable projection + batched LM): {t_ours:8.2f} s (CPU {c_ours:.2f} s)   objective {ours.objective:.8e}")
    how = "all 4,500 starts" if args.full else f"{k} of 4,500 starts (seeded random subset), x{len(grid) / k:.0f}"
    print(f"  scipy L-BFGS-B per start ({how}): {t_base:8.1f} s (CPU {c_base:.1f} s)   objective {base_best:.8e}")
    print(
        f"  speed-up: {t_base / t_ours:.0f}x wall, {c_base / c_ours:.0f}x CPU; "
        f"objectives differ by {abs(ours.objective - base_best):.2e}"
    )
    if args.full:  # our batched solver from every one of the 4,500 starts too
        t, c = time.perf_counter(), time.process_time()
        every = Approach3(estimator="grid", search="hoffmann").fit(data)
        print(
            f"  ours from all 4,500 starts (batched LM): {time.perf_counter() - t:8.2f} s "
            f"(CPU {time.process_time() - c:.2f} s)   objective {every.objective:.8e}"
        )
    if base_x is not None:
        print(f"  alpha, beta: ours {ours.params['alpha']:.5f}, {ours.params['beta']:.5f}; "
              f"baseline {base_x[3]:.5f}, {base_x[4]:.5f}")

    t, c = time.perf_counter(), time.process_time()
    boot = Approach3(estimator="grid", bootstrap=args.resamples, seed=0).fit(data)
    t_boot = time.perf_counter() - t - t_ours  # the point estimate is timed above
    c_boot = time.process_time() - c - c_ours
    m = args.resamples if args.full else min(args.baseline_resamples, args.resamples)
    idx = np.random.default_rng(1).integers(0, len(data), size=(m, len(data)))
    t, c = time.perf_counter(), time.process_time()
    draws = baseline_bootstrap(idx, logn, logd, logl)
    t_bboot = (time.perf_counter() - t) * args.resamples / m
    c_bboot = (time.process_time() - c) * args.resamples / m
    print(f"\nBootstrap, {args.resamples} resamples")
    print(f"  ours (batched, warm-started): {t_boot:8.2f} s (CPU {c_boot:.2f} s)   se(alpha) {boot.se['alpha']:.4f}, se(beta) {boot.se['beta']:.4f}")
    how = "all" if args.full else f"{m} resamples timed, x{args.resamples / m:.0f}"
    print(f"  scipy BFGS per resample ({how}): {t_bboot:8.1f} s (CPU {c_bboot:.1f} s)   se(alpha) {np.std(draws[:, 3], ddof=1):.4f}")
    print(f"  speed-up: {t_bboot / t_boot:.0f}x wall, {c_bboot / c_boot:.0f}x CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
