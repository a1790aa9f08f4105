"""The trade-off between minutes of training and the width of the allocation exponent's interval:
95% half-widths of a (N* ~ C^a) on subsets of one finished IsoFLOP study, beside the minutes each
subset's runs took, as ratios to the whole study measured in the same run.

    python benchmarks/width_vs_minutes.py STUDY [--bootstrap 1000]

The subsets cut the study along the two axes that cost minutes:

- **budgets**: every budget; the largest k; the smallest k (k = n-1, n-2). The budget span sets the
  lever arm of the exponent, and the largest budgets cost the most minutes.
- **runs per budget**: every run (the grid, its extension and the repeated seeds, fitted with the
  study's noise model, :mod:`scaling.fit.noise`); the grid alone (no repeats, no noise measured);
  the inner sizes alone (each budget's smallest and largest grid size dropped, with their repeats).

Minutes: the runs' wall times summed over the two slots of the quickstart (sum / 2); the study's
other stages (alignment, fits, report) are not counted. Every subset keeps at least three budgets;
where a budget is left with no interior valley, approach 2 refuses and prints "-".
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd
from noise_repeats import KEYS, fmt_width, half_widths, is_grid, minutes, study_args, study_frames

ROW = "{:<34} {:>5} {:>7} {:>9} {:>9} {:>9} {:>9}"


def budget_sets(budgets: list[float]) -> list[tuple[str, list[float]]]:
    """Every budget, then the largest and the smallest n-1 and n-2 of them (at least three)."""
    n = len(budgets)
    out = [(f"all {n}", budgets)]
    for k in (n - 1, n - 2):
        if k >= 3:
            out += [(f"largest {k}", budgets[-k:]), (f"smallest {k}", budgets[:k])]
    return out


def inner_ids(runs: pd.DataFrame) -> set[str]:
    """Run ids of every run whose size is strictly inside its budget's grid (repeats included)."""
    grid = runs[is_grid(runs)]
    span = grid.groupby("budget")["params"].agg(["min", "max"])
    lo = runs["budget"].map(span["min"])
    hi = runs["budget"].map(span["max"])
    return set(runs.loc[(runs["params"] > lo) & (runs["params"] < hi), "run_id"])


def run_sets(runs: pd.DataFrame) -> list[tuple[str, set[str], bool]]:
    """(name, run ids, fit with the study's noise model) for each way of cutting a budget's runs."""
    every = set(runs["run_id"])
    grid = set(runs.loc[is_grid(runs), "run_id"])
    return [("every run", every, True), ("grid only", grid, False), ("inner sizes", inner_ids(runs), True)]


def main() -> None:
    args, runs = study_args(__doc__.splitlines()[0])
    runs["budget"] = pd.to_numeric(runs["budget"])
    frames = study_frames(args.study)
    budgets = sorted(runs["budget"].unique())
    print(f"{args.study}: {len(runs)} runs over {len(budgets)} budgets")
    print("minutes: the runs' wall times summed, over 2 slots; second line: the ratio to the whole study")
    print(ROW.format("budgets, runs per budget", "runs", "minutes", *KEYS))
    base: dict[str, float | None] = {}
    base_minutes = 0.0
    for bname, chosen in budget_sets(budgets):
        in_budgets = runs[runs["budget"].isin(chosen)]
        for rname, ids, trend in run_sets(in_budgets):
            spent = minutes(in_budgets, ids)
            w = half_widths(frames, ids, trend, args.bootstrap)
            if not base:
                base, base_minutes = dict(w), spent
            print(ROW.format(f"{bname}, {rname}", len(ids), f"{spent:.2f}", *(fmt_width(w[k]) for k in KEYS)))
            print(ROW.format("  / whole study", "", f"{spent / base_minutes:.2f}x",
                             *(fmt_width(w[k], base[k]) if base.get(k) and w[k] else "-" for k in KEYS)))


if __name__ == "__main__":
    main()
