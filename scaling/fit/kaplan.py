"""Kaplan et al. (2020) forms, fitted by least squares on log loss.

* ``n``: ``L(N) = (N_c / N)^alpha_N`` (eq. 1.1), for models trained to convergence;
* ``d``: ``L(D) = (D_c / D)^alpha_D`` (eq. 1.2), for large models trained with early stopping;
* ``joint``: ``L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D`` (eq. 1.5);
* ``compute``: ``L(C) = (C_c / C)^alpha_C`` (eq. 1.3) through the frontier, the lowest loss
  at each compute budget.

Each takes an optional irreducible loss ``E`` (``offset=True``). N counts non-embedding
parameters by default, as Kaplan did: when the frame has ``non_embedding_params`` and the
columns name plain ``params``, that column is used (``non_embedding=False`` keeps total N).
Standard errors come from the Jacobian at the optimum, ``s^2 (J^T J)^-1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from scaling.convention import N_COLUMN, Convention
from scaling.fit.data import Columns, FitData, FitRefusal, budget_groups, normalise
from scaling.fit.noise import NoiseEstimate, birge_widening, chi2_test
from scaling.fit.results import LawFit

# Parameters are fitted in (log N_c, log D_c, log C_c, log E) where positive; exponents as is.
_FORMS = {
    "n": ("N_c", "alpha_N"),
    "d": ("D_c", "alpha_D"),
    "compute": ("C_c", "alpha_C"),
    "joint": ("N_c", "D_c", "alpha_N", "alpha_D"),
}


def form_loss(form: str, x: np.ndarray, n: np.ndarray, d: np.ndarray, c: np.ndarray, offset: bool) -> np.ndarray:
    """Loss of ``form`` at (N, D, C) for the fitted vector ``x`` (log-space scales, exponents, log E)."""
    if form == "joint":
        ln_nc, ln_dc, an, ad = x[:4]
        inner = np.exp(an / ad * (ln_nc - np.log(n))) + np.exp(ln_dc - np.log(d))
        core = np.exp(ad * np.log(inner))
    else:
        ln_c, a = x[:2]
        v = {"n": n, "d": d, "compute": c}[form]
        core = np.exp(a * (ln_c - np.log(v)))
    return core + (np.exp(x[-1]) if offset else 0.0)


@dataclass(frozen=True)
class KaplanFit:
    """Fit one of Kaplan's forms (``n``, ``d``, ``joint``, ``compute``), optionally with an offset E."""

    form: str = "joint"
    offset: bool = False
    non_embedding: bool = True
    columns: Columns = field(default_factory=Columns)

    def __post_init__(self) -> None:
        if self.form not in _FORMS:
            raise FitRefusal(f"form: {self.form!r} is not one of {', '.join(_FORMS)}")

    def _columns(self, frame: Any) -> Columns:
        """Kaplan's count by default: the store's non-embedding column when the frame has one."""
        cols = self.columns
        ne = N_COLUMN["non_embedding"]
        if self.non_embedding and isinstance(frame, pd.DataFrame) and cols.params == "params" and ne in frame:
            flops = cols.convention.flops if cols.convention else "6N_non_embedding"
            cols = replace(cols, params=ne, convention=Convention("non_embedding", flops))
        return cols

    def fit(self, frame: pd.DataFrame | FitData, noise: NoiseEstimate | None = None) -> LawFit:
        """Least squares in log loss. With a measured ``noise`` each residual is in units of its
        run's noise, ``(log L_hat - log L) / (sigma_b / L)``, and the covariance is
        ``max(1, chi2 / dof) (J^T J)^-1``: the noise where the form follows the points within it,
        the residuals' scale where it misses them by more (as approaches 2 and 3 widen)."""
        fd = normalise(frame, self._columns(frame))
        data = fd.frame
        if self.form == "compute":  # the frontier: the lowest loss at each budget
            data = pd.DataFrame([g.loc[g["loss"].idxmin()] for _, g in budget_groups(data)])
        n_par = len(_FORMS[self.form]) + int(self.offset)
        if len(data) <= n_par:
            raise FitRefusal(f"DATA: {len(data)} point(s) for {n_par} parameters of Kaplan's {self.form} form")
        n, d, c = (data[k].to_numpy(float) for k in ("params", "tokens", "flops"))
        logl = np.log(data["loss"].to_numpy(float))
        if noise is not None and self.form == "compute":
            raise FitRefusal("noise: the compute form fits each budget's lowest loss; weighting it by the noise "
                             "of single runs is not defined here")
        scale = np.ones_like(logl) if noise is None else noise.run_sd(data) / np.exp(logl)

        from scipy import optimize

        def resid(x: np.ndarray) -> np.ndarray:
            return (np.log(form_loss(self.form, x, n, d, c, self.offset)) - logl) / scale

        best = None
        for x0 in self._starts(n, d, c, np.exp(logl)):
            with np.errstate(all="ignore"):
                res = optimize.least_squares(resid, x0, method="lm", max_nfev=4000)
            if np.isfinite(res.cost) and (best is None or res.cost < best.cost):
                best = res
        if best is None:
            raise FitRefusal(f"DATA: Kaplan's {self.form} form did not fit (no finite optimum)")
        params, se = self._unpack(best, len(logl), noise is not None)
        info: dict[str, Any] = {"se": se, "offset": self.offset}
        if noise is not None:
            lof = chi2_test(float(2 * best.cost), len(logl), len(best.x), noise.dof)
            info["noise"] = {**noise.summary(), "lack_of_fit": lof,
                             "widening": birge_widening(lof)}
        return LawFit(
            approach="kaplan",
            form=f"kaplan_{self.form}",
            params=params,
            n_points=len(logl),
            estimator="least_squares_log",
            objective=float(2 * best.cost),
            # L(C) is in the data's C; the other forms are in N and D, and their allocation
            # solves C = 6 N D with N as counted here
            convention=fd.convention if self.form == "compute" else Convention.six_nd(fd.convention.params),
            info=info,
        )

    def _starts(self, n, d, c, loss) -> list[np.ndarray]:
        e0 = [math.log(0.5 * loss.min())] if self.offset else []
        if self.form == "joint":
            return [
                np.array([math.log(nc), math.log(dc), an, ad, *e0])
                for nc in (1e8, 1e13) for dc in (1e8, 1e13) for an in (0.07, 0.3) for ad in (0.1, 0.3)
            ]
        v = {"n": n, "d": d, "compute": c}[self.form]
        slope, icpt = np.polyfit(np.log(v), np.log(loss), 1)
        a = max(-slope, 1e-3)
        return [np.array([icpt / a, a, *e0]), np.array([icpt / a + 5, 0.5 * a, *e0])]

    def _unpack(self, res, n_obs: int, noise_known: bool = False) -> tuple[dict[str, float], dict[str, float]]:
        names = list(_FORMS[self.form]) + (["E"] if self.offset else [])
        x = res.x
        dof = max(n_obs - len(x), 1)
        s2 = 2 * res.cost / dof  # residuals in noise units when the noise is known: chi2 / dof
        if noise_known:
            s2 = max(1.0, s2)
        try:
            cov = s2 * np.linalg.inv(res.jac.T @ res.jac)
        except np.linalg.LinAlgError:
            cov = np.full((len(x), len(x)), np.nan)
        sd = np.sqrt(np.clip(np.diag(cov), 0, None))
        params, se = {}, {}
        for i, k in enumerate(names):
            logged = not k.startswith("alpha")
            params[k] = float(math.exp(x[i])) if logged else float(x[i])
            se[k] = float(params[k] * sd[i]) if logged else float(sd[i])  # delta method for exp
        return params, se
