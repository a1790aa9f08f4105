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


@dataclass(frozen=True)
class NoiseEstimate:
    """Pooled standard deviations of the final loss: per budget (``None`` where it had no repeats)
    and over every budget, each with its degrees of freedom."""

    per_budget: dict[float, tuple[float, int]]
    pooled: float
    dof: int

    def sigma(self, budget: float | None) -> float:
        """The noise at ``budget``: its own estimate where it has repeats, else the pooled one."""
        if budget is not None:
            for b, (s, dof) in self.per_budget.items():
                if dof > 0 and math.isclose(b, budget, rel_tol=1e-9):
                    return s
        return self.pooled

    def point_se(self, points: pd.DataFrame, pooled: bool = False) -> np.ndarray:
        """The standard error of each point's mean loss, ``sigma_b / sqrt(n)`` (``sigma`` pooled
        over budgets with ``pooled``)."""
        budgets = points["budget"] if "budget" in points and not pooled else [None] * len(points)
        return np.array([self.sigma(b) for b in budgets]) / np.sqrt(points["n"].to_numpy(dtype=float))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NoiseEstimate:
        """Read back :meth:`to_dict` (``fit/noise.json``)."""
        per = {float(b["flops"]): (math.nan if b["std"] is None else float(b["std"]), int(b["dof"])) for b in d["budgets"]}
        return cls(per, float(d["pooled_std"]), int(d["pooled_dof"]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "pooled_std": self.pooled,
            "pooled_dof": self.dof,
            "budgets": [{"flops": b, "std": s if dof > 0 else None, "dof": dof, "used_std": self.sigma(b)}
                        for b, (s, dof) in sorted(self.per_budget.items())],
            "formula": "pooled std of final loss across seeds at each point: sum (L - mean)^2 / sum (n - 1)",
        }


def estimate_noise(frame: pd.DataFrame) -> NoiseEstimate | None:
    """The noise of a fit's rows (``loss`` and ``budget`` or ``params, tokens``), or ``None``
    when no point was measured more than once."""
    points = point_means(frame)
    if int((points["n"] - 1).sum()) == 0:
        return None
    per: dict[float, tuple[float, int]] = {}
    if "budget" in points:
        for b, g in points.groupby("budget", sort=True):
            dof = int((g["n"] - 1).sum())
            per[float(b)] = (math.sqrt(float(g["ss"].sum()) / dof) if dof else math.nan, dof)
    dof = int((points["n"] - 1).sum())
    return NoiseEstimate(per, math.sqrt(float(points["ss"].sum()) / dof), dof)


def row_sigma(frame: pd.DataFrame, noise: NoiseEstimate) -> np.ndarray:
    """The noise of each row's loss (its budget's, else the pooled one)."""
    budgets = frame["budget"] if "budget" in frame else [None] * len(frame)
    return np.array([noise.sigma(None if b is None or b != b else float(b)) for b in budgets])


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
