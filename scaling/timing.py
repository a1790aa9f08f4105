"""How long runs take: a timing model from a measured probe, refined live from the runs themselves.

A run's seconds (no torch here; the probe that measures the machine lives with its backend)::

    seconds = startup_s + fixed_s + steps x step_s + evals x eval_tokens / batch_tokens x step_s / 3
    step_s  = step_overhead_s + batch_tokens x flops_per_token(matmul) x s_per_flop

``step_overhead_s`` is what a step costs whatever its size (optimizer, kernel launches, Python),
``s_per_flop`` the inverse of the machine's achieved matmul rate at the run's thread count: both
fitted to a few probe steps of real models (:func:`fit_step_model`). ``startup_s`` is the
process start (interpreter, imports, the job's spawn), ``fixed_s`` the rest of a run that does not
scale with its steps (data loading, model build, checkpoints, model export). An evaluation is a
forward pass, a third of a training step per token (forward 2N, backward 4N FLOPs per token).

While a sweep runs, :class:`Refiner` scales the model by what the runs really took: finished runs
(measured over predicted seconds) and running ones (their elapsed seconds over the predicted seconds
of the steps they have done), the most recent weighing most, so a machine that slows down (or a
cluster that is faster than its probe) moves the estimate within a few runs. The ETA packs the
remaining seconds of each run onto the sweep's parallel slots in the launcher's order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from scaling.flops import flops_per_token
from scaling.runspec import RunSpec

EVAL_COST = 1.0 / 3.0  # forward only: 2N of the 6N FLOPs per token of a training step


@dataclass(frozen=True)
class TimingModel:
    """Seconds of a run from its steps, FLOPs and fixed costs (module docstring)."""

    step_overhead_s: float
    s_per_flop: float
    startup_s: float = 0.0
    fixed_s: float = 0.0
    source: str = "probe"

    def step_seconds(self, spec: RunSpec) -> float:
        return self.step_overhead_s + spec.batch_tokens * flops_per_token(spec.model_shape, "matmul") * self.s_per_flop

    def eval_seconds(self, spec: RunSpec) -> float:
        n_evals = 1 + (spec.trained_steps // spec.eval_every if spec.eval_every else 0)
        return n_evals * spec.eval_tokens / spec.batch_tokens * self.step_seconds(spec) * EVAL_COST

    def train_seconds(self, spec: RunSpec) -> float:
        """The seconds that scale with the run: the steps it trains (a WSD branch: its cooldown
        only, from its trunk's checkpoint) and its evaluations."""
        return spec.trained_steps * self.step_seconds(spec) + self.eval_seconds(spec)

    def run_seconds(self, spec: RunSpec) -> float:
        return self.startup_s + self.fixed_s + self.train_seconds(spec)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TimingModel:
        return cls(**{k: d[k] for k in ("step_overhead_s", "s_per_flop", "startup_s", "fixed_s", "source") if k in d})

    def with_fixed(self, startup_s: float | None = None, fixed_s: float | None = None) -> TimingModel:
        return replace(self, startup_s=self.startup_s if startup_s is None else startup_s,
                       fixed_s=self.fixed_s if fixed_s is None else fixed_s)


def fit_step_model(points: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """``(step_overhead_s, s_per_flop)``: least squares of ``seconds = a + b x flops`` over
    ``(flops per step, seconds per step)`` points, both held non-negative (one point, or a
    negative fit: the line through the origin)."""
    pts = [(float(f), float(s)) for f, s in points if f > 0 and s > 0]
    if not pts:
        raise ValueError("no (flops, seconds) points to fit")
    if len(pts) >= 2:
        n = len(pts)
        mf = sum(f for f, _ in pts) / n
        ms = sum(s for _, s in pts) / n
        var = sum((f - mf) ** 2 for f, _ in pts)
        if var > 0:
            b = sum((f - mf) * (s - ms) for f, s in pts) / var
            a = ms - b * mf
            if a >= 0 and b > 0:
                return a, b
            if b <= 0:
                return ms, 0.0
    return 0.0, sum(s for _, s in pts) / sum(f for f, _ in pts)


def pack(seconds: Sequence[float], slots: int, busy: Sequence[float] = (),
         after: Sequence[int | None] | None = None) -> float:
    """Wall time of running ``seconds`` in the order given (the launcher's: each run takes the
    first slot that frees) on ``slots`` parallel slots, each slot starting after its ``busy``
    seconds (runs already in flight). ``after[i]``: the run that must finish before run ``i``
    starts (a WSD branch waits for its trunk, :func:`waits_for`); the first run that is ready
    takes a free slot, and a slot with none ready idles until one is."""
    free = sorted(list(busy)[:max(1, slots)] + [0.0] * max(0, slots - len(busy))) or [0.0]
    deps = list(after) if after is not None else [None] * len(seconds)
    end: list[float | None] = [None] * len(seconds)
    pending = list(range(len(seconds)))

    def ends(j: int) -> float:  # when run j's prerequisite ends (0: none; inf: not started)
        d = deps[j]
        return 0.0 if d is None else math.inf if end[d] is None else float(end[d])

    while pending:
        t = min(free)
        k = free.index(t)
        ready = next((j for j in pending if ends(j) <= t), None)
        if ready is None:  # every pending run waits for one in flight: idle until the first ends
            later = [ends(j) for j in pending if math.isfinite(ends(j))]
            if later:
                free[k] = min(later)
                continue
            ready = pending[0]  # waits for a run that never starts here: count it as ready
        end[ready] = free[k] = t + float(seconds[ready])
        pending.remove(ready)
    return max(free)


def waits_for(runs: Sequence[RunSpec]) -> list[int | None]:
    """For each run, the index of the run it must wait for (a WSD branch: its trunk), or None."""
    index = {r.run_id: i for i, r in enumerate(runs)}
    return [index.get(r.branch_of) if r.branch_of is not None else None for r in runs]


@dataclass
class _Sample:
    actual_s: float
    predicted_s: float
    when: float


class Refiner:
    """The ratio of measured to predicted seconds, from the sweep's own runs (recent ones weigh
    most: weight ``0.5 ** (age / half_life_s)``); 1.0 before any evidence."""

    def __init__(self, half_life_s: float = 120.0, prior_weight_s: float = 20.0) -> None:
        self.half_life_s = half_life_s
        self.prior_weight_s = prior_weight_s  # the probe's weight, in predicted seconds of evidence
        self.finished: list[_Sample] = []

    def finish(self, actual_s: float, predicted_s: float, when: float) -> None:
        if actual_s > 0 and predicted_s > 0:
            self.finished.append(_Sample(actual_s, predicted_s, when))

    def factor(self, now: float, running: Iterable[tuple[float, float]] = ()) -> float:
        """``sum(w x actual) / sum(w x predicted)`` over finished runs and running ones (``(elapsed
        seconds, predicted seconds of the work done)``, weight 1: they are now), plus the probe's
        prior (ratio 1) with weight ``prior_weight_s``."""
        num = den = self.prior_weight_s
        for s in self.finished:
            w = 0.5 ** (max(0.0, now - s.when) / self.half_life_s)
            num += w * s.actual_s
            den += w * s.predicted_s
        for elapsed, predicted in running:
            if elapsed > 0 and predicted > 0:
                num += elapsed
                den += predicted
        return num / den if den > 0 else 1.0


def eta_seconds(pending_s: Sequence[float], running_left_s: Sequence[float], slots: int, factor: float) -> float:
    """Seconds until the sweep ends: the running runs' remaining seconds and the pending runs'
    seconds (in launch order), each times ``factor``, packed onto ``slots``."""
    return pack([s * factor for s in pending_s], slots, busy=[max(0.0, s * factor) for s in running_left_s])


def run_estimates(backend: Any, specs: Sequence[RunSpec], threads: int,
                  finished: Sequence[tuple[RunSpec, dict[str, Any]]] = ()) -> tuple[list[float | None], TimingModel | None]:  # fmt: skip
    """Each run's estimated seconds and the model behind them: the backend's ``timing_model(specs,
    threads)`` where it has one (measured), else its ``estimate_seconds(spec)`` (``None``: unknown).
    A backend with ``calibrate(finished)`` first learns from the study's ``finished`` runs (spec,
    ``result.json``), e.g. Nanotron their measured MFU."""
    calibrate = getattr(backend, "calibrate", None)
    if callable(calibrate):
        calibrate(finished)
    make = getattr(backend, "timing_model", None)
    if callable(make) and specs:
        model = make(list(specs), threads)
        if model is not None:
            return [model.run_seconds(s) for s in specs], model
    out: list[float | None] = []
    for s in specs:
        try:
            v = backend.estimate_seconds(s) if backend is not None else None
        except Exception:  # a backend that cannot estimate this run here (e.g. nanotron off the cluster)
            v = None
        out.append(float(v) if v is not None and math.isfinite(v) else None)
    return out, None
