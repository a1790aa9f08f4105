"""Shared data for the fit tests: Epoch's 240 points and seeded synthetic sweeps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.conftest import ROOT

# The copy shipped with analysis/ (source and credit in analysis/README.md).
EPOCH_CSV = ROOT / "analysis" / "data" / "chinchilla_epoch_svg_data.csv"

# Tiny-scale law, the scale of the CPU quickstart (N ~ 1e3-1e5, C ~ 1e11-1e12 FLOPs).
TINY = {"E": 1.9, "A": 60.0, "B": 900.0, "alpha": 0.34, "beta": 0.36}


def epoch_frame() -> pd.DataFrame:
    """Besiroglu et al. (2024) points with their filter: drop the 5 highest losses (240 left)."""
    df = pd.read_csv(EPOCH_CSV)
    df = df[df["loss"] < np.sort(df["loss"].to_numpy())[-5]]
    return df.rename(columns={"Model Size": "params", "Training FLOP": "flops"}).reset_index(drop=True)


def chinchilla_loss(p: dict, n, d):
    return p["E"] + p["A"] / np.asarray(n) ** p["alpha"] + p["B"] / np.asarray(d) ** p["beta"]


def optimal_n(p: dict, c: float) -> float:
    g = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    return g * (c / 6) ** (p["beta"] / (p["alpha"] + p["beta"]))


def isoflop_sweep(
    p: dict = TINY,
    budgets=(1e11, 2e11, 4e11, 8e11, 1.6e12),
    sizes: int = 7,
    span: float = 1.6,
    noise: float = 0.002,
    seed: int = 1,
) -> pd.DataFrame:
    """Sizes log-spaced +-span (in log N) around each budget's optimum; log-normal noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in budgets:
        for f in np.exp(np.linspace(-span, span, sizes)):
            n = optimal_n(p, c) * f
            d = c / (6 * n)
            loss = chinchilla_loss(p, n, d) * np.exp(rng.normal(0, noise))
            rows.append({"params": n, "tokens": d, "flops": c, "budget": c, "loss": loss})
    return pd.DataFrame(rows)
