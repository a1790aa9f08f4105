"""The cross-validated predictor on synthetic ladders with a known law (scaling.fit.crossval)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scaling.fit import Approach3, FitRefusal, load_law
from scaling.fit.candidates import Candidate
from scaling.fit.crossval import Predictor, find_levels, forward_folds, holdout_largest
from scaling.fit.data import normalise
from tests.fit_helpers import chinchilla_loss, isoflop_sweep

TRUTH = {"E": 1.5, "A": 60.0, "B": 900.0, "alpha": 0.34, "beta": 0.36}
SIZES = (2e3, 4e3, 8e3, 1.6e4, 3.2e4, 6.4e4)


def ladder(p: dict = TRUTH, sizes=SIZES, multiples=(1, 2, 4, 8), noise: float = 0.002, seed: int = 1,
           smallest_shift: float = 0.0) -> pd.DataFrame:
    """Sizes x token multiples of 20 tokens per parameter (OLMo's ladder design), log-normal noise;
    ``smallest_shift`` moves the smallest size's losses off the law (relative)."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        for m in multiples:
            d = 20 * m * n
            loss = chinchilla_loss(p, n, d) * np.exp(rng.normal(0, noise))
            rows.append({"params": n, "tokens": d, "loss": loss * (1 + smallest_shift * (n == sizes[0]))})
    return pd.DataFrame(rows)


def test_recovers_the_law_of_a_ladder():
    fit = Predictor(combine="select").fit(ladder())
    law = fit.members[fit.names.index(fit.chosen)]
    assert law.form == "chinchilla"
    assert abs(law.params["alpha"] - TRUTH["alpha"]) < 0.03
    assert abs(law.params["beta"] - TRUTH["beta"]) < 0.03
    assert fit.design["axis"] == "params" and fit.design["design"] == "ladder"
    row = next(r for r in fit.table if r["chosen"])
    assert row["score"] == min(r["score"] for r in fit.table if r.get("score") is not None)


def test_the_stacked_default_predicts_the_next_size_of_a_known_law():
    # stacking (the default) weights several members; its blend must still predict one size up
    fit = Predictor().fit(ladder())
    assert fit.combine == "stack" and sum(fit.weights) == pytest.approx(1.0)
    n = 1.28e5
    for m in (1, 8):
        assert fit.loss(n, 20 * m * n) == pytest.approx(chinchilla_loss(TRUTH, n, 20 * m * n), rel=0.01)


@pytest.mark.parametrize("seed", [0, 1])
def test_picks_the_truths_basin_when_the_global_optimum_is_E_zero(seed):
    # the smallest size sits 4% below the law (as small models off the law do): the lowest
    # objective on all the points is then the E = 0 basin with a small alpha
    data = ladder(seed=seed, smallest_shift=-0.04)
    glob = Approach3().fit(data)
    assert glob.params["E"] < 1e-3 and glob.params["alpha"] < 0.25
    fit = Predictor().fit(data)
    law = fit.members[fit.names.index(fit.chosen)]
    assert abs(law.params["E"] - TRUTH["E"]) < 0.3
    assert abs(law.params["alpha"] - TRUTH["alpha"]) < 0.05
    assert abs(law.params["beta"] - TRUTH["beta"]) < 0.03
    assert fit.loss(1.28e5, 20 * 1.28e5) == pytest.approx(chinchilla_loss(TRUTH, 1.28e5, 20 * 1.28e5), rel=0.01)


def test_the_held_out_level_never_reaches_the_choice():
    data = ladder(sizes=SIZES[:5])
    out = holdout_largest(data, Predictor())
    top = data["params"] == data["params"].max()
    moved = data.assign(loss=np.where(top, data["loss"] * 1.1, data["loss"]))
    again = holdout_largest(moved, Predictor())
    assert again["chosen"] == out["chosen"]
    assert again["law"].loss(3e4, 6e5) == out["law"].loss(3e4, 6e5)
    assert again["mae"] > 10 * out["mae"]  # the held-out points were scored, not used
    assert out["n_test"] == 4



def test_seeds_of_the_held_out_level_are_scored_as_one_point():
    # two seeds of each held-out point, 3% above and below the law: their mean is on the law, so
    # the held-out error is the law's (near 0), not the 3% spread of single runs
    data = ladder(sizes=SIZES[:5], noise=0.0)
    top = data[data["params"] == data["params"].max()]
    seeds = pd.concat([data[data["params"] < data["params"].max()], top.assign(loss=top["loss"] * 1.03),
                       top.assign(loss=top["loss"] * 0.97)], ignore_index=True)
    out = holdout_largest(seeds, Approach3())
    assert out["n_test"] == 4 and out["n_test_runs"] == 8
    assert out["mae"] < 0.002 < 0.03 * float(top["loss"].min())

def test_folds_train_only_below_the_level_they_leave_out():
    data = normalise(isoflop_sweep())
    levels = find_levels(data)
    assert levels.axis == "budget" and levels.count == 5
    folds = forward_folds(levels, 3)
    assert [f.left_out for f in folds] == list(levels.values[[4, 3, 2]])
    for f, top in zip(folds, (4, 3, 2), strict=True):
        assert (levels.labels[f.train] < top).all()
        assert (levels.labels[f.test] == top).all()



def test_designs_are_told_apart():
    n = np.array([1e3, 2e3, 4e3, 8e3])
    kaplan_n = normalise(pd.DataFrame({"params": n, "tokens": 1e6, "loss": 4 - 0.1 * np.log(n)}))
    kaplan_d = normalise(pd.DataFrame({"params": 1e4, "tokens": n * 1e3, "loss": 4 - 0.1 * np.log(n)}))
    assert find_levels(kaplan_n).design == "kaplan_n" and find_levels(kaplan_n).axis == "params"
    assert find_levels(kaplan_d).design == "kaplan_d" and find_levels(kaplan_d).axis == "tokens"
    assert find_levels(normalise(ladder())).design == "ladder"


@pytest.mark.parametrize("swept", ["params", "tokens"])
def test_one_variable_sweeps_choose_kaplans_form_with_its_offset(swept):
    # Kaplan et al. (2020) eqs. 1.1-1.2 with an irreducible loss: L = 2 + (X_c / X)^0.3
    x = 1e3 * 2.0 ** np.arange(6)
    rng = np.random.default_rng(0)
    fixed = {"params": 1e4, "tokens": 1e7}
    frame = pd.DataFrame({swept: x, **{k: v for k, v in fixed.items() if k != swept}})
    frame["loss"] = (2 + 30 / x**0.3) * np.exp(rng.normal(0, 0.002, len(x)))
    fit = Predictor().fit(frame)
    assert fit.design["design"] == ("kaplan_n" if swept == "params" else "kaplan_d")
    assert fit.chosen == f"kaplan_{'n' if swept == 'params' else 'd'} +E"
    law = fit.members[fit.names.index(fit.chosen)]
    assert law.params["alpha_N" if swept == "params" else "alpha_D"] == pytest.approx(0.3, abs=0.03)
    assert law.params["E"] == pytest.approx(2.0, abs=0.1)


def test_too_few_levels_is_refused_by_name():
    with pytest.raises(FitRefusal, match="at least 3"):
        Predictor().fit(ladder(sizes=SIZES[:2]))


def test_bootstrap_wraps_the_choice_and_round_trips(tmp_path):
    from scaling.store import atomic_write_json

    cands = (Candidate("free"), Candidate("E_floor", 0.25), Candidate("kaplan_joint"))
    fit = Predictor(candidates=cands, bootstrap=40, seed=3).fit(ladder(sizes=SIZES[:5]))
    freq = fit.choice_frequency()
    assert sum(freq.values()) == pytest.approx(1.0)
    band = fit.predict(6.4e4, 1.28e6, interval="confidence")
    assert band["lower"] < band["loss"] < band["upper"]
    path = tmp_path / "predict.json"
    atomic_write_json(path, fit.to_dict())
    back = load_law(path)
    assert back.chosen == fit.chosen
    assert back.loss(1e5, 1e7) == pytest.approx(fit.loss(1e5, 1e7))
    assert back.optimal_allocation(1e13).params == pytest.approx(fit.optimal_allocation(1e13).params)
    assert back.predict(6.4e4, 1.28e6, interval="confidence")["upper"] == pytest.approx(band["upper"])


def test_stacking_weights_sum_to_one():
    fit = Predictor(combine="stack", candidates=(Candidate("free"), Candidate("kaplan_joint"))).fit(ladder())
    assert sum(fit.weights) == pytest.approx(1.0)
    assert all(w >= 0 for w in fit.weights)


def test_cli_predict_feeds_plan(tmp_path, capsys):
    from scaling.cli import main

    csv, out = tmp_path / "ladder.csv", tmp_path / "predict.json"
    ladder(sizes=SIZES[:4]).to_csv(csv, index=False)
    assert main(["fit", str(csv), "--predict", "--json", "--out", str(out)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["form"] == "predictive" and d["chosen"] in d["weights"]
    assert {r["name"] for r in d["candidates"]} >= {"approach3", "kaplan_joint"}
    assert main(["plan", "--flops", "1e13", "--law", f"fit:{out}", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["params"] == pytest.approx(load_law(out).optimal_allocation(1e13).params)
    assert main(["fit", str(csv), "--predict", "--folds", "0"]) == 2
    assert "--folds" in capsys.readouterr().err


def test_report_shows_each_candidates_held_out_error(tmp_path):
    import scaling
    from benchmarks.report_build import make_study
    from scaling.fit import Columns
    from scaling.report import build_report
    from scaling.store import atomic_write_json

    study = make_study(tmp_path / "study", n_runs=20, sizes_per_budget=5)
    runs = scaling.load_runs(study)
    cands = (Candidate("free"), Candidate("E_floor", 0.25), Candidate("kaplan_joint"))
    fit = Predictor(candidates=cands, columns=Columns(loss="eval_loss")).fit(runs[runs["status"] == "done"])
    atomic_write_json(study / "fit" / "predict.json", fit.to_dict())
    page = build_report(study, tmp_path / "r.html").read_text()
    section = page[page.index('<section id="predict">'):]
    section = section[:section.index("</section>")]
    for c in cands:
        assert c.name.replace(">", "&gt;") in section
    assert f"the law that predicts is {fit.chosen.replace('>', '&gt;')}" in section
    assert section.count("%") >= 2 * len(cands)
    assert f"({fit.members[0].convention.label})" in section  # how N and C were counted


@pytest.mark.parametrize("count", ["total", "non_embedding"])
def test_the_law_counts_n_as_the_data_does(count):
    from scaling.convention import Convention
    from scaling.fit import Columns

    conv = Convention.six_nd(count)
    fit = Predictor(columns=Columns(convention=conv)).fit(ladder(sizes=SIZES[:4]))
    assert (fit.param_convention, fit.flops_convention) == (conv.params, conv.flops)
    assert {m.param_convention for m in fit.members} == {count}
    back = type(fit).from_dict(fit.to_dict())
    assert back.param_convention == count
    assert fit.info["max_flops"] == pytest.approx(6 * SIZES[3] * 160 * SIZES[3])


def _chosen_law(fit):
    return fit.members[fit.names.index(fit.chosen)]


def test_an_isoflop_grid_is_cross_validated_over_budget_with_approach_2_among_the_candidates():
    from tests.fit_helpers import TINY, optimal_n

    fit = Predictor().fit(isoflop_sweep())
    assert (fit.design["design"], fit.design["axis"]) == ("isoflop", "budget")
    law = _chosen_law(fit)
    assert abs(law.params["alpha"] - TINY["alpha"]) < 0.03 and abs(law.params["beta"] - TINY["beta"]) < 0.03
    a2 = next(r for r in fit.table if r["name"] == "approach2 IsoFLOP")
    assert a2["score"] is not None and len(a2["errors"]) == 2
    a2_law = fit.members[fit.names.index("approach2 IsoFLOP")]
    # approach 2's allocation law through the parabola vertices finds the optimum it was fitted on
    assert a2_law.optimal_allocation(1.6e12).params == pytest.approx(optimal_n(TINY, 1.6e12), rel=0.1)


def test_approach_2_is_refitted_in_the_bootstrap():
    cands = (Candidate("free"), Candidate("approach2"))
    fit = Predictor(candidates=cands, bootstrap=20, seed=1).fit(isoflop_sweep())
    vec = np.asarray(fit.draws["vectors"][1])
    assert vec.shape == (20, 5) and np.isfinite(vec).mean() > 0.9
    band = fit.members[1].loss(1e4, 1e7), fit.draw_losses(1e4, 1e7)
    assert np.isfinite(band[1]).all()


def test_a_mix_of_designs_is_cross_validated_over_compute():
    # IsoFLOP profiles, a ladder, and Kaplan N- and D-sweeps of one law, fitted together
    from tests.fit_helpers import TINY

    rng = np.random.default_rng(4)
    grid = isoflop_sweep(budgets=(1e11, 4e11), sizes=5)
    lad = ladder(TINY, sizes=(3e3, 8e3, 2e4), multiples=(1, 4), seed=2)
    n_sweep = pd.DataFrame({"params": [2e3, 6e3, 1.8e4, 5.4e4], "tokens": 2e7})
    d_sweep = pd.DataFrame({"params": 1e4, "tokens": [1e6, 4e6, 1.6e7, 6.4e7]})
    sweeps = pd.concat([n_sweep, d_sweep], ignore_index=True)
    sweeps["loss"] = chinchilla_loss(TINY, sweeps["params"], sweeps["tokens"]) * np.exp(rng.normal(0, 0.002, len(sweeps)))
    frame = pd.concat([grid, lad, sweeps], ignore_index=True)
    frame["flops"] = 6 * frame["params"] * frame["tokens"]
    fit = Predictor().fit(frame)
    assert (fit.design["design"], fit.design["axis"]) == ("mix", "flops")
    law = _chosen_law(fit)
    assert law.form == "chinchilla"
    assert abs(law.params["alpha"] - TINY["alpha"]) < 0.03 and abs(law.params["beta"] - TINY["beta"]) < 0.03


def test_three_budgets_add_folds_over_size_within_each_budget():
    from scaling.fit.crossval import size_folds

    data = normalise(isoflop_sweep(budgets=(1e11, 2e11, 4e11), sizes=5))
    levels = find_levels(data)
    assert len(forward_folds(levels, 2)) == 1
    (fold,) = size_folds(levels, data.frame, 1)
    n = data.frame["params"].to_numpy()
    for b in range(levels.count):
        rows = levels.labels == b
        assert (fold.test & rows).sum() == 1 and n[fold.test & rows].item() == n[rows].max()
        assert (fold.train & rows).sum() == 4
    fit = Predictor().fit(data)
    assert [f["axis"] for f in fit.design["folds"]] == ["budget", "size in budget"]
    assert all(len(r["errors"]) == 2 for r in fit.table if r.get("score") is not None)


def test_the_held_out_budget_never_reaches_the_choice():
    data = isoflop_sweep(budgets=(1e11, 2e11, 4e11, 8e11), sizes=5)
    out = holdout_largest(data, Predictor())
    top = data["budget"] == data["budget"].max()
    again = holdout_largest(data.assign(loss=np.where(top, data["loss"] * 1.1, data["loss"])), Predictor())
    assert again["chosen"] == out["chosen"] and again["law"].loss(3e4, 6e5) == out["law"].loss(3e4, 6e5)
    assert again["mae"] > 10 * out["mae"] and out["n_test"] == 5


def test_bagging_weights_each_candidate_by_how_often_the_resampled_choice_selects_it(tmp_path, capsys):
    from scaling.cli import main

    cands = (Candidate("free"), Candidate("E_floor", 0.25), Candidate("kaplan_joint"))
    data = ladder(sizes=SIZES[:5], noise=0.01)
    fit = Predictor(candidates=cands, combine="bag", bootstrap=30, seed=2).fit(data)
    freq = fit.choice_frequency()
    assert fit.weights == pytest.approx(tuple(freq[n] for n in fit.names))
    assert sum(fit.weights) == pytest.approx(1.0)
    n, d = 6.4e4, 1.28e6
    assert fit.loss(n, d) == pytest.approx(sum(w * m.loss(n, d) for w, m in zip(fit.weights, fit.members, strict=True)))
    with pytest.raises(FitRefusal, match="bootstrap"):
        Predictor(combine="bag")
    csv = tmp_path / "ladder.csv"
    data.to_csv(csv, index=False)
    assert main(["fit", str(csv), "--predict", "--combine", "bag"]) == 2
    assert "--bootstrap" in capsys.readouterr().err
