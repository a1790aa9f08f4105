"""``sweep plan``: the runs a spec expands to, with sizes, tokens, FLOPs and time estimates."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from scaling.sweep.grid import expand
from scaling.sweep.spec import SweepSpec, load_spec
from scaling.timing import pack, run_estimates


def plan_table(spec: SweepSpec | str | Path, max_parallel: int | None = None) -> dict[str, Any]:
    """One row per run (N, non-embedding N, D, FLOPs, D/N, batch, LR, estimated seconds, and the
    backend's ``describe(spec)`` columns where it has one), plus totals and a wall-time estimate.

    Estimates come from the backend's measured timing model where it has one
    (:func:`scaling.timing.run_estimates`); the wall time packs them onto ``max_parallel`` slots
    in launch order.
    """
    from scaling.backends.base import backend_class
    from scaling.sweep.executors import parallelism

    spec = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    runs = expand(spec)
    backend = None
    with contextlib.suppress(ImportError):  # a backend whose own dependencies are missing here: no estimates
        backend = backend_class(spec.backend)()
    describe = getattr(backend, "describe", None)
    kind = spec.executor.kind
    par, threads = parallelism(kind, spec.executor, len(runs), max_parallel)
    ests, model = run_estimates(backend, runs, threads) if backend is not None else ([None] * len(runs), None)
    rows: list[dict[str, Any]] = []
    extra: list[str] = []
    for r, est in zip(runs, ests, strict=True):
        s = r.model_shape
        count = r.non_embedding_params if spec.model.count == "non_embedding" else r.params
        row: dict[str, Any] = {
            "run_id": r.run_id, "name": r.name, "budget": r.budget, "group": r.group,
            "shape": f"L{s.layers} d{s.hidden} h{s.heads}" + (f"/{s.n_kv_heads}" if s.n_kv_heads != s.heads else ""),
            "layers": s.layers, "hidden": s.hidden, "heads": s.heads,
            "params": r.params, "non_embedding_params": r.non_embedding_params, "tokens": r.steps * r.batch_tokens,
            "flops": r.flops(), "tokens_per_param": r.steps * r.batch_tokens / count, "batch_tokens": r.batch_tokens,
            "steps": r.steps, "lr": r.optimizer.lr, "est_seconds": est, "branch_of": r.branch_of,
        }
        if callable(describe):
            d = describe(r) or {}
            for k in d:
                if k not in extra:
                    extra.append(k)
            row.update(d)
        rows.append(row)
    wall = pack([float(e) for e in ests if e is not None], par) if ests and all(e is not None for e in ests) else None
    return {
        "name": spec.name, "backend": spec.backend, "executor": kind, "max_parallel": par, "threads_per_run": threads,
        "flops_convention": spec.train.flops_convention, "param_count": spec.model.count,
        "flops_total": sum(r["flops"] for r in rows), "est_wall_seconds": wall,
        "timing_model": model.to_dict() if model is not None else None, "describe_columns": extra, "runs": rows,
    }
