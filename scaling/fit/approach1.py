"""Approach 1: the envelope of training curves (Hoffmann et al. 2022, sec. 3.1).

From per-step curves of runs of many sizes: at each of ``n_grid`` log-spaced FLOP counts, the
lowest loss any run reached there (each run's loss interpolated linearly in log C between its
logged steps). Each run that holds the envelope somewhere contributes one point, at the geometric
middle of the FLOP range it holds: ``(C, N_run, D = C / (6 N_run))``; then
``N*(C) = n_coef C^n_exponent`` and ``D*(C)`` by OLS in log-log (one point per winning run, so the
intervals are not inflated by counting one run many times).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scaling.fit.approach2 import allocation_fit
from scaling.fit.data import Columns, FitData, FitRefusal, normalise
from scaling.fit.results import LawFit


@dataclass(frozen=True)
class Approach1:
    """Envelope of training curves, then OLS power laws. Rows need ``run_id`` (or distinct ``params``)."""

    columns: Columns = field(default_factory=Columns)
    n_grid: int = 400

    def envelope(self, frame: pd.DataFrame | FitData) -> pd.DataFrame:
        """Columns ``flops, loss, params, run``: the lowest loss at each grid FLOP count."""
        data = normalise(frame, self.columns).frame
        run = data["run_id"] if "run_id" in data else data["params"]
        curves = []
        for key, g in data.groupby(run.to_numpy(), sort=False):
            g = g.sort_values("flops")
            if len(g) >= 2:
                curves.append((key, float(g["params"].iloc[0]), np.log(g["flops"].to_numpy()), g["loss"].to_numpy()))
        if len(curves) < 2:
            raise FitRefusal("DATA: approach 1 needs training curves (2+ logged steps) of at least 2 runs")
        lo = min(c[2][0] for c in curves)
        hi = max(c[2][-1] for c in curves)
        grid = np.linspace(lo, hi, self.n_grid)
        losses = np.full((len(curves), len(grid)), np.inf)
        for i, (_, _, logc, loss) in enumerate(curves):
            inside = (grid >= logc[0]) & (grid <= logc[-1])
            losses[i, inside] = np.interp(grid[inside], logc, loss)
        best = np.argmin(losses, axis=0)
        covered = np.isfinite(losses.min(axis=0))
        return pd.DataFrame(
            {
                "flops": np.exp(grid[covered]),
                "loss": losses.min(axis=0)[covered],
                "params": [curves[i][1] for i in best[covered]],
                "run": [curves[i][0] for i in best[covered]],
            }
        )

    def fit(self, frame: pd.DataFrame | FitData) -> LawFit:
        data = normalise(frame, self.columns)
        env = self.envelope(data)
        points = []
        for run, g in env.groupby("run", sort=False):
            c = float(np.exp(np.log(g["flops"]).mean()))
            n = float(g["params"].iloc[0])
            points.append({"flops": c, "n_opt": n, "d_opt": c / (6.0 * n), "run": run, "loss": float(g["loss"].min())})
        if len({p["n_opt"] for p in points}) < 2:
            raise FitRefusal("DATA: one run holds the whole envelope; approach 1 needs runs of several sizes")
        points.sort(key=lambda p: p["flops"])
        return allocation_fit("1", points, data)
