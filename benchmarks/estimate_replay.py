"""The time estimates against a sweep that really ran: planned wall time and the live ETA, replayed
from the timings the study recorded (each run's ``status.json`` started/finished, ``result.json``
wall time and steps), each beside what was measured.

Re-timing the sweep is not needed (and on a shared machine not reliable): the model is calibrated
on the recorded runs the way the probe calibrates it on a machine, and the ETA is replayed from the
same evidence the launcher would have had at each moment (runs finished by then, and the running
ones' progress, interpolated linearly between their start and finish).

1. Planned wall time, three calibrations of :class:`scaling.timing.TimingModel`, each packed onto
   the sweep's parallel slots beside the measured sweep: (a) all runs (in sample: the model's form,
   fixed costs and packing); (b) each budget predicted from the other budgets (out of sample);
   (c) the runs finished in the first minute only (the machine as a probe at launch saw it).
2. The ETA printed at 60 s, 120 s, 5, 10 and 15 min, with prior (c) refined live by
   :class:`scaling.timing.Refiner`, beside the time that was actually left. Target +-30%.

    python benchmarks/estimate_replay.py [STUDY]    # default /work/studies/quickstart (read only)
    python benchmarks/estimate_replay.py tests/fixtures/quickstart_timings.json   # the same, recorded
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from scaling.flops import flops_per_token  # noqa: E402
from scaling.runspec import RunSpec  # noqa: E402
from scaling.store import SweepStore  # noqa: E402
from scaling.timing import Refiner, TimingModel, eta_seconds, fit_step_model, pack  # noqa: E402


@dataclass(frozen=True)
class Recorded:
    """One finished run as the store recorded it."""

    spec: RunSpec
    started: float
    finished: float
    wall_time: float  # the training loop's seconds (result.json)

    @property
    def process_s(self) -> float:
        return self.finished - self.started


def recorded_runs(study: str | Path) -> list[Recorded]:
    out = []
    for rd in SweepStore(study).runs():
        st, res = rd.read_status_and_result()
        if res is None or not st.get("started") or not st.get("finished"):
            continue
        out.append(Recorded(RunSpec.from_json_dict(rd.read_spec() or {}), float(st["started"]), float(st["finished"]),
                            float(res["wall_time"])))
    return sorted(out, key=lambda r: r.started)


def recorded_from_json(path: str | Path) -> list[Recorded]:
    """Runs from a timings file (``tests/fixtures/quickstart_timings.json``: spec, started,
    finished, wall_time per run)."""
    import json

    doc = json.loads(Path(path).read_text())
    return sorted((Recorded(RunSpec.from_json_dict(r["spec"]), float(r["started"]), float(r["finished"]),
                            float(r["wall_time"])) for r in doc["runs"]), key=lambda r: r.started)


def slot_gaps(runs: list[Recorded], slots: int) -> list[float]:
    """Seconds from a run's finish to the next start on the same slot (launcher poll, process
    start, imports): each start paired with the latest finish before it not yet reused."""
    finishes = sorted(r.finished for r in runs)
    used: set[int] = set()
    gaps = []
    for r in runs[slots:]:
        cands = [i for i, f in enumerate(finishes) if f <= r.started and i not in used]
        if cands:
            i = cands[-1]
            used.add(i)
            gaps.append(r.started - finishes[i])
    return gaps


def calibrate(runs: list[Recorded], startup_s: float, source: str) -> TimingModel:
    """The model fitted to recorded runs: seconds a step against FLOPs a step, and the in-process
    seconds outside the training loop as the fixed cost."""
    pts = [(r.spec.batch_tokens * flops_per_token(r.spec.model_shape, "matmul"), r.wall_time / r.spec.steps)
           for r in runs]
    a, b = fit_step_model(pts)
    fixed = statistics.median(max(0.0, r.process_s - r.wall_time) for r in runs)
    return TimingModel(step_overhead_s=a, s_per_flop=b, startup_s=startup_s, fixed_s=fixed, source=source)


def replay_eta(runs: list[Recorded], prior: TimingModel, slots: int, t0: float, t: float) -> float:
    """The ETA the launcher would print at ``t0 + t``: prior ``prior`` refined by what had
    finished by then and how far the running runs had got."""
    now = t0 + t
    ref = Refiner()
    for r in runs:
        if r.finished <= now:
            ref.finish(r.process_s, prior.fixed_s + prior.train_seconds(r.spec), r.finished)
    evidence, left, pending = [], [], []
    for r in runs:
        if r.finished <= now:
            continue
        if r.started <= now:
            frac = (now - r.started) / r.process_s
            if frac > 0:
                evidence.append((now - r.started, (prior.fixed_s + prior.train_seconds(r.spec)) * frac))
            left.append((prior.fixed_s + prior.train_seconds(r.spec)) * (1 - frac))
        else:
            pending.append(prior.run_seconds(r.spec))
    return eta_seconds(pending, left, slots, ref.factor(now, evidence))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", nargs="?", default="/work/studies/quickstart")
    ap.add_argument("--slots", type=int, default=2, help="runs at once in the recorded sweep")
    args = ap.parse_args()
    runs = recorded_from_json(args.study) if args.study.endswith(".json") else recorded_runs(args.study)
    gaps = slot_gaps(runs, args.slots)
    startup = statistics.median(gaps) if gaps else 0.0
    t0 = runs[0].started - startup
    measured = max(r.finished for r in runs) - t0
    print(f"{len(runs)} recorded runs on {args.slots} slots; sweep measured {measured / 60:.2f} min "
          f"(first start to last finish, plus one process start of {startup:.1f} s: median of {len(gaps)} "
          f"finish-to-next-start gaps)")

    def planned(model_of: dict[str, TimingModel]) -> float:
        return pack([model_of[r.spec.run_id].run_seconds(r.spec) for r in runs], args.slots)

    all_in = calibrate(runs, startup, "all runs")
    budgets = sorted({r.spec.budget for r in runs})
    loo = {}
    for b in budgets:
        m = calibrate([r for r in runs if r.spec.budget != b], startup, f"without budget {b:g}")
        loo.update({r.spec.run_id: m for r in runs if r.spec.budget == b})
    first = [r for r in runs if r.finished - t0 <= 60] or runs[:1]
    probe = calibrate(first, startup, f"{len(first)} runs of the first minute")
    for what, wall in (("(a) calibrated on all runs", planned({r.spec.run_id: all_in for r in runs})),
                       ("(b) each budget from the others", planned(loo)),
                       (f"(c) {probe.source}", planned({r.spec.run_id: probe for r in runs}))):
        print(f"planned {what}: {wall / 60:.2f} min | measured {measured / 60:.2f} min | ratio {wall / measured:.2f} "
              f"| target 0.7-1.3: {'met' if 0.7 <= wall / measured <= 1.3 else 'MISSED'}")
    print(f"model (a): {all_in.step_overhead_s * 1e3:.1f} ms a step + {1 / all_in.s_per_flop / 1e9:.2f} GFLOP/s, "
          f"fixed {all_in.fixed_s:.2f} s + start {all_in.startup_s:.1f} s a run")
    print(f"model (c): {probe.step_overhead_s * 1e3:.1f} ms a step + {1 / probe.s_per_flop / 1e9:.2f} GFLOP/s")
    for t in (60, 120, 300, 600, 900):
        if t >= measured:
            break
        eta = replay_eta(runs, probe, args.slots, t0, t)
        left = measured - t
        print(f"ETA at {t / 60:4.1f} min: {eta / 60:.2f} min | actually left {left / 60:.2f} min | ratio "
              f"{eta / left:.2f} | target 0.7-1.3: {'met' if 0.7 <= eta / left <= 1.3 else 'MISSED'}")


if __name__ == "__main__":
    main()
