"""Backtest: fit on every budget but the largest, predict the largest, compare with two baselines.

* ``predicted_loss``: the fitted law's lowest loss along the largest budget's IsoFLOP line,
  ``min_N L(N, D(N))``. ``D(N)`` is the line ``log D = c + k log N`` through that budget's runs
  (``k = -1``, ``D = C / (6N)``, when C was counted with the same N as the fit; fitting the line
  keeps the prediction on the budget's real IsoFLOP when the budget counted another N).
  ``n_opt_predicted`` is where that minimum lies.
* ``achieved_loss``: the lowest loss observed at the largest budget; ``n_opt_observed`` the
  vertex of its IsoFLOP parabola (approach 2; ``None`` if not interior).
* baselines: ``previous_budget``, the second-largest budget's lowest loss; and
  ``power_law_on_minima``, a power law ``log L* = c0 + c1 log C`` (OLS, no offset: three or so
  points cannot pin an offset) through the smaller budgets' IsoFLOP minima (parabola vertex
  values, or the observed best where the vertex is not interior), extrapolated to the largest C.

Every ``error`` is relative and signed: ``(predicted - achieved) / achieved``. With a bootstrap
in the fitter, ``predicted_loss_ci`` and ``n_opt_predicted_ci`` give 95% percentile intervals.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from scaling.fit.approach2 import isoflop_minimum
from scaling.fit.approach3 import Approach3
from scaling.fit.data import Columns, FitData, FitRefusal, budget_groups, normalise


def _rel(pred: float, actual: float) -> float:
    return (pred - actual) / actual


def isoflop_optimum(law: Any, group: pd.DataFrame, span: float = 3.0) -> tuple[float, float]:
    """``(min loss, argmin N)`` of ``law.loss`` along the IsoFLOP line through ``group``'s runs."""
    from scipy import optimize

    logn, logd = np.log(group["params"].to_numpy()), np.log(group["tokens"].to_numpy())
    if np.ptp(logn) > 0:
        k, c = np.polyfit(logn, logd, 1)
    else:
        k, c = -1.0, float(np.mean(logd + logn))
    lo, hi = logn.min() - span, logn.max() + span

    def loss_at(x: float) -> float:
        return float(law.loss(math.exp(x), math.exp(c + k * x)))

    grid = np.linspace(lo, hi, 601)
    values = np.asarray(law.loss(np.exp(grid), np.exp(c + k * grid)), float)
    i = int(np.nanargmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = optimize.minimize_scalar(loss_at, bounds=(a, b), method="bounded", options={"xatol": 1e-9})
    return float(res.fun), float(math.exp(res.x))


def _draw_interval(law: Any, group: pd.DataFrame, span: float = 3.0, alpha: float = 0.05) -> dict[str, Any]:
    """Percentile intervals of the IsoFLOP minimum and its N over the law's bootstrap draws
    (a 601-point scan of the line per draw, 0.01 apart in log N)."""
    if law.draws is None or law.form != "chinchilla":
        return {}
    logn, logd = np.log(group["params"].to_numpy()), np.log(group["tokens"].to_numpy())
    k, c = np.polyfit(logn, logd, 1) if np.ptp(logn) > 0 else (-1.0, float(np.mean(logd + logn)))
    x = np.linspace(logn.min() - span, logn.max() + span, 601)
    e, a, b, al, be = (law.draws[:, i, None] for i in range(5))  # E, A, B, alpha, beta
    with np.errstate(all="ignore"):
        loss = e + a * np.exp(-al * x) + b * np.exp(-be * (c + k * x))
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    return {
        "predicted_loss_ci": np.nanpercentile(np.nanmin(loss, axis=1), q).tolist(),
        "n_opt_predicted_ci": np.nanpercentile(np.exp(x[np.nanargmin(loss, axis=1)]), q).tolist(),
    }


def backtest(
    frame: pd.DataFrame | FitData,
    columns: Columns | None = None,
    fitter: Approach3 | None = None,
    rtol: float = 0.02,
) -> dict[str, Any]:
    """Fit ``fitter`` (default: Approach 3, Huber grid) without the largest budget and score it."""
    data = normalise(frame, columns or Columns())
    groups = budget_groups(data.frame, rtol)
    if len(groups) < 3:
        raise FitRefusal(
            f"DATA: {len(groups)} compute budget(s); a backtest needs at least 3 (2 to fit, 1 to predict)"
        )
    *train_groups, (c_max, last) = groups
    train = FitData(pd.concat([g for _, g in train_groups], ignore_index=True), data.convention)
    law = (fitter or Approach3()).fit(train)
    predicted, n_pred = isoflop_optimum(law, last)
    achieved = float(last["loss"].min())
    observed = isoflop_minimum(c_max, last)
    n_obs = observed.get("n_opt") if observed["interior"] else None

    minima = [isoflop_minimum(c, g) for c, g in train_groups]
    best = [m["loss_opt"] if m["interior"] else m["observed_best_loss"] for m in minima]
    k, c0 = np.polyfit(np.log([m["flops"] for m in minima]), np.log(best), 1)
    power_law = float(math.exp(c0 + k * math.log(c_max)))
    previous = float(train_groups[-1][1]["loss"].min())
    error = _rel(predicted, achieved)
    baselines = {
        "previous_budget": {"loss": previous, "error": _rel(previous, achieved)},
        "power_law_on_minima": {
            "loss": power_law,
            "error": _rel(power_law, achieved),
            "form": "log L* = c0 + c1 log C (OLS)",
            "c1": float(k),
        },
    }
    return {
        "budget": float(c_max),
        "fit_budgets": [float(c) for c, _ in train_groups],
        "predicted_loss": predicted,
        "achieved_loss": achieved,
        "error": error,
        "baselines": baselines,
        "beats_baselines": all(abs(error) < abs(b["error"]) for b in baselines.values()),
        "n_opt_predicted": n_pred,
        "n_opt_observed": n_obs,
        "n_opt_error": _rel(n_pred, n_obs) if n_obs else None,
        **_draw_interval(law, last),
        **law.convention.to_dict(),
        "law": {k: v for k, v in law.to_dict(include_draws=False).items() if k not in ("info",)},
    }
