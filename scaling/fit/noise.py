"""Run-to-run noise: repeated seeds at one point, pooled per budget, and what the fits do with it.

Runs that differ only by seed are repeated measurements of one point (a budget and a size), not
separate sizes: :func:`point_means` averages them, and the spread of each point's losses gives
the noise. Per budget the estimate is the pooled standard deviation

    s_b^2 = sum_points sum_seeds (L - mean_point)^2 / sum_points (n_point - 1),

with ``sum (n_point - 1)`` degrees of freedom; budgets without repeats take the pooled value over
every budget (the same formula over all points). The standard error of a point's mean is
``s_b / sqrt(n_point)``: the weights of approach 2's parabolas (inverse variance) and the scale
of approach 3's residuals. Lack of fit is measured against the pooled noise (one variance for
every budget: the classical pure-error F test, :func:`lack_of_fit`), which has the most degrees
of freedom.

Runs with few tokens per parameter can be far noisier than the rest (on the quickstart's CPU
runs, sd 0.05-0.14 of the loss under 20 tokens per parameter, 0.01 over 75). Where the repeats
span tokens per parameter ``r``, :func:`fit_trend` fits ``sd(r)^2 = floor^2 + rise^2 (r /
r_ref)^(2 slope)`` by maximum likelihood on each repeated point's sum of squares
(``ss ~ sd^2 chi2_{n-1}``), with ``r`` clamped to the span the repeats measured; it replaces the
constant when a likelihood-ratio test rejects it (p < 0.05), and costs two degrees of freedom.

Pure: numpy, pandas, scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


def point_keys(frame: pd.DataFrame) -> list[str]:
    """What names a point: its budget and size when every row has a budget, else size and tokens."""
    if "budget" in frame and pd.to_numeric(frame["budget"], errors="coerce").notna().all():
        return ["budget", "params"]
    return ["params", "tokens"]


def point_means(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per point: the mean ``loss`` of its runs, ``n`` (how many), ``ss`` (the sum of
    squared deviations from the mean), the other columns from its first run; sorted by the keys.

    A frame without missing values takes a numpy path (the bootstrap calls this per budget per
    resample; pandas' groupby costs ~15 ms a call); one with them, pandas' ``first`` (the first
    value that is not missing), the same rows otherwise."""
    keys = point_keys(frame)
    if len(frame) and not frame.isna().to_numpy().any():
        _, first_idx, inverse = np.unique(frame[keys].to_numpy(float), axis=0, return_index=True,
                                          return_inverse=True)
        inverse = inverse.ravel()
        loss = frame["loss"].to_numpy(float)
        n = np.bincount(inverse)
        mean = np.bincount(inverse, loss) / n
        ss = np.bincount(inverse, (loss - mean[inverse]) ** 2)
        first = frame.iloc[first_idx].drop(columns=["loss", "n", "ss"], errors="ignore").reset_index(drop=True)
        return first.assign(loss=mean, n=n, ss=ss)
    grouped = frame.groupby(keys, sort=True, dropna=False)
    first = grouped.first().reset_index()
    stats = grouped["loss"].agg(loss="mean", n="size", var="var").reset_index()
    stats["ss"] = stats.pop("var").fillna(0.0) * (stats["n"] - 1)  # sum of squared deviations
    return first.drop(columns=["loss", "n", "ss"], errors="ignore").merge(stats, on=keys)


TREND_P = 0.05  # the likelihood-ratio test's level at which the trend replaces the constant noise
TREND_MIN_POINTS, TREND_MIN_DOF = 6, 12  # the least repeated points (and their dof) a trend is fitted on


def tokens_per_param(frame: pd.DataFrame) -> np.ndarray:
    """``r = D / N`` with N as the budget counts it, ``6 D^2 / C`` (``C = 6 N D``): the same in
    either parameter count of one study, so one noise serves the fits of both."""
    return 6.0 * frame["tokens"].to_numpy(dtype=float) ** 2 / frame["flops"].to_numpy(dtype=float)


@dataclass(frozen=True)
class NoiseTrend:
    """``sd(r)^2 = floor^2 + rise^2 (r / r_ref)^(2 slope)`` in tokens per parameter ``r``
    (:func:`tokens_per_param`), ``r`` clamped to ``[r_lo, r_hi]`` (the repeated points' span);
    ``p_value`` of the likelihood-ratio test against one constant noise (2 dof)."""

    floor: float
    rise: float
    r_ref: float
    slope: float
    r_lo: float
    r_hi: float
    p_value: float

    def sd_at(self, r: Any) -> np.ndarray:
        u = np.clip(np.asarray(r, dtype=float), self.r_lo, self.r_hi) / self.r_ref
        return np.sqrt(self.floor**2 + self.rise**2 * u ** (2 * self.slope))

    def to_dict(self) -> dict[str, Any]:
        return {"floor": self.floor, "rise": self.rise, "r_ref": self.r_ref, "slope": self.slope,
                "r_lo": self.r_lo, "r_hi": self.r_hi, "p_value": self.p_value,
                "formula": "sd(r)^2 = floor^2 + rise^2 (r / r_ref)^(2 slope), r = D/N = 6 D^2 / C "
                           "clamped to [r_lo, r_hi]"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NoiseTrend:
        return cls(*(float(d[k]) for k in ("floor", "rise", "r_ref", "slope", "r_lo", "r_hi", "p_value")))


TREND_START_SLOPES = (-2.0, -0.5, 0.5, 2.0)  # the fit's starting slopes, both log scales at the pooled level - 0.5
TREND_SCALE_BOUNDS = (-12.0, 6.0)  # log floor and log rise, about the log of the pooled sd
TREND_SLOPE_BOUNDS = (-8.0, 8.0)


def trend_can_be_fitted(log_r: np.ndarray, dof: np.ndarray) -> bool:
    """Whether repeated points at ``ln r`` with ``dof`` (each ``n - 1 > 0``) can carry a trend: at
    least ``TREND_MIN_POINTS`` of them, ``TREND_MIN_DOF`` dof (the likelihood-ratio test's
    chi-square is an asymptotic one), and ``r`` spanning 2x or more."""
    return (len(log_r) >= TREND_MIN_POINTS and float(np.sum(dof)) >= TREND_MIN_DOF
            and float(np.max(log_r) - np.min(log_r)) >= math.log(2.0))


def variance_nll(v: np.ndarray, ss: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """Minus the log likelihood of sums of squares ``ss ~ v chi2_dof`` (constants dropped), summed
    over the last axis."""
    return np.sum(0.5 * dof * np.log(v) + 0.5 * ss / v, axis=-1)


def _trend_nll(theta: np.ndarray, u: np.ndarray, ss: np.ndarray, dof: np.ndarray) -> tuple[float, np.ndarray]:
    """:func:`variance_nll` with ``V = exp(2 t0) + exp(2 t1 + 2 t2 u)``, and its gradient."""
    a, b = np.exp(2 * theta[0]), np.exp(2 * theta[1] + 2 * theta[2] * u)
    v = a + b
    dv = 0.5 * dof / v - 0.5 * ss / v**2
    grad = np.array([np.sum(dv * 2 * a), np.sum(dv * 2 * b), np.sum(dv * 2 * u * b)])
    return float(variance_nll(v, ss, dof)), grad


def fit_trend(r: np.ndarray, ss: np.ndarray, dof: np.ndarray) -> NoiseTrend | None:
    """The maximum-likelihood :class:`NoiseTrend` over repeated points (``dof = n - 1 > 0``) at
    tokens per parameter ``r``, from a few starting slopes (L-BFGS on the log scales); ``None``
    with fewer than ``TREND_MIN_POINTS`` such points or ``TREND_MIN_DOF`` dof among them (the
    likelihood-ratio test's chi-square is an asymptotic one), or ``r`` spanning under 2x."""
    from scipy import optimize, stats

    keep = dof > 0
    x, ss, dof = np.log(np.asarray(r, float)[keep]), np.asarray(ss, float)[keep], np.asarray(dof, float)[keep]
    if not trend_can_be_fitted(x, dof) or not (ss > 0).all():
        return None
    m = float(np.sum(dof * x) / dof.sum())
    u = x - m
    level = 0.5 * math.log(float(ss.sum()) / float(dof.sum()))
    best = None
    (lo, hi), slopes = TREND_SCALE_BOUNDS, TREND_SLOPE_BOUNDS
    for slope in TREND_START_SLOPES:
        res = optimize.minimize(_trend_nll, np.array([level - 0.5, level - 0.5, slope]), args=(u, ss, dof),
                                jac=True, method="L-BFGS-B", bounds=[(level + lo, level + hi)] * 2 + [slopes])
        if best is None or res.fun < best.fun:
            best = res
    constant = _trend_nll(np.array([level, -np.inf, 0.0]), u, ss, dof)[0]
    lr = 2 * (constant - float(best.fun))
    t = best.x
    return NoiseTrend(floor=math.exp(t[0]), rise=math.exp(t[1]), r_ref=math.exp(m), slope=float(t[2]),
                      r_lo=float(np.exp(x.min())), r_hi=float(np.exp(x.max())),
                      p_value=float(stats.chi2.sf(max(lr, 0.0), 2)))


@dataclass(frozen=True)
class NoiseEstimate:
    """Pooled standard deviations of the final loss: per budget (``None`` where it had no repeats)
    and over every budget, each with its degrees of freedom; and, where the repeats show one, the
    noise's trend in tokens per parameter (:class:`NoiseTrend`), which then gives every point's
    noise (``dof`` is then two less: the trend's rise and slope are estimated too)."""

    per_budget: dict[float, tuple[float, int]]
    pooled: float
    dof: int
    trend: NoiseTrend | None = None

    def sigma(self, budget: float | None) -> float:
        """The noise at ``budget``: its own estimate where it has repeats, else the pooled one."""
        if budget is not None:
            for b, (s, dof) in self.per_budget.items():
                if dof > 0 and math.isclose(b, budget, rel_tol=1e-9):
                    return s
        return self.pooled

    def run_sd(self, frame: pd.DataFrame, pooled: bool = False) -> np.ndarray:
        """The noise of one run at each row: the trend at its tokens per parameter where there is
        one, else its budget's (the pooled one with ``pooled``, or where the row has no budget)."""
        if self.trend is not None:
            return self.trend.sd_at(tokens_per_param(frame))
        budgets = frame["budget"] if "budget" in frame and not pooled else [None] * len(frame)
        return np.array([self.sigma(None if b is None or b != b else float(b)) for b in budgets])

    def point_se(self, points: pd.DataFrame, pooled: bool = False) -> np.ndarray:
        """The standard error of each point's mean loss, ``sigma / sqrt(n)`` (:meth:`run_sd`)."""
        return self.run_sd(points, pooled) / np.sqrt(points["n"].to_numpy(dtype=float))

    def summary(self) -> dict[str, Any]:
        """What a fit records of the noise it used (``info.noise``)."""
        return {"pooled_std": self.pooled, "pooled_dof": self.dof,
                "trend": None if self.trend is None else self.trend.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NoiseEstimate:
        """Read back :meth:`to_dict` (``fit/noise.json``)."""
        per = {float(b["flops"]): (math.nan if b["std"] is None else float(b["std"]), int(b["dof"])) for b in d["budgets"]}
        trend = d.get("trend")
        return cls(per, float(d["pooled_std"]), int(d["pooled_dof"]), NoiseTrend.from_dict(trend) if trend else None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pooled_std": self.pooled,
            "pooled_dof": self.dof,
            "budgets": [{"flops": b, "std": s if dof > 0 else None, "dof": dof, "used_std": self.sigma(b)}
                        for b, (s, dof) in sorted(self.per_budget.items())],
            "trend": None if self.trend is None else self.trend.to_dict(),
            "formula": "pooled std of final loss across seeds at each point: sum (L - mean)^2 / sum (n - 1)"
                       + ("; every point's noise from the trend in tokens per parameter" if self.trend is not None else ""),
        }


def estimate_noise(frame: pd.DataFrame, trend: bool = True) -> NoiseEstimate | None:
    """The noise of a fit's rows (``loss`` and ``budget`` or ``params, tokens``), or ``None``
    when no point was measured more than once; with ``trend`` (and ``tokens`` and ``flops``), the
    trend in tokens per parameter where the likelihood-ratio test adopts it (``TREND_P``)."""
    points = point_means(frame)
    if int((points["n"] - 1).sum()) == 0:
        return None
    per: dict[float, tuple[float, int]] = {}
    if "budget" in points:
        for b, g in points.groupby("budget", sort=True):
            dof = int((g["n"] - 1).sum())
            per[float(b)] = (math.sqrt(float(g["ss"].sum()) / dof) if dof else math.nan, dof)
    dof = int((points["n"] - 1).sum())
    fitted = None
    if trend and {"tokens", "flops"} <= set(points.columns):
        fitted = fit_trend(tokens_per_param(points), points["ss"].to_numpy(float), (points["n"] - 1).to_numpy(float))
    if fitted is not None and fitted.p_value >= TREND_P:
        fitted = None
    return NoiseEstimate(per, math.sqrt(float(points["ss"].sum()) / dof), dof - 2 * (fitted is not None), fitted)


def lack_of_fit(observed: np.ndarray, predicted: np.ndarray, se: np.ndarray, n_params: int,
                noise_dof: int | None = None) -> dict[str, Any]:
    """Chi-square of the residuals against the noise: ``chi2 = sum ((y - y_hat) / se)^2`` on
    ``dof = points - n_params``, and ``chi2 / dof`` (about 1 when the model is right and the noise
    is what was measured). The p-value says how often a right model misses by this much: from
    ``chi2_dof`` when the noise is known, and from ``F(dof, noise_dof)`` when it was estimated on
    ``noise_dof`` degrees of freedom (the pure-error lack-of-fit F test; a chi-square would
    over-reject, ``E[sigma^2 / s^2] = k / (k - 2)``). A small p: the model misses the data by more
    than the noise explains."""
    z = (np.asarray(observed, float) - np.asarray(predicted, float)) / np.asarray(se, float)
    return chi2_test(float(np.sum(z * z)), int(len(z)), int(n_params), noise_dof)


def chi2_test(chi2: float, n_points: int, n_params: int, noise_dof: int | None = None) -> dict[str, Any]:
    """``chi2`` on ``n_points - n_params`` degrees of freedom: per dof and its upper-tail p-value
    (chi-square, or F against a noise estimated on ``noise_dof`` dof)."""
    from scipy import stats

    dof = n_points - n_params
    out: dict[str, Any] = {"chi2": chi2, "dof": dof, "n_points": n_points, "n_params": n_params,
                           "noise_dof": noise_dof, "test": "chi2" if noise_dof is None else "F"}
    if dof <= 0:
        return {**out, "chi2_per_dof": None, "p_value": None}
    p = stats.chi2.sf(chi2, dof) if noise_dof is None else stats.f.sf(chi2 / dof, dof, noise_dof)
    return {**out, "chi2_per_dof": chi2 / dof, "p_value": float(p)}


def birge_widening(test: dict[str, Any]) -> float:
    """``sqrt(max(1, chi2 / dof))`` of a lack-of-fit test (:func:`chi2_test`): the Birge ratio,
    floored at 1, by which an interval built on the noise is widened where the law misses the
    points by more than the noise explains; 1 where the test has no degrees of freedom."""
    per = test.get("chi2_per_dof")
    return math.sqrt(max(1.0, per)) if per is not None else 1.0


def pooled_lack_of_fit(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Independent lack-of-fit tests (one per budget, against the same noise) as one: chi-squares
    and dofs add."""
    return chi2_test(sum(p["chi2"] for p in parts), sum(p["n_points"] for p in parts),
                     sum(p["n_params"] for p in parts), parts[0]["noise_dof"] if parts else None)
