"""Approach 2 as a loss law, so that cross-validation can score it beside approach 3.

Approach 2 (Hoffmann et al. 2022, sec. 3.2) gives each IsoFLOP budget a parabola in ``log N``
(:func:`scaling.fit.approach2.isoflop_minimum`) and fits power laws through the vertices. Those
vertices also say how the loss moves around the optimum, which makes a law of ``(N, D)``:

    L(N, D) = L*(C) + k (log N - log N*(C))^2,   C = 6 N D
    N*(C) = n_coef C^n_exponent      (OLS through the vertices, approach 2's allocation law)
    L*(C) = (C_c / C)^alpha_C        (OLS in log-log through the vertices' losses: the form of
                                      Kaplan et al. 2020, eq. 1.3, on the IsoFLOP minima)
    k = the budgets' mean curvature  (the parabolas' ``c2``, loss per (log N)^2)

C counts ``6 N D`` with N as the data counts it (a budget's C is the geometric mean of its rows'
6 N D), so the allocation is ``N*(C)`` and ``D* = C / (6 N*)``. Every training budget needs an
interior minimum (approach 2's refusal otherwise), and two budgets at least.

Pure numpy/pandas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from scaling.convention import Convention
from scaling.fit.approach2 import isoflop_minimum
from scaling.fit.data import FitData, FitRefusal, budget_groups, normalise
from scaling.fit.results import LawFit

FORM = "isoflop"
NAMES = ("n_coef", "n_exponent", "C_c", "alpha_C", "curvature")


def vector_loss(x: np.ndarray, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The loss at (N, D) for ``x = (log n_coef, n_exponent, log C_c, alpha_C, curvature)``."""
    ln_g, a, ln_cc, alpha_c, k = (float(v) for v in x)
    logc = np.log(6.0 * np.asarray(n, float) * np.asarray(d, float))
    with np.errstate(all="ignore"):
        return np.exp(alpha_c * (ln_cc - logc)) + k * (np.log(n) - ln_g - a * logc) ** 2


def fit_vector(frame: pd.DataFrame, interior: bool = True) -> np.ndarray:
    """``(log n_coef, n_exponent, log C_c, alpha_C, curvature)`` from rows with ``params, tokens,
    loss`` and the budget grouping of :func:`scaling.fit.data.budget_groups`. ``interior=False``
    (a bootstrap resample, which often draws no point at a budget's edge sizes) keeps every
    parabola that curves upward, wherever its vertex, and skips budgets with none."""
    minima = []
    for _, g in budget_groups(frame):
        m = isoflop_minimum(float(np.exp(np.log(6.0 * g["params"] * g["tokens"]).mean())), g)
        if interior and not m["interior"]:
            raise FitRefusal(f"approach2: budget {m['flops']:.3g} FLOPs has no interior minimum ({m['reason']})")
        if np.isfinite(m.get("n_opt", np.nan)):
            minima.append(m)
    if len(minima) < 2:
        raise FitRefusal(f"approach2: {len(minima)} IsoFLOP budget(s); its power laws need 2 or more")
    logc = np.log([m["flops"] for m in minima])
    a, ln_g = np.polyfit(logc, np.log([m["n_opt"] for m in minima]), 1)
    slope, icpt = np.polyfit(logc, np.log([m["loss_opt"] for m in minima]), 1)
    alpha_c = -slope
    if alpha_c <= 0:
        raise FitRefusal("approach2: the IsoFLOP minima's losses do not fall with compute")
    k = float(np.mean([m["parabola_n"]["coef"][2] for m in minima]))
    return np.array([ln_g, a, icpt / alpha_c, alpha_c, k])


def fit(frame: pd.DataFrame | FitData) -> LawFit:
    """The law above as a :class:`~scaling.fit.results.LawFit` (form ``isoflop``)."""
    fd = normalise(frame)
    x = fit_vector(fd.frame)
    params = dict(zip(NAMES, (math.exp(x[0]), x[1], math.exp(x[2]), x[3], x[4]), strict=True))
    return LawFit(approach="2", form=FORM, params=params, n_points=len(fd), estimator="ols",
                  convention=Convention.six_nd(fd.convention.params), info={"max_flops": float(fd.frame["flops"].max())})


def vector(params: Mapping[str, float]) -> np.ndarray:
    """The fitted vector of a law's ``params`` (:data:`NAMES`)."""
    p = params
    return np.array([math.log(p["n_coef"]), p["n_exponent"], math.log(p["C_c"]), p["alpha_C"], p["curvature"]])


def params_loss(params: Mapping[str, float], n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The loss at (N, D) of a law's ``params``."""
    return vector_loss(vector(params), n, d)


def allocation(params: Mapping[str, float], flops: float) -> tuple[float, float]:
    """``N* = n_coef C^n_exponent``, ``D* = C / (6 N*)``."""
    n = params["n_coef"] * flops ** params["n_exponent"]
    return n, flops / (6.0 * n)


def refit(params: np.ndarray, tokens: np.ndarray, loss: np.ndarray, budget: np.ndarray,
          counts: np.ndarray) -> np.ndarray:
    """One vector per row of integer ``counts`` (B, n): each row's points repeated as often as it
    drew them (ordinary least squares on repeated points is the weighted fit), every upward
    parabola kept; nan where refused."""
    frame = pd.DataFrame({"params": params, "tokens": tokens, "loss": loss, "budget": budget})
    out = np.full((len(counts), len(NAMES)), np.nan)
    for i, c in enumerate(np.asarray(counts).round().astype(int)):
        try:
            out[i] = fit_vector(frame.loc[frame.index.repeat(c)], interior=False)
        except FitRefusal:
            continue
    return out
