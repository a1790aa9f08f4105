"""Adaptive IsoFLOP sweeps: add sizes where a budget's minimum is not bracketed, then repeats.

After the grid's runs are done, each budget's IsoFLOP profile (mean loss per size, counted as
``model.count``; repeats averaged) is looked at with approach 2's parabola
(:func:`scaling.fit.approach2.isoflop_minimum`). A budget is extended toward one side when

* its lowest loss is at that edge of the sizes run;
* the parabola's vertex lies beyond that edge, or within one ladder step of it (between the edge
  size and its neighbour: a single size on that side of the minimum);
* its losses do not curve upward (toward the edge with the lower loss).

The next size of the ladder beyond that edge (:func:`ladder`) is run at the budget, the budget is
looked at again, and so on until it is bracketed or a cap of ``grid.extend`` is reached
(``per_budget`` runs added at a budget, ``max_added`` in the study). Then ``grid.repeats`` runs its
seeds at each budget's best size (or at every size). Every addition is logged in ``extend.json``
before it is launched (:mod:`scaling.sweep.added`), so a kill loses nothing and a rerun carries on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from scaling.convention import Convention
from scaling.errors import UsageError
from scaling.fit.approach2 import isoflop_minimum
from scaling.fit.data import FitRefusal, study_data
from scaling.fit.noise import point_means
from scaling.runspec import RunSpec
from scaling.shapes import ModelShape
from scaling.store import SweepStore
from scaling.sweep.added import entry, read_log, write_log
from scaling.sweep.grid import isoflop_run, resolve_size
from scaling.sweep.spec import IsoflopGrid, SweepSpec

SMALLER, LARGER = "smaller", "larger"


# ---- what to add ------------------------------------------------------------------------------------


def side_to_extend(budget: float, points: pd.DataFrame) -> tuple[str | None, str]:
    """``(side, why)`` for one budget's points (``params, tokens, loss``, one row per size):
    the side to add a size at (``smaller``/``larger``), or ``None`` when the minimum is bracketed."""
    sizes = sorted(points["params"])
    m = isoflop_minimum(budget, points)
    best = m["observed_best_params"]
    if best == sizes[0]:
        return SMALLER, f"the lowest loss is at the smallest size ({best:,.0f})"
    if best == sizes[-1]:
        return LARGER, f"the lowest loss is at the largest size ({best:,.0f})"
    if m["parabola_n"]["coef"][2] <= 0:
        by_size = points.sort_values("params")["loss"].to_numpy()
        side = SMALLER if by_size[0] < by_size[-1] else LARGER
        return side, f"the losses do not curve upward; the {side} edge has the lower loss"
    x, logs = math.log(m["n_opt"]), [math.log(s) for s in sizes]
    if x <= logs[0] or x >= logs[-1]:
        side = SMALLER if x <= logs[0] else LARGER
        return side, f"the parabola's minimum ({m['n_opt']:,.0f}) lies beyond the {'smallest' if side == SMALLER else 'largest'} size"
    if x < logs[1]:
        return SMALLER, f"the minimum ({m['n_opt']:,.0f}) lies within one size of the smallest ({sizes[0]:,.0f})"
    if x > logs[-2]:
        return LARGER, f"the minimum ({m['n_opt']:,.0f}) lies within one size of the largest ({sizes[-1]:,.0f})"
    return None, f"bracketed: N* {m['n_opt']:,.0f} between {sizes[0]:,.0f} and {sizes[-1]:,.0f}"


def ladder(spec: SweepSpec) -> list[ModelShape]:
    """The sizes an extension may add, ordered by ``model.count``: ``grid.sizes`` and every size of
    ``sizes_per_budget`` (empty for a grid made by ``around_optimum`` alone: see :func:`next_shape`)."""
    g = spec.grid
    assert isinstance(g, IsoflopGrid)
    sizes = [(("grid", "sizes", i), s) for i, s in enumerate(g.sizes or [])]
    for b, row in (g.sizes_per_budget or {}).items():
        sizes += [(("grid", "sizes_per_budget", b, i), s) for i, s in enumerate(row)]
    shapes = {resolve_size(s, spec.model, spec.where(*path)) for path, s in sizes}
    return sorted(shapes, key=lambda s: (s.count(spec.model.count), s.layers))


def next_shape(spec: SweepSpec, present: list[float], side: str, rungs: list[ModelShape]) -> ModelShape | None:
    """The size beyond the ``side`` edge of ``present`` (parameter counts): the next rung of the
    ladder, or, without one, the first shape of the family that differs from the edge's at the
    grid's own log steps ``spread^(i/(k-1))`` past the edge."""
    count = spec.model.count
    lo, hi = min(present), max(present)
    if rungs:
        beyond = [s for s in rungs if (s.count(count) < lo if side == SMALLER else s.count(count) > hi)]
        return (beyond[-1] if side == SMALLER else beyond[0]) if beyond else None
    around = spec.grid.around_optimum  # type: ignore[union-attr]
    step = around.spread ** (1 / (around.k - 1)) if around is not None else 2.0
    for i in range(1, 9):  # the family's shapes are rounded (hidden_multiple): step on until one differs
        target = lo / step**i if side == SMALLER else hi * step**i
        try:
            shape = resolve_size(target, spec.model, f"grid.extend: size {target:.4g}")
        except UsageError:
            return None  # no shape of the family at that size (e.g. below one layer)
        n = shape.count(count)
        if n < lo if side == SMALLER else n > hi:
            return shape
    return None


def _budget_points(points: pd.DataFrame, budget: float) -> pd.DataFrame:
    return points[[math.isclose(float(b), budget, rel_tol=1e-9) for b in points["budget"]]]


def plan_round(spec: SweepSpec, points: pd.DataFrame, log: dict[str, Any], done: set[str],
               round_: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The runs to add this round (log lines, each with its ``run``) and every budget's state.

    ``points``: done runs averaged per point (``budget, params, tokens, loss``); ``done``: ids of
    the finished runs. A budget whose earlier addition did not finish is not extended again."""
    cap = spec.grid.extend  # type: ignore[union-attr]
    extended = [e for e in log["added"] if e["kind"] == "extend"]
    total = len(extended)
    rungs = ladder(spec)
    adds: list[dict[str, Any]] = []
    states: list[dict[str, Any]] = []
    for budget in sorted(spec.grid.budgets):  # type: ignore[union-attr]
        mine = [e for e in extended if math.isclose(float(e["budget"]), budget, rel_tol=1e-9)]
        pts = _budget_points(points, budget)
        state = {"budget": budget, "added": len(mine)}
        if any(e["run_id"] not in done for e in mine):
            states.append({**state, "state": "stopped", "reason": "an added run did not finish (see sweep status)"})
            continue
        side, why = side_to_extend(budget, pts) if len(pts) else (None, "no finished runs")
        if side is None:
            states.append({**state, "state": "bracketed" if len(pts) else "stopped", "reason": why})
            continue
        seeds = list(spec.train.seeds)
        if len(mine) + len(seeds) > cap.per_budget or total + len(adds) + len(seeds) > cap.max_added:
            which = "per_budget" if len(mine) + len(seeds) > cap.per_budget else "max_added"
            states.append({**state, "state": "capped", "reason": f"{why}; grid.extend.{which} reached"})
            continue
        shape = next_shape(spec, [float(p) for p in pts["params"]], side, rungs)
        if shape is None:
            states.append({**state, "state": "ladder ends", "reason": f"{why}; no {side} size in the ladder"})
            continue
        reason = f"extend {side}: {why}"
        try:
            runs = [isoflop_run(spec, budget, shape, s, added=reason) for s in seeds]
        except UsageError as e:  # the size buys less than a batch at this budget
            states.append({**state, "state": "ladder ends", "reason": f"{why}; {e}"})
            continue
        adds += [{**entry(r, spec.model.count, "extend", reason, side, round_), "run": r} for r in runs]
        states.append({**state, "state": "extending", "reason": reason, "added": len(mine) + len(runs)})
    return adds, states


def plan_repeats(spec: SweepSpec, points: pd.DataFrame, shapes: dict[str, ModelShape],
                 round_: int, budgets: set[float] | None = None) -> list[dict[str, Any]]:
    """Log lines (with ``run``) of ``grid.repeats``: its seeds at each budget's best size, or at
    every size (``at: all``), at ``budgets`` (default: every budget of the grid). ``shapes``: run
    id -> shape of the finished runs."""
    rep = spec.grid.repeats  # type: ignore[union-attr]
    out: list[dict[str, Any]] = []
    for budget in sorted(spec.grid.budgets if budgets is None else budgets):  # type: ignore[union-attr]
        pts = _budget_points(points, budget)
        if not len(pts):
            continue
        for _, p, what in _repeated_points(pts, rep.points, budget):
            reason = f"repeat: seed at {what}, to measure run-to-run noise"
            for seed in rep.seeds:
                r = isoflop_run(spec, budget, shapes[str(p["run_id"])], seed, added=reason)
                out.append({**entry(r, spec.model.count, "repeat", reason, None, round_), "run": r})
    return out


def _repeated_points(pts: pd.DataFrame, chosen: list[str], budget: float) -> list[tuple[float, pd.Series, str]]:
    """The points of one budget that ``grid.repeats.at`` names, ascending in N, each once (a size
    that is both the best and the largest is repeated once), with what it was chosen as."""
    if chosen == ["all"]:
        return [(float(p["params"]), p, "every size") for _, p in pts.sort_values("params").iterrows()]
    pick = {"optimum": (pts["loss"].idxmin(), "the best size"), "largest": (pts["params"].idxmax(), "the largest size"),
            "smallest": (pts["params"].idxmin(), "the smallest size")}
    named: dict[Any, list[str]] = {}
    for which in chosen:
        idx, what = pick[which]
        named.setdefault(idx, []).append(what)
    return sorted(((float(pts.loc[i, "params"]), pts.loc[i], f"{' and '.join(w)} of budget {budget:.3g}")
                   for i, w in named.items()), key=lambda t: t[0])


# ---- the driver -------------------------------------------------------------------------------------


def _points(study: Path, spec: SweepSpec, loss_column: str) -> tuple[pd.DataFrame, set[str]]:
    """Done runs averaged per point (N counted as ``model.count``), and the done run ids."""
    conv = Convention(spec.model.count, spec.train.flops_convention)  # type: ignore[arg-type]
    try:
        data = study_data(study, conv, loss_column)
    except FitRefusal:
        return pd.DataFrame(columns=["budget", "params", "tokens", "loss", "run_id", "n"]), set()
    return point_means(data.frame), set(data.frame["run_id"])


def _shapes(study: Path, ids: set[str]) -> dict[str, ModelShape]:
    store = SweepStore(study)
    return {rid: RunSpec.from_json_dict(store.run(rid).read_spec() or {}).model_shape for rid in ids}


def _record(study: Path, log: dict[str, Any], adds: list[dict[str, Any]], states: list[dict[str, Any]] | None,
            round_: int) -> None:
    log["added"] += [{k: v for k, v in a.items() if k != "run"} for a in adds]
    if states is not None:
        log["budgets"] = states
    log["rounds"] = round_
    write_log(study, log)


def extend_sweep(spec: SweepSpec, study: str | Path, run: Callable[[], dict[str, Any]], *,
                 loss_column: str = "eval_loss", say: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Extend the finished sweep in ``study`` round by round, then add its repeats.

    ``run()`` launches the folder's runs (the grid's and the logged additions; finished ones are
    skipped) and returns the launch summary. Returns the log: what was added, and why each budget
    stopped. A grid that is not IsoFLOP is left as it is."""
    out = Path(study)
    if not isinstance(spec.grid, IsoflopGrid):
        return read_log(out)
    log = read_log(out)
    if log["added"] and run().get("cancelled"):  # a killed round: its runs are logged, some unfinished
        return log
    while True:
        points, done = _points(out, spec, loss_column)
        round_ = int(log["rounds"]) + 1
        adds, states = plan_round(spec, points, log, done, round_)
        if not adds:
            _record(out, log, [], states, int(log["rounds"]))
            break
        say(f"extend round {round_}: " + "; ".join(f"{a['name']} ({a['reason']})" for a in adds))
        _record(out, log, adds, states, round_)
        if run().get("cancelled"):
            return log
    # at each budget once: a budget added later (launch --add) gets its own; none left, nothing read
    unrepeated = set(spec.grid.budgets) - {float(e["budget"]) for e in log["added"] if e["kind"] == "repeat"}
    if spec.grid.repeats is not None and unrepeated:
        points, done = _points(out, spec, loss_column)
        adds = plan_repeats(spec, points, _shapes(out, set(points["run_id"])), int(log["rounds"]) + 1, unrepeated)
        if adds:
            say(f"repeats: {len(adds)} runs ({', '.join(a['name'] for a in adds)})")
            _record(out, log, adds, None, int(log["rounds"]) + 1)
            run()
    return log


def extend_folder(out_dir: str | Path, *, max_added: int | None = None, per_budget: int | None = None,
           loss_column: str = "eval_loss", say: Callable[[str], None] = lambda m: None,
           **launch_kwargs: Any) -> dict[str, Any]:
    """``scaling sweep extend DIR``: finish the folder's sweep, extend it and add its repeats,
    holding the folder's lock throughout. ``max_added``/``per_budget`` replace the spec's caps
    (the folder's ``sweep.yaml`` then records them); ``launch_kwargs`` go to :func:`launch`."""
    from scaling.sweep.launcher import launch
    from scaling.sweep.lock import SweepLock
    from scaling.sweep.spec import load_spec

    out = Path(out_dir)
    if not (out / SweepStore.SWEEP).exists():
        raise UsageError(f"{out_dir}: no {SweepStore.SWEEP} here; give the --out folder of a launched sweep")
    spec = load_spec(out / SweepStore.SWEEP)
    if not isinstance(spec.grid, IsoflopGrid):
        raise UsageError(f"{out_dir}: grid kind {spec.grid.kind!r}; only isoflop grids extend")
    caps = {k: v for k, v in (("max_added", max_added), ("per_budget", per_budget)) if v is not None}
    if caps:
        grid = spec.grid.model_copy(update={"extend": spec.grid.extend.model_copy(update=caps)})
        spec = spec.model_copy(update={"grid": grid})
    summaries: list[dict[str, Any]] = []
    with SweepLock(out) as lock:
        lock.acquire(launch_kwargs.get("executor") or spec.executor.kind, command="sweep extend")

        def run() -> dict[str, Any]:
            summaries.append(launch(spec, out, lock=lock, add=True, **launch_kwargs))
            return summaries[-1]

        # the grid's own runs first: an extension looks at finished budgets
        cancelled = bool(run().get("cancelled"))
        log = read_log(out) if cancelled else extend_sweep(spec, out, run, loss_column=loss_column, say=say)
    last = summaries[-1]
    return {"out_dir": str(out), "added": log["added"], "budgets": log["budgets"], "rounds": log["rounds"],
            "runs": last["runs"], "done": last["done"], "failed": last["failed"], "cancelled": last["cancelled"]}
