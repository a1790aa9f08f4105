"""Approaches 1 and 2, Kaplan's forms and the backtest on seeded synthetic data; LawFit itself."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from scaling.fit import Approach1, Approach2, Approach3, FitRefusal, KaplanFit, LawFit, backtest, load_law
from scaling.laws.base import Law
from scaling.store import atomic_write_json, dumps
from tests.fit_helpers import TINY, chinchilla_loss, isoflop_sweep, optimal_n

A_TRUE = TINY["beta"] / (TINY["alpha"] + TINY["beta"])  # Hoffmann eq. 4


def test_approach2_recovers_allocation_exponent():
    fit = Approach2().fit(isoflop_sweep(noise=0.001, sizes=9))
    assert fit.params["n_exponent"] == pytest.approx(A_TRUE, abs=0.02)
    assert fit.params["n_exponent"] + fit.params["d_exponent"] == pytest.approx(1.0, abs=1e-6)
    lo, hi = fit.conf_int()["n_exponent"]
    assert lo < A_TRUE < hi
    n = fit.optimal_allocation(1e12).params
    assert n == pytest.approx(optimal_n(TINY, 1e12), rel=0.05)
    d = fit.to_dict()
    assert set(d["n_opt"]) == {"coef", "exponent", "ci"} and len(d["minima"]) == 5
    assert all(m["interior"] for m in d["minima"])


def test_approach2_refuses_edge_minimum_naming_budget():
    data = isoflop_sweep()
    c = data["budget"].unique()[2]
    edge = data[(data["budget"] != c) | (data["params"] >= data.loc[data["budget"] == c, "params"].median())]
    with pytest.raises(FitRefusal, match=r"budget 4e\+11 FLOPs: minimum not interior"):
        Approach2().fit(edge)


def test_approach2_refuses_too_few_points_and_one_budget():
    data = isoflop_sweep()
    few = data.drop(index=data.index[(data["budget"] == 2e11)][:5])
    with pytest.raises(FitRefusal, match=r"budget 2e\+11 FLOPs.*at least 3"):
        Approach2().fit(few)
    with pytest.raises(FitRefusal, match="2 or more budgets"):
        Approach2().fit(data[data["budget"] == 1e11])


def test_approach2_groups_by_flops_without_budget_column():
    data = isoflop_sweep().drop(columns=["budget"])
    data["flops"] *= np.exp(np.random.default_rng(0).normal(0, 0.002, len(data)))  # counted, not planned
    assert len(Approach2().minima(data)) == 5


def _curves(p=TINY, sizes=16, steps=120):
    rows = []
    for i, n in enumerate(np.geomspace(1e3, 1e6, sizes)):
        for d in np.geomspace(1e5, 1e10, steps):
            rows.append({"run_id": f"r{i}", "params": n, "tokens": d, "loss": chinchilla_loss(p, n, d)})
    return pd.DataFrame(rows)


def test_approach1_envelope_recovers_exponent():
    fit = Approach1().fit(_curves())
    assert fit.params["n_exponent"] == pytest.approx(A_TRUE, abs=0.05)
    assert fit.optimal_allocation(1e13).params == pytest.approx(optimal_n(TINY, 1e13), rel=0.1)


def test_approach1_refuses_single_run():
    with pytest.raises(FitRefusal, match="at least 2 runs"):
        Approach1().fit(_curves(sizes=1))


def test_kaplan_joint_recovers_published_constants():
    # Kaplan et al. 2020 eq. 1.5 constants: alpha_N 0.076, alpha_D 0.103, N_c 6.4e13, D_c 1.8e13.
    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(np.log(1e6), np.log(1e9), 80))
    d = np.exp(rng.uniform(np.log(1e8), np.log(1e11), 80))
    loss = ((6.4e13 / n) ** (0.076 / 0.103) + 1.8e13 / d) ** 0.103
    fit = KaplanFit(form="joint").fit(pd.DataFrame({"non_embedding_params": n, "params": 2 * n, "tokens": d, "loss": loss}))
    assert fit.param_convention == "non_embedding"  # Kaplan's convention by default
    assert fit.params["alpha_N"] == pytest.approx(0.076, rel=1e-4)
    assert fit.params["D_c"] == pytest.approx(1.8e13, rel=1e-3)
    # shared/data/README.md: L(1.5e9, 2.3e10) = 2.3101 with these constants.
    assert fit.loss(1.5e9, 2.3e10) == pytest.approx(2.3101, abs=2e-4)
    a = fit.optimal_allocation(1e21)
    assert math.isfinite(a.params) and a.params * a.tokens * 6 == pytest.approx(1e21)


@pytest.mark.parametrize("offset", [False, True])
def test_kaplan_n_and_compute(offset):
    n = np.geomspace(1e5, 1e9, 12)
    e = 1.5 if offset else 0.0
    frame = pd.DataFrame({"params": n, "tokens": 1e12, "loss": (8.8e13 / n) ** 0.076 + e})
    fit = KaplanFit(form="n", offset=offset, non_embedding=False).fit(frame)
    assert fit.params["alpha_N"] == pytest.approx(0.076, rel=1e-3)
    assert fit.param_convention == "total"
    sweep = isoflop_sweep()
    fc = KaplanFit(form="compute", offset=offset).fit(sweep)
    assert fc.params["alpha_C"] > 0 and fc.n_points == 5


def test_backtest_beats_baselines_on_synthetic_sweep():
    bt = backtest(isoflop_sweep(noise=0.001))
    assert bt["budget"] == 1.6e12 and len(bt["fit_budgets"]) == 4
    assert abs(bt["error"]) < 0.01
    assert bt["beats_baselines"]
    assert set(bt["baselines"]) == {"previous_budget", "power_law_on_minima"}
    assert bt["n_opt_observed"] == pytest.approx(optimal_n(TINY, 1.6e12), rel=0.1)
    assert abs(bt["n_opt_predicted"] / bt["n_opt_observed"] - 1) < 0.25
    json.loads(dumps(bt))


def test_backtest_intervals_from_bootstrap():
    bt = backtest(isoflop_sweep(noise=0.001), fitter=Approach3(bootstrap=100, seed=0))
    lo, hi = bt["predicted_loss_ci"]
    assert lo <= bt["predicted_loss"] <= hi
    assert bt["n_opt_predicted_ci"][0] < bt["n_opt_predicted"] < bt["n_opt_predicted_ci"][1]


def test_backtest_refuses_two_budgets():
    data = isoflop_sweep(budgets=(1e11, 2e11))
    with pytest.raises(FitRefusal, match="at least 3"):
        backtest(data)


def test_lawfit_is_immutable_law_and_round_trips(tmp_path):
    fit = Approach3(bootstrap=30, seed=1).fit(isoflop_sweep())
    assert isinstance(fit, Law)
    with pytest.raises(AttributeError):
        fit.params = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        fit.params["E"] = 0.0  # type: ignore[index]
    with pytest.raises(ValueError):
        fit.draws[0, 0] = 1.0
    d = fit.to_dict()
    for key in ("E", "A", "B", "alpha", "beta", "a", "b", "G", "se", "ci", "n_points", "objective",
                "approach", "param_convention", "flops_convention"):
        assert key in d
    path = tmp_path / "fit.json"
    atomic_write_json(path, d)
    back = load_law(path)
    assert back.params == fit.params and np.array_equal(back.draws, fit.draws)
    assert back.se == pytest.approx(fit.se)
    assert back.optimal_allocation(1e15).params == pytest.approx(fit.optimal_allocation(1e15).params)
    pi = back.predict(1e4, 1e7, interval="prediction")
    ci = back.predict(1e4, 1e7, interval="confidence")
    assert pi["lower"] <= ci["lower"] <= ci["loss"] <= ci["upper"] <= pi["upper"]


def test_summary_html_is_escaped():
    fit = LawFit(approach="3", form="chinchilla", params=TINY, n_points=3, estimator="<script>")
    html = fit.summary("html")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "alpha" in fit.summary()


def test_load_law_refuses_bad_files(tmp_path):
    from scaling.errors import UsageError

    with pytest.raises(UsageError, match="does not exist"):
        load_law(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match="not a saved fit"):
        load_law(tmp_path / "x.json")


def test_fit_package_imports_no_heavy_modules():
    import subprocess
    import sys

    code = "import sys, scaling.fit; print(sorted(m for m in ('torch', 'plotly', 'submitit', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__("tests.conftest").conftest.ROOT))
    assert out.stdout.strip() == "[]"
