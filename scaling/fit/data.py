"""Input frames for the fitters: read a file or a sweep folder, map columns, refuse bad values.

Every fitter reads the same :class:`FitData`: a frame with ``params`` (N), ``tokens`` (D),
``loss`` and ``flops`` (C; ``6 N D`` when the data gives none), plus ``budget``, ``step`` and
``run_id`` when present, and the :class:`~scaling.convention.Convention` N and C are counted in.
When only FLOPs are given, ``D = C / (6 N)`` (Hoffmann et al. 2022, eq. 2 convention).
``Columns.convention`` declares the counts; left unset, N in the store's ``non_embedding_params``
column counts non-embedding parameters and any other column total ones, and C counts ``6 N D``.

Pure: numpy and pandas.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scaling.convention import N_COLUMN, Convention
from scaling.errors import UsageError
from scaling.fit.tables import read_file, where


class FitRefusal(UsageError):
    """The data cannot support the fit asked for; the message says which part and what to add."""


class FitWarning(UserWarning):
    """The fit ran, but the data leave part of it weakly determined; the message says what to add."""


@dataclass(frozen=True)
class Columns:
    """Where N, D, C and the loss live in the caller's frame, and how N and C are counted."""

    params: str = "params"
    tokens: str = "tokens"
    flops: str = "flops"
    loss: str = "loss"
    convention: Convention | None = None

    def declared(self) -> Convention:
        """The declared convention, else the store's: its ``non_embedding_params`` column counts
        non-embedding N, any other column total N; C is ``6 N D`` in that count."""
        if self.convention is not None:
            return self.convention
        count = "non_embedding" if self.params == N_COLUMN["non_embedding"] else "total"
        return Convention.six_nd(count)


@dataclass(frozen=True, eq=False)
class FitData:
    """A validated fit input: ``frame`` (``params, tokens, flops, loss`` + extras) and its convention."""

    frame: pd.DataFrame
    convention: Convention

    def __len__(self) -> int:
        return len(self.frame)

    def subset(self, mask: Any) -> FitData:
        """The rows where ``mask`` holds, in the same convention."""
        return FitData(self.frame[mask].reset_index(drop=True), self.convention)


def points_of(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of a study that are points of a law: the done ones, less the trunks of WSD
    branches (a trunk ends at a constant LR, before any cooldown; its branches are the points)."""
    trunks = set(runs["branch_of"].dropna()) if "branch_of" in runs else set()
    done = runs["status"] == "done" if "status" in runs else pd.Series(True, index=runs.index)
    return runs[done & ~runs["run_id"].isin(trunks)]


def read_table(path: str | Path, curves: bool = False) -> tuple[pd.DataFrame, bool]:
    """Rows of a CSV, parquet or JSONL file, or the runs of a sweep folder (``scaling.load_runs``).

    With ``curves=True`` a sweep folder gives one row per logged step (for approach 1), with each
    run's ``params`` and ``non_embedding_params`` joined on. Returns the frame and whether it came
    from a sweep folder (whose final-loss column is ``eval_loss``).
    """
    p = Path(path)
    if p.is_dir():
        from scaling.store import load_runs

        frame = load_runs(p)
        if frame.empty:
            raise UsageError(f"DATA: no runs found under {p}; pass a sweep folder with runs/<id>/result.json")
        frame = points_of(frame)
        if frame.empty:
            raise UsageError(f"DATA: no finished run under {p}; wait for runs to finish or resume the sweep")
        if curves:
            steps = load_runs(p, curves=True)
            keep = [c for c in ("run_id", "params", "non_embedding_params") if c in frame]
            steps = steps.drop(columns=[c for c in keep if c != "run_id" and c in steps])
            frame = steps.merge(frame[keep], on="run_id", how="inner")
        return frame.reset_index(drop=True), True
    if not p.exists():
        raise UsageError(f"DATA: {p} does not exist; pass a CSV, parquet or JSONL file or a sweep folder")
    return read_file(p), False


def _positive(frame: pd.DataFrame, col: str, name: str) -> np.ndarray:
    if col not in frame:
        raise UsageError(f"--{name}-col: column {col!r} not in the data (columns: {', '.join(map(str, frame.columns))})")
    values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        raise FitRefusal(
            f"{col}: {int(bad.sum())} value(s) missing, NaN, infinite or not positive "
            f"({where(frame, [int(i) for i in np.flatnonzero(bad)[:5]])}); drop or fix those rows"
        )
    return values


def normalise(
    frame: pd.DataFrame | FitData, columns: Columns | None = None, *, need_tokens: bool = True
) -> FitData:
    """The rows as :class:`FitData` (``params, tokens, flops, loss`` + ``budget, step, run_id``).

    A :class:`FitData` passes through unchanged (it was validated when made), after checking it
    counts N and C as ``columns.convention`` says, when that is set. Missing columns,
    NaN and non-positive values raise :class:`FitRefusal` naming the column. When the data gives
    no FLOPs, C is ``6 N D`` and the convention says so whatever was declared.
    """
    if isinstance(frame, FitData):
        if columns is not None and columns.convention is not None:
            columns.convention.check(frame.convention, "fit data")
        return frame
    cols = columns or Columns()
    convention = cols.declared()
    if len(frame) == 0:
        raise FitRefusal("DATA: no rows; pass at least one (params, tokens, loss) row per run")
    out = pd.DataFrame(index=range(len(frame)))
    out["params"] = _positive(frame, cols.params, "params")
    out["loss"] = _positive(frame, cols.loss, "loss")
    has_tokens = cols.tokens in frame and frame[cols.tokens].notna().any()
    has_flops = cols.flops in frame and frame[cols.flops].notna().any()
    if has_tokens:
        out["tokens"] = _positive(frame, cols.tokens, "tokens")
        if has_flops:
            out["flops"] = _positive(frame, cols.flops, "flops")
        else:
            out["flops"] = 6.0 * out["params"] * out["tokens"]
            convention = Convention.six_nd(convention.params)
    elif has_flops:
        out["flops"] = _positive(frame, cols.flops, "flops")
        out["tokens"] = out["flops"] / (6.0 * out["params"])  # D = C / (6N)
    elif need_tokens:
        raise UsageError(
            f"--tokens-col: neither {cols.tokens!r} nor {cols.flops!r} is in the data; "
            "map one with --tokens-col or --flops-col"
        )
    for extra in ("budget", "step", "run_id", "name"):
        if extra in frame:
            out[extra] = frame[extra].to_numpy()
    return FitData(out, convention)


def budget_groups(frame: pd.DataFrame, rtol: float = 0.02) -> list[tuple[float, pd.DataFrame]]:
    """Rows grouped by compute budget, smallest first: by a numeric ``budget`` column when every
    row has one, else by ``flops`` values that agree within ``rtol`` (relative)."""
    if "budget" in frame:
        b = pd.to_numeric(frame["budget"], errors="coerce")
        if b.notna().all() and (b > 0).all():
            return [(float(k), g) for k, g in frame.groupby(b.to_numpy(), sort=True)]
    labels = close_groups(frame["flops"].to_numpy(dtype=float), rtol)
    groups = []
    for k in range(int(labels.max()) + 1):
        g = frame[labels == k]
        groups.append((float(np.exp(np.log(g["flops"]).median())), g))
    return groups


def close_groups(values: np.ndarray, rtol: float) -> np.ndarray:
    """Group labels 0, 1, ... (smallest first) of positive ``values``: a group opens at its
    smallest value and takes every value within a factor ``1 + rtol`` of it."""
    logv = np.log(np.asarray(values, dtype=float))
    order = np.argsort(logv)
    labels = np.empty(len(logv), dtype=int)
    group, start = 0, logv[order[0]]
    for i in order:
        if logv[i] - start > np.log1p(rtol):
            group, start = group + 1, logv[i]
        labels[i] = group
    return labels


def study_data(study: str | Path, convention: Convention, loss_column: str = "eval_loss") -> FitData:
    """The done runs of a study folder as a fit's input (:func:`points_of`: WSD trunks left out):
    N counted as ``convention`` says, C the run's budget label; ``loss_column`` where every run has
    it, else the final training loss."""
    from scaling.store import load_runs

    df = points_of(load_runs(study))
    loss = df[loss_column] if loss_column in df and df[loss_column].notna().all() else df["final_loss"]
    frame = pd.DataFrame({"params": df[convention.n_column], "tokens": df["tokens"], "loss": loss,
                          "flops": df["budget"], "budget": df["budget"], "run_id": df["run_id"]})
    return normalise(frame.reset_index(drop=True), Columns(convention=convention))
