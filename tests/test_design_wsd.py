"""WSD-branch designs and repeats in ``scaling design``: a branch is priced at its cooldown (the
trunk paid for the rest), fitted as a point of the law at its own D with noise partly shared with
its trunk's other branches; the WSD family wins where branches buy more points, and repeats stay
out where they do not pay."""

from __future__ import annotations

import numpy as np
import pytest
from test_design import SPEC, TARGET, synthetic_prior

from scaling.design import choose_design, parse_allowance, predict_widths, realised_widths
from scaling.design.output import design_header, design_summary, write_design
from scaling.design.simulate import draw_log_losses
from scaling.design.space import Pricing
from scaling.design.wsd import candidate_wsd_designs
from scaling.sweep.grid import expand
from scaling.sweep.spec import load_spec, parse_spec
from scaling.timing import TimingModel

WSD = """
name: wsd
backend: local
data: {source: builtin:default, tokenizer: bpe}
model: {vocab: 1024, seq_len: 128, count: non_embedding}
train: {batch: 2048, lr: {rule: inverse_width, scale: 0.32, max: 0.01}, checkpoint_every: 50,
        flops_convention: 6N_non_embedding}
grid:
  kind: wsd_branches
  sizes: [{layers: 2, hidden: 16, heads: 2, ffn: 48}, {layers: 2, hidden: 32, heads: 2, ffn: 96}]
  tokens: [512000, 1024000, 2048000]
  cooldown_frac: 0.2
executor: {kind: local}
"""


def test_a_branch_costs_its_cooldown_only():
    """The trunk runs once to the last branch point; each branch trains from its trunk's
    checkpoint, so it pays for its last ``cooldown_frac`` of tokens (FLOPs and seconds)."""
    runs = expand(parse_spec(WSD, "wsd.yaml"))
    trunks = [r for r in runs if r.branch_of is None]
    branches = [r for r in runs if r.branch_of is not None]
    assert len(trunks) == 2 and len(branches) == 6
    for b in branches:
        assert b.start_step * b.batch_tokens == b.branch_from_tokens
        assert b.trained_steps == pytest.approx(0.2 * b.steps, abs=1)
        assert b.trained_flops() == pytest.approx(b.flops() * b.trained_steps / b.steps)
    for t in trunks:
        assert t.trained_steps == t.steps and t.trained_flops() == t.flops()
    timing = TimingModel(step_overhead_s=0.01, s_per_flop=1e-11, startup_s=2.0)
    b = branches[-1]
    assert timing.train_seconds(b) == pytest.approx(b.trained_steps * timing.step_seconds(b) + timing.eval_seconds(b))
    assert timing.train_seconds(b) < 0.3 * b.steps * timing.step_seconds(b)


# ---- the WSD family in the search, on the synthetic law of tests/test_design.py ----------------------

@pytest.fixture(scope="module")
def base():
    return parse_spec(SPEC, "ladder.yaml")


@pytest.fixture(scope="module")
def prior():
    return synthetic_prior()


ISO_SMALL = {"n_budgets": (4, 5), "ratios": (2.0,), "ks": (5, 7), "strides": (1,)}
WSD_SMALL = {"n_budgets": (4,), "margins": (1,), "strides": (1, 2), "spans": (8.0, 16.0)}


@pytest.fixture(scope="module")
def wsd(base, prior):
    """The WSD design the linearised ranking puts first at 3e12 FLOPs."""
    from scaling.design.linear import linear_widths

    cands = candidate_wsd_designs(base, prior, parse_allowance("3e12"), Pricing(), TARGET, min_steps=150, **WSD_SMALL)
    return min(cands, key=lambda p: linear_widths(p, prior, TARGET, "non_embedding")["log_n_opt"])


def test_branches_are_points_on_the_law_and_share_their_trunk_noise(wsd, prior):
    """Fitted points are the branches (not the trunks), each at its own D; the branches of one
    trunk share ``branch_share`` of the noise variance, other pairs none."""
    assert len(wsd.fitted) == len(wsd.design.sizes) * len(wsd.design.tokens)
    assert all(r.branch_of is not None for r in wsd.fitted)
    assert sorted({float(t) for t in wsd.tokens}) == pytest.approx(sorted(wsd.design.tokens), rel=0.15)
    ll = draw_log_losses(wsd, prior, 4000, seed=1)
    resid = (ll - prior.log_loss(wsd.params(prior.param_convention), wsd.tokens)) / prior.sigma
    corr = np.corrcoef(resid.T)
    trunk = wsd.trunk
    same = trunk[:, None] == trunk[None, :]
    off = ~np.eye(len(trunk), dtype=bool)
    assert np.mean(corr[same & off]) == pytest.approx(prior.branch_share, abs=0.03)
    assert np.mean(np.abs(corr[~same])) < 0.03
    assert resid.std() == pytest.approx(1.0, abs=0.02)


def test_wsd_realised_widths_match_prediction(wsd, prior):
    """Approach 3 with its bootstrap on the WSD design: the widths realised on independent draws
    (the study's fitter) are within 25% of the predicted ones."""
    kw = {"bootstrap": 60, "counts": ("non_embedding",)}
    pred = predict_widths(wsd, prior, TARGET, sims=1, sims3=16, seed=3, **kw)
    real = realised_widths(wsd, prior, TARGET, draws=16, seed=404, approaches=("3",), **kw)
    assert [w.approach for w in pred] == ["3"]  # no IsoFLOP budgets: approach 2 is not simulated
    for key in ("exponent", "log_n_opt", "loss"):
        assert getattr(real[0], key) == pytest.approx(getattr(pred[0], key), rel=0.25), key


def test_wsd_wins_where_branches_buy_more_points_and_its_spec_plans(base, prior, tmp_path):
    """At 3e12 FLOPs a WSD ladder gives ~30-60 (N, D) points where an IsoFLOP grid gives ~30 runs:
    the search picks it (its widest interval is the narrowest), narrower than the plain grid's; the written
    spec (grid.kind wsd_branches) re-parses and plans within the allowance, at the cost priced."""
    allowance = parse_allowance("3e12")
    ch = choose_design(base, prior, allowance, Pricing(), TARGET, criterion="n_opt", sims=60, sims3=6, bootstrap=60,
                       finalists=2, family={"min_steps": 150, **ISO_SMALL, "repeats": (0,), "wsd": WSD_SMALL})
    assert set(ch.families) == {"isoflop", "wsd"}
    assert ch.chosen.design.family == "wsd"
    a3 = {w.count: w for w in ch.chosen_widths}
    plain3 = {w.count: w for w in ch.plain_widths if w.approach == "3"}
    iso3 = {w.count: w for w in ch.families["isoflop"][1] if w.approach == "3"}
    assert a3["non_embedding"].log_n_opt < iso3["non_embedding"].log_n_opt
    assert a3["non_embedding"].log_n_opt < plain3["non_embedding"].log_n_opt
    summary = design_summary(ch, prior, allowance, Pricing(), TARGET)
    out = write_design(tmp_path / "designed.yaml", base, ch, design_header(summary))
    text = out.read_text()
    assert "family wsd won" in text and "kind: wsd_branches" in text
    written = load_spec(out)
    runs = expand(written)
    assert written.grid.kind == "wsd_branches" and len(runs) == len(ch.chosen.runs)
    trained = sum(r.trained_flops() for r in runs)  # what `scaling sweep plan` totals as trained_flops_total
    assert trained == pytest.approx(ch.chosen.cost["flops"]) and trained <= 3e12
    assert sum(r.flops() for r in runs) > 1.5 * trained  # every token the branches saw, counted once per branch


def test_repeats_are_chosen_where_they_narrow_the_interval(base, prior):
    """Repeats cost runs and measure the noise the fits then use; on N* (approach 2, every
    candidate simulated) the choice among designs with and without them is the one with the
    narrower predicted interval of the two best. (Here they do not pay: the vertices miss the
    power law by more than the noise explains, and the fit widens its noise band to that.)"""
    fam = {"min_steps": 150, **ISO_SMALL}

    def best(criterion: str, repeats: tuple[int, ...]):
        ch = choose_design(base, prior, parse_allowance("3e12"), Pricing(), TARGET, criterion=criterion, sims=60,
                           sims3=0 if criterion == "n_opt" else 6, bootstrap=60, finalists=1,
                           family={**fam, "repeats": repeats}, families=("isoflop",))
        w = ch.widths("chosen", "2" if criterion == "n_opt" else "3", "non_embedding")
        return ch.chosen, w.log_n_opt if criterion == "n_opt" else w.loss

    for criterion in ("n_opt",):
        (either, w_either), (none, w_none), (one, w_one) = (best(criterion, r) for r in ((0, 1), (0,), (1,)))
        assert none.design.repeats == 0 and one.design.repeats == 1
        assert either.design == (none if w_none < w_one else one).design, criterion
        assert w_either == pytest.approx(min(w_none, w_one))
        assert (either.spec.grid.repeats is None) == (either.design.repeats == 0)


def test_the_fit_stage_takes_the_branches_not_the_trunks(tmp_path):
    """A launched WSD sweep (the toy backend, its losses on a law): the fit's input (the pipeline's
    and `scaling fit STUDY`'s) holds one row per cooldown branch and none for the trunks, which
    end at a constant LR."""
    from scaling.convention import Convention
    from scaling.fit.data import read_table, study_data
    from scaling.sweep import launch
    from tests.test_sweep_extend import LAW

    spec = tmp_path / "wsd.yaml"
    spec.write_text(f"""\
name: toywsd
backend: toy
backend_options: {{law: {LAW}}}
model: {{vocab: 256, seq_len: 64, count: total}}
train: {{batch: 4096, lr: 0.1}}
grid: {{kind: wsd_branches, sizes: [{{layers: 2, hidden: 16, heads: 2}}, {{layers: 2, hidden: 32, heads: 2}}],
        tokens: [40960, 81920, 163840]}}
executor: {{kind: debug, retries: 0, poll_s: 0.1}}
""")
    out = tmp_path / "out"
    launch(spec, out, progress=False)
    runs = expand(load_spec(spec))
    data = study_data(out, Convention("total", "6N"))
    branches = {r.run_id for r in runs if r.branch_of is not None}
    assert set(data.frame["run_id"]) == branches and len(branches) == 6
    table, from_study = read_table(out)  # what `scaling fit STUDY` reads
    assert from_study and set(table["run_id"]) == branches


def test_a_branch_waits_for_its_trunk_in_the_wall_time():
    """The wall-time estimate (design and sweep plan) packs the runs as the launcher starts them:
    a branch only once its trunk is done, so a free slot idles until then."""
    from scaling.timing import pack, waits_for

    assert pack([10, 1, 1], 2) == 10  # independent runs
    assert pack([10, 1, 1], 2, after=[None, 0, 0]) == 11  # both branches wait for the 10 s trunk
    assert pack([10, 4, 1, 1], 2, after=[None, None, 0, 0]) == 11  # the other trunk runs meanwhile
    assert pack([3, 2], 1, after=[None, 0]) == pack([3, 2], 1) == 5
    runs = expand(parse_spec(WSD, "wsd.yaml"))
    deps = waits_for(runs)
    assert [runs[d].run_id if d is not None else None for d in deps] == [r.branch_of for r in runs]
    timing = TimingModel(step_overhead_s=0.01, s_per_flop=1e-11, startup_s=2.0)
    secs = [timing.run_seconds(r) for r in runs]
    longest = max(secs[i] + max(s for s, d in zip(secs, deps, strict=True) if d == i)
                  for i, d in enumerate(deps) if d is None)
    assert pack(secs, 8, after=deps) == pytest.approx(longest)  # enough slots: the trunk-then-branch chain
    assert pack(secs, 8) < longest
