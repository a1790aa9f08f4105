"""Reproduce Epoch AI's replication of Chinchilla approach 3 (Besiroglu et al. 2024, Table 1).

    python analysis/chinchilla_replication.py [--bootstrap 4000] [--seed 0] [--epoch-resamples] [--json]

Data: ``analysis/data/chinchilla_epoch_svg_data.csv`` (245 points read off Hoffmann et al. 2022,
Figure 4, by Besiroglu et al.; see analysis/README.md). Their filter keeps the points with a loss
below the fifth highest: 240 points. Their estimate is the Huber-likelihood MLE started from
Hoffmann's unrounded constants; their standard errors come from 4,000 bootstrap refits.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from scaling.fit import Approach3
from scaling.store import dumps

DATA = Path(__file__).resolve().parent / "data" / "chinchilla_epoch_svg_data.csv"
NAMES = ("A", "B", "E", "alpha", "beta")
# Besiroglu et al. 2024, Table 1 (and shared/data/README.md).
PUBLISHED = {
    "estimate": {"A": 482.01, "B": 2085.43, "E": 1.8169, "alpha": 0.3478, "beta": 0.3658},
    "se": {"A": 124.52, "B": 1293.28, "E": 0.026, "alpha": 0.015, "beta": 0.021},
    "ci": {"A": (285.2, 743.6), "B": (1042.4, 5810.3), "E": (1.769, 1.871), "alpha": (0.317, 0.373), "beta": (0.331, 0.415)},
    "grid": {"A": 477.82, "B": 2143.4, "E": 1.8172, "alpha": 0.3473, "beta": 0.3672, "objective": 1.01827e-3},
    "n_opt_gopher": 72.2e9,
}
GOPHER_FLOPS = 5.76e23


def load(path: Path = DATA) -> pd.DataFrame:
    """Epoch's 240 points: drop the 5 highest losses (their filter, ``loss < sorted(loss)[-5]``)."""
    df = pd.read_csv(path)
    keep = df["loss"] < np.sort(df["loss"].to_numpy())[-5]
    return df[keep].rename(columns={"Model Size": "params", "Training FLOP": "flops"}).reset_index(drop=True)


def epoch_resample_indices(path: Path = DATA, n_resamples: int = 4000) -> np.ndarray:
    """Epoch's own resamples: ``np.random.seed(42)``, then ``choice(kept, len(kept))`` per resample,
    mapped to positions among the kept points."""
    loss = pd.read_csv(path)["loss"].to_numpy()
    kept = np.flatnonzero(loss < np.sort(loss)[-5])
    rng = np.random.RandomState(42)
    draws = np.array([rng.choice(kept, size=len(kept), replace=True) for _ in range(n_resamples)])
    position = np.full(len(loss), -1)
    position[kept] = np.arange(len(kept))
    return position[draws]


def replicate(bootstrap: int = 4000, seed: int = 0, epoch_resamples: bool = False) -> dict:
    data = load()
    t0 = time.perf_counter()
    mle = Approach3(estimator="mle", bootstrap=0 if epoch_resamples else bootstrap, seed=seed).fit(
        data, resample_indices=epoch_resample_indices(n_resamples=bootstrap) if epoch_resamples else None
    )
    t1 = time.perf_counter()
    grid = Approach3(estimator="grid").fit(data)
    t2 = time.perf_counter()
    ci = mle.conf_int(0.05)
    return {
        "n_points": mle.n_points,
        "estimate": {k: mle.params[k] for k in NAMES},
        "se": {k: mle.se.get(k) for k in NAMES},
        "ci": {k: ci.get(k) for k in NAMES},
        "grid": {**{k: grid.params[k] for k in NAMES}, "objective": grid.objective},
        "n_opt_gopher": mle.optimal_allocation(GOPHER_FLOPS).params,
        "bootstrap": {"n": bootstrap, "seed": None if epoch_resamples else seed, "epoch_resamples": epoch_resamples},
        "seconds": {"mle_and_bootstrap": t1 - t0, "grid": t2 - t1},
        "published": PUBLISHED,
    }


def _row(name: str, ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None:
        return f"  {name:<10}{'-':>14}{'-':>14}"
    return f"  {name:<10}{ours:>14.6g}{theirs:>14.6g}{100 * (ours / theirs - 1):>+10.2f}%"


def render(r: dict) -> str:
    pub = r["published"]
    lines = [f"Chinchilla approach 3 on Epoch's {r['n_points']} points (Besiroglu et al. 2024, Table 1)", ""]
    head = f"  {'':<10}{'ours':>14}{'Epoch':>14}{'diff':>11}"
    lines += ["Huber-likelihood MLE, started from Hoffmann's unrounded estimates", head]
    lines += [_row(k, r["estimate"][k], pub["estimate"][k]) for k in NAMES]
    lines += ["", f"bootstrap standard errors ({r['bootstrap']['n']} resamples)", head]
    lines += [_row(k, r["se"][k], pub["se"][k]) for k in NAMES]
    lines += ["", "95% percentile intervals", f"  {'':<10}{'ours':>26}{'Epoch':>26}"]
    for k in NAMES:
        o, p = r["ci"][k], pub["ci"][k]
        ours = f"[{o[0]:.4g}, {o[1]:.4g}]" if o else "-"
        lines.append(f"  {k:<10}{ours:>26}{f'[{p[0]:.4g}, {p[1]:.4g}]':>26}")
    lines += ["", "Huber loss (delta 1e-3, summed), 4,500-start grid optimum", head]
    lines += [_row(k, r["grid"][k], pub["grid"][k]) for k in (*NAMES, "objective")]
    lines += ["", f"N* at the Gopher budget (5.76e23 FLOP): ours {r['n_opt_gopher'] / 1e9:.1f}B, Epoch 72.2B"]
    s = r["seconds"]
    lines.append(f"time: MLE + bootstrap {s['mle_and_bootstrap']:.1f} s, grid {s['grid']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epoch-resamples", action="store_true", help="replay Epoch's resample indices (seed 42)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = replicate(args.bootstrap, args.seed, args.epoch_resamples)
    print(dumps(r) if args.json else render(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
