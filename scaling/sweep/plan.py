"""``sweep plan``: the runs a spec expands to, with sizes, tokens, FLOPs and time estimates."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scaling.errors import UsageError
from scaling.runspec import RunSpec
from scaling.store import CorruptFileError, SweepStore
from scaling.sweep.grid import expand
from scaling.sweep.spec import SweepSpec, load_spec
from scaling.timing import pack, waits_for


def finished_runs(study: str | Path) -> list[tuple[RunSpec, dict[str, Any]]]:
    """``(spec, result.json)`` of every finished run of a study folder (none for a folder without runs)."""
    out = []
    for rd in SweepStore(study).runs():
        result = rd.read_result_or_none()
        with contextlib.suppress(CorruptFileError, ValueError):  # a damaged spec: the run tells nothing
            spec = rd.read_spec() if result is not None else None
            if spec is not None:
                out.append((RunSpec.from_json_dict(spec), result))
    return out


def plan_table(spec: SweepSpec | str | Path, max_parallel: int | None = None, gpus: Sequence[int] | None = None,
               runs_per_gpu: int | str | None = None, study: str | Path | None = None) -> dict[str, Any]:
    """One row per run (N, non-embedding N, D, FLOPs (``flops``: of every token the model saw;
    ``trained_flops``: of the steps the run trains, a WSD branch its cooldown only), D/N, batch, LR, estimated seconds, and the
    backend's ``describe(spec)`` columns where it has one), plus totals and a wall-time estimate.

    Estimates come from the backend's measured timing model where it has one
    (:func:`scaling.timing.run_estimates`); the wall time packs them onto ``max_parallel`` slots
    in launch order. A local sweep on GPUs (:mod:`scaling.sweep.gpus`; ``gpus``/``runs_per_gpu``
    override the spec's) shows its ``placement``, each run's ``gpu`` and a wall time of the runs
    in parallel per GPU, from the backend's measured timing model (or the assumed MFU of the card).
    Estimates are calibrated on the finished runs of ``study`` where given (Nanotron: their
    measured MFU); ``estimate_basis`` says what the backend estimated from.
    """
    from scaling.backends.base import backend_class
    from scaling.sweep.executors import cores, parallelism
    from scaling.sweep.gpus import check_needs, gpu_estimates, gpu_plan, gpus_per_run, place

    spec = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    runs = expand(spec)
    backend = None
    with contextlib.suppress(ImportError):  # a backend whose own dependencies are missing here: no estimates
        backend = backend_class(spec.backend)()
    describe = getattr(backend, "describe", None)
    kind = spec.executor.kind
    if study is not None and not (Path(study) / SweepStore.RUNS).is_dir():
        raise UsageError(f"study: {study} has no runs/ folder; pass the --out folder of `scaling sweep launch`")
    if study is not None and backend is not None and not hasattr(backend, "calibrate"):
        raise UsageError(f"study: the {spec.backend} backend estimates from its own measurements, not from finished "
                         "runs (`sweep launch` refines its ETA from them live); drop --study")
    finished = finished_runs(study) if study is not None and backend is not None else []
    where = "--gpus" if gpus is not None else spec.where("executor", "gpus")
    plan = gpu_plan(kind, spec.executor, runs, cores(), gpus, runs_per_gpu, where=where)
    needs = [gpus_per_run(backend, r) for r in runs] if plan is not None else [1] * len(runs)
    if plan is not None:
        check_needs(plan, runs, needs, where)
    par, threads = parallelism(kind, spec.executor, len(runs), max_parallel, gpus=plan)
    ests, model = gpu_estimates(backend, runs, threads, plan, finished)
    known = bool(ests) and all(e is not None for e in ests)
    on_gpu, gpu_wall = place([float(e or 0.0) for e in ests], plan, needs) if plan is not None else ([None] * len(runs), 0.0)
    rows: list[dict[str, Any]] = []
    extra: list[str] = []
    for r, est, gpu in zip(runs, ests, on_gpu, strict=True):
        s = r.model_shape
        count = r.non_embedding_params if spec.model.count == "non_embedding" else r.params
        row: dict[str, Any] = {
            "run_id": r.run_id, "name": r.name, "budget": r.budget, "group": r.group,
            "shape": f"L{s.layers} d{s.hidden} h{s.heads}" + (f"/{s.n_kv_heads}" if s.n_kv_heads != s.heads else ""),
            "layers": s.layers, "hidden": s.hidden, "heads": s.heads,
            "params": r.params, "non_embedding_params": r.non_embedding_params, "tokens": r.steps * r.batch_tokens,
            "flops": r.flops(), "trained_flops": r.trained_flops(), "tokens_per_param": r.steps * r.batch_tokens / count, "batch_tokens": r.batch_tokens,
            "steps": r.steps, "lr": r.optimizer.lr, "est_seconds": est, "branch_of": r.branch_of,
        }
        if plan is not None:
            row["gpu"], row["gpus_per_run"] = gpu, needs[len(rows)]
        if callable(describe):
            d = describe(r) or {}
            for k in d:
                if k not in extra:
                    extra.append(k)
            row.update(d)
        rows.append(row)
    packed = pack([float(e or 0.0) for e in ests], par, after=waits_for(runs)) if known else None
    wall = (gpu_wall if plan is not None and par == plan.slots else packed) if known else None
    repeats = repeats_estimate(spec, rows, par)
    return {
        "name": spec.name, "backend": spec.backend, "executor": kind, "max_parallel": par, "threads_per_run": threads,
        "placement": plan.to_dict() if plan is not None else None,
        "flops_convention": spec.train.flops_convention, "param_count": spec.model.count,
        "flops_total": sum(r["flops"] for r in rows), "trained_flops_total": sum(r["trained_flops"] for r in rows),
        "est_wall_seconds": wall,
        "timing_model": model.to_dict() if model is not None else None, "describe_columns": extra, "runs": rows,
        "estimate_basis": getattr(backend, "estimate_basis", None), "calibrated_on": len(finished),
        "repeats": repeats,
        "est_wall_seconds_with_repeats": wall + repeats["est_wall_seconds"]
        if wall is not None and repeats is not None and repeats["est_wall_seconds"] is not None else None,
    }


def repeats_estimate(spec: SweepSpec, rows: list[dict[str, Any]], slots: int) -> dict[str, Any] | None:
    """The runs ``grid.repeats`` adds once the grid is done (:class:`scaling.sweep.spec_grid.Repeats`)
    and their wall time on ``slots``: at ``all``, every run again per seed; at ``optimum``, one run
    per budget and seed, each priced as its budget's median run (which size is best is known only
    after the sweep; the optimum sits mid-valley, between the short and the long runs); at
    ``largest`` and ``smallest``, the budget's run of that size in the grid (the extension may
    add sizes beyond it)."""
    rep = getattr(spec.grid, "repeats", None)
    if rep is None:
        return None
    seeds = len(rep.seeds)
    if rep.points == ["all"]:
        each = [r["est_seconds"] for r in rows for _ in range(seeds)]
        basis = "every run again"
    else:
        by_budget: dict[float, list[dict[str, Any]]] = {}
        for r in rows:
            if r["budget"] is not None:
                by_budget.setdefault(float(r["budget"]), []).append(r)
        each = []
        for runs in by_budget.values():
            secs = [r["est_seconds"] for r in runs]
            price = {"optimum": None if None in secs else float(np.median(secs)),
                     "largest": max(runs, key=lambda r: r["params"])["est_seconds"],
                     "smallest": min(runs, key=lambda r: r["params"])["est_seconds"]}
            each += [price[p] for p in rep.points for _ in range(seeds)]
        basis = " and ".join({"optimum": "each budget's median run", "largest": "its largest size's run",
                              "smallest": "its smallest size's run"}[p] for p in rep.points)
    known = all(e is not None for e in each)
    return {"seeds": seeds, "at": rep.points if len(rep.points) > 1 else rep.points[0], "runs": len(each), "basis": basis,
            "est_wall_seconds": pack([float(e) for e in each], slots) if known and each else None}
