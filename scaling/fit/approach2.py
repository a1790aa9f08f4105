"""Approach 2: IsoFLOP profiles (Hoffmann et al. 2022, sec. 3.2).

For each compute budget, fit a parabola to the loss against ``x = log N`` (and against
``log D``) by OLS; its vertex ``x* = -c1 / (2 c2)`` is the budget's compute-optimal size, with a
delta-method standard error from the coefficient covariance. Then fit the power laws
``N*(C) = n_coef C^n_exponent`` and ``D*(C) = d_coef C^d_exponent`` by OLS in log-log
with t intervals. A budget with fewer than 3 sizes, a concave fit, or a vertex
outside the sizes it sampled, or a lowest observed loss at the smallest or largest size, is
refused by name: its minimum is not interior, so the parabola
would extrapolate, not locate, the optimum.

This is the one IsoFLOP vertex of the package: each minimum keeps its parabolas (centre and
coefficients) so the report draws them from the fit artifact instead of refitting.

Runs that differ only by seed are one point: the parabola goes through the mean loss of each
size. With a measured noise (:class:`scaling.fit.noise.NoiseEstimate`, ``fit(noise=)``) the
parabolas are weighted least squares with weights ``n_i / sigma_b^2`` (inverse variance of each
mean), their covariance ``(X^T W X)^-1`` (the noise known, not estimated from the residuals);
each budget's ``lack_of_fit`` is the chi-square of its means against the parabola, and the
intervals come from ``bootstrap`` parametric resamples: every mean redrawn with its noise, every
parabola and both power laws refitted, widened where the vertices miss the power laws by more
than the noise explains (:func:`allocation_draws`): a noise band alone would claim the
precision of the repeats for a law the points do not follow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scaling.fit.data import Columns, FitData, FitRefusal, budget_groups, normalise
from scaling.fit.noise import NoiseEstimate, chi2_test, lack_of_fit, point_means, pooled_lack_of_fit
from scaling.fit.results import LawFit


def ols(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Least squares ``y = X b``: ``b``, its covariance ``s^2 (X^T X)^-1`` with
    ``s^2 = RSS / (n - p)``, and the residual degrees of freedom ``n - p`` (nan covariance at 0)."""
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    df = len(y) - design.shape[1]
    if df <= 0:
        return coef, np.full((design.shape[1],) * 2, np.nan), df
    resid = y - design @ coef
    cov = float(resid @ resid) / df * np.linalg.pinv(design.T @ design)
    return coef, cov, df


def _design(u: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones_like(u), u, u * u])


def parabola_vertex(x: np.ndarray, y: np.ndarray, se: np.ndarray | None = None) -> dict[str, Any]:
    """``y = c0 + c1 u + c2 u^2`` with ``u = x - mean(x)``, by OLS, or by weighted least squares
    with weights ``1 / se^2`` when the standard errors ``se`` of ``y`` are known: the vertex
    ``x* = -c1 / (2 c2)``, its delta-method standard error, the value there, and the parabola
    (``centre``, ``coef``)."""
    xm = float(np.mean(x))
    u = x - xm
    if se is None:
        coef, cov, _ = ols(_design(u), y)
    else:
        w = 1.0 / np.asarray(se, float)
        coef, *_ = np.linalg.lstsq(_design(u) * w[:, None], y * w, rcond=None)
        cov = np.linalg.pinv((_design(u) * (w * w)[:, None]).T @ _design(u))
    c0, c1, c2 = (float(v) for v in coef)
    out: dict[str, Any] = {"curvature": c2, "centre": xm, "coef": [c0, c1, c2]}
    if c2 <= 0:
        return {**out, "x": math.nan, "se": math.nan, "y": math.nan}
    v = -c1 / (2 * c2)
    grad = np.array([0.0, -1 / (2 * c2), c1 / (2 * c2 * c2)])
    se_v = float(math.sqrt(max(grad @ cov @ grad, 0.0))) if np.isfinite(cov).all() else math.nan
    return {**out, "x": v + xm, "se": se_v, "y": c0 + c1 * v + c2 * v * v}


def parabola_at(parabola: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """The stored parabola ``c0 + c1 u + c2 u^2``, ``u = x - centre``, evaluated at ``x``."""
    c0, c1, c2 = parabola["coef"]
    u = np.asarray(x, float) - parabola["centre"]
    return c0 + c1 * u + c2 * u * u


def isoflop_minimum(flops: float, runs: pd.DataFrame, noise: NoiseEstimate | None = None) -> dict[str, Any]:
    """The IsoFLOP minimum of one budget: ``n_opt``, ``d_opt`` (parabola vertices), their log-space
    standard errors, ``loss_opt``, the observed best, and whether the minimum is ``interior``.

    Repeats (rows with the same size) are averaged first; ``noise`` makes the parabolas weighted
    (``se = sigma / sqrt(n)`` per mean, ``sigma`` the budget's noise or the trend's at the size's
    tokens per parameter) and adds ``lack_of_fit`` (against the pooled noise)."""
    group = point_means(runs.assign(budget=float(flops)))
    out: dict[str, Any] = {"flops": float(flops), "n_points": len(group), "n_runs": len(runs)}
    sizes = group["params"].nunique()
    i_best = int(np.argmin(group["loss"].to_numpy()))
    out["observed_best_loss"] = float(group["loss"].iloc[i_best])
    out["observed_best_params"] = float(group["params"].iloc[i_best])
    out["observed_best_tokens"] = float(group["tokens"].iloc[i_best])
    if "run_id" in group:
        out["observed_best_run"] = str(group["run_id"].iloc[i_best])
    if sizes < 3:
        out.update(interior=False, reason=f"{sizes} size(s); an IsoFLOP parabola needs at least 3")
        return out
    logn, logd = np.log(group["params"].to_numpy()), np.log(group["tokens"].to_numpy())
    loss = group["loss"].to_numpy()
    se = None if noise is None else noise.point_se(group)
    vn, vd = parabola_vertex(logn, loss, se), parabola_vertex(logd, loss, se)
    if noise is not None:
        out["noise_std"] = [float(s) for s in noise.run_sd(group)]  # one run's noise at each size
        out["lack_of_fit"] = lack_of_fit(loss, parabola_at({"centre": vn["centre"], "coef": vn["coef"]}, logn),
                                         noise.point_se(group, pooled=True), 3, noise.dof)
    inside_n = logn.min() < vn["x"] < logn.max()
    inside_d = logd.min() < vd["x"] < logd.max()
    best_at_edge = out["observed_best_params"] in (group["params"].min(), group["params"].max())
    out.update(
        n_opt=math.exp(vn["x"]) if math.isfinite(vn["x"]) else math.nan,
        n_opt_log_se=vn["se"],
        d_opt=math.exp(vd["x"]) if math.isfinite(vd["x"]) else math.nan,
        d_opt_log_se=vd["se"],
        loss_opt=vn["y"],
        interior=bool(inside_n and inside_d and not best_at_edge),
        parabola_n={"centre": vn["centre"], "coef": vn["coef"]},
        parabola_d={"centre": vd["centre"], "coef": vd["coef"]},
        n_range=[float(group["params"].min()), float(group["params"].max())],
        d_range=[float(group["tokens"].min()), float(group["tokens"].max())],
    )
    if not out["interior"]:
        if best_at_edge:
            side = "smallest" if out["observed_best_params"] == group["params"].min() else "largest"
            why = f"the lowest loss is at the {side} size; add sizes beyond it"
        elif vn["curvature"] <= 0:
            why = "the losses do not curve upward (no valley)"
        else:
            side = "smallest" if vn["x"] <= logn.min() else "largest"
            why = f"the parabola's minimum lies beyond the {side} size; add sizes past it"
        out["reason"] = why
    return out


def _power_law(logc: np.ndarray, logy: np.ndarray) -> dict[str, Any]:
    """OLS ``log y = c0 + c1 log C``: params, covariance, residual degrees of freedom."""
    coef, cov, df = ols(np.column_stack([np.ones_like(logc), logc]), logy)
    return {"params": [float(v) for v in coef], "cov": cov.tolist(), "df": int(df)}


def power_law_fit(minima: list[dict[str, Any]]) -> dict[str, Any]:
    """OLS power laws of ``n_opt`` and ``d_opt`` against C through the given minima."""
    logc = np.log([m["flops"] for m in minima])
    return {
        "n": _power_law(logc, np.log([m["n_opt"] for m in minima])),
        "d": _power_law(logc, np.log([m["d_opt"] for m in minima])),
    }


def vertex_draws(minimum: dict[str, Any], group: pd.DataFrame, noise: NoiseEstimate, n_draws: int,
                 rng: np.random.Generator, scale: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Parametric resamples of one budget's vertices ``(log N*, log D*)``: each size's mean loss
    redrawn as ``mean + scale se eps`` (``se`` the noise of its mean, ``noise.point_se``;
    ``scale``: one factor per resample, or one), the weighted parabolas refitted (nan where a
    resample does not curve upward)."""
    pts = point_means(group.assign(budget=minimum["flops"]))
    se = noise.point_se(pts)
    eps = rng.standard_normal((n_draws, len(pts))) * np.reshape(scale, (-1, 1))
    ys = pts["loss"].to_numpy()[None, :] + se[None, :] * eps
    out = []
    for col, key in (("params", "parabola_n"), ("tokens", "parabola_d")):
        u = np.log(pts[col].to_numpy()) - minimum[key]["centre"]
        x, w = _design(u), 1.0 / se
        coef = np.linalg.lstsq(x * w[:, None], (ys * w[None, :]).T, rcond=None)[0]  # (3, B)
        c1, c2 = coef[1], coef[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append(np.where(c2 > 0, -c1 / (2 * c2) + minimum[key]["centre"], np.nan))
    return out[0], out[1]


def redraw_inflation(noise_dof: int) -> float:
    """``nu / (nu - 2)``: the variance of a vertex redrawn with its noise scaled by
    ``sqrt(nu / chi2_nu)`` (a noise measured on ``nu`` dof: a t_nu) over its delta-method variance;
    1 where ``nu <= 2`` (a t_nu without a variance)."""
    return noise_dof / (noise_dof - 2) if noise_dof > 2 else 1.0


def allocation_draws(minima: list[dict[str, Any]], groups: list[pd.DataFrame], noise: NoiseEstimate,
                     n_draws: int, seed: int | None) -> tuple[np.ndarray, dict[str, Any]]:
    """``(B, 4)`` draws of ``(n_coef, n_exponent, d_coef, d_exponent)`` and the widenings used.

    Every budget's vertices are redrawn with its noise (:func:`vertex_draws`), the noise scaled
    per resample by ``sqrt(nu / chi2_nu)`` (a noise measured on ``nu`` dof), and both power laws
    are refitted by OLS. Where the vertices scatter about a power law by more than their redrawn
    spread explains (``chi2_v = RSS / mean_b sd_b^2`` on ``budgets - 2`` dof above its dof, with
    ``RSS`` the OLS line's residual sum of squares and ``sd_b^2`` budget b's delta-method vertex
    variance times :func:`redraw_inflation`; not the variance of the redrawn vertices, which a few
    nearly flat redrawn parabolas inflate, so that the test, and with it the interval, would swing
    with the bootstrap seed), each resample's deviation from the OLS line is scaled by ``sqrt(chi2_v / chi2_dof)``:
    the residual scale of the OLS fit, drawn from its scaled-inverse-chi-square, so the interval
    becomes the OLS t interval where the noise explains little of the scatter.
    The scatter of the vertices holds whatever the parabolas miss (a valley that is not a
    parabola moves its vertex), so the parabolas' own lack of fit is reported, not added again."""
    rng = np.random.default_rng(seed)
    scale = np.sqrt(noise.dof / rng.chisquare(noise.dof, n_draws)) if noise.dof > 0 else 1.0
    logn, logd = zip(*(vertex_draws(m, g, noise, n_draws, rng, scale)
                       for m, g in zip(minima, groups, strict=True)), strict=True)
    design = np.column_stack([np.ones(len(minima)), np.log([m["flops"] for m in minima])])
    pinv = np.linalg.pinv(design)
    out, used = [], {"parabola_lack_of_fit": pooled_lack_of_fit([m["lack_of_fit"] for m in minima])}
    for key, draws in (("n", np.array(logn)), ("d", np.array(logd))):
        observed = np.log([m[f"{key}_opt"] for m in minima])
        coef = pinv @ observed
        c = pinv @ draws  # (2, B); nan rows stay nan
        spread = float(np.mean([m[f"{key}_opt_log_se"] ** 2 for m in minima])) * redraw_inflation(noise.dof)
        test = chi2_test(float(np.sum((observed - design @ coef) ** 2)) / spread, len(minima), 2)
        used[f"power_law_{key}"] = {**test, "bend": vertex_bend(design[:, 1], observed, spread)}
        if test["chi2_per_dof"] is not None and test["chi2_per_dof"] > 1:
            c = coef[:, None] + (c - coef[:, None]) * np.sqrt(test["chi2"] / rng.chisquare(test["dof"], n_draws))
        out += [np.exp(c[0]), c[1]]
    return np.column_stack(out), used


def vertex_bend(logc: np.ndarray, log_opt: np.ndarray, spread: float) -> dict[str, Any] | None:
    """Whether the vertices curve away from one power law: the local exponents between adjacent
    budgets, ``d ln y / d ln C``, and the quadratic ``ln y = b0 + b1 u + b2 u^2`` (``u`` = ln C
    centred) against the line, ``chi2 = (RSS_line - RSS_quad) / spread`` on 1 dof (its p-value),
    with ``da_per_octave = 2 b2 ln 2``, the change of the local exponent per doubling of C.
    None below 4 budgets (no dof left for the test)."""
    from scipy import stats

    if len(logc) < 4:
        return None
    u = logc - logc.mean()
    rss = []
    for deg in (1, 2):
        x = np.column_stack([u ** i for i in range(deg + 1)])
        coef = np.linalg.lstsq(x, log_opt, rcond=None)[0]
        rss.append(float(np.sum((log_opt - x @ coef) ** 2)))
    chi2 = (rss[0] - rss[1]) / spread
    local = np.diff(log_opt) / np.diff(logc)
    return {"local_exponents": [float(v) for v in local], "da_per_octave": float(2 * coef[2] * math.log(2)),
            "chi2": float(chi2), "p_value": float(stats.chi2.sf(chi2, 1))}


def allocation_fit(approach: str, minima: list[dict[str, Any]], data: FitData, draws: np.ndarray | None = None,
                   info: dict[str, Any] | None = None) -> LawFit:
    """The :class:`LawFit` of OLS power laws through per-budget (or per-run) optima; ``draws``
    (B, 4) replace the OLS intervals by percentiles when given."""
    fits = power_law_fit(minima)
    params = {
        "n_coef": math.exp(fits["n"]["params"][0]),
        "n_exponent": fits["n"]["params"][1],
        "d_coef": math.exp(fits["d"]["params"][0]),
        "d_exponent": fits["d"]["params"][1],
    }
    return LawFit(
        approach=approach,
        form="allocation",
        params=params,
        n_points=len(data),
        estimator="ols",
        draws=draws,
        convention=data.convention,
        info={"ols": fits, "minima": minima, **(info or {})},
    )


@dataclass(frozen=True)
class Approach2:
    """IsoFLOP parabolas per budget, then OLS power laws ``N*(C)``, ``D*(C)``.

    Budgets come from a numeric ``budget`` column, else from FLOPs equal within ``rtol``.
    ``bootstrap``: parametric resamples (seeded by ``seed``) when a noise is given to :meth:`fit`.
    """

    columns: Columns = field(default_factory=Columns)
    rtol: float = 0.02
    bootstrap: int = 1000
    seed: int | None = 0

    def minima(self, frame: pd.DataFrame | FitData, noise: NoiseEstimate | None = None) -> list[dict[str, Any]]:
        """Every budget's IsoFLOP minimum (see :func:`isoflop_minimum`), interior or not."""
        data = normalise(frame, self.columns)
        return [isoflop_minimum(c, g, noise) for c, g in budget_groups(data.frame, self.rtol)]

    def fit(self, frame: pd.DataFrame | FitData, noise: NoiseEstimate | None = None) -> LawFit:
        data = normalise(frame, self.columns)
        groups = budget_groups(data.frame, self.rtol)
        if len(groups) < 2:
            raise FitRefusal(
                f"DATA: {len(groups)} compute budget(s); approach 2 needs IsoFLOP profiles at 2 or more budgets"
            )
        minima = [isoflop_minimum(c, g, noise) for c, g in groups]
        for m in minima:
            if not m["interior"]:
                raise FitRefusal(f"budget {m['flops']:.4g} FLOPs: minimum not interior: {m['reason']}")
        if noise is None:
            return allocation_fit("2", minima, data)
        draws, widening = allocation_draws(minima, [g for _, g in groups], noise, self.bootstrap, self.seed)
        return allocation_fit("2", minima, data, draws, {"noise": _noise_summary(noise, draws, widening)})


def _noise_summary(noise: NoiseEstimate, draws: np.ndarray, widening: dict[str, Any]) -> dict[str, Any]:
    """The noise used, the parabolas' lack of fit over every budget, the widenings and the resamples kept."""
    return {**noise.summary(),
            "lack_of_fit": widening["parabola_lack_of_fit"],
            "widening": {"power_law_n": widening["power_law_n"], "power_law_d": widening["power_law_d"]},
            "bootstrap": {"n": len(draws),
                          "kind": "parametric (means redrawn with the noise, widened by the vertices' lack of fit)",
                          "failed": int(np.isnan(draws).any(axis=1).sum())}}
