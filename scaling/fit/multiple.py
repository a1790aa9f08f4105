"""The token-multiple law: a data term that is a power of the tokens per parameter.

    L(N, D) = E + A / N^alpha + C (D / N)^-gamma

At a fixed size this is Chinchilla's ``B / D^beta`` with ``beta = gamma`` and ``B = C N^gamma``:
what more data buys grows with the model, as in Kaplan et al. (2020), eq. 1.5, whose data term
depends on ``N^(alpha_N / alpha_D) / D`` (here the exponent of N is 1, the ladder's own axis, the
token multiple ``D / N``). Small models trained for few steps per parameter sit off Chinchilla's
form in just this way: on a CPU ladder (``sweeps/ladder.yaml``) the largest size gains more from
8x its tokens than the smaller sizes' data term extrapolates to.

Compute-optimal allocation at a budget F = 6 N D (setting ``d L / d N = 0`` along it; C is the
law's coefficient above, not the budget):

    N* = G F^a,  a = gamma / (alpha + 2 gamma),  G = (alpha A / (2 gamma C 6^gamma))^(1 / (alpha + 2 gamma))

so ``a < 1/2`` whatever the fit: under this law the tokens grow at least as fast as the model.

Fitted like approach 3 (Hoffmann et al. 2022, App. D.2): Huber loss (delta 1e-3) on log loss (or
squared error), parameters ``(log A, log C, log E, alpha, gamma)``, started from the best points of
a grid of exponents (where the loss is linear in E, A, C). Pure numpy/scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scaling.convention import Convention
from scaling.fit.data import Columns, FitData, FitRefusal, normalise
from scaling.fit.results import LawFit

FORM = "multiple"
HUBER_DELTA = 1e-3  # Hoffmann et al. 2022, App. D.2 (as approach 3)


def vector_loss(x: np.ndarray, params: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Loss at (N, D) for ``x = (log A, log C, log E, alpha, gamma)``."""
    logn = np.log(np.asarray(params, float))
    return sum(_terms(x, logn, np.log(np.asarray(tokens, float)) - logn))


def vector(params: dict[str, float]) -> np.ndarray:
    """The fitted parameters as the vector :func:`vector_loss` takes (a coefficient at 0: log 1e-300)."""
    logs = [math.log(max(params[k], 1e-300)) for k in ("A", "C", "E")]
    return np.array([*logs, params["alpha"], params["gamma"]])


def allocation(p: dict[str, float], flops: float) -> tuple[float, float]:
    """``N* = G C^a`` and ``D* = C / (6 N*)`` (module docstring); nan where no interior optimum
    (a non-positive exponent or coefficient)."""
    alpha, gamma, a_, c_ = p["alpha"], p["gamma"], p["A"], p["C"]
    if min(alpha, gamma, a_, c_) <= 0:
        return math.nan, math.nan
    k = alpha + 2 * gamma
    g = (alpha * a_ / (2 * gamma * c_ * 6.0 ** gamma)) ** (1 / k)
    n = g * flops ** (gamma / k)
    return n, flops / (6 * n)


def _terms(x: np.ndarray, logn: np.ndarray, logm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three terms ``E``, ``A / N^alpha`` and ``C (D/N)^-gamma`` (``logm = log(D / N)``)."""
    ln_a, ln_c, ln_e, alpha, gamma = x
    with np.errstate(all="ignore"):
        return np.full_like(logn, np.exp(ln_e)), np.exp(ln_a - alpha * logn), np.exp(ln_c - gamma * logm)


def _fit_vector(logn: np.ndarray, logd: np.ndarray, logl: np.ndarray, starts: list[np.ndarray],
                delta: float, loss: str = "huber", tol: float = 1e-8) -> tuple[np.ndarray, float] | None:
    """The lowest objective (``huber`` with threshold ``delta``, or ``mse``) on log loss over
    ``starts``, by scipy's trust-region least squares with the Jacobian by hand, to relative
    tolerance ``tol`` on the objective and the step: its vector and objective, or None."""
    from scipy import optimize

    logm = logd - logn

    def resid(x: np.ndarray) -> np.ndarray:
        return np.log(sum(_terms(x, logn, logm))) - logl

    def jac(x: np.ndarray) -> np.ndarray:
        e, t1, t2 = _terms(x, logn, logm)
        total = e + t1 + t2
        return np.stack([t1, t2, e, -logn * t1, -logm * t2], axis=1) / total[:, None]

    best = None
    for x0 in starts:
        with np.errstate(all="ignore"):
            res = optimize.least_squares(resid, x0, jac=jac, loss="huber" if loss == "huber" else "linear",
                                         f_scale=delta if loss == "huber" else 1.0, max_nfev=400,
                                         ftol=tol, xtol=tol)
        if np.isfinite(res.cost) and (best is None or res.cost < best.cost):
            best = res
    return None if best is None else (best.x, float(best.cost))


def _grid_starts(logn: np.ndarray, logd: np.ndarray, logl: np.ndarray, keep: int = 3) -> list[np.ndarray]:
    """Starts from a grid of exponents: for each ``(alpha, gamma)`` the loss is linear in
    ``(E, A, C)``, solved by non-negative least squares in relative error; the ``keep`` pairs with
    the smallest log-loss residual start the full fit."""
    from scipy import optimize

    loss = np.exp(logl)
    logm = logd - logn
    scored = []
    for alpha in np.linspace(0.05, 1.2, 13):
        for gamma in np.linspace(0.05, 1.5, 13):
            u, v = np.exp(-alpha * (logn - logn.mean())), np.exp(-gamma * (logm - logm.mean()))
            design = np.stack([np.ones_like(u), u, v], axis=1) / loss[:, None]
            coef, _ = optimize.nnls(design, np.ones_like(loss))
            fitted = design @ coef
            if np.all(fitted > 0):
                scored.append((float(np.sum(np.log(fitted) ** 2)), alpha, gamma, coef))
    scored.sort(key=lambda t: t[0])
    out = []
    for _, alpha, gamma, (e, a, c) in scored[:keep]:
        floor = 1e-6 * float(loss.min())  # a coefficient NNLS set to 0 starts just above it
        out.append(np.array([math.log(max(a, floor)) + alpha * logn.mean(), math.log(max(c, floor)) + gamma * logm.mean(),
                             math.log(max(e, floor)), alpha, gamma]))
    return out


@dataclass(frozen=True)
class TokenMultipleFit:
    """Fit ``E + A / N^alpha + C (D / N)^-gamma`` (module docstring) to losses, by ``loss``
    (``huber`` with threshold ``delta``, or ``mse``) on log loss."""

    loss: str = "huber"
    delta: float = HUBER_DELTA
    columns: Columns = field(default_factory=Columns)

    def __post_init__(self) -> None:
        if self.loss not in ("huber", "mse"):
            raise FitRefusal(f"loss: {self.loss!r} is not huber or mse")

    def fit(self, frame: pd.DataFrame | FitData) -> LawFit:
        fd = normalise(frame, self.columns)
        data = fd.frame
        if len(data) <= 5:
            raise FitRefusal(f"DATA: {len(data)} point(s) for the 5 parameters of the token-multiple law")
        logn, logd, logl = (np.log(data[k].to_numpy(float)) for k in ("params", "tokens", "loss"))
        starts = _grid_starts(logn, logd, logl)
        found = _fit_vector(logn, logd, logl, starts, self.delta, self.loss)
        if found is None:
            raise FitRefusal("DATA: the token-multiple law did not fit (no finite optimum)")
        x, cost = found
        params = {"E": math.exp(x[2]), "A": math.exp(x[0]), "alpha": float(x[3]), "C": math.exp(x[1]),
                  "gamma": float(x[4])}
        return LawFit(approach=FORM, form=FORM, params=params, n_points=len(data), estimator="huber_log",
                      objective=cost, convention=Convention.six_nd(fd.convention.params),
                      info={"loss": self.loss, "delta": self.delta})


def refit(x0: np.ndarray, params: np.ndarray, tokens: np.ndarray, loss: np.ndarray, counts: np.ndarray,
          delta: float = HUBER_DELTA, objective: str = "huber") -> np.ndarray:
    """Refit on each row of ``counts`` (B, n: how often each point is drawn) from ``x0``: (B, 5).

    Each row's points are repeated by their counts, so the Huber objective is the resample's own
    (a weight inside the Huber function would not be). Warm-started, each stops at relative
    tolerance 1e-6 (the point fit's is 1e-8): on the pipeline's test study that left the median
    objective the same to 5 significant digits and took 9 ms a refit instead of 15. A row that cannot fit gives nan."""
    logn, logd, logl = np.log(params), np.log(tokens), np.log(loss)
    out = np.full((len(counts), 5), np.nan)
    for i, c in enumerate(np.asarray(counts).round().astype(int)):
        if c.sum() <= 5:
            continue
        rows = np.repeat(np.arange(len(c)), c)
        found = _fit_vector(logn[rows], logd[rows], logl[rows], [x0], delta, objective, tol=1e-6)
        if found is not None:
            out[i] = found[0]
    return out

