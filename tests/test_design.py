"""``scaling design`` on a synthetic law: predictions hold on independent draws, the designed grid
beats the plain one of the same compute, its cost stays under the allowance, and the written spec
loads and plans."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import yaml

from scaling.convention import Convention
from scaling.design import Prior, choose_design, parse_allowance, predict_widths, realised_widths
from scaling.design.simulate import _approach2_batch, _approach2_one, draw_log_losses
from scaling.design.space import Pricing, design_points
from scaling.errors import UsageError
from scaling.fit.results import LawFit
from scaling.laws.base import ParametricLaw
from scaling.sweep.grid import expand
from scaling.sweep.spec import load_spec, parse_spec
from scaling.timing import TimingModel

# Two-layer Llamas on a 1024-token vocabulary, widths 6..64: the CPU quickstart's ladder.
LADDER = [(6, 1), (8, 2), (10, 1), (12, 2), (16, 2), (20, 2), (24, 2), (28, 2), (32, 2), (40, 2), (48, 3), (56, 4), (64, 4)]
SPEC = yaml.safe_dump({
    "name": "ladder", "backend": "local", "data": {"source": "builtin:default", "tokenizer": "bpe"},
    "model": {"vocab": 1024, "seq_len": 128, "count": "non_embedding"},
    "train": {"batch": 2048, "lr": {"rule": "inverse_width", "scale": 0.32, "max": 0.01},
              "flops_convention": "6N_non_embedding"},
    "grid": {"kind": "isoflop", "budgets": [1e11],
             "sizes": [{"layers": 2, "hidden": h, "heads": k, "ffn": 3 * h} for h, k in LADDER]},
    "executor": {"kind": "local"},
}, sort_keys=False)

# The synthetic truth: a Chinchilla-form law in non-embedding N near what this ladder's models reach
# on the built-in corpus (a = beta / (alpha + beta) = 0.69), with 0.6% noise on each run's loss.
TRUTH = dict(E=3.2, A=29.0, B=2.8e5, alpha=0.44, beta=0.99)
SIGMA = 0.006
TARGET = 1.6e12


@pytest.fixture(scope="module")
def base():
    return parse_spec(SPEC, "ladder.yaml")


def synthetic_prior() -> Prior:
    law = ParametricLaw("synthetic", "test truth", **TRUTH, param_convention="non_embedding",
                        flops_convention="6N_non_embedding")
    return Prior(law, SIGMA, "synthetic", "assumed")


@pytest.fixture(scope="module")
def prior():
    return synthetic_prior()


@pytest.fixture(scope="module")
def choice(base, prior):
    return choose_design(base, prior, parse_allowance("3e12"), Pricing(), TARGET, criterion="exponent",
                         sims=120, sims3=0, seed=0, family={"min_steps": 150})


def _by(widths, approach, count):
    return next(w for w in widths if w.approach == approach and w.count == count)


def test_fast_approach2_is_the_study_fitter(base, choice, prior):
    """The batched simulation's approach 2 gives the fit stage's own numbers on the same draws:
    exactly without repeats (OLS t intervals); where repeats give it the noise, both test the
    vertices' scatter about the line against their delta-method variances and take percentiles of
    redrawn vertices (200 redraws here, 1000 in the fit): the widths agree in the median over
    draws (within 10%) and on most draws (80% within 30%: percentiles of heavy-tailed redraws)."""
    plain = design_points(base, replace(choice.chosen.design, repeats=0), Pricing(), prior)
    repeated = design_points(base, replace(choice.chosen.design, repeats=2, repeat_at=("optimum",)), Pricing(), prior)
    both = design_points(base, replace(choice.chosen.design, repeats=1, repeat_at=("optimum", "largest")), Pricing(),
                         prior)
    assert not plain.added and len(repeated.added) == 2 * len(repeated.design.budgets)
    assert len(both.added) == 2 * len(both.design.budgets)  # the optimum is never the largest size (interior)
    for p, draws in ((plain, 3), (repeated, 8), (both, 8)):
        ll = draw_log_losses(p, prior, draws, seed=7)
        for count in ("total", "non_embedding"):
            fast = _approach2_batch(p, count, ll, TARGET)
            ratios = []
            for i in range(draws):
                slow = _approach2_one(p, count, ll[i], TARGET)
                assert fast["ok"][i] == (slow is not None)
                if slow is not None:
                    assert fast["a"][i] == pytest.approx(slow[2], rel=1e-6)
                    assert fast["log_n"][i] == pytest.approx(slow[3], rel=1e-6)
                    ratios += [fast["exponent"][i] / slow[0], fast["log_n_opt"][i] / slow[1]]
            ratios = np.array(ratios)
            if not p.added:
                assert ratios == pytest.approx(1.0, rel=1e-6)
            else:
                assert np.median(ratios) == pytest.approx(1.0, abs=0.10), (p.design.repeat_at, count)
                assert np.mean(np.abs(ratios - 1) <= 0.30) >= 0.8, (p.design.repeat_at, count, ratios)


def test_realised_widths_match_prediction_and_beat_plain(choice, prior):
    """Fitted with the study's approach 2 on 40 independent draws, the designed grid's widths are
    within 25% of the prediction, and narrower than the plain 4x5 grid's of the same FLOPs."""
    for count in ("total", "non_embedding"):
        pred = _by(choice.chosen_widths, "2", count)
        real = _by(realised_widths(choice.chosen, prior, TARGET, draws=40, seed=101, counts=(count,)), "2", count)
        plain = _by(realised_widths(choice.plain, prior, TARGET, draws=40, seed=202, counts=(count,)), "2", count)
        for key in ("exponent", "log_n_opt"):
            assert getattr(real, key) == pytest.approx(getattr(pred, key), rel=0.25), (count, key)
            assert getattr(real, key) < getattr(plain, key), (count, key)
        assert real.interior >= 0.9


@pytest.mark.slow
def test_approach3_prediction_holds(choice, prior):
    """Approach 3 with its bootstrap: predicted and realised widths (independent draws) within 25%."""
    pred = _by(predict_widths(choice.chosen, prior, TARGET, sims=8, sims3=8, bootstrap=100, seed=3,
                              counts=("non_embedding",)), "3", "non_embedding")
    real = _by(realised_widths(choice.chosen, prior, TARGET, draws=8, seed=303, approaches=("3",), bootstrap=100,
                               counts=("non_embedding",)), "3", "non_embedding")
    for key in ("exponent", "log_n_opt", "loss"):
        assert getattr(real, key) == pytest.approx(getattr(pred, key), rel=0.25), key


def test_cost_stays_under_the_allowance(base, prior, choice):
    assert choice.chosen.cost["flops"] <= 3e12
    assert choice.plain.cost["flops"] <= 3e12
    # wall time here: a timing model of 20 ms a step plus 3.3 s a run, two runs at a time
    timing = TimingModel(step_overhead_s=0.02, s_per_flop=2.4e-11, startup_s=2.8, fixed_s=0.5)
    pricing = Pricing(timing=timing, slots=2)
    by_time = choose_design(base, prior, parse_allowance("6min"), pricing, TARGET, sims=60, sims3=0,
                            family={"min_steps": 150, "n_budgets": (4, 5, 6), "ks": (5, 7), "strides": (1,)})
    assert 0 < by_time.chosen.cost["seconds"] <= 360
    assert by_time.plain.cost["seconds"] <= 360
    # and the cost is that of the runs the written spec expands to
    again = design_points(base, by_time.chosen.design, pricing, prior)
    assert again.cost == by_time.chosen.cost


def test_a_noise_that_buries_every_valley_is_named_in_the_refusal(base):
    """A prior whose noise (sd 0.3 of log L) buries every valley leaves no design with its budgets
    interior: the refusal says how close the best came and under which noise, exit 2."""
    loud = Prior(synthetic_prior().law, 0.3, "synthetic", "assumed")
    with pytest.raises(UsageError, match=r"the best of \d+: \d+%, under a noise sd of log L 0.3 at the optimum\)"):
        choose_design(base, loud, parse_allowance("3e12"), Pricing(), TARGET, criterion="exponent", sims=20, sims3=0,
                      seed=0, family={"min_steps": 150, "n_budgets": (4,), "ratios": (2.0,)})


def test_allowance_units():
    assert parse_allowance("4e12").kind == "flops"
    assert parse_allowance("12min").value == 720
    assert parse_allowance("200gpuh").kind == "gpu_hours"
    with pytest.raises(UsageError, match="--allowance"):
        parse_allowance("lots")


def _pilot_fit(tmp_path):
    law = LawFit(approach="3", form="chinchilla", params=dict(TRUTH), n_points=30, estimator="grid",
                 convention=Convention("non_embedding", "6N_non_embedding"), info={"residual_scale": SIGMA})
    d = law.to_dict()
    (tmp_path / "fit").mkdir()
    path = tmp_path / "fit" / "approach3_non_embedding.json"
    path.write_text(json.dumps(d))
    return path


def test_cli_writes_a_spec_that_plans(tmp_path, cli):
    spec = tmp_path / "ladder.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "designed.yaml"
    pilot = _pilot_fit(tmp_path)
    r = cli("design", str(spec), "--allowance", "2e12", "--target", "1.6e12", "--prior", f"fit:{pilot}",
            "--sims", "40", "--sims3", "0", "--min-steps", "150", "--out", str(out), "--json", check=True)
    summary = json.loads(r.stdout)
    assert summary["prior"]["sigma"] == pytest.approx(SIGMA)  # the pilot fit's residual scale
    assert summary["chosen"]["cost"]["flops"] <= 2e12
    # the planner's own view of the written file: the same runs, FLOPs and budgets (its time
    # estimate would probe this machine, which the design did not ask for: FLOPs allowance)
    written = load_spec(out)
    runs = expand(written)
    assert len(runs) == summary["chosen"]["runs"]
    # repeats (grid.repeats) are added by the sweep after the grid: one run of C FLOPs (within half
    # a batch) per seed and budget, priced in the design's cost
    rep = written.grid.repeats
    budgets = summary["chosen"]["budgets"]
    assert summary["chosen"]["added_runs"] == (len(rep.seeds) * len(budgets) if rep else 0)
    extra = len(rep.seeds) * sum(budgets) if rep else 0.0
    assert sum(r.flops() for r in runs) + extra == pytest.approx(summary["chosen"]["cost"]["flops"], rel=0.01)
    assert sorted({r.budget for r in runs}) == pytest.approx(summary["chosen"]["budgets"])
    assert out.read_text().startswith("# Designed by `scaling design`")


@pytest.mark.parametrize("args, field", [
    (["--allowance", "lots"], "--allowance"),
    (["--target", "-1"], "--target"),
    (["--prior", "no-such-law"], "--prior"),
    (["--prior", "chinchilla"], "--noise"),
    (["--allowance", "1e6"], "--allowance"),
    (["--branch-share", "1.5"], "--branch-share"),
    (["--families", "isoflop,grid"], "--families"),
])
def test_bad_input_names_the_field(tmp_path, cli, args, field):
    spec = tmp_path / "ladder.yaml"
    spec.write_text(SPEC)
    opts = {"--allowance": "2e12", "--target": "1.6e12", "--prior": "chinchilla", "--noise": "0.006"}
    for k, v in zip(args[::2], args[1::2], strict=True):
        opts[k] = v
    if args[:2] == ["--prior", "chinchilla"]:
        opts.pop("--noise")
    flat = [x for kv in opts.items() for x in kv]
    r = cli("design", str(spec), *flat, "--sims", "20", "--sims3", "0")
    assert r.returncode == 2, r.stderr
    assert field in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_spec_without_a_ladder_is_refused(tmp_path, cli):
    spec = tmp_path / "kaplan.yaml"
    spec.write_text(SPEC.replace("kind: isoflop", "kind: kaplan_n").replace("budgets:\n  - 100000000000.0\n", "tokens: 100000\n"))
    r = cli("design", str(spec), "--allowance", "2e12", "--target", "1e12", "--prior", "chinchilla", "--noise", "0.01")
    assert r.returncode == 2
    assert "grid" in r.stderr and "ladder" in r.stderr


def test_design_imports_no_torch_submitit_or_plotly():
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import sys, scaling.design, scaling.commands.design\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'submitit', 'plotly', 'transformers'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}).stdout
    assert out.strip() == "[]"


def test_prior_noise_from_repeated_seeds(tmp_path):
    """A pilot study's fit/noise.json (sd of the final loss across seeds) becomes an sd of log
    loss at the loss of its largest budget's optimum; without it, the fit's residual scale."""
    from scaling.design import load_prior

    path = _pilot_fit(tmp_path)
    d = json.loads(path.read_text())
    d["info"]["max_flops"] = 2e11
    path.write_text(json.dumps(d))
    assert load_prior(f"fit:{path}").sigma == pytest.approx(SIGMA)
    (tmp_path / "fit" / "noise.json").write_text(json.dumps({"pooled_std": 0.02, "pooled_dof": 5, "budgets": []}))
    prior = load_prior(f"fit:{path}")
    law = ParametricLaw("t", "t", **TRUTH, param_convention="non_embedding")
    a = law.optimal_allocation(2e11)
    assert prior.sigma == pytest.approx(0.02 / law.loss(a.params, a.tokens))
    assert "repeated seeds" in prior.sigma_source
    assert load_prior(f"fit:{path}", sigma=0.01).sigma == 0.01
    # a noise with a trend in tokens per parameter: its value at the optimum's r = 6 D^2 / C
    from scaling.fit.noise import NoiseEstimate, NoiseTrend

    trend = NoiseTrend(floor=0.01, rise=0.05, r_ref=20.0, slope=-1.0, r_lo=1.0, r_hi=1e4, p_value=1e-5)
    (tmp_path / "fit" / "noise.json").write_text(json.dumps(NoiseEstimate({}, 0.02, 5, trend).to_dict()))
    prior = load_prior(f"fit:{path}")
    sd = float(trend.sd_at(6 * a.tokens**2 / 2e11))
    assert prior.sigma == pytest.approx(sd / law.loss(a.params, a.tokens)) and sd != pytest.approx(0.02)
    assert "trend" in prior.sigma_source
