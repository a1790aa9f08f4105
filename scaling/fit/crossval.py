"""Laws chosen and combined by how well they predict the next size (or budget) up.

A law is worth what it predicts one size up, so candidates (:mod:`scaling.fit.candidates`) are
scored by forward-chaining cross-validation over the design's extrapolation axis:

* **levels**: the rows grouped by model size (ladders of sizes x token multiples, Kaplan N-sweeps),
  by compute budget (IsoFLOP grids), by token count (Kaplan D-sweeps), or by compute within a
  factor of 2 (a mix of designs); ``axis="auto"`` tells them apart from the data;
* **folds**: fold j leaves the j-th largest level out and fits on the levels below it, for
  j = 1 .. ``folds`` while at least two levels remain to fit on: the largest level scores the
  choice, the one below repeats it one level down. An IsoFLOP grid is cross-validated over
  budget; only where its budgets give fewer than ``folds`` folds (three budgets: one) are folds
  over size within every budget added (:func:`size_folds`): folds over size on a grid with
  budgets to spare made Epoch's points choose Kaplan's form, whose compute extrapolation missed
  the largest budget by 3x more than approach 3 (benchmark);
* **score**: a candidate's held-out error is the mean over folds of the mean absolute log error
  ``|log L_hat - log L|`` of the left-out level (about the relative error);
* **combination**: ``stack`` (the default) weights the
  candidates (non-negative, summing to 1) to minimise the squared relative error of the weighted
  prediction over every held-out point (stacking, Wolpert 1992; Breiman 1996); ``bag`` weights
  each candidate by how often the choice, redone on each bootstrap resample, selects it (bagging
  the selection, Breiman 1996: a choice made on a few held-out levels is unstable, and its
  average over resamples less so); ``select`` keeps the candidate with the lowest score. Stacking
  is the default because it predicted the left-out level best on all three data sets of
  ``benchmarks/predict_out_of_sample.py`` (Epoch's points, a CPU ladder, the quickstart), where
  selecting missed on one.

The law returned is the chosen (or weighted) candidates refitted on all the rows given, so the
points a caller keeps back to test the predictor are never used to choose. The bootstrap wraps
the whole procedure: each resample refits every candidate in every fold (warm-started at the
point estimate, batched) and chooses again, so the intervals include the choice. Pure
numpy/scipy.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from scaling.fit import optim
from scaling.fit.approach3 import Approach3
from scaling.fit.bootstrap import resample_counts
from scaling.fit.candidates import Candidate, default_candidates, fit_candidate, refit
from scaling.fit.data import Columns, FitData, FitRefusal, budget_groups, close_groups, normalise
from scaling.fit.noise import point_means
from scaling.fit.predictive import PredictiveLaw

AXES = ("auto", "params", "budget", "tokens", "flops")
COMBINE = ("select", "stack", "bag")


@dataclass(frozen=True, eq=False)
class Levels:
    """Rows grouped along the extrapolation axis: ``labels[i]`` is row i's level (0 smallest)."""

    axis: str
    design: str
    labels: np.ndarray
    values: np.ndarray

    @property
    def count(self) -> int:
        return len(self.values)


def _grouped(axis: str, design: str, x: np.ndarray, rtol: float) -> Levels:
    labels = close_groups(x, rtol)
    values = np.array([float(np.exp(np.median(np.log(x[labels == k])))) for k in range(labels.max() + 1)])
    return Levels(axis, design, labels, values)


def find_levels(data: pd.DataFrame | FitData, axis: str = "auto", rtol: float = 0.02) -> Levels:
    """The levels of normalised rows along ``axis`` (``auto``: from the design, see module)."""
    if isinstance(data, FitData):
        data = data.frame
    if axis not in AXES:
        raise FitRefusal(f"axis: {axis!r} is not one of {', '.join(AXES)}")
    n, d = data["params"].to_numpy(float), data["tokens"].to_numpy(float)
    sizes, tokens = close_groups(n, rtol), close_groups(d, rtol)
    if axis == "auto":
        if tokens.max() == 0:
            axis, design = "params", "kaplan_n"
        elif sizes.max() == 0:
            axis, design = "tokens", "kaplan_d"
        elif "budget" in data and pd.to_numeric(data["budget"], errors="coerce").gt(0).all():
            axis, design = "budget", "isoflop"
        elif np.bincount(sizes).min() >= 2:
            axis, design = "params", "ladder"
        else:
            axis, design = "flops", "mix"
    else:
        design = "given"
    if axis == "budget":
        groups = budget_groups(data, rtol)
        labels = np.empty(len(data), dtype=int)
        for k, (_, g) in enumerate(groups):
            labels[data.index.get_indexer(g.index)] = k
        return Levels(axis, design, labels, np.array([c for c, _ in groups]))
    if axis == "flops":
        return _grouped(axis, design, data["flops"].to_numpy(float), 1.0)
    return _grouped(axis, design, n if axis == "params" else d, rtol)


@dataclass(frozen=True)
class Fold:
    axis: str  # the axis whose level is left out
    left_out: float  # that level's value
    train: np.ndarray  # bool (n,)
    test: np.ndarray  # bool (n,)


def forward_folds(levels: Levels, k: int = 2, min_train: int = 2) -> list[Fold]:
    """Fold j leaves level ``count - j`` out and trains on the levels below it (module doc)."""
    out = []
    for j in range(1, k + 1):
        top = levels.count - j
        if top < min_train:
            break
        out.append(Fold(levels.axis, float(levels.values[top]), levels.labels < top, levels.labels == top))
    return out


def size_folds(levels: Levels, data: pd.DataFrame, k: int) -> list[Fold]:
    """Folds over size within each budget: fold j leaves out every budget's j-th largest size and
    trains on the sizes below it in every budget (each budget keeps at least 3, a parabola's worth)."""
    n = data["params"].to_numpy(float)
    rank = np.zeros(len(n), dtype=int)
    count = np.zeros(len(n), dtype=int)
    for b in range(levels.count):
        rows = np.flatnonzero(levels.labels == b)
        sizes = close_groups(n[rows], 0.02)
        rank[rows], count[rows] = sizes, sizes.max() + 1
    out = []
    for j in range(1, k + 1):
        top = count - j
        test, train = (rank == top) & (top >= 3), rank < top
        if not test.any() or len(np.unique(levels.labels[train])) < 2:
            break
        left_out = float(np.exp(np.median(np.log(n[test]))))
        out.append(Fold("size in budget", left_out, train, test))
    return out


def abs_log_error(pred: np.ndarray, loss: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean ``|log pred - log loss|`` over the last axis (weighted; nan where the weights sum to 0)."""
    err = np.abs(np.log(pred) - np.log(loss))
    w = np.ones_like(err) if weights is None else np.broadcast_to(weights, err.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * err).sum(axis=-1) / w.sum(axis=-1)


def stack_weights(preds: list[np.ndarray], losses: list[np.ndarray]) -> np.ndarray:
    """Simplex weights minimising ``sum_folds mean_i ((sum_c w_c p_ci - L_i) / L_i)^2``.

    ``preds[f]`` is (C, n_f), ``losses[f]`` (n_f,). Non-negative least squares with the sum-to-one
    constraint as a heavily weighted extra row; folds count equally whatever their size.
    """
    rows = [p / y / math.sqrt(len(y)) for p, y in zip(preds, losses, strict=True)]
    a = np.hstack(rows).T
    b = np.concatenate([np.ones(len(y)) / math.sqrt(len(y)) for y in losses])
    big = 1e3 * max(1.0, float(np.abs(a).max()))
    a = np.vstack([a, np.full(a.shape[1], big)])
    b = np.append(b, big)
    from scipy import optimize

    w, _ = optimize.nnls(a, b)
    return w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))


@dataclass(frozen=True)
class Predictor:
    """Choose (or weight) candidate laws by forward cross-validation, then refit on all rows.

    ``candidates`` default to :func:`~scaling.fit.candidates.default_candidates` (with
    ``e_fixed`` as the fixed-E candidate when given); ``folds`` levels are scored; ``bootstrap``
    resamples wrap the whole procedure (0: none).
    """

    candidates: tuple[Candidate, ...] | None = None
    e_fixed: float | None = None
    combine: str = "stack"
    folds: int = 2
    axis: str = "auto"
    bootstrap: int = 0
    seed: int | None = 0
    columns: Columns = field(default_factory=Columns)
    fitter: Approach3 = field(default_factory=Approach3)

    def __post_init__(self) -> None:
        if self.combine not in COMBINE:
            raise FitRefusal(f"combine: {self.combine!r} is not one of {', '.join(COMBINE)}")
        if self.folds < 1:
            raise FitRefusal("folds: must be >= 1")
        if self.bootstrap < 0:
            raise FitRefusal("bootstrap: must be >= 0")
        if self.combine == "bag" and self.bootstrap < 1:
            raise FitRefusal("combine=bag: needs bootstrap resamples to average the choice over (e.g. 100)")
        if self.axis not in AXES:
            raise FitRefusal(f"axis: {self.axis!r} is not one of {', '.join(AXES)}")

    def fit(self, frame: pd.DataFrame | FitData) -> PredictiveLaw:
        fd = normalise(frame, self.columns)
        data = fd.frame
        levels = find_levels(data, self.axis)
        folds = forward_folds(levels, self.folds)
        if levels.design == "isoflop" and len(folds) < self.folds and folds:
            folds += size_folds(levels, data, self.folds - len(folds))
        if not folds:
            raise FitRefusal(
                f"DATA: {levels.count} level(s) along {levels.axis}; cross-validation needs at least 3 "
                "(2 to fit, 1 to predict): add sizes or budgets"
            )
        cands = self.candidates or default_candidates(self.e_fixed, design=levels.design)
        fitter = replace(self.fitter, columns=Columns(), bootstrap=0)
        n_basins = max((c.basin for c in cands if c.kind == "basin"), default=0)
        optima = [t for t, _ in fitter.local_optima(fd, n_basins + 1)] if n_basins else []
        rows, kept = [], []
        for c in cands:
            row, fitted = self._score(c, fd, levels, folds, fitter, optima)
            rows.append(row)
            if fitted is not None:
                kept.append((c, fitted))
        if not kept:
            raise FitRefusal("DATA: no candidate could be fitted in every fold: " +
                             "; ".join(f"{r['name']}: {r['refused']}" for r in rows))
        draws = self._bootstrap([f for _, f in kept], data, folds) if self.bootstrap else None
        if self.combine == "bag":  # how often each candidate is selected across the resamples
            weights = np.bincount(np.argmax(draws["weights"], axis=1), minlength=len(kept)) / self.bootstrap
        else:
            weights = self._combine([f for _, f in kept], data, folds)
        for (c, _), w in zip(kept, weights, strict=True):
            row = next(r for r in rows if r["name"] == c.name)
            row["weight"] = float(w)
        best = int(np.argmax(weights))
        for r in rows:
            r["chosen"] = r["name"] == kept[best][0].name if self.combine == "select" else r.get("weight", 0) > 0
        return PredictiveLaw(
            members=tuple(f["all"].law for _, f in kept),
            names=tuple(c.name for c, _ in kept),
            weights=tuple(float(w) for w in weights),
            combine=self.combine,
            table=tuple(rows),
            design=self._design(levels, folds, data),
            draws=draws,
        )

    # ---- internals --------------------------------------------------------------------------------

    def _score(self, c: Candidate, fd: FitData, levels: Levels, folds: list[Fold], fitter: Approach3,
               optima: list[np.ndarray]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Fit ``c`` on all rows and in every fold; its held-out errors (row) and fitted members."""
        data = fd.frame
        row: dict[str, Any] = {"name": c.name, "kind": c.kind, "drop": c.drop, "errors": [], "weight": 0.0}
        keep = levels.labels >= c.drop
        start = optima[c.basin] if c.kind == "basin" and c.basin < len(optima) else None
        fitted: dict[str, Any] = {"folds": [], "keep": keep}
        try:
            if c.drop and min(len(np.unique(levels.labels[keep & f.train])) for f in folds) < 2:
                raise FitRefusal(f"dropping {c.drop} level(s) leaves fewer than 2 to fit on in a fold")
            fitted["all"] = fit_candidate(c, fd.subset(keep), start, fitter)
            start = fitted["all"].vector if c.kind == "basin" else None
            for f in folds:
                m = fit_candidate(c, fd.subset(keep & f.train), start, fitter)
                test = data[f.test]
                pred = m.predict(test["params"].to_numpy(float), test["tokens"].to_numpy(float))[0]
                row["errors"].append(float(abs_log_error(pred, test["loss"].to_numpy(float))))
                fitted["folds"].append(m)
        except FitRefusal as e:
            row.update(refused=str(e), score=None, errors=[])
            return row, None
        row["score"] = float(np.mean(row["errors"]))
        row["params"] = dict(fitted["all"].law.params)
        return row, fitted

    def _combine(self, fitted: list[dict[str, Any]], data: pd.DataFrame, folds: list[Fold]) -> np.ndarray:
        scores = np.array([np.mean([
            float(abs_log_error(self._fold_pred(f, j, data, fold), data["loss"].to_numpy(float)[fold.test]))
            for j, fold in enumerate(folds)]) for f in fitted])
        if self.combine == "select" or len(fitted) == 1:
            w = np.zeros(len(fitted))
            w[int(np.nanargmin(scores))] = 1.0
            return w
        preds = [np.stack([self._fold_pred(f, j, data, fold) for f in fitted]) for j, fold in enumerate(folds)]
        losses = [data["loss"].to_numpy(float)[fold.test] for fold in folds]
        return stack_weights(preds, losses)

    @staticmethod
    def _fold_pred(fitted: dict[str, Any], j: int, data: pd.DataFrame, fold: Fold) -> np.ndarray:
        test = data[fold.test]
        return fitted["folds"][j].predict(test["params"].to_numpy(float), test["tokens"].to_numpy(float))[0]

    def _bootstrap(self, fitted: list[dict[str, Any]], data: pd.DataFrame, folds: list[Fold]) -> dict[str, Any]:
        """The whole choice on each resample: refit every candidate in every fold, score, choose."""
        n_, d_, l_ = (data[k].to_numpy(float) for k in ("params", "tokens", "loss"))
        counts = resample_counts(len(data), self.bootstrap, self.seed)
        robust = optim.Robust(self.fitter.loss, self.fitter.delta)
        budget = data["budget"].to_numpy() if "budget" in data else None
        errors = np.full((self.bootstrap, len(fitted), len(folds)), np.nan)
        preds: list[list[np.ndarray]] = [[] for _ in folds]
        vectors = []
        for ci, f in enumerate(fitted):
            keep = f["keep"]
            vectors.append(refit(f["all"], n_, d_, l_, counts * keep, robust, budget))
            for j, fold in enumerate(folds):
                v = refit(f["folds"][j], n_, d_, l_, counts * (keep & fold.train), robust, budget)
                p = f["folds"][j].predict(n_[fold.test], d_[fold.test], v)
                errors[:, ci, j] = abs_log_error(p, l_[fold.test], counts[:, fold.test])
                preds[j].append(p)
        with warnings.catch_warnings():  # a resample that drew no point of any fold: no score
            warnings.simplefilter("ignore", RuntimeWarning)
            scores = np.nanmean(errors, axis=2)
        scores[~np.isfinite(scores)] = np.inf
        weights = np.zeros((self.bootstrap, len(fitted)))
        if self.combine in ("select", "bag") or len(fitted) == 1:  # bag: the selections it counts
            weights[np.arange(self.bootstrap), np.argmin(scores, axis=1)] = 1.0
        else:
            for b in range(self.bootstrap):
                ok = [j for j in range(len(folds)) if counts[b, folds[j].test].sum() > 0]
                pb = [np.nan_to_num(np.stack([p[b] for p in preds[j]]), nan=1e9)[:, counts[b, folds[j].test] > 0] for j in ok]
                lb = [l_[folds[j].test][counts[b, folds[j].test] > 0] for j in ok]
                weights[b] = stack_weights(pb, lb) if ok else np.full(len(fitted), 1.0 / len(fitted))
        return {"weights": weights, "vectors": vectors, "seed": self.seed, "n": self.bootstrap}

    @staticmethod
    def _design(levels: Levels, folds: list[Fold], data: pd.DataFrame) -> dict[str, Any]:
        return {
            "axis": levels.axis,
            "design": levels.design,
            "max_flops": float(data["flops"].max()),
            "levels": [float(v) for v in levels.values],
            "folds": [
                {"axis": f.axis, "left_out": f.left_out, "n_train": int(f.train.sum()), "n_test": int(f.test.sum())}
                for f in folds
            ],
        }


def holdout_largest(frame: pd.DataFrame | FitData, fitter: Any, axis: str = "auto", columns: Columns | None = None) -> dict[str, Any]:
    """Leave the largest level out, fit ``fitter`` (a :class:`Predictor` or any fitter whose
    ``fit`` returns a law) on the rest, and score its prediction of the left-out level.

    A law predicts the expected loss at a point, so runs of the left-out level that differ only by
    seed are scored as one point, their mean (:func:`~scaling.fit.noise.point_means`): the error
    is then the law's, not the run-to-run noise of single runs.

    Returns the law, the candidate chosen (for a predictor), the left-out level and its errors:
    ``mae`` (mean absolute error of the loss over the left-out points), ``mean_abs_log_error``,
    ``n_test`` (points) and ``n_test_runs``.
    """
    fd = normalise(frame, columns)
    data = fd.frame
    levels = find_levels(data, getattr(fitter, "axis", axis))
    top = levels.labels == levels.count - 1
    law = replace(fitter, columns=Columns()).fit(fd.subset(~top))
    test = point_means(data.loc[top, ["params", "tokens", "loss"]])
    pred = np.asarray(law.loss(test["params"].to_numpy(float), test["tokens"].to_numpy(float)), float)
    actual = test["loss"].to_numpy(float)
    return {
        "law": law,
        "chosen": getattr(law, "chosen", None),
        "axis": levels.axis,
        "left_out": float(levels.values[-1]),
        "n_train": int((~top).sum()),
        "n_test": len(test),
        "n_test_runs": int(top.sum()),
        "mae": float(np.mean(np.abs(pred - actual))),
        "mean_abs_log_error": float(abs_log_error(pred, actual)),
    }
