"""The report of a study with many runs: curves thinned to a point budget, the run table capped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scaling.report import figures as F
from scaling.report.data import Study
from scaling.report.page import MAX_TABLE_ROWS, run_table


def test_each_run_keeps_its_ends_and_log_spaced_points():
    steps = np.arange(1, 1001, dtype=float)
    run = np.repeat([0, 1, 2], [1000, 1000, 3])
    x = np.r_[steps * 2048, steps * 10, [np.nan, 5.0, 7.0]]
    keep = F.thin_runs(run, x, points=16)
    for r in (0, 1):
        k = keep[run[keep] == r] - 1000 * r
        assert k[0] == 0 and k[-1] == 999 and len(k) <= 17  # first, last, one per step of log x
        gaps = np.diff(np.log(steps[k]))
        assert gaps.max() < 2.5 * np.log(1000) / 15  # evenly spread in log x, not bunched at the end
    assert list(keep[run[keep] == 2]) == [2001, 2002]  # NaN never drawn
    assert F.curve_points(10) == F.MAX_CURVE_POINTS and F.curve_points(10**6) == F.MIN_CURVE_POINTS


def _study(n: int, steps: int) -> Study:
    budgets = np.where(np.arange(n) % 2, 1e12, 1e11)
    runs = pd.DataFrame({"run_id": [f"r{i}" for i in range(n)], "name": [f"n{i}" for i in range(n)],
                         "status": ["failed" if i == n - 1 else "done" for i in range(n)], "budget": budgets,
                         "params": np.arange(n) + 1e4})
    s = np.tile(np.arange(1, steps + 1), n)
    curves = pd.DataFrame({"run_id": np.repeat(runs["run_id"], steps), "name": np.repeat(runs["name"], steps),
                           "budget": np.repeat(budgets, steps), "step": s, "tokens": s * 2048.0,
                           "flops": s * 2048.0 * 6e4, "loss": 3.0 + 1.0 / s})
    return Study(path=Path("study"), runs=runs, curves=curves.reset_index(drop=True), sweep_yaml=None)


def test_thousands_of_runs_draw_within_the_point_budget():
    study = _study(4000, steps=200)
    fig = F.training_curves(study)
    drawn = [(t.xaxis, len(t.x), int(np.isnan(t.x).sum()), t.customdata) for t in fig.data]
    assert sum(n for ax, n, _, _ in drawn if ax == "x") <= 200_000  # a panel a browser draws in a second or two
    assert sum(g for ax, _, g, _ in drawn if ax == "x") == 4000  # one gap after each run: 4000 lines
    assert {str(v) for *_, c in drawn for v in c if v} == set(study.runs["name"])  # every run named on hover
    assert all(t.x.dtype == np.float32 for t in fig.data)


def test_the_run_table_is_capped_with_the_runs_not_done_first():
    study = _study(MAX_TABLE_ROWS + 500, steps=2)
    note, table = run_table(study)
    assert len(table.rows) == MAX_TABLE_ROWS and f"of {MAX_TABLE_ROWS + 500:,} runs" in note.text
    assert table.rows[0][table.header.index("status")] == "failed"
    small = _study(20, steps=2)
    assert len(run_table(small)[1].rows) == 20 and "of 20" not in run_table(small)[0].text
