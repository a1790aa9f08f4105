"""The replication and benchmark scripts run and print their tables (small settings)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis import chinchilla_replication as rep
from benchmarks import fit_speed
from scaling.fit import backtest
from tests.fit_helpers import isoflop_sweep


def test_replication_prints_table_beside_published(capsys):
    assert rep.main(["--bootstrap", "100", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n_points"] == 240
    assert r["estimate"]["alpha"] == pytest.approx(0.3478, abs=1e-3)
    assert r["grid"]["objective"] == pytest.approx(1.01827e-3, abs=5e-9)
    text = rep.render(r)
    assert "Epoch" in text and "objective" in text


def test_epoch_resample_indices_are_theirs():
    idx = rep.epoch_resample_indices(n_resamples=3)
    assert idx.shape == (3, 240) and idx.min() >= 0 and idx.max() < 240


def test_benchmark_runs_and_prints_ratios(capsys):
    assert fit_speed.main(["--baseline-starts", "2", "--baseline-resamples", "2", "--resamples", "40"]) == 0
    out = capsys.readouterr().out
    assert out.count("speed-up") == 2 and "seeded random subset" in out


def test_backtest_on_budgets_counted_without_embeddings():
    # Budgets planned as C = 6 N_nonemb D, law fitted on total N = N_nonemb + 30,000 embeddings:
    # the IsoFLOP line of the largest budget is then not D = C / (6 N_total), and is fitted instead.
    data = isoflop_sweep(noise=0.001).rename(columns={"params": "non_embedding_params"})
    data["params"] = data["non_embedding_params"] + 3e4
    bt = backtest(data)
    assert bt["param_convention"] == "total"
    assert np.isfinite(bt["predicted_loss"]) and bt["n_opt_observed"] > 3e4
    from scaling.fit import Columns

    bt_ne = backtest(data, columns=Columns(params="non_embedding_params"))
    assert bt_ne["param_convention"] == "non_embedding" and abs(bt_ne["error"]) < 0.01
    # the law was generated in non-embedding N: the total-N fit is misspecified and predicts worse
    assert abs(bt_ne["error"]) < abs(bt["error"])
