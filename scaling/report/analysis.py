"""The few numbers the report derives from the store itself, to draw what the fit artifacts summarise.

* IsoFLOP parabola per budget: ``L = c0 + c1 x + c2 x^2`` in ``x = ln N`` (Hoffmann et al. 2022,
  approach 2), its minimum ``x* = -c1 / (2 c2)`` and the minimum's standard error by the delta
  method from the least-squares covariance (residual variance on ``n - 3`` degrees of freedom).
* Frontier band: a seeded non-parametric bootstrap that resamples the runs within each budget,
  refits every parabola and the power law ``ln N* = ln G + a ln C`` through the minima, and takes
  the 2.5 and 97.5 percentiles of ``N*(C)`` at each C. Used only when the fit artifact carries no
  band of its own.

Pure: numpy and pandas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Valley:
    """One budget's IsoFLOP parabola in ln N and its minimum."""

    budget: float
    coef: tuple[float, float, float]  # c2, c1, c0 (numpy.polyfit order)
    n_opt: float
    log_n_se: float  # standard error of ln N*
    loss_opt: float
    interior: bool
    n_range: tuple[float, float]
    tokens_opt: float  # D at N*, from the runs' ln D against ln N within the budget


def parabola(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares quadratic in x; returns coefficients and SE of the vertex (nan if undefined)."""
    coef, cov = np.polyfit(x, y, 2, cov="unscaled")
    dof = len(x) - 3
    c2, c1, _ = coef
    if dof <= 0 or c2 <= 0:
        return coef, float("nan")
    resid = y - np.polyval(coef, x)
    cov = cov * float(resid @ resid) / dof
    # x* = -c1 / (2 c2): gradient w.r.t. (c2, c1)
    g = np.array([c1 / (2 * c2**2), -1 / (2 * c2)])
    var = float(g @ cov[:2, :2] @ g)
    return coef, float(np.sqrt(max(var, 0.0)))


def valleys(runs: pd.DataFrame, n_col: str, loss_col: str) -> list[Valley]:
    """The IsoFLOP parabola of every budget with at least three finished runs."""
    out: list[Valley] = []
    if runs.empty or "budget" not in runs or n_col not in runs:
        return out
    for budget, g in runs.dropna(subset=["budget", n_col, loss_col]).groupby("budget"):
        g = g[(g[n_col] > 0)]
        if g[n_col].nunique() < 3:
            continue
        x = np.log(g[n_col].to_numpy(float))
        y = g[loss_col].to_numpy(float)
        coef, se = parabola(x, y)
        c2, c1, _ = coef
        xs = -c1 / (2 * c2) if c2 > 0 else float("nan")
        interior = bool(c2 > 0 and x.min() < xs < x.max())
        if not interior:  # no valley inside the sizes tried: report the best run, not an extrapolation
            xs, se = float(x[np.argmin(y)]), float("nan")
        out.append(
            Valley(
                budget=float(budget),
                coef=(float(coef[0]), float(coef[1]), float(coef[2])),
                n_opt=float(np.exp(xs)),
                log_n_se=se,
                loss_opt=float(np.polyval(coef, xs)) if interior else float(y.min()),
                interior=interior,
                n_range=(float(np.exp(x.min())), float(np.exp(x.max()))),
                tokens_opt=_tokens_at(g, x, xs),
            )
        )
    return out


def _tokens_at(g: pd.DataFrame, x: np.ndarray, xs: float) -> float:
    """D at ln N = xs: within one budget ln D is linear in ln N (exactly, D = C/(6N), when N counts
    parameters as the budget does; nearly, otherwise)."""
    if "tokens" not in g or g["tokens"].isna().any():
        return float("nan")
    slope, icpt = np.polyfit(x, np.log(g["tokens"].to_numpy(float)), 1)
    return float(np.exp(icpt + slope * xs))


def power_law(c: np.ndarray, n: np.ndarray) -> tuple[float, float]:
    """OLS of ln n on ln c: returns (coef G, exponent a) of n = G c^a."""
    a, lg = np.polyfit(np.log(c), np.log(n), 1)
    return float(np.exp(lg)), float(a)


def bootstrap_frontier(
    runs: pd.DataFrame,
    n_col: str,
    loss_col: str,
    c_grid: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, np.ndarray] | None:
    """2.5/50/97.5 percentiles of N*(C) on ``c_grid`` and the exponent samples (see module doc)."""
    rng = np.random.default_rng(seed)
    interior = {v.budget for v in valleys(runs, n_col, loss_col) if v.interior}
    lc, mins, ok = [], [], np.ones(n_boot, dtype=bool)
    for budget, g in runs.dropna(subset=["budget", n_col, loss_col]).groupby("budget"):
        if float(budget) not in interior:  # a budget without an interior minimum has no N* to resample
            continue
        x = np.log(g[n_col].to_numpy(float))
        y = g[loss_col].to_numpy(float)
        x0 = x.mean()  # centred, so the normal equations stay well conditioned
        idx = rng.integers(0, len(x), (n_boot, len(x)))
        xs, c2, valid = _vertices(x[idx] - x0, y[idx])
        xs = xs + x0
        ok &= valid & (c2 > 0) & (xs >= x.min()) & (xs <= x.max())
        lc.append(np.log(budget))
        mins.append(xs)
    if len(lc) < 2:
        return None
    # per resample, OLS of the vertices on ln C: slope a and intercept ln G
    lc_arr, m = np.array(lc), np.array(mins).T[ok]
    a = ((lc_arr - lc_arr.mean()) * (m - m.mean(axis=1, keepdims=True))).sum(axis=1) / ((lc_arr - lc_arr.mean()) ** 2).sum()
    lg = m.mean(axis=1) - a * lc_arr.mean()
    curves = np.exp(lg[:, None] + a[:, None] * np.log(c_grid)[None, :])
    exps = a
    if len(curves) < max(20, n_boot // 5):
        return None
    lo, mid, hi = np.percentile(curves, [2.5, 50, 97.5], axis=0)
    return {"lo": lo, "mid": mid, "hi": hi, "exponents": exps}


def _vertices(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares parabolas of many resamples at once (rows of x, y): vertex, c2, solvable."""
    X = np.stack([x**2, x, np.ones_like(x)], axis=-1)  # (B, n, 3)
    xtx = np.einsum("bni,bnj->bij", X, X)
    xty = np.einsum("bni,bn->bi", X, y)
    valid = np.linalg.cond(xtx) < 1e12  # fewer than three distinct sizes drawn
    xtx[~valid] = np.eye(3)
    c = np.linalg.solve(xtx, xty[..., None])[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = -c[:, 1] / (2 * c[:, 0])
    return xs, c[:, 0], valid & np.isfinite(xs)
