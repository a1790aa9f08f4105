"""Approach 3 against Besiroglu et al. (2024) and seeded synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scaling.errors import UsageError
from scaling.fit import Approach3, FitRefusal
from tests.fit_helpers import TINY, epoch_frame, isoflop_sweep

# Besiroglu et al. 2024 (arXiv 2404.10102), Table 1 / shared/data/README.md.
EPOCH_MLE = {"A": 482.01, "B": 2085.43, "E": 1.8169, "alpha": 0.3478, "beta": 0.3658}
EPOCH_SE = {"A": 124.52, "B": 1293.28, "E": 0.026, "alpha": 0.015, "beta": 0.021}
GRID_OPT = {"A": 477.82, "B": 2143.4, "E": 1.8172, "alpha": 0.3473, "beta": 0.3672}
GRID_OBJECTIVE = 1.01827e-3


@pytest.fixture(scope="module")
def epoch():
    return epoch_frame()


def _close(fit, ref):
    for k in ("alpha", "beta", "E"):
        assert abs(fit.params[k] - ref[k]) < 1e-3, (k, fit.params[k], ref[k])
    for k in ("A", "B"):
        assert abs(fit.params[k] / ref[k] - 1) < 0.02, (k, fit.params[k], ref[k])


def test_epoch_240_points(epoch):
    assert len(epoch) == 240


def test_huber_grid_optimum_matches_epoch(epoch):
    fit = Approach3(estimator="grid").fit(epoch)
    assert fit.objective == pytest.approx(GRID_OBJECTIVE, abs=5e-9)  # published to 6 digits
    _close(fit, GRID_OPT)


def test_mle_matches_epoch(epoch):
    fit = Approach3(estimator="mle").fit(epoch)
    _close(fit, EPOCH_MLE)
    # Epoch's headline allocation at the Gopher budget: 72.2B parameters (shared/data/README.md).
    assert fit.optimal_allocation(5.76e23).params == pytest.approx(72.2e9, rel=0.01)


def test_bootstrap_standard_errors_match_epoch(epoch):
    fit = Approach3(estimator="mle", bootstrap=1000, seed=0).fit(epoch)
    se = fit.se
    for k in ("alpha", "beta", "E"):
        assert abs(se[k] / EPOCH_SE[k] - 1) < 0.10, (k, se[k], EPOCH_SE[k])
    lo, hi = fit.conf_int(0.05)["alpha"]
    assert lo < fit.params["alpha"] < hi
    alloc = fit.allocation(5.76e23)
    assert alloc["ci"]["params"][0] < alloc["params"] < alloc["ci"]["params"][1]


@pytest.mark.slow
def test_bootstrap_4000_all_standard_errors(epoch):
    fit = Approach3(estimator="mle", bootstrap=4000, seed=0).fit(epoch)
    for k in ("alpha", "beta", "E", "A"):
        assert abs(fit.se[k] / EPOCH_SE[k] - 1) < 0.10, (k, fit.se[k])


def test_bootstrap_is_seeded(epoch):
    small = epoch.iloc[::4]
    a = Approach3(bootstrap=50, seed=3).fit(small)
    b = Approach3(bootstrap=50, seed=3).fit(small)
    c = Approach3(bootstrap=50, seed=4).fit(small)
    assert np.array_equal(a.draws, b.draws)
    assert not np.array_equal(a.draws, c.draws)


@pytest.mark.parametrize("estimator", ["grid", "mle"])
def test_recovers_tiny_scale_law(estimator):
    data = isoflop_sweep(noise=0.001, sizes=9)
    fit = Approach3(estimator=estimator).fit(data)
    assert fit.params["alpha"] == pytest.approx(TINY["alpha"], abs=0.03)
    assert fit.params["beta"] == pytest.approx(TINY["beta"], abs=0.03)
    assert fit.params["E"] == pytest.approx(TINY["E"], abs=0.05)


def test_mse_and_fixed_parameters():
    data = isoflop_sweep(noise=0.0)
    fit = Approach3(loss="mse", fixed={"alpha": 0.34, "E": 1.9}).fit(data)
    assert fit.params["alpha"] == 0.34 and fit.params["E"] == pytest.approx(1.9)
    assert fit.params["beta"] == pytest.approx(0.36, abs=1e-4)
    assert fit.params["B"] == pytest.approx(900, rel=1e-3)


def test_weights_zero_drop_points():
    data = isoflop_sweep(noise=0.0)
    noisy = pd.concat([data, data.assign(loss=data["loss"] * 1.3)], ignore_index=True)
    w = np.r_[np.ones(len(data)), np.zeros(len(data))]
    fit = Approach3(loss="mse").fit(noisy, weights=w)
    assert fit.params["alpha"] == pytest.approx(0.34, abs=1e-3)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.assign(loss=np.where(d.index == 3, np.nan, d["loss"])), "loss"),
        (lambda d: d.assign(params=-d["params"]), "params"),
        (lambda d: d.iloc[:4], "DATA"),
        (lambda d: d.assign(params=1e4), "params"),
        (lambda d: d.drop(columns=["loss"]), "loss"),
    ],
)
def test_refuses_degenerate_input(mutate, field):
    with pytest.raises(UsageError) as e:
        Approach3().fit(mutate(isoflop_sweep()))
    assert field in str(e.value)


def test_bad_hyperparameters():
    with pytest.raises(FitRefusal, match="estimator"):
        Approach3(estimator="adam")
    with pytest.raises(FitRefusal, match="fixed"):
        Approach3(fixed={"gamma": 1.0})


def test_tokens_from_flops_only(epoch):
    fit = Approach3().fit(epoch[["params", "flops", "loss"]])
    assert math.isclose(fit.objective, GRID_OBJECTIVE, abs_tol=5e-9)


def test_a_fit_that_runs_off_to_infinity_is_refused(monkeypatch):
    """A valley along which log B and beta grow together has no float law at its end: the fit is
    refused (and a cross-validation skips it as a candidate) instead of raising OverflowError.
    The estimate is forced there; the data are a real sweep."""
    runaway = np.array([math.log(400.0), 900.0, math.log(1.7), 0.34, 120.0])
    monkeypatch.setattr(Approach3, "_estimate", lambda self, problem, loss: (runaway.copy(), {}))
    with pytest.raises(FitRefusal, match="runs off to infinity"):
        Approach3().fit(isoflop_sweep())
