"""Everything a report shows, read from a study folder (the store and the stages' JSON artifacts).

The report only reads: runs through :func:`scaling.load_runs`, the sweep spec through
:class:`scaling.store.SweepStore`, and the JSON files each stage writes (``plan.json``,
``fit/*.json``, ``fit/backtest.json``, ``select.json``, ``align/``, ``summary.json``). Each part
is optional: a section appears only when its data exists. Nothing is refitted here: the IsoFLOP
minima and their parabolas, the exponents and their conventions are the fit stage's
(:mod:`scaling.fit.artifacts`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scaling.convention import Convention
from scaling.store import SweepStore, read_json, read_jsonl

CONVENTIONS: tuple[str, ...] = ("non_embedding", "total")
CONVENTION_LABEL: dict[str, str] = {
    "non_embedding": "non-embedding N (Kaplan)",
    "total": "total N (Chinchilla)",
}


@dataclass(frozen=True)
class FitView:
    """One fit artifact (``LawFit.to_dict()``) read tolerantly: the keys the report draws."""

    name: str
    raw: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        for d in (self.raw, self.raw.get("params") or {}, self.raw.get("result") or {}):
            if isinstance(d, dict) and key in d and d[key] is not None:
                return d[key]
        return default

    @property
    def approach(self) -> str:
        return str(self.raw.get("approach", "?"))

    @property
    def convention(self) -> Convention | None:
        """How the fit counted N and C, as its file says (None for a file that does not say)."""
        try:
            return Convention.from_dict(self.raw, where=self.name)
        except ValueError:  # UsageError: a file from elsewhere, shown without a convention
            return None

    @property
    def count(self) -> str | None:
        c = self.convention
        return c.params if c else None

    def ci(self, key: str) -> tuple[float, float] | None:
        """Interval of a parameter: ``ci[key]``, or the ``ci`` of a nested ``{coef, exponent, ci}``."""
        ci = self.get("ci")
        if isinstance(ci, dict) and key in ci:
            return _pair(ci[key])
        return None

    def power_law(self, which: str) -> dict[str, Any] | None:
        """``N*(C) = coef C^exponent`` (``which`` = ``n_opt`` or ``d_opt``) with its exponent interval."""
        v = self.get(which)
        if isinstance(v, dict) and v.get("exponent") is not None and v.get("coef") is not None:
            ci = v.get("ci")
            exp_ci = _pair(ci.get("exponent")) if isinstance(ci, dict) else _pair(ci)
            return {"coef": float(v["coef"]), "exponent": float(v["exponent"]), "ci": exp_ci}
        if which == "n_opt" and self.get("G") is not None and self.get("a") is not None:
            return {"coef": float(self.get("G")), "exponent": float(self.get("a")), "ci": self.ci("a")}
        if which == "d_opt" and self.get("G") is not None and self.get("b") is not None:
            # Chinchilla eq. 4: D* = G^-1 (C/6)^b, so D* = (G^-1 6^-b) C^b
            g, b = float(self.get("G")), float(self.get("b"))
            return {"coef": 6.0**-b / g, "exponent": b, "ci": self.ci("b")}
        return None

    def n_opt_coef_at_c(self) -> dict[str, Any] | None:
        """Approach-3 ``G`` is defined on C/6 (Chinchilla eq. 4): N* = G (C/6)^a."""
        pl = self.power_law("n_opt")
        if pl is None:
            return None
        if self.get("n_opt") is None and self.get("G") is not None:
            pl = {**pl, "coef": pl["coef"] * 6.0 ** -pl["exponent"]}
        return pl

    @property
    def loss_params(self) -> dict[str, float] | None:
        keys = ("E", "A", "B", "alpha", "beta")
        vals = [self.get(k) for k in keys]
        if any(v is None for v in vals):
            return None
        return {k: float(v) for k, v in zip(keys, vals, strict=True)}

    def loss(self, n: np.ndarray, d: np.ndarray) -> np.ndarray:
        """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, eq. 2)."""
        p = self.loss_params
        if p is None:
            return np.full(np.shape(n), np.nan)
        return p["E"] + p["A"] / np.power(n, p["alpha"]) + p["B"] / np.power(d, p["beta"])

    @property
    def minima(self) -> list[dict[str, Any]]:
        m = self.get("minima") or []
        return [x for x in m if isinstance(x, dict)]


@dataclass(frozen=True)
class Valley:
    """One budget's IsoFLOP minimum as the fit stage wrote it (:func:`scaling.fit.approach2.isoflop_minimum`),
    in ln N (or, for the tokens view, ln D). Without an interior minimum: the best run, no parabola vertex."""

    budget: float
    n_opt: float
    log_n_se: float
    loss_opt: float
    interior: bool
    n_range: tuple[float, float]
    tokens_opt: float
    parabola: dict[str, Any] | None
    reason: str | None = None

    @classmethod
    def from_minimum(cls, m: dict[str, Any], view: str) -> Valley:
        tokens = view == "tokens"
        key, best = ("d", "observed_best_tokens") if tokens else ("n", "observed_best_params")
        interior = bool(m.get("interior"))
        rng = m.get(f"{key}_range") or [math.nan, math.nan]
        return cls(
            budget=float(m["flops"]),
            n_opt=float(m[f"{key}_opt"]) if interior else float(m.get(best, math.nan)),
            log_n_se=float(m.get(f"{key}_opt_log_se", math.nan)) if interior else math.nan,
            loss_opt=float(m["loss_opt"]) if interior else float(m["observed_best_loss"]),
            interior=interior,
            n_range=(float(rng[0]), float(rng[1])),
            tokens_opt=float(m["d_opt"]) if interior else float(m.get("observed_best_tokens", math.nan)),
            parabola=m.get(f"parabola_{key}"),
            reason=m.get("reason"),
        )

    def loss_at(self, x: np.ndarray) -> np.ndarray:
        """The stored parabola at ``x`` (ln N, or ln D in the tokens view)."""
        from scaling.fit.approach2 import parabola_at

        return parabola_at(self.parabola, x)


def exponent_card(row: dict[str, Any]) -> tuple[str, str, str]:
    """(title, value, note) of one of the summary's exponents (:func:`scaling.fit.artifacts.exponent_rows`)."""
    from scaling.fit.artifacts import exponent_where

    value = "refused" if row.get("a") is None else f"{row['a']:.3f}"
    if row.get("a") is None:
        detail = str(row.get("refused", ""))[:160]
    elif row.get("ci"):
        detail = f"{row['interval']} [{row['ci'][0]:.3f}, {row['ci'][1]:.3f}]"
    elif row.get("between"):
        detail = f"local slope between C = {row['between'][0]:.3g} and {row['between'][1]:.3g}"
    else:
        detail = ""
    return f"N* exponent a: {exponent_where(row)}", value, detail


def _pair(v: Any) -> tuple[float, float] | None:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_finite(x) for x in v):
        return float(v[0]), float(v[1])
    return None


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


CURVE_COLUMNS = ("name", "budget", "step", "tokens", "flops", "loss")  # what the report draws of the steps


@dataclass
class Study:
    """A study folder, read once."""

    path: Path
    runs: pd.DataFrame
    curves: pd.DataFrame
    sweep_yaml: str | None
    fits: dict[str, FitView] = field(default_factory=dict)
    backtest: dict[str, Any] | None = None
    plan: Any = None
    select: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    align_summary: Any = None
    align_metrics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    minima: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    minima_convention: dict[str, Convention | None] = field(default_factory=dict)
    refusals: dict[str, str] = field(default_factory=dict)
    exponents: list[dict[str, Any]] = field(default_factory=list)
    noise: dict[str, Any] | None = None  # fit/noise.json: run-to-run noise from repeated seeds
    extend: dict[str, Any] | None = None  # extend.json: the runs the adaptive sweep added, and why
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    def noise_std(self, budget: float, tokens: Any = None) -> Any:
        """The noise of one run's final loss at ``budget`` (its own estimate, else the pooled one);
        where the noise has a trend in tokens per parameter, at ``tokens`` (an array: one value each)."""
        if not self.noise:
            return None
        from scaling.fit.noise import NoiseEstimate

        nz = NoiseEstimate.from_dict(self.noise)
        if nz.trend is not None and tokens is not None:
            d = np.asarray(tokens, float)
            return nz.run_sd(pd.DataFrame({"tokens": d, "flops": np.full_like(d, budget)}))
        return nz.sigma(float(budget))

    @property
    def done(self) -> pd.DataFrame:
        if self.runs.empty or "status" not in self.runs:
            return self.runs
        d = self.runs[self.runs["status"] == "done"]
        return d[d["final_loss"].notna()] if "final_loss" in d else d

    def valleys(self, view: str) -> list[Valley]:
        """The fit stage's IsoFLOP minima in ``view``: a parameter count (``total``,
        ``non_embedding``) or ``tokens`` (the parabola in ln D, the same in either count)."""
        counts = [view] if view != "tokens" else ["total", "non_embedding"]
        for count in counts:
            if self.minima.get(count):
                return [Valley.from_minimum(m, view) for m in self.minima[count]]
        return []

    @property
    def budget_flops(self) -> str | None:
        """How the budget labels count C (a FLOP convention), as the fit stage recorded it."""
        return next((c.flops for c in self.minima_convention.values() if c is not None), None)

    @property
    def run_flops(self) -> str:
        """How the runs' ``flops`` count C (``result.json``'s ``flops_convention``; runs written
        before it was recorded counted 6 N_total D)."""
        if "flops_convention" in self.runs and self.runs["flops_convention"].notna().any():
            return ", ".join(sorted(set(self.runs["flops_convention"].dropna())))
        return "6N"

    def loss_column(self) -> str:
        """Held-out loss when every finished run has one, else the final training loss."""
        d = self.done
        if "eval_loss" in d and len(d) and d["eval_loss"].notna().all():
            return "eval_loss"
        return "final_loss"

    def fit(self, approach: str, count: str) -> FitView | None:
        """The fit of ``approach`` whose N counts ``count``; a study's own file before an added one."""
        for f in self.fits.values():
            if f.approach == approach and f.count == count:
                return f
        return None

    def target_flops(self) -> float | None:
        for src in (self.plan, self.summary, self.backtest):
            if isinstance(src, dict):
                for k in ("target_flops", "target_budget", "target"):
                    v = src.get(k)
                    if _finite(v) and v > 0:
                        return float(v)
        return None


def load_study(study_dir: str | Path, fit_paths: list[str | Path] | None = None) -> Study:
    """Read ``study_dir``; ``fit_paths`` add (or replace, by file stem) fit artifacts."""
    import scaling
    from scaling.columnar import status_records
    from scaling.fit.artifacts import exponent_rows

    path = Path(study_dir)
    runs = scaling.load_runs(path)
    curves = scaling.load_runs(path, curves=True, columns=CURVE_COLUMNS)
    store = SweepStore(path)
    fits: dict[str, FitView] = {}
    fit_dir = path / "fit"
    candidates = sorted(fit_dir.glob("*.json")) if fit_dir.is_dir() else []
    candidates += [Path(p) for p in fit_paths or []]
    for p in candidates:
        if p.name in ("backtest.json", "noise.json"):
            continue
        d = _read_obj(p)
        if isinstance(d, dict):
            fits[p.stem] = FitView(p.stem, d)
    align = path / "align"
    minima, conventions, refusals = _minima(path)
    return Study(
        path=path,
        runs=runs,
        curves=curves,
        sweep_yaml=store.read_sweep(),
        fits=fits,
        backtest=_headline_backtest(_read_obj(fit_dir / "backtest.json")),
        plan=_read_obj(path / "plan.json"),
        select=_read_obj(path / "select.json"),
        summary=_read_obj(path / "summary.json"),
        align_summary=_read_obj(align / "summary.json"),
        align_metrics={s: read_jsonl(align / s / "metrics.jsonl") for s in ("sft", "reward", "rlhf", "dpo")},
        statuses={r["run_id"]: r["_status"] for r in status_records(path)},
        minima=minima,
        minima_convention=conventions,
        refusals=refusals,
        exponents=exponent_rows(path),
        noise=_read_obj(fit_dir / "noise.json"),
        extend=_read_obj(path / "extend.json"),
    )


def _minima(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """The approach-2 minima of each parameter count, their convention and any refusal."""
    from scaling.fit.artifacts import read_minima

    minima, conventions, refusals = {}, {}, {}
    for count in CONVENTIONS:
        m, conv, refusal = read_minima(path, count)
        minima[count], conventions[count] = m, conv
        if refusal:
            refusals[count] = refusal
    return minima, conventions, refusals


def _read_obj(p: Path) -> Any:
    try:
        return read_json(p)
    except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError):
        return None


def _headline_backtest(bt: Any) -> Any:
    """``scaling run`` writes ``{"chosen": ..., "candidates": [...]}``; ``scaling fit --backtest``
    writes the backtest itself. The report shows the chosen one, with the candidates beside it."""
    if isinstance(bt, dict) and isinstance(bt.get("chosen"), dict):
        rows = []
        for c in bt.get("candidates") or []:
            if not isinstance(c, dict):
                continue
            inner, outer = c.get("inner") or {}, c.get("outer") or {}
            rows.append({"form": c.get("form"), "N counts": c.get("param_convention"),
                         "error one budget down": inner.get("error"), "error at the largest": outer.get("error"),
                         "N* error one budget down": inner.get("n_opt_error"),
                         "N* error at the largest": outer.get("n_opt_error"), "refused": c.get("refused")})
        n_opt = bt.get("n_opt") if isinstance(bt.get("n_opt"), dict) else {}
        pick = {k: n_opt[k] for k in ("n_opt_predicted", "n_opt_observed", "n_opt_error") if k in n_opt}
        if n_opt:
            pick.update(n_opt_form=n_opt.get("form"), n_opt_param_convention=n_opt.get("param_convention"),
                        n_opt_chosen_by=n_opt.get("chosen_by"))
        return {**bt["chosen"], **pick, "candidates": rows}
    return bt

