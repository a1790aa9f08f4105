"""Predicted interval widths of a design, by simulation, and realised ones on independent draws.

Each simulation draws every run's loss from the prior (``log L = log L_prior(N, D) + sigma eps``,
sigma one constant or the prior's trend in tokens per parameter) and fits it as the study does,
with N counted both ways (total and non-embedding):

* approach 2 (Hoffmann et al. 2022, sec. 3.2): per budget an OLS parabola of L in log N (and in
  log D), its vertex, refused unless interior (as :func:`scaling.fit.approach2.isoflop_minimum`
  refuses); then OLS ``log N* = c0 + a log C`` with t intervals on ``a`` and on ``log N*`` at the
  target (mean response). Here all simulations are solved at once: the per-budget designs are
  fixed, so each fit is one matrix product.
* approach 3: :class:`scaling.fit.approach3.Approach3` with a bootstrap, as the fit stage runs it:
  percentile intervals on ``a = beta / (alpha + beta)``, on N* at the target and on the loss there.

The predicted width is the geometric mean over simulations, beside the spread of the estimates
(what a calibrated interval would need); :func:`realised_widths` fits independent draws with the
study's own fitters (:class:`~scaling.fit.approach2.Approach2` too, and the study's noise
estimate, its trend included), so a test can hold the fast path to them.
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
from scaling.design.redraw import Z_LEVEL, noise_scales, percentile_widths, redrawn_vertices
from scaling.design.space import DesignPoints
from scaling.design.trend import fitted_trend_sd
from scaling.fit.approach2 import Approach2, redraw_inflation
from scaling.fit.approach3 import Approach3
from scaling.fit.data import Columns, FitRefusal, FitWarning
from scaling.fit.noise import TREND_P, NoiseEstimate, estimate_noise, fit_trend, point_means, tokens_per_param

REDRAWS = 200  # the study's resamples simulated per simulation (it draws 1000; the mean over simulations averages the rest)


@dataclass(frozen=True)
class Widths:
    """Geometric-mean widths of 95% intervals over simulations (``nan`` where none fitted).

    ``exponent``: full width on ``a`` (N* ~ C^a); ``log_n_opt``: on ``ln N*`` at the target
    (``exp`` of it is the hi/lo ratio); ``loss``: on the compute-optimal loss at the target
    (approach 3 only); ``interior``: share of simulations with every budget interior (approach 2)
    or with a fit at all (approach 3). ``exponent_spread`` and ``log_n_opt_spread``: the width a
    calibrated interval would have, ``2 z`` times the robust sd (``1.4826 MAD``) of the estimates
    over the simulations; a reported width well under it is overconfident (a noise measured where
    the runs are quietest, under a noise that grows toward the edges).
    """

    approach: str
    count: str
    exponent: float
    log_n_opt: float
    loss: float
    interior: float
    n_sims: int
    exponent_spread: float = math.nan
    log_n_opt_spread: float = math.nan

    @property
    def exponent_half(self) -> float:
        return self.exponent / 2

    def honest(self, key: str) -> float:
        """The wider of the reported width ``key`` (``exponent`` or ``log_n_opt``) and its spread:
        what a design is judged by, so that an interval too narrow for its estimates' scatter
        does not win; the reported width alone where the spread is not known."""
        width, spread = getattr(self, key), getattr(self, f"{key}_spread", math.nan)
        return max(width, spread) if math.isfinite(spread) else width

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exponent_half_width": self.exponent_half}


def draw_log_losses(points: DesignPoints, prior: Prior, n: int, seed: int) -> np.ndarray:
    """``(n, points)`` simulated log losses: the prior's law at each point's own (N, D) (a WSD
    branch's too) plus noise (:meth:`Prior.log_sd`: one sigma, or its trend in tokens per
    parameter), of which the branches of one trunk share ``prior.branch_share``."""
    params = points.params(prior.param_convention)
    mean = prior.log_loss(params, points.tokens)
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((n, len(mean)))
    trunk = points.trunk
    if (trunk >= 0).any():
        shared = rng.standard_normal((n, int(trunk.max()) + 1))
        s = prior.branch_share
        eps = np.where(trunk >= 0, math.sqrt(1 - s) * eps + math.sqrt(s) * shared[:, np.maximum(trunk, 0)], eps)
    return mean[None, :] + prior.log_sd(params, points.tokens, points.flops)[None, :] * eps


def trend_sd(points: DesignPoints, prior: Prior) -> np.ndarray | None:
    """Each fitted point's sd of one run's loss as the study will know it, where its repeats let
    it fit the prior's trend (:func:`scaling.fit.noise.fit_trend` adopts it on the sums of squares
    the repeats are expected to give, ``sd(r)^2 (n - 1)``, as at a median draw); else None: the
    study pools its repeats per budget, one noise for every size."""
    if prior.trend is None or not points.has_repeats:
        return None
    frame = pd.DataFrame({"budget": points.budget, "params": points.params("total"), "tokens": points.tokens,
                          "flops": points.flops, "loss": 0.0})
    pts = point_means(frame)
    r = tokens_per_param(pts)
    dof = (pts["n"] - 1).to_numpy(float)
    fitted = fit_trend(r, prior.trend.sd_at(r) ** 2 * dof, dof)
    if fitted is None or fitted.p_value >= TREND_P:
        return None
    return prior.trend.sd_at(tokens_per_param(frame))


def _vertices(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parabolas ``y = c0 + c1 u + c2 u^2``, ``u = x - mean x``, of every row of ``y`` (S, points)
    by least squares weighted by ``w`` (the runs averaged in each point over the variance of one
    run; all equal: OLS): the vertices in ``x``, whether each curves upward with its vertex inside
    ``x``'s range, and ``q`` with ``var(vertex) = q`` where ``w`` are inverse variances, ``s^2 q``
    where they are runs per point and ``s^2`` the variance of one run (delta method on
    ``(X^T diag(w) X)^-1``)."""
    u = x - x.mean()
    design = np.column_stack([np.ones_like(u), u, u * u])
    if w.ndim == 1:  # one weighting for every simulation
        inv = np.linalg.pinv(design.T @ (w[:, None] * design))
        coef = y @ (w[:, None] * design @ inv)
    else:  # each simulation's own (its fitted noise trend): (S, 3, 3) normal equations
        inv = np.linalg.pinv(np.einsum("sp,pi,pj->sij", w, design, design))
        coef = np.einsum("sij,sj->si", inv, (w * y) @ design)
    c1, c2 = coef[:, 1], coef[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(c2 > 0, -c1 / (2 * c2), np.nan)
        g = np.stack([-1 / (2 * c2), c1 / (2 * c2 * c2)], axis=1)  # d vertex / d (c1, c2)
    sub = inv[..., 1:, 1:]
    q = np.einsum("si,ij,sj->s" if sub.ndim == 2 else "si,sij,sj->s", g, sub, g)
    v = v + x.mean()
    return v, (c2 > 0) & (v > x.min()) & (v < x.max()), q


def _budget_points(points: DesignPoints, count: str, loss: np.ndarray, c: float,
                   sd: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """One budget's point means (repeats averaged): log N, log D, runs per point, mean losses (S,
    points), the sum of squared deviations from them (S,), and each point's weight: its runs
    over the variance of one (``sd``, per fitted run), or with no ``sd`` its runs."""
    g = np.flatnonzero(points.budget == c)
    n_all = points.params(count)[g]
    sizes, inverse = np.unique(n_all, return_inverse=True)
    avg = np.zeros((len(g), len(sizes)))
    avg[np.arange(len(g)), inverse] = 1.0
    n = avg.sum(axis=0)
    means = loss[:, g] @ avg / n
    ss = ((loss[:, g] - means[:, inverse]) ** 2).sum(axis=1)
    logd = np.log(points.tokens[g] @ avg / n)
    w = n if sd is None else n / ((sd[..., g] ** 2) @ avg / n)
    return np.log(sizes), logd, n, means, ss, w


def _approach2_batch(points: DesignPoints, count: str, log_loss: np.ndarray, target: float,
                     sd: np.ndarray | None = None, resamples: int = REDRAWS, seed: int = 0) -> dict[str, np.ndarray]:
    """Approach 2 on every simulation at once: ``a``, ``ln N*`` at the target, the widths, and
    which fitted. Without repeats: OLS of ``log N*`` on ``log C`` with t intervals. With repeats
    the study knows its noise (:mod:`scaling.fit.noise`) and its intervals are percentiles of the
    means redrawn with it: here ``resamples`` of those redraws per simulation
    (:mod:`scaling.design.redraw`), with the fit's test of the vertices against their
    delta-method variances and its widening (:func:`scaling.fit.approach2.allocation_draws`).
    The noise: each budget's pooled sd across seeds, one for all its sizes; or with ``sd`` (each
    fitted run's sd, (runs,) or per simulation (S, runs):
    :func:`scaling.design.trend.fitted_trend_sd`) the trend the study fits, by which it weights
    each parabola."""
    loss = np.exp(log_loss)
    budgets = []
    cs = np.unique(points.budget)
    log_nopt = np.empty((len(loss), len(cs)))
    var = np.empty_like(log_nopt)
    ok = np.ones(len(loss), bool)
    nu = -2.0 if sd is not None else 0.0  # the noise's dof: the repeats', less the trend's two
    for j, c in enumerate(cs):
        logn, logd, n, means, ss, w = _budget_points(points, count, loss, c, sd)
        nu += n.sum() - len(n)
        vn, in_n, q = _vertices(logn, means, w)
        _, in_d, _ = _vertices(logd, means, w)
        best = np.argmin(means, axis=1)
        at_edge = (best == 0) | (best == len(logn) - 1)
        ok &= in_n & in_d & ~at_edge & (len(logn) >= 3)
        dof = n.sum() - len(n)
        log_nopt[:, j] = vn
        var[:, j] = q if sd is not None else ss / dof * q if dof > 0 else np.nan
        se = np.broadcast_to(1 / np.sqrt(w), means.shape) if sd is not None else \
            np.sqrt(np.outer(ss / max(dof, 1), 1 / n))
        budgets.append((logn, means, w, se))
    x = np.column_stack([np.ones(len(cs)), np.log(cs)])
    xtx_inv = np.linalg.inv(x.T @ x)
    lin = x @ xtx_inv  # (budgets, 2): OLS of log N* on log C
    coef = np.where(ok[:, None], log_nopt, 0.0) @ lin
    x0 = np.array([1.0, math.log(target)])
    df = len(cs) - 2
    resid = np.where(ok[:, None], log_nopt, 0.0) - coef @ x.T
    s2 = (resid * resid).sum(axis=1) / df if df > 0 else np.full(len(loss), np.nan)
    t = float(special.stdtrit(df, Z_LEVEL)) if df > 0 else math.inf
    out = {"a": coef[:, 1], "log_n": coef @ x0}
    if points.has_repeats:
        # the fit tests the vertices' scatter about the line (RSS / df) against their delta-method
        # variances, times nu / (nu - 2) for a noise measured on nu dof, and widens its resamples
        # where it is above
        ratio = s2 / (np.mean(var, axis=1) * redraw_inflation(nu))
        rng = np.random.default_rng(seed)
        scale = noise_scales(nu, (len(loss), resamples), rng)
        vertices = np.stack([redrawn_vertices(*b, scale, rng) for b in budgets], axis=2)
        widths = percentile_widths(vertices, coef, lin, x0, np.where(ratio > 1, df * ratio, 0.0), df, rng)
        return {**out, "exponent": widths[0], "log_n_opt": widths[1], "ok": ok & np.isfinite(widths[1])}
    return {
        **out,
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
    return frame, cols, estimate_noise(frame) if points.has_repeats else None  # the study's own rule, trend and all


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
    exponent = fit.n_exponent()
    a_ci = exponent["ci"]
    alloc = fit.allocation(target)
    n_ci = alloc.get("ci", {}).get("params")
    band = fit.predict(alloc["params"], alloc["tokens"], interval="confidence")
    if not a_ci or not n_ci:
        return None
    return (a_ci[1] - a_ci[0], math.log(n_ci[1] / n_ci[0]), float(band["upper"] - band["lower"]),
            float(exponent["a"]), math.log(alloc["params"]))


def _approach2_one(points: DesignPoints, count: str, log_loss: np.ndarray,
                   target: float) -> tuple[float, float, float, float] | None:
    """The study's own approach-2 fit on one draw: widths of ``a`` and ``ln N*`` at the target,
    and the estimates of ``a`` and ``ln N*``."""
    frame, cols, noise = _frame(points, count, log_loss)
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a wild redraw's power law
            fit = Approach2(columns=cols).fit(frame, noise=noise)
    except FitRefusal:
        return None
    exponent = fit.n_exponent()
    lo, hi = exponent["ci"]
    alloc = fit.allocation(target)
    n_lo, n_hi = alloc["ci"]["params"]
    return hi - lo, math.log(n_hi / n_lo), float(exponent["a"]), math.log(alloc["params"])


def _mean(x: Any) -> float:
    """The geometric mean of the positive finite widths, ``exp(mean ln w)``: it moves smoothly
    where the fit's widening for lack of fit (a step from a normal to a t interval) splits the
    widths into two modes, where the median jumps between them, and a few wild draws (a nearly
    flat valley's vertex) do not carry it, as they carry the arithmetic mean."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x) & (x > 0)]
    return float(np.exp(np.mean(np.log(x)))) if x.size else math.nan


SPREAD_MIN = 8  # the fewest fitted simulations a spread is read from


def _spread(x: Any) -> float:
    """``2 z`` times the robust sd of estimates, ``1.4826 median |x - median x|``."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if x.size < SPREAD_MIN:
        return math.nan
    return float(2 * special.ndtri(Z_LEVEL) * 1.4826 * np.median(np.abs(x - np.median(x))))


def _widths3(count: str, got: list[tuple[float, ...]], tried: int) -> Widths:
    """Approach 3's :class:`Widths` from per-draw ``(a width, ln N* width, L* width, a, ln N*)``."""
    c = np.array(got) if got else np.full((0, 5), np.nan)
    return Widths("3", count, _mean(c[:, 0]), _mean(c[:, 1]), _mean(c[:, 2]), len(got) / max(tried, 1),
                  len(got), _spread(c[:, 3]), _spread(c[:, 4]))


def _approach2_by_noise_model(points: DesignPoints, count: str, log_loss: np.ndarray, target: float,
                              trend: tuple[np.ndarray, np.ndarray] | None, seed: int) -> dict[str, np.ndarray]:
    """:func:`_approach2_batch` on each draw under the noise model its study adopts: the draws
    whose repeats adopt their fitted trend (``trend``'s mask, :func:`fitted_trend_sd`) weight by it,
    the others pool per budget; each draw is fitted once, under its own model."""
    if trend is None:
        return _approach2_batch(points, count, log_loss, target, seed=seed)
    adopted, sd = trend
    out: dict[str, np.ndarray] = {}
    for k, (rows, run_sd) in enumerate(((~adopted, None), (adopted, sd[adopted]))):
        if not rows.any():
            continue  # each part its own redraw stream, so no two draws share their resamples
        got = _approach2_batch(points, count, log_loss[rows], target, run_sd, seed=seed + k)
        for key, v in got.items():
            out.setdefault(key, np.empty(len(log_loss), v.dtype))[rows] = v
    return out


def predict_widths(points: DesignPoints, prior: Prior, target: float, *, sims: int = 200, sims3: int = 0,
                   bootstrap: int = 200, seed: int = 0, counts: tuple[str, ...] = PARAM_COUNTS) -> list[Widths]:
    """Predicted widths for approach 2 (``sims`` simulations, batched) and, with ``sims3 > 0``,
    approach 3 (``sims3`` simulations of ``bootstrap`` resamples each), for each count of N."""
    out = []
    ll = draw_log_losses(points, prior, max(sims, sims3), seed)
    trend = fitted_trend_sd(points, prior, np.exp(ll[:sims])) if points.design.family == "isoflop" else None
    for count in counts if points.design.family == "isoflop" else ():  # approach 2 needs IsoFLOP budgets
        r = _approach2_by_noise_model(points, count, ll[:sims], target, trend, seed)
        ok = r["ok"]
        out.append(Widths("2", count, _mean(r["exponent"][ok]), _mean(r["log_n_opt"][ok]), math.nan,
                          float(ok.mean()), int(ok.sum()), _spread(r["a"][ok]), _spread(r["log_n"][ok])))
    if sims3 > 0:
        ll3 = ll[:sims3]
        for count in counts:
            res = [_approach3_one(points, count, ll3[i], target, bootstrap, seed + i) for i in range(len(ll3))]
            out.append(_widths3(count, [r for r in res if r is not None], len(res)))
    return out


def realised_widths(points: DesignPoints, prior: Prior, target: float, *, draws: int, seed: int,
                    approaches: tuple[str, ...] = ("2",), bootstrap: int = 200,
                    counts: tuple[str, ...] = PARAM_COUNTS) -> list[Widths]:
    """Widths the study's own fitters give on ``draws`` independent draws (seed ``seed``): the
    geometric mean over draws, to set beside :func:`predict_widths` of another seed, and the estimates'
    spread."""
    ll = draw_log_losses(points, prior, draws, seed)
    out = []
    for count in counts:
        if "2" in approaches and points.design.family == "isoflop":
            res = [_approach2_one(points, count, ll[i], target) for i in range(draws)]
            got = [r for r in res if r is not None]
            c = np.array(got) if got else np.full((0, 4), np.nan)
            out.append(Widths("2", count, _mean(c[:, 0]), _mean(c[:, 1]), math.nan, len(got) / draws, len(got),
                              _spread(c[:, 2]), _spread(c[:, 3])))
        if "3" in approaches:
            res3 = [_approach3_one(points, count, ll[i], target, bootstrap, seed + i) for i in range(draws)]
            out.append(_widths3(count, [r for r in res3 if r is not None], draws))
    return out
