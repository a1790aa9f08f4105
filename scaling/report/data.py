"""Everything a report shows, read from a study folder (the store and the stages' JSON artifacts).

The report only reads: runs through :func:`scaling.load_runs`, the sweep spec through
:class:`scaling.store.SweepStore`, and the JSON files each stage writes (``plan.json``,
``fit/*.json``, ``fit/backtest.json``, ``select.json``, ``align/``, ``summary.json``). Each part
is optional: a section appears only when its data exists.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scaling.store import SweepStore, read_json, read_jsonl

CONVENTIONS: tuple[str, ...] = ("non_embedding", "total")
# which result column holds N for each parameter convention
N_COLUMN: dict[str, str] = {"non_embedding": "non_embedding_params", "total": "params"}
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
        a = self.get("approach")
        if a is not None:
            return str(a)
        if self.get("n_opt") is not None and self.get("E") is None:
            return "2"
        return "3" if self.get("E") is not None else "?"

    @property
    def convention(self) -> str:
        c = self.get("param_convention") or self.get("convention") or self.get("params_convention")
        if c in CONVENTIONS:
            return str(c)
        return "non_embedding" if "non_embedding" in self.name else "total"

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


def _pair(v: Any) -> tuple[float, float] | None:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_finite(x) for x in v):
        return float(v[0]), float(v[1])
    return None


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


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
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def done(self) -> pd.DataFrame:
        if self.runs.empty or "status" not in self.runs:
            return self.runs
        d = self.runs[self.runs["status"] == "done"]
        return d[d["final_loss"].notna()] if "final_loss" in d else d

    def valleys(self, n_col: str) -> list[Any]:
        """The IsoFLOP parabolas of the finished runs against ``n_col`` (cached)."""
        from scaling.report.analysis import valleys

        key = ("valleys", n_col)
        if key not in self.cache:
            self.cache[key] = valleys(self.done, n_col, self.loss_column())
        return self.cache[key]

    def loss_column(self) -> str:
        """Held-out loss when every finished run has one, else the final training loss."""
        d = self.done
        if "eval_loss" in d and len(d) and d["eval_loss"].notna().all():
            return "eval_loss"
        return "final_loss"

    def fit(self, approach: str, convention: str) -> FitView | None:
        for f in self.fits.values():
            if f.approach == approach and f.convention == convention:
                return f
        return None

    def budget_convention(self) -> str | None:
        """Which parameter count the budget labels use: the one with C = 6 N D closest to them."""
        d = self.done
        if d.empty or "budget" not in d or "tokens" not in d:
            return None
        err = {}
        for conv, col in N_COLUMN.items():
            if col in d and d[col].notna().any():
                ratio = d["budget"] / (6.0 * d[col] * d["tokens"])
                err[conv] = float(np.nanmedian(np.abs(np.log(ratio.astype(float)))))
        return min(err, key=err.get) if err else None

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

    path = Path(study_dir)
    runs = scaling.load_runs(path)
    curves = scaling.load_runs(path, curves=True)
    store = SweepStore(path)
    fits: dict[str, FitView] = {}
    fit_dir = path / "fit"
    candidates = sorted(fit_dir.glob("*.json")) if fit_dir.is_dir() else []
    candidates += [Path(p) for p in fit_paths or []]
    for p in candidates:
        if p.name == "backtest.json":
            continue
        d = _read_obj(p)
        if isinstance(d, dict):
            fits[p.stem] = FitView(p.stem, d)
    align = path / "align"
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
        statuses={rd.run_id: rd.read_status() for rd in store.runs()},
    )


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
                         "N* error at the largest": outer.get("n_opt_error"), "refused": c.get("refused")})
        return {**bt["chosen"], "candidates": rows}
    return bt

