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
from scaling.fit.noise import NoiseEstimate, estimate_noise

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
    """``(n, points)`` simulated log losses: the prior's law at each point's own (N, D) (a WSD
    branch's too) plus noise, of which the branches of one trunk share ``prior.branch_share``."""
    mean = prior.log_loss(points.params(prior.param_convention), points.tokens)
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((n, len(mean)))
    trunk = points.trunk
    if (trunk >= 0).any():
        shared = rng.standard_normal((n, int(trunk.max()) + 1))
        s = prior.branch_share
        eps = np.where(trunk >= 0, math.sqrt(1 - s) * eps + math.sqrt(s) * shared[:, np.maximum(trunk, 0)], eps)
    return mean[None, :] + prior.sigma * eps


def _vertices(x: np.ndarray, y: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parabolas ``y = c0 + c1 u + c2 u^2``, ``u = x - mean x``, of every row of ``y`` (S, points)
    by least squares weighted by ``n`` (the runs averaged in each point; all 1: OLS; the noise of a
    budget is one sigma, so only the ratios matter): the vertices in ``x``, whether each curves
    upward with its vertex inside ``x``'s range, and ``q`` with ``var(vertex) = sigma^2 q``
    (delta method on ``(X^T diag(n) X)^-1``)."""
    u = x - x.mean()
    design = np.column_stack([np.ones_like(u), u, u * u])
    inv = np.linalg.pinv(design.T @ (n[:, None] * design))
    coef = y @ (n[:, None] * design @ inv)
    c1, c2 = coef[:, 1], coef[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(c2 > 0, -c1 / (2 * c2), np.nan)
        g = np.stack([-1 / (2 * c2), c1 / (2 * c2 * c2)], axis=1)  # d vertex / d (c1, c2)
    q = np.einsum("si,ij,sj->s", g, inv[1:, 1:], g)
    v = v + x.mean()
    return v, (c2 > 0) & (v > x.min()) & (v < x.max()), q


def _budget_points(points: DesignPoints, count: str, loss: np.ndarray, c: float) -> tuple[np.ndarray, ...]:
    """One budget's point means (repeats averaged): log N, log D, runs per point, mean losses (S,
    points), and the sum of squared deviations from them (S,)."""
    g = np.flatnonzero(points.budget == c)
    n_all = points.params(count)[g]
    sizes, inverse = np.unique(n_all, return_inverse=True)
    avg = np.zeros((len(g), len(sizes)))
    avg[np.arange(len(g)), inverse] = 1.0
    n = avg.sum(axis=0)
    means = loss[:, g] @ avg / n
    ss = ((loss[:, g] - means[:, inverse]) ** 2).sum(axis=1)
    logd = np.log(points.tokens[g] @ avg / n)
    return np.log(sizes), logd, n, means, ss


def _approach2_batch(points: DesignPoints, count: str, log_loss: np.ndarray, target: float) -> dict[str, np.ndarray]:
    """Approach 2 on every simulation at once: ``a``, the widths, and which fitted. Without
    repeats: OLS of ``log N*`` on ``log C`` with t intervals. With repeats the study knows its
    noise (:mod:`scaling.fit.noise`: each budget's pooled sd across seeds) and its intervals come
    from the means redrawn with it: here their normal approximation, ``2 z sd`` with the
    vertices' delta-method variances carried through the OLS, or, where the vertices miss the
    line by more than those variances explain, ``2 t sd sqrt(s^2 / mean var)`` (the fit's widening,
    :func:`scaling.fit.approach2.allocation_draws`)."""
    loss = np.exp(log_loss)
    cs = np.unique(points.budget)
    log_nopt = np.empty((len(loss), len(cs)))
    var = np.empty_like(log_nopt)
    ok = np.ones(len(loss), bool)
    for j, c in enumerate(cs):
        logn, logd, n, means, ss = _budget_points(points, count, loss, c)
        vn, in_n, q = _vertices(logn, means, n)
        _, in_d, _ = _vertices(logd, means, n)
        best = np.argmin(means, axis=1)
        at_edge = (best == 0) | (best == len(logn) - 1)
        ok &= in_n & in_d & ~at_edge & (len(logn) >= 3)
        dof = n.sum() - len(n)
        log_nopt[:, j] = vn
        var[:, j] = ss / dof * q if dof > 0 else np.nan
    x = np.column_stack([np.ones(len(cs)), np.log(cs)])
    xtx_inv = np.linalg.inv(x.T @ x)
    lin = x @ xtx_inv  # (budgets, 2): OLS of log N* on log C
    coef = np.where(ok[:, None], log_nopt, 0.0) @ lin
    x0 = np.array([1.0, math.log(target)])
    df = len(cs) - 2
    resid = np.where(ok[:, None], log_nopt, 0.0) - coef @ x.T
    s2 = (resid * resid).sum(axis=1) / df if df > 0 else np.full(len(loss), np.nan)
    t = float(special.stdtrit(df, Z_LEVEL)) if df > 0 else math.inf
    if points.has_repeats:
        exp_sd = np.sqrt(var @ lin[:, 1] ** 2)
        n_sd = np.sqrt(var @ (lin @ x0) ** 2)
        # the fit widens the noise band by the line's residual scale where the vertices miss it by
        # more than the noise explains (RSS / df above their mean variance): a t interval then
        ratio = s2 / np.mean(var, axis=1)
        k = np.where(ratio > 1, t * np.sqrt(np.maximum(ratio, 1.0)), float(special.ndtri(Z_LEVEL)))
        return {"a": coef[:, 1], "exponent": 2 * k * exp_sd, "log_n_opt": 2 * k * n_sd, "ok": ok & np.isfinite(n_sd)}
    return {
        "a": coef[:, 1],
        "exponent": 2 * t * np.sqrt(s2 * xtx_inv[1, 1]),
        "log_n_opt": 2 * t * np.sqrt(s2 * float(x0 @ xtx_inv @ x0)),
        "ok": ok,
    }


def _frame(points: DesignPoints, count: str, log_loss: np.ndarray) -> tuple[pd.DataFrame, Columns, NoiseEstimate | None]:
    """The fit stage's input for one draw, and the noise it measures from the repeats (None without)."""
    budget = np.where(points.budget > 0, points.budget, np.nan)  # a WSD branch has no budget
    frame = pd.DataFrame({"params": points.params(count), "tokens": points.tokens, "flops": points.flops,
                          "budget": budget, "loss": np.exp(log_loss)})
    cols = Columns(convention=Convention(count, points.spec.train.flops_convention))  # type: ignore[arg-type]
    return frame, cols, estimate_noise(frame, trend=False) if points.has_repeats else None  # its noise is constant


def _approach3_one(points: DesignPoints, count: str, log_loss: np.ndarray, target: float, bootstrap: int,
                   seed: int) -> tuple[float, float, float] | None:
    """Approach 3 with a bootstrap on one draw: widths of ``a``, ``ln N*`` and ``L*`` at the target."""
    frame, cols, noise = _frame(points, count, log_loss)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitWarning)
            fit = Approach3(bootstrap=bootstrap, seed=seed, columns=cols).fit(frame, noise=noise)
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
    frame, cols, noise = _frame(points, count, log_loss)
    try:
        fit = Approach2(columns=cols).fit(frame, noise=noise)
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
    ll = draw_log_losses(points, prior, max(sims, sims3), seed)
    for count in counts if points.design.family == "isoflop" else ():  # approach 2 needs IsoFLOP budgets
        r = _approach2_batch(points, count, ll[:sims], target)
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
        if "2" in approaches and points.design.family == "isoflop":
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
