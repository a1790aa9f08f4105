"""The token-multiple law E + A/N^alpha + C (D/N)^-gamma (scaling.fit.multiple) and its place
among the cross-validated candidates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scaling.fit import Approach3
from scaling.fit.candidates import Candidate
from scaling.fit.crossval import Predictor, holdout_largest
from scaling.fit.multiple import TokenMultipleFit, vector
from scaling.laws.base import numeric_allocation

TRUTH = {"E": 2.0, "A": 40.0, "alpha": 0.45, "C": 3.0, "gamma": 0.6}


def multiple_loss(p: dict, n, d):
    return p["E"] + p["A"] / n ** p["alpha"] + p["C"] * (d / n) ** -p["gamma"]


def ladder(sizes=(1e3, 2e3, 4e3, 8e3, 1.6e4, 3.2e4), multiples=(1, 2, 4, 8), noise: float = 0.002, seed: int = 0):
    """Sizes x token multiples of 20 tokens per parameter, losses from the token-multiple law."""
    rng = np.random.default_rng(seed)
    rows = [{"params": n, "tokens": 20 * m * n, "loss": multiple_loss(TRUTH, n, 20 * m * n) * np.exp(rng.normal(0, noise))}
            for n in sizes for m in multiples]
    return pd.DataFrame(rows)


def test_recovers_the_law_it_is():
    law = TokenMultipleFit().fit(ladder())
    assert law.form == "multiple" and law.name == "fit:multiple"
    assert abs(law.params["alpha"] - TRUTH["alpha"]) < 0.03
    assert abs(law.params["gamma"] - TRUTH["gamma"]) < 0.03
    assert law.loss(6.4e4, 20 * 6.4e4) == pytest.approx(multiple_loss(TRUTH, 6.4e4, 20 * 6.4e4), rel=0.005)


def test_the_closed_form_allocation_is_the_numerical_optimum():
    law = TokenMultipleFit().fit(ladder(noise=0.0))
    for flops in (1e12, 1e15, 1e18):
        closed = law.optimal_allocation(flops)
        numeric = numeric_allocation(law.loss, flops)
        assert closed.params == pytest.approx(numeric.params, rel=1e-3)
        assert closed.params * closed.tokens * 6 == pytest.approx(flops)
    # a = gamma / (alpha + 2 gamma): N* grows as C^a
    p = law.params
    slope = np.log(law.optimal_allocation(1e18).params / law.optimal_allocation(1e15).params) / np.log(1e3)
    assert slope == pytest.approx(p["gamma"] / (p["alpha"] + 2 * p["gamma"]), rel=1e-6)


def test_refuses_too_few_points():
    with pytest.raises(Exception, match="5 parameters"):
        TokenMultipleFit().fit(ladder().head(5))


def test_cross_validation_picks_it_where_chinchillas_form_misses_the_next_size():
    data = ladder()
    plain = holdout_largest(data, Approach3())
    ours = holdout_largest(data, Predictor(combine="select"))
    assert ours["chosen"] == "token multiple"
    assert ours["mae"] < 0.25 * plain["mae"]  # measured: 0.0044 against 0.035


def test_its_bootstrap_refits_every_resample():
    fit = Predictor(candidates=(Candidate("free"), Candidate("multiple")), bootstrap=20).fit(ladder())
    j = fit.names.index("token multiple")
    vectors = np.asarray(fit.draws["vectors"][j])
    assert vectors.shape == (20, 5) and np.isfinite(vectors).mean() > 0.9
    assert np.nanmedian(vectors[:, 3]) == pytest.approx(TRUTH["alpha"], abs=0.05)
    band = fit.predict(6.4e4, 1.28e6, interval="confidence")
    assert band["lower"] <= band["loss"] <= band["upper"] and band["upper"] > band["lower"]
    assert vector(dict(fit.members[j].params)) == pytest.approx(np.asarray(fit.draws["vectors"][j]).mean(0), abs=1.0)
