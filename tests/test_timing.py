"""The time estimate model: its fit and packing, its predictions on the recorded timings of a real
quickstart sweep (tests/fixtures/quickstart_timings.json), the live refinement, and the launcher's
ETA from the first snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.estimate_replay import calibrate, recorded_from_json, replay_eta, slot_gaps
from scaling.sweep import launch
from scaling.timing import Refiner, TimingModel, fit_step_model, pack
from tests.test_sweep_launch import toy_spec

TIMINGS = Path(__file__).parent / "fixtures" / "quickstart_timings.json"


def test_fit_step_model_recovers_overhead_and_rate():
    a, b = fit_step_model([(f, 0.02 + f * 2e-11) for f in (1e8, 5e8, 2e9, 8e9)])
    assert a == pytest.approx(0.02, rel=1e-6) and b == pytest.approx(2e-11, rel=1e-6)
    assert fit_step_model([(1e9, 0.5)]) == (0.0, pytest.approx(5e-10))  # one point: through the origin
    a, b = fit_step_model([(1e9, 0.5), (2e9, 0.4)])  # slower for more work: noise, not a negative rate
    assert b == 0.0 and a == pytest.approx(0.45)


def test_pack_keeps_the_launch_order():
    assert pack([10, 1, 1, 1], 2) == 10
    assert pack([1, 1, 10], 2) == 11  # the long run starts when the first slot frees
    assert pack([5], 2, busy=[8, 2]) == 8
    assert pack([], 3) == 0


@pytest.fixture(scope="module")
def recorded():
    runs = recorded_from_json(TIMINGS)
    assert len(runs) == 20
    return runs


def test_the_model_predicts_runs_it_was_not_calibrated_on(recorded):
    budgets = sorted({r.spec.budget for r in recorded})
    model = calibrate([r for r in recorded if r.spec.budget == budgets[0]], startup_s=5.0, source="first budget")
    # the second budget ran right after, on the machine as it was: each run within +-25%
    for r in (r for r in recorded if r.spec.budget == budgets[1]):
        predicted = model.fixed_s + model.train_seconds(r.spec)
        assert predicted / r.process_s == pytest.approx(1.0, abs=0.25), r.spec.name


def test_recorded_process_starts_are_the_fixed_cost(recorded):
    gaps = slot_gaps(recorded, slots=2)
    assert len(gaps) == 18 and 2.0 < sorted(gaps)[len(gaps) // 2] < 15.0  # launcher poll + spawn + imports
    model = calibrate(recorded, startup_s=5.0, source="all")
    assert 0 <= model.fixed_s < 1.0  # data, model build, export: well under a second on these runs


def test_the_refiner_moves_to_what_the_runs_take():
    r = Refiner(half_life_s=60, prior_weight_s=10)
    assert r.factor(0.0) == 1.0
    for t in range(10):
        r.finish(actual_s=30.0, predicted_s=10.0, when=10.0 * t)
    assert r.factor(100.0) == pytest.approx(3.0, rel=0.15)  # the prior (ratio 1) still weighs a little
    assert r.factor(100.0, running=[(100.0, 20.0)]) > r.factor(100.0)  # a slow run now weighs in


def test_the_replayed_eta_catches_up_when_the_machine_slows(recorded):
    """The recorded sweep slowed 5-10x after its first minutes (the machine's load rose): the ETA
    printed at minute 1 is short, the one at minute 10 is within 30% of the time that was left."""
    t0 = recorded[0].started - 5.0
    end = max(r.finished for r in recorded)
    prior = calibrate([r for r in recorded if r.finished - t0 <= 60], startup_s=5.0, source="first minute")
    early = replay_eta(recorded, prior, 2, t0, 60.0) / (end - t0 - 60.0)
    late = replay_eta(recorded, prior, 2, t0, 600.0) / (end - t0 - 600.0)
    assert early < 0.7 and late == pytest.approx(1.0, abs=0.3)


def test_timing_model_round_trips():
    m = TimingModel(step_overhead_s=0.02, s_per_flop=3e-11, startup_s=4.0, fixed_s=0.5, source="probe")
    assert TimingModel.from_dict(m.to_dict()) == m


def test_the_launcher_prints_an_eta_from_the_first_snapshot(tmp_path):
    spec = toy_spec(tmp_path, step_s=0.01)  # the toy backend estimates steps x step_s
    seen = []
    launch(spec, tmp_path / "out", executor="debug", progress=seen.append)
    assert seen[0].eta_s is not None and seen[0].eta_s > 0
    assert seen[-1].finished and seen[-1].eta_s == 0.0


def test_a_probe_taken_under_load_is_taken_again_when_the_machine_is_idle(tmp_path, monkeypatch):
    """The machine's load cannot be set in a test on a shared machine: the load readings, and the
    step and start-up seconds a busy and an idle machine measured, are recorded values."""
    from scaling.backends.local import probe
    from scaling.runspec import OptimizerSpec, RunSpec, ShapeSpec

    monkeypatch.setenv("SCALING_PROBE_CACHE", str(tmp_path / "probe.json"))
    specs = [RunSpec(shape=ShapeSpec(layers=layers, hidden=32, heads=2, vocab=1024, seq_len=128), tokens=20 * 2048,
                     batch_tokens=2048, optimizer=OptimizerSpec(lr=1e-3)) for layers in (1, 2, 3)]
    machine = {"load": 3.8, "step_s": 0.30, "startup_s": 12.0}  # 2 CPUs, both busy with other work
    measured: list[str] = []
    monkeypatch.setattr(probe, "machine_load", lambda: (machine["load"], 2))
    monkeypatch.setattr(probe, "time_step", lambda s, t: measured.append("step") or machine["step_s"] * s.shape.layers)
    monkeypatch.setattr(probe, "time_startup", lambda t: measured.append("start") or machine["startup_s"])

    busy = probe.timing_model(specs, threads=1)
    assert measured.count("step") == 3 and measured.count("start") == 1
    assert "load up to 3.8 on 2 CPUs: busy" in busy.source and busy.startup_s == 12.0
    probe.timing_model(specs, threads=1)  # still busy: a second busy probe would be as skewed
    assert len(measured) == 4

    machine.update(load=0.2, step_s=0.10, startup_s=4.0)  # the others finished
    idle = probe.timing_model(specs, threads=1)
    assert len(measured) == 8 and "busy" not in idle.source and idle.startup_s == 4.0
    assert idle.step_seconds(specs[2]) == pytest.approx(busy.step_seconds(specs[2]) / 3)  # the idle steps, 3x faster

    machine.update(load=0.0, step_s=0.12, startup_s=5.0)  # idle again, a little noisier
    assert probe.timing_model(specs, threads=1) == idle and len(measured) == 8  # the idle probe is kept
    assert probe.contended(1.2, 2, threads=1) is False and probe.contended(1.2, 2, threads=2) is True


def test_the_plan_prices_the_repeats_the_sweep_adds():
    """Repeats at each budget's optimum: one run per budget and seed, each its budget's median
    run; at its largest size: that size's run; at every point: each run again per seed. Packed on
    the same slots as the grid."""
    from scaling.sweep.plan import repeats_estimate
    from scaling.sweep.spec import parse_spec

    text = (Path(__file__).resolve().parents[1] / "sweeps" / "quickstart.yaml").read_text()
    spec = parse_spec(text, "quickstart.yaml")
    assert spec.grid.repeats is not None and spec.grid.repeats.seeds == [1, 2]
    assert spec.grid.repeats.points == ["optimum", "largest"]
    rows = [{"budget": 1.0, "params": n, "est_seconds": s} for n, s in ((3, 10.0), (2, 20.0), (1, 60.0))] + \
           [{"budget": 2.0, "params": n, "est_seconds": s} for n, s in ((5, 30.0), (4, 40.0))]
    rep = repeats_estimate(spec, rows, slots=2)
    assert (rep["runs"], rep["seeds"], rep["at"]) == (8, 2, ["optimum", "largest"])
    assert rep["est_wall_seconds"] == pytest.approx(pack([20.0, 20.0, 10.0, 10.0, 35.0, 35.0, 30.0, 30.0], 2))
    text = text.replace("at: [optimum, largest]", "at: optimum")
    rep = repeats_estimate(parse_spec(text, "quickstart.yaml"), rows, slots=2)
    assert (rep["runs"], rep["seeds"], rep["at"]) == (4, 2, "optimum")
    assert rep["est_wall_seconds"] == pytest.approx(pack([20.0, 20.0, 35.0, 35.0], 2))
    every = parse_spec(text.replace("at: optimum", "at: all"), "quickstart.yaml")
    rep = repeats_estimate(every, rows, slots=2)
    assert rep["runs"] == 10 and rep["est_wall_seconds"] == pytest.approx(pack([r["est_seconds"] for r in rows for _ in (1, 2)], 2))
    assert repeats_estimate(parse_spec(text.replace("  repeats: {seeds: [1, 2], at: optimum}\n", ""), "q.yaml"), rows, 2) is None
