"""What the repeated seeds buy, and what the noise model does with them: 95% interval half-widths
of the allocation exponent a (N* ~ C^a) on nested parts of one finished IsoFLOP study, beside the
minutes of training each part took.

    python benchmarks/noise_repeats.py STUDY [--bootstrap 1000]

The parts, each a superset of the one before:

1. ``grid``: the grid's own runs (and the extension's), one seed a point. No noise is measured:
   approach 2's interval is the OLS t interval through the vertices, approach 3's its bootstrap.
2. ``+ optimum``: the repeated seeds at each budget's best size (``grid.repeats.at: optimum``).
3. ``+ largest``: the repeated seeds at each budget's largest size too (``at: [optimum, largest]``).
   Only in a study that repeated them.

Each part with a noise is fitted twice: with the study's noise model (a trend in tokens per
parameter where its likelihood-ratio test adopts it, :mod:`scaling.fit.noise`) and with one
constant noise pooled over every repeat (``estimate_noise(trend=False)``, the earlier model): the
baseline, measured on the same runs. Printed: the half-widths in both parameter counts and both
approaches, the lack of fit (chi2 / dof) of approach 3, and the ratio of each half-width to the
grid's. Minutes: the runs' wall times summed over the two slots of the quickstart (sum / 2).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

from scaling.convention import Convention
from scaling.fit import Approach2, Approach3, FitRefusal
from scaling.fit.data import Columns, normalise, study_data
from scaling.fit.noise import estimate_noise
from scaling.store import load_runs
from scaling.sweep import load_spec

COUNTS = ("total", "non_embedding")
KEYS = ("a2 total", "a2 non_embedding", "a3 total", "a3 non_embedding")
ROW = "{:<22} {:>7} {:>9} {:>9} {:>9} {:>9}   {:>9} {:>9}"


def is_grid(runs: pd.DataFrame) -> pd.Series:
    """True for the grid's own runs (and the extension's), False for the repeated seeds."""
    return ~runs["added"].fillna("").astype(str).str.startswith("repeat")


def minutes(runs: pd.DataFrame, ids: set[str]) -> float:
    """Minutes of training of the runs ``ids``: their wall times summed over the quickstart's 2 slots."""
    return float(runs.loc[runs["run_id"].isin(ids), "wall_time"].sum()) / 2 / 60


def parts(runs: pd.DataFrame) -> list[tuple[str, set[str]]]:
    """The nested sets of run ids: the grid, then each kind of repeat the study added."""
    added = runs["added"].fillna("").astype(str)
    grid = set(runs.loc[is_grid(runs), "run_id"])
    best = set(runs.loc[added.str.contains("the best size"), "run_id"])
    largest = set(runs.loc[added.str.contains("the largest size"), "run_id"])
    out = [("grid", grid)]
    if best:
        out.append(("+ optimum", grid | best))
    if largest - best:
        out.append(("+ largest", grid | best | largest))
    return out


def study_frames(study: Path) -> dict[str, tuple[Convention, pd.DataFrame]]:
    """Each count's fit input of the whole study, read once: its convention and its rows."""
    flops = load_spec(study / "sweep.yaml").train.flops_convention
    return {count: (conv, study_data(study, conv).frame) for count in COUNTS for conv in [Convention(count, flops)]}


def half_widths(frames: dict[str, tuple[Convention, pd.DataFrame]], ids: set[str], trend: bool,
                bootstrap: int) -> dict[str, float | None]:
    """Half-widths of a for approaches 2 and 3 in both counts, and approach 3's chi2 / dof, on the
    runs ``ids`` (noise measured from their repeats; None where nothing is repeated)."""
    out: dict[str, float | None] = {}
    for count, (conv, frame) in frames.items():
        data = normalise(frame[frame["run_id"].isin(ids)].reset_index(drop=True), Columns(convention=conv))
        noise = estimate_noise(data.frame, trend=trend)
        try:
            lo, hi = Approach2(bootstrap=bootstrap, seed=0).fit(data, noise=noise).conf_int()["n_exponent"]
            out[f"a2 {count}"] = (hi - lo) / 2
        except FitRefusal:
            out[f"a2 {count}"] = None
        fit3 = Approach3(bootstrap=bootstrap, seed=0).fit(data, noise=noise)
        lo, hi = fit3.conf_int()["a"]
        out[f"a3 {count}"] = (hi - lo) / 2
        lof = (fit3.info.get("noise") or {}).get("lack_of_fit") or {}
        out[f"chi2 {count}"] = lof.get("chi2_per_dof")
        out["trend"] = noise is not None and noise.trend is not None
    return out


def fmt_width(x: float | None, base: float | None = None) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if base is None else f"{x / base:.2f}x"


def study_args(description: str) -> tuple[argparse.Namespace, pd.DataFrame]:
    """The command line (a STUDY and --bootstrap) and the study's finished runs."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("study", type=Path)
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    runs = load_runs(args.study)
    return args, runs[runs["status"] == "done"].copy()


def main() -> None:
    args, runs = study_args(__doc__.splitlines()[0])
    print(f"{args.study}: {len(runs)} runs")
    print("minutes: the runs' wall times summed, over 2 slots; noise: the model the fits used")
    print(ROW.format("part, noise", "minutes", "a2 total", "a2 non-e", "a3 total", "a3 non-e", "chi2 tot", "chi2 n-e"))
    base: dict[str, float | None] = {}
    frames = study_frames(args.study)
    for name, ids in parts(runs):
        spent = minutes(runs, ids)
        rows = [half_widths(frames, ids, True, args.bootstrap)]
        if name != "grid" and rows[0]["trend"]:
            rows.append(half_widths(frames, ids, False, args.bootstrap))  # the baseline on the same runs
        for w, model in zip(rows, ("trend" if rows[0]["trend"] else "constant", "constant"), strict=False):
            if name == "grid":
                base, model = {k: w[k] for k in KEYS}, "none"
            print(ROW.format(f"{name}, {model}", f"{spent:.2f}", *(fmt_width(w[k]) for k in KEYS),
                             fmt_width(w["chi2 total"]), fmt_width(w["chi2 non_embedding"])))
            print(ROW.format("  / grid", "", *(fmt_width(w[k], base[k]) if base.get(k) else "-" for k in KEYS), "", ""))

if __name__ == "__main__":
    main()
