"""``LawFit``: the immutable result of every fitter, and a law the planner can use.

Forms and their parameters:

* ``chinchilla`` (approach 3): ``L(N, D) = E + A / N^alpha + B / D^beta``; compute-optimal
  ``N* = G (C/6)^a``, ``D* = G^-1 (C/6)^b`` with ``G = (alpha A / (beta B))^(1/(alpha+beta))``,
  ``a = beta / (alpha+beta)``, ``b = alpha / (alpha+beta)`` (Hoffmann et al. 2022, eq. 4).
* ``allocation`` (approaches 1 and 2): ``N*(C) = n_coef C^n_exponent``,
  ``D*(C) = d_coef C^d_exponent``; no loss (``loss`` returns nan).
* ``kaplan_n``, ``kaplan_d``, ``kaplan_joint``, ``kaplan_compute`` (Kaplan et al. 2020, eqs.
  1.1-1.5): see :mod:`scaling.fit.kaplan`.
* ``isoflop`` (approach 2 as a loss law): ``L*(C) + k (log N - log N*(C))^2``, see
  :mod:`scaling.fit.isoflop_law`.

Uncertainty comes from bootstrap draws of the parameters (``draws``, one row per resample) or,
for the OLS power laws of approaches 1 and 2, from the coefficient covariance (``info["ols"]``).
Confidence intervals are percentile intervals of the draws; prediction intervals add the
residual scale in log space (``info["residual_scale"]``, 1.4826 x the median absolute
log-residual) to the spread of the predicted mean.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from types import MappingProxyType
from typing import Any

import numpy as np

from scaling.bends import significant_bend
from scaling.convention import Convention
from scaling.laws.base import (
    Allocation,
    chinchilla_allocation,
    chinchilla_optimum,
    local_exponent,
    numeric_allocation,
)

CHINCHILLA = ("E", "A", "B", "alpha", "beta")
ALLOCATION = ("n_coef", "n_exponent", "d_coef", "d_exponent")
CITATIONS = {
    "3": "Hoffmann et al. 2022 (approach 3), estimator of Besiroglu et al. 2024",
    "2": "Hoffmann et al. 2022 (approach 2, IsoFLOP profiles)",
    "1": "Hoffmann et al. 2022 (approach 1, training-curve envelope)",
    "kaplan": "Kaplan et al. 2020",
    "multiple": "Kaplan et al. 2020 eq. 1.5 (a data term in N and D), with D / N as its variable",
}


def _frozen(a: Any) -> np.ndarray | None:
    if a is None:
        return None
    arr = np.array(a, dtype=float)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class LawFit:
    """A fitted law: parameters, their uncertainty, predictions and the compute-optimal allocation."""

    approach: str
    form: str
    params: Mapping[str, float]
    n_points: int
    estimator: str = ""
    objective: float | None = None
    draws: np.ndarray | None = None
    convention: Convention = field(default_factory=Convention)
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.convention, Convention):
            raise TypeError(f"convention: expected a Convention, got {type(self.convention).__name__}")
        object.__setattr__(self, "params", MappingProxyType({k: float(v) for k, v in self.params.items()}))
        object.__setattr__(self, "draws", _frozen(self.draws))
        object.__setattr__(self, "info", MappingProxyType(dict(self.info)))

    # ---- Law protocol --------------------------------------------------------------------------

    @property
    def param_convention(self) -> str:
        """What N counts: ``total`` or ``non_embedding``."""
        return self.convention.params

    @property
    def flops_convention(self) -> str:
        """How C was counted (one of :data:`scaling.flops.FLOP_CONVENTIONS`)."""
        return self.convention.flops

    @property
    def name(self) -> str:
        return f"fit:approach{self.approach}" if self.approach not in ("kaplan", "multiple") else f"fit:{self.form}"

    @property
    def citation(self) -> str:
        return f"fitted here; method of {CITATIONS.get(self.approach, self.approach)}"

    def loss(self, params: Any, tokens: Any) -> Any:
        """Predicted loss at N = ``params``, D = ``tokens`` (nan for allocation-only fits)."""
        out = _loss(self.form, self.params, np.asarray(params, float), np.asarray(tokens, float))
        return float(out) if np.ndim(out) == 0 else out

    def optimal_allocation(self, flops: float) -> Allocation:
        n, d = _allocation(self.form, self.params, float(flops))
        return Allocation(flops=float(flops), params=n, tokens=d)

    # ---- statistics ------------------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.params)

    def derived(self) -> dict[str, float]:
        """Derived constants: a, b, G for the Chinchilla form (Hoffmann et al. 2022, eq. 4)."""
        return _derived(self.form, self.params)

    def _draw_table(self) -> dict[str, np.ndarray]:
        """Bootstrap draws of every parameter and derived constant, by name."""
        if self.draws is None or len(self.draws) == 0:
            return {}
        table = {k: self.draws[:, i] for i, k in enumerate(self.names)}
        table.update(_derived(self.form, table))
        return table

    @property
    def se(self) -> dict[str, float]:
        """Standard errors: bootstrap standard deviations (ddof=1), or OLS ones for power laws."""
        table = self._draw_table()
        if table:
            return {k: float(np.nanstd(v, ddof=1)) for k, v in table.items()}
        if self.info.get("ols"):
            return _ols_se(self.info["ols"])
        return dict(self.info.get("se", {}))

    def conf_int(self, alpha: float = 0.05) -> dict[str, tuple[float, float]]:
        """``1 - alpha`` intervals: bootstrap percentiles, or t intervals of the OLS fits."""
        table = self._draw_table()
        if table:
            q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
            return {k: tuple(float(x) for x in np.nanpercentile(v, q)) for k, v in table.items()}
        ols = self.info.get("ols")
        if ols:
            return _ols_conf_int(ols, alpha)
        z = NormalDist().inv_cdf(1 - alpha / 2)  # normal intervals from the Jacobian standard errors
        return {k: (self.params[k] - z * s, self.params[k] + z * s) for k, s in self.se.items() if k in self.params}

    def allocation(self, flops: float, alpha: float = 0.05) -> dict[str, Any]:
        """N*(C), D*(C) and tokens per parameter at ``flops``, each with its ``1 - alpha`` interval."""
        n, d = _allocation(self.form, self.params, float(flops))
        out: dict[str, Any] = {"flops": float(flops), "params": n, "tokens": d, "tokens_per_param": d / n}
        table = self._draw_table()
        q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
        if table and self.form in ("chinchilla", "allocation"):  # the same draws as the exponent's interval
            nd = _chinchilla_alloc(table, float(flops)) if self.form == "chinchilla" else (
                table["n_coef"] * float(flops) ** table["n_exponent"], table["d_coef"] * float(flops) ** table["d_exponent"])
            samples = {"params": nd[0], "tokens": nd[1], "tokens_per_param": nd[1] / nd[0]}
            out["ci"] = {k: [float(x) for x in np.nanpercentile(v, q)] for k, v in samples.items()}
        elif self.info.get("ols"):
            out["ci"] = _ols_alloc_ci(self.info["ols"], float(flops), alpha)
        return out

    def n_exponent(self, alpha: float = 0.05, between: tuple[float, float] | None = None) -> dict[str, Any]:
        """``a`` in ``N* ~ C^a`` with its ``1 - alpha`` interval, and where it comes from.

        Chinchilla form: ``a = beta / (alpha + beta)`` (Hoffmann et al. 2022, eq. 4), bootstrap
        percentiles. Allocation fits (approaches 1, 2): the OLS slope, t interval (with a measured
        noise: percentiles of its parametric resamples). Other forms: the
        local slope ``d ln N* / d ln C`` between the two budgets ``between``, no interval.
        """
        out: dict[str, Any] = {"approach": self.approach, "form": self.form, **self.convention.to_dict()}
        ci = self.conf_int(alpha)
        if self.form == "chinchilla":
            a, interval, key = self.derived()["a"], "bootstrap percentiles", "a"
            noise = self.info.get("noise") or {}
            if noise.get("widening") is not None:
                interval += f" (losses redrawn with the noise, widened {noise['widening']:.2g}x by the lack of fit)"
        elif self.form == "allocation":
            noisy = self.draws is not None
            interval = ("bootstrap percentiles (means redrawn with the noise, widened by any lack of fit of the vertices)"
                        if noisy else "OLS t interval")
            a, key = self.params["n_exponent"], "n_exponent"
            interval += _bend_note(self.info)
        elif between is not None:
            return {**out, "a": local_exponent(self, *between), "ci": None, "interval": None,
                    "between": [float(c) for c in between]}
        else:
            return {**out, "a": None, "ci": None, "interval": None}
        bounds = ci.get(key) if self.form == "allocation" or self.draws is not None else None
        return {**out, "a": float(a), "ci": list(bounds) if bounds else None,
                "interval": f"{100 * (1 - alpha):g}% {interval}" if bounds else None}

    def predict(self, params: Any, tokens: Any, interval: str | None = None, alpha: float = 0.05) -> Any:
        """Predicted loss; with ``interval="confidence"`` or ``"prediction"`` a dict of arrays
        ``loss, lower, upper``. Confidence: percentiles of the bootstrap predictions. Prediction:
        the log-space spread of those plus the residual scale, as a normal interval."""
        n = np.asarray(params, float)
        d = np.asarray(tokens, float)
        mean = _loss(self.form, self.params, n, d)
        if interval is None:
            return mean
        if interval not in ("confidence", "prediction"):
            raise ValueError(f"interval: {interval!r} is not 'confidence' or 'prediction'")
        table = self._draw_table()
        if table:
            sims = np.stack([_loss(self.form, {k: table[k][i] for k in self.names}, n, d) for i in range(len(self.draws))])
        else:
            sims = mean[None, ...]
        if interval == "confidence":
            lo, hi = np.nanpercentile(sims, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
        else:
            z = NormalDist().inv_cdf(1 - alpha / 2)
            spread = np.sqrt(np.nanvar(np.log(sims), axis=0) + float(self.info.get("residual_scale", 0.0)) ** 2)
            lo, hi = mean * np.exp(-z * spread), mean * np.exp(z * spread)
        return {"loss": mean, "lower": lo, "upper": hi}

    # ---- serialisation ---------------------------------------------------------------------------

    def to_dict(self, include_draws: bool = True) -> dict[str, Any]:
        """A JSON-ready dict: the headline keys of ``scaling fit --json`` plus what round-trips."""
        out: dict[str, Any] = {
            "approach": self.approach,
            "form": self.form,
            "estimator": self.estimator,
            **self.convention.to_dict(),
            "n_points": self.n_points,
            "objective": self.objective,
        }
        if self.form == "chinchilla":
            out.update(self.params)
            out.update(self.derived())
        elif self.form == "allocation":
            ci = self.conf_int()
            for key, prefix in (("n_opt", "n"), ("d_opt", "d")):
                out[key] = {
                    "coef": self.params[f"{prefix}_coef"],
                    "exponent": self.params[f"{prefix}_exponent"],
                    "ci": {"coef": ci.get(f"{prefix}_coef"), "exponent": ci.get(f"{prefix}_exponent")},
                }
            out["minima"] = list(self.info.get("minima", []))
        else:
            out.update(self.params)
        out["se"] = self.se
        out["ci"] = {k: list(v) for k, v in self.conf_int().items()}
        out["params"] = dict(self.params)
        out["info"] = dict(self.info)
        if include_draws and self.draws is not None:
            out["draws"] = self.draws.tolist()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LawFit:
        return cls(
            approach=str(d["approach"]),
            form=str(d["form"]),
            params=dict(d["params"]),
            n_points=int(d["n_points"]),
            estimator=str(d.get("estimator", "")),
            objective=d.get("objective"),
            draws=d.get("draws"),
            convention=Convention.from_dict(d),
            info=dict(d.get("info", {})),
        )

    # ---- display -----------------------------------------------------------------------------------

    def summary_rows(self) -> list[tuple[str, float, float | None, tuple[float, float] | None]]:
        se, ci = self.se, self.conf_int()
        names = list(self.params) + [k for k in self.derived() if k not in self.params]
        values = {**self.params, **self.derived()}
        return [(k, values[k], se.get(k), ci.get(k)) for k in names]

    def summary(self, fmt: str = "text") -> str:
        """A table of estimates, standard errors and 95% intervals (``fmt="text"`` or ``"html"``)."""
        title = (
            f"{self.name} ({self.form}, estimator {self.estimator or '-'}); N counts "
            f"{self.param_convention.replace('_', '-')} parameters, C counts {self.flops_convention}; "
            f"{self.n_points} points"
        )
        rows = self.summary_rows()
        if fmt == "html":
            cells = "".join(
                f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td><td>{_fmt(s)}</td>"
                f"<td>{html.escape(_fmt_ci(c))}</td></tr>"
                for k, v, s, c in rows
            )
            return (
                f"<table class='lawfit'><caption>{html.escape(title)}</caption>"
                "<tr><th>parameter</th><th>estimate</th><th>std. err.</th><th>95% interval</th></tr>"
                f"{cells}</table>"
            )
        if fmt != "text":
            raise ValueError(f"fmt: {fmt!r} is not 'text' or 'html'")
        lines = [title, f"{'parameter':<12}{'estimate':>14}{'std. err.':>14}   95% interval"]
        lines += [f"{k:<12}{_fmt(v):>14}{_fmt(s):>14}   {_fmt_ci(c)}" for k, v, s, c in rows]
        if self.objective is not None:
            lines.append(f"objective: {self.objective:.6g}")
        if self.info.get("noise"):
            lines.append(noise_line(self.info["noise"]))
            lines += _vertex_line(self.info)
        minima = self.info.get("minima") or []
        if minima:
            lines.append(f"{'budget (FLOPs)':<16}{'N*':>12}{'D*':>12}{'loss':>10}")
            for m in minima:
                lines.append(f"{m['flops']:<16.4g}{m['n_opt']:>12.4g}{m['d_opt']:>12.4g}{m.get('loss_opt', m.get('loss', math.nan)):>10.4f}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params.items())
        return f"LawFit(approach={self.approach!r}, {body})"


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.6g}"


def _fmt_ci(c: tuple[float, float] | None) -> str:
    return "-" if c is None else f"[{_fmt(c[0])}, {_fmt(c[1])}]"


# ---- the forms -----------------------------------------------------------------------------------


def _derived(form: str, p: Mapping[str, Any]) -> dict[str, Any]:
    if form != "chinchilla":
        return {}
    arrays = [np.asarray(p[k], float) for k in ("A", "B", "alpha", "beta")]
    with np.errstate(all="ignore"):
        g, a, b = chinchilla_optimum(*arrays)
    return {k: float(v) if np.ndim(v) == 0 else v for k, v in {"a": a, "b": b, "G": g}.items()}


def _chinchilla_alloc(p: Mapping[str, Any], flops: float) -> tuple[Any, Any]:
    arrays = [np.asarray(p[k], float) for k in ("A", "B", "alpha", "beta")]
    with np.errstate(all="ignore"):
        return chinchilla_allocation(*arrays, flops)


def _loss(form: str, p: Mapping[str, Any], n: np.ndarray, d: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        if form == "chinchilla":
            return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]
        if form == "kaplan_n":
            return (p["N_c"] / n) ** p["alpha_N"] + p.get("E", 0.0) + 0.0 * d
        if form == "kaplan_d":
            return (p["D_c"] / d) ** p["alpha_D"] + p.get("E", 0.0) + 0.0 * n
        if form == "kaplan_joint":
            return ((p["N_c"] / n) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / d) ** p["alpha_D"] + p.get("E", 0.0)
        if form == "kaplan_compute":
            return (p["C_c"] / (6.0 * n * d)) ** p["alpha_C"] + p.get("E", 0.0)
        if form == "isoflop":
            from scaling.fit.isoflop_law import params_loss  # it builds on this module

            return params_loss(p, n, d)
        if form == "multiple":
            from scaling.fit.multiple import vector, vector_loss  # it builds on this module

            return vector_loss(vector(dict(p)), n, d)
    return np.full(np.broadcast(n, d).shape, np.nan)


def _allocation(form: str, p: Mapping[str, float], flops: float) -> tuple[float, float]:
    if form == "chinchilla":
        n, d = _chinchilla_alloc(p, flops)
        return float(n), float(d)
    if form == "allocation":
        return p["n_coef"] * flops ** p["n_exponent"], p["d_coef"] * flops ** p["d_exponent"]
    if form == "isoflop":
        from scaling.fit.isoflop_law import allocation

        return allocation(p, flops)
    if form == "multiple":
        from scaling.fit.multiple import allocation as multiple_allocation  # it builds on this module

        return multiple_allocation(p, flops)
    if form in ("kaplan_joint",):
        al = numeric_allocation(lambda n, d: _loss(form, p, np.asarray(n), np.asarray(d)), flops)
        return al.params, al.tokens
    return math.nan, math.nan


# ---- OLS power laws (approaches 1, 2) -------------------------------------------------------------


def _t_quantile(df: int, p: float) -> float:
    """Student's t quantile (scipy.special, imported here: only intervals of OLS fits need it)."""
    from scipy import special

    return float(special.stdtrit(df, p))


def _ols_conf_int(ols: Mapping[str, Any], alpha: float) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for prefix in ("n", "d"):
        fit = ols.get(prefix)
        if not fit:
            continue
        t = _t_quantile(fit["df"], 1 - alpha / 2) if fit["df"] > 0 else math.inf
        (c0, c1), cov = fit["params"], np.asarray(fit["cov"], float)
        s0, s1 = math.sqrt(max(cov[0, 0], 0.0)), math.sqrt(max(cov[1, 1], 0.0))
        with np.errstate(over="ignore"):
            out[f"{prefix}_coef"] = (float(np.exp(c0 - t * s0)), float(np.exp(c0 + t * s0)))
        out[f"{prefix}_exponent"] = (float(c1 - t * s1), float(c1 + t * s1))
    return out


def _ols_se(ols: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for prefix in ("n", "d"):
        fit = ols.get(prefix)
        if fit:
            cov = np.asarray(fit["cov"], float)
            out[f"{prefix}_exponent"] = float(math.sqrt(cov[1, 1])) if np.isfinite(cov[1, 1]) else math.nan
            se0 = float(math.sqrt(cov[0, 0])) if np.isfinite(cov[0, 0]) else math.nan
            out[f"{prefix}_coef"] = math.exp(fit["params"][0]) * se0  # delta method
    return out


def _ols_alloc_ci(ols: Mapping[str, Any], flops: float, alpha: float) -> dict[str, list[float]]:
    """Confidence interval of the fitted line at log C: ``x^T cov x`` (mean response)."""
    out: dict[str, list[float]] = {}
    x = np.array([1.0, math.log(flops)])
    for prefix, key in (("n", "params"), ("d", "tokens")):
        fit = ols.get(prefix)
        if not fit:
            continue
        t = _t_quantile(fit["df"], 1 - alpha / 2) if fit["df"] > 0 else math.inf
        mean = float(x @ np.asarray(fit["params"], float))
        sd = math.sqrt(max(float(x @ np.asarray(fit["cov"], float) @ x), 0.0))
        with np.errstate(over="ignore"):
            out[key] = [float(np.exp(mean - t * sd)), float(np.exp(mean + t * sd))]
    return out


def noise_line(noise: Mapping[str, Any]) -> str:
    """``noise: std 0.0042 (12 dof, repeated seeds); lack of fit chi2/dof 1.31 on 15 dof, p = 0.18``."""
    lof = noise.get("lack_of_fit") or {}
    head = f"noise: std {noise['pooled_std']:.4g} of the final loss ({noise['pooled_dof']} dof, from repeated seeds)"
    trend = noise.get("trend")
    if trend:
        head += (f"; per point sqrt({trend['floor']:.3g}^2 + {trend['rise']:.3g}^2 (r/{trend['r_ref']:.3g})^"
                 f"{2 * trend['slope']:.2f}) in tokens per parameter r (p = {trend['p_value']:.2g} against one value)")
    if lof.get("chi2_per_dof") is None:
        return f"{head}; lack of fit: no degrees of freedom left"
    verdict = "the model misses the data by more than the noise" if lof["p_value"] < 0.01 else "consistent with the noise"
    return (f"{head}; lack of fit chi2/dof = {lof['chi2_per_dof']:.3g} on {lof['dof']} dof, "
            f"p = {lof['p_value']:.3g} ({verdict})")


def _bend_note(info: Mapping[str, Any]) -> str:
    """Where an allocation fit's vertices curve away from one power law (:func:`significant_bend`):
    the local exponents at its ends, so a wide interval reads as what it is, a line through a bend."""
    bend = significant_bend(((info.get("noise") or {}).get("widening") or {}).get("power_law_n"))
    if bend is None:
        return ""
    local = bend["local_exponents"]
    return (f"; the vertices bend (p = {bend['p_value']:.2g}): local exponent {local[0]:.2f} at the smallest"
            f" budgets, {local[-1]:.2f} at the largest")


def _vertex_line(info: Mapping[str, Any]) -> list[str]:
    """Approach 2's test of its vertices against the N* power law, and any bend, as one line."""
    test = ((info.get("noise") or {}).get("widening") or {}).get("power_law_n")
    if not isinstance(test, Mapping) or test.get("chi2_per_dof") is None:
        return []
    how = "interval widened by its residual scale" if test["chi2_per_dof"] > 1 else "within the noise"
    return [f"N* line through the vertices: chi2/dof = {test['chi2_per_dof']:.3g} on {test['dof']} dof ({how})"
            + _bend_note(info)]
