"""Predicted interval widths of a design, by simulation, and realised ones on independent draws.

Each simulation draws every run's loss from the prior (``log L = log L_prior(N, D) + sigma eps``)
and fits it as the study does, with N counted both ways (total and non-embedding):

* approach 2 (Hoffmann et al. 2022, sec. 3.2): per budget an OLS parabola of L in log N (and in
  log D), its vertex, refused unless interior (as :func:`scaling.fit.approach2.isoflop_minimum`
  refuses); then OLS ``log N* = c0 + a log C`` with t intervals on ``a`` and on ``log N*`` at the
  target (mean response). Here all simulations are solved at once: the per-budget designs are
  fixed, so each fit is one matrix product.
* approach 3: :class:`scaling.fit.approach3.Approach3` with a bootstrap, as the fit stage runs it:
  percentile intervals on ``a = beta / (alpha + beta)``, on N* at the target and on the loss there.

The predicted width is the median over simulations; :func:`realised_widths` fits independent draws
with the study's own fitters (:class:`~scaling.fit.approach2.Approach2` too), so a test can hold
the fast path to them.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from scaling.convention import PARAM_COUNTS, Convention
from scaling.design.prior import Prior
from scaling.design.space import DesignPoints
from scaling.fit.approach2 import Approach2
from scaling.fit.approach3 import Approach3
from scaling.fit.data import Columns, FitRefusal, FitWarning

Z_LEVEL = 0.975  # two-sided 95% intervals


@dataclass(frozen=True)
class Widths:
    """Median widths of 95% intervals over simulations (``nan`` where none fitted).

    ``exponent``: full width on ``a`` (N* ~ C^a); ``log_n_opt``: on ``ln N*`` at the target
    (``exp`` of it is the hi/lo ratio); ``loss``: on the compute-optimal loss at the target
    (approach 3 only); ``interior``: share of simulations with every budget interior (approach 2)
    or with a fit at all (approach 3).
    """

    approach: str
    count: str
    exponent: float
    log_n_opt: float
    loss: float
    interior: float
    n_sims: int

    @property
    def exponent_half(self) -> float:
        return self.exponent / 2

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exponent_half_width": self.exponent_half}


def draw_log_losses(points: DesignPoints, prior: Prior, n: int, seed: int) -> np.ndarray:
    """``(n, runs)`` simulated log losses."""
    mean = prior.log_loss(points.params(prior.param_convention), points.tokens)
    rng = np.random.default_rng(seed)
    return mean[None, :] + prior.sigma * rng.standard_normal((n, len(mean)))


def _vertices(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OLS parabolas ``y = c0 + c1 u + c2 u^2``, ``u = x - mean x``, of every row of ``y`` (S, n):
    the vertices in ``x`` and whether each curves upward with its vertex inside ``x``'s range."""
    u = x - x.mean()
    coef = y @ np.linalg.pinv(np.column_stack([np.ones_like(u), u, u * u])).T
    c1, c2 = coef[:, 1], coef[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(c2 > 0, -c1 / (2 * c2), np.nan) + x.mean()
    return v, (c2 > 0) & (v > x.min()) & (v < x.max())


def _approach2_batch(points: DesignPoints, count: str, log_loss: np.ndarray, target: float) -> dict[str, np.ndarray]:
    """Approach 2 on every simulation at once: ``a``, the widths, and which fitted."""
    budgets = points.budget
    logn, logd = np.log(points.params(count)), np.log(points.tokens)
    loss = np.exp(log_loss)
    cs = np.unique(budgets)
    log_nopt = np.empty((len(loss), len(cs)))
    ok = np.ones(len(loss), bool)
    for j, c in enumerate(cs):
        g = budgets == c
        vn, in_n = _vertices(logn[g], loss[:, g])
        _, in_d = _vertices(logd[g], loss[:, g])
        best = np.argmin(loss[:, g], axis=1)
        order = logn[g]
        at_edge = (order[best] == order.min()) | (order[best] == order.max())
        ok &= in_n & in_d & ~at_edge & (len(np.unique(order)) >= 3)
        log_nopt[:, j] = vn
    x = np.column_stack([np.ones(len(cs)), np.log(cs)])
    xtx_inv = np.linalg.inv(x.T @ x)
    coef = np.where(ok[:, None], log_nopt, 0.0) @ (x @ xtx_inv)  # (S, 2): OLS of log N* on log C
    df = len(cs) - 2
    resid = np.where(ok[:, None], log_nopt, 0.0) - coef @ x.T
    s2 = (resid * resid).sum(axis=1) / df if df > 0 else np.full(len(loss), np.nan)
    t = float(special.stdtrit(df, Z_LEVEL)) if df > 0 else math.inf
    x0 = np.array([1.0, math.log(target)])
    return {
        "a": coef[:, 1],
        "exponent": 2 * t * np.sqrt(s2 * xtx_inv[1, 1]),
        "log_n_opt": 2 * t * np.sqrt(s2 * float(x0 @ xtx_inv @ x0)),
        "ok": ok,
    }


def _frame(points: DesignPoints, count: str, log_loss: np.ndarray) -> tuple[pd.DataFrame, Columns]:
    frame = pd.DataFrame({"params": points.params(count), "tokens": points.tokens, "flops": points.flops,
                          "budget": points.budget, "loss": np.exp(log_loss)})
    return frame, Columns(convention=Convention(count, points.spec.train.flops_convention))  # type: ignore[arg-type]


def _approach3_one(points: DesignPoints, count: str, log_loss: np.ndarray, target: float, bootstrap: int,
                   seed: int) -> tuple[float, float, float] | None:
    """Approach 3 with a bootstrap on one draw: widths of ``a``, ``ln N*`` and ``L*`` at the target."""
    frame, cols = _frame(points, count, log_loss)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitWarning)
            fit = Approach3(bootstrap=bootstrap, seed=seed, columns=cols).fit(frame)
    except FitRefusal:
        return None
    a_ci = fit.n_exponent()["ci"]
    alloc = fit.allocation(target)
    n_ci = alloc.get("ci", {}).get("params")
    band = fit.predict(alloc["params"], alloc["tokens"], interval="confidence")
    if not a_ci or not n_ci:
        return None
    return (a_ci[1] - a_ci[0], math.log(n_ci[1] / n_ci[0]), float(band["upper"] - band["lower"]))


def _approach2_one(points: DesignPoints, count: str, log_loss: np.ndarray, target: float) -> tuple[float, float] | None:
    """The study's own approach-2 fit on one draw: widths of ``a`` and ``ln N*`` at the target."""
    frame, cols = _frame(points, count, log_loss)
    try:
        fit = Approach2(columns=cols).fit(frame)
    except FitRefusal:
        return None
    lo, hi = fit.n_exponent()["ci"]
    n_lo, n_hi = fit.allocation(target)["ci"]["params"]
    return hi - lo, math.log(n_hi / n_lo)


def _median(x: Any) -> float:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else math.nan


def predict_widths(points: DesignPoints, prior: Prior, target: float, *, sims: int = 200, sims3: int = 0,
                   bootstrap: int = 200, seed: int = 0, counts: tuple[str, ...] = PARAM_COUNTS) -> list[Widths]:
    """Predicted widths for approach 2 (``sims`` simulations, batched) and, with ``sims3 > 0``,
    approach 3 (``sims3`` simulations of ``bootstrap`` resamples each), for each count of N."""
    out = []
    ll = draw_log_losses(points, prior, sims, seed)
    for count in counts:
        r = _approach2_batch(points, count, ll, target)
        ok = r["ok"]
        out.append(Widths("2", count, _median(r["exponent"][ok]), _median(r["log_n_opt"][ok]), math.nan,
                          float(ok.mean()), int(ok.sum())))
    if sims3 > 0:
        ll3 = ll[:sims3]
        for count in counts:
            res = [_approach3_one(points, count, ll3[i], target, bootstrap, seed + i) for i in range(len(ll3))]
            got = [r for r in res if r is not None]
            cols = np.array(got) if got else np.full((0, 3), np.nan)
            out.append(Widths("3", count, _median(cols[:, 0]), _median(cols[:, 1]), _median(cols[:, 2]),
                              len(got) / len(res), len(got)))
    return out


def realised_widths(points: DesignPoints, prior: Prior, target: float, *, draws: int, seed: int,
                    approaches: tuple[str, ...] = ("2",), bootstrap: int = 200,
                    counts: tuple[str, ...] = PARAM_COUNTS) -> list[Widths]:
    """Widths the study's own fitters give on ``draws`` independent draws (seed ``seed``): the
    median over draws, to set beside :func:`predict_widths` of another seed."""
    ll = draw_log_losses(points, prior, draws, seed)
    out = []
    for count in counts:
        if "2" in approaches:
            res = [_approach2_one(points, count, ll[i], target) for i in range(draws)]
            got = [r for r in res if r is not None]
            cols = np.array(got) if got else np.full((0, 2), np.nan)
            out.append(Widths("2", count, _median(cols[:, 0]), _median(cols[:, 1]), math.nan, len(got) / draws, len(got)))
        if "3" in approaches:
            res3 = [_approach3_one(points, count, ll[i], target, bootstrap, seed + i) for i in range(draws)]
            got3 = [r for r in res3 if r is not None]
            c3 = np.array(got3) if got3 else np.full((0, 3), np.nan)
            out.append(Widths("3", count, _median(c3[:, 0]), _median(c3[:, 1]), _median(c3[:, 2]), len(got3) / draws, len(got3)))
    return out
