"""Choose the model to align: the finished run nearest the fitted compute-optimal frontier.

At budget ``C`` the law gives ``N*(C)`` (:meth:`optimal_allocation`). Among the done runs of that
budget, the chosen one minimises ``|ln(N / N*)|``, with ``N`` counted as the law counts it
(total or non-embedding parameters); distances in log N because IsoFLOP curves are roughly
parabolic in log N (Hoffmann et al. 2022, approach 2). With ``train_optimal=True`` a new run is
trained at ``N*(C)``, ``D*(C)`` instead, using the nearest run's settings for everything else.
The choice and its reason go to ``STUDY/select.json``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from scaling.errors import UsageError
from scaling.store import SweepStore, atomic_write_json, read_json

# fits tried in this order when none is named: Kaplan's non-embedding count gave the cleaner law
# for the small models a CPU study trains (embeddings dominate their parameters)
DEFAULT_FITS = ("approach3_non_embedding.json", "approach3_total.json", "approach2_non_embedding.json",
                "approach2_total.json")
SELECT_FILE = "select.json"


def find_fit(study: Path) -> Path:
    for name in DEFAULT_FITS:
        if (study / "fit" / name).exists():
            return study / "fit" / name
    others = sorted(p for p in (study / "fit").glob("*.json") if p.name != "backtest.json")
    if others:
        return others[0]
    raise UsageError(f"fit: no fit in {study / 'fit'}; run `scaling fit {study}` first or pass --fit FILE")


def _law_name(law: Any, source: str | None) -> str:
    return str(getattr(law, "name", None) or source or type(law).__name__)


def _count_column(law: Any) -> str:
    conv = getattr(law, "param_convention", "total")
    if conv not in ("total", "non_embedding"):
        raise UsageError(f"fit.param_convention={conv!r}: expected 'total' or 'non_embedding'")
    return "non_embedding_params" if conv == "non_embedding" else "params"


def _done_runs(study: Path) -> Any:
    from scaling.store import load_runs

    df = load_runs(study)
    if df.empty or "status" not in df:
        raise UsageError(f"study={study}: no runs found; give a sweep folder with runs/")
    df = df[df["status"] == "done"].copy()
    if df.empty:
        raise UsageError(f"study={study}: no finished runs yet; wait for the sweep or run `scaling sweep resume`")
    import pandas as pd

    cols = [pd.to_numeric(df[c], errors="coerce") for c in ("budget", "flops") if c in df]
    if not cols:
        raise UsageError(f"study={study}: runs carry neither a budget label nor flops")
    df["_budget"] = cols[0].fillna(cols[1]) if len(cols) == 2 else cols[0]
    return df[df["_budget"].notna()]


def _at_budget(df: Any, budget: float | None) -> tuple[float, Any]:
    budgets = sorted({float(b) for b in df["_budget"]})
    if budget is None:
        budget = budgets[-1]
    near = df[(df["_budget"] - budget).abs() <= 0.05 * budget]
    if near.empty:
        shown = ", ".join(f"{b:.3g}" for b in budgets)
        raise UsageError(f"budget={budget:.3g}: no finished run at this budget; budgets with runs: {shown}")
    return float(budget), near


def _loss_of(row: Any) -> float | None:
    for k in ("eval_loss", "final_loss"):
        v = row.get(k)
        if v is not None and v == v:
            return float(v)
    return None


def select(
    study_dir: str | Path,
    fit: str | Path | Any | None = None,
    budget: float | None = None,
    *,
    train_optimal: bool = False,
    write: bool = True,
) -> dict[str, Any]:
    """Pick the run nearest ``N*(budget)`` (largest budget by default); write ``select.json``.

    ``fit`` is a fit JSON path, a law object with ``optimal_allocation`` and ``param_convention``,
    or ``None`` (the study's own fit, see :data:`DEFAULT_FITS`).
    """
    study = Path(study_dir)
    source: str | None = None
    if fit is None or isinstance(fit, (str, Path)):
        path = Path(fit) if fit is not None else find_fit(study)
        from scaling.fit import load_law

        law, source = load_law(path, field="fit"), str(path)
    else:
        law = fit
    col = _count_column(law)
    df = _done_runs(study)
    budget, runs = _at_budget(df, budget)
    alloc = law.optimal_allocation(budget)
    n_opt, d_opt = float(alloc.params), float(alloc.tokens)
    runs = runs.assign(_dist=[abs(math.log(float(n) / n_opt)) for n in runs[col]]).sort_values("_dist")
    best = runs.iloc[0].to_dict()
    if train_optimal:
        best = _train_optimal(study, best, law, budget, n_opt, col)
        best["_dist"] = abs(math.log(float(best[col]) / n_opt))
    choice = _describe(study, best, runs, law, source, budget, n_opt, d_opt, col, train_optimal)
    if write:
        atomic_write_json(study / SELECT_FILE, choice)
    return choice


def _describe(
    study: Path, best: dict, runs: Any, law: Any, source: str | None, budget: float,
    n_opt: float, d_opt: float, col: str, trained: bool,
) -> dict[str, Any]:
    conv = "non-embedding" if col == "non_embedding_params" else "total"
    n = float(best[col])
    name = _law_name(law, source)
    predicted = None
    loss_fn = getattr(law, "loss", None)
    if callable(loss_fn) and best.get("tokens"):
        p = float(loss_fn(n, float(best["tokens"])))
        predicted = p if math.isfinite(p) else None
    how = "trained at" if trained else f"nearest of {len(runs)} finished runs at this budget to"
    reason = (
        f"{name}: N*(C={budget:.3g}) = {n_opt:.4g} {conv} parameters (D* = {d_opt:.4g} tokens); "
        f"run {best['run_id']} has N = {n:.4g} ({n / n_opt:.2f} x N*), {how} N* in log N"
    )
    model_dir = study / "runs" / str(best["run_id"]) / "model"
    return {
        "run_id": best["run_id"],
        "name": best.get("name"),
        "model_dir": str(model_dir),
        "budget": budget,
        "param_convention": getattr(law, "param_convention", "total"),
        "params": best.get("params"),
        "non_embedding_params": best.get("non_embedding_params"),
        "tokens": best.get("tokens"),
        "loss": _loss_of(best),
        "predicted_loss": predicted,
        "n_opt": n_opt,
        "d_opt": d_opt,
        "n_ratio": n / n_opt,
        "log_distance": float(best["_dist"]),
        "law": name,
        "fit_file": source,
        "trained_optimal": trained,
        "reason": reason,
        "candidates": [
            {"run_id": r["run_id"], "n": float(r[col]), "loss": _loss_of(r), "log_distance": float(r["_dist"])}
            for r in runs.to_dict("records")
        ],
    }


def _train_optimal(study: Path, template: dict, law: Any, budget: float, n_opt: float, col: str) -> dict[str, Any]:
    """Train a run at N*(C), D*(C) with the template run's data, optimizer and schedule."""
    from scaling.backends.base import get_backend
    from scaling.runspec import RunSpec, ShapeSpec
    from scaling.shapes import LadderRule, shape_for_params

    store = SweepStore(study)
    spec = RunSpec.from_json_dict(store.run(str(template["run_id"])).read_spec() or {})
    t = spec.model_shape
    count = "non_embedding" if col == "non_embedding_params" else "total"
    rule = LadderRule(aspect_ratio=t.aspect_ratio, head_dim=t.d_head, kv_ratio=max(1, t.heads // t.n_kv_heads),
                      hidden_multiple=t.d_head, ffn_multiple=math.gcd(t.d_ffn, 256), tied=t.tied)
    shape = shape_for_params(n_opt, vocab=t.vocab, seq_len=t.seq_len, count=count, rule=rule)
    # tokens from the budget and the shape actually built, so that C = 6 N D holds for this run
    tokens = budget / (6 * shape.count(count))
    tokens = max(spec.batch_tokens, round(tokens / spec.batch_tokens) * spec.batch_tokens)
    new = spec.model_copy(update={"shape": ShapeSpec.from_shape(shape), "tokens": int(tokens),
                                  "name": f"optimal-{shape.layers}x{shape.hidden}", "group": "optimal"})
    new = RunSpec.model_validate(new.model_dump())
    rd = store.run(new.run_id)
    if not rd.is_done():
        rd.write_spec(new.to_json_dict())
        get_backend(new.backend).train(new, rd)
    result = rd.read_result() or {}
    return {"run_id": new.run_id, "name": new.name, "params": new.params,
            "non_embedding_params": new.non_embedding_params, "tokens": new.steps * new.batch_tokens,
            **{k: result.get(k) for k in ("eval_loss", "final_loss")}}
