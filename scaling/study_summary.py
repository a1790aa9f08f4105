"""What ``scaling run`` prints and writes as ``STUDY/summary.json``: each part read from the
artifact its stage wrote (the fits' minima, ``extend.json``, ``fit/backtest.json``,
``fit/predict.json``, ``select.json``, ``align/summary.json``), nothing recomputed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from scaling.convention import HEADLINE_CONVENTION
from scaling.stages import StageLog
from scaling.store import SweepStore, atomic_write_json, read_json


def budgets(study: Path) -> list[dict[str, Any]]:
    """Each budget's IsoFLOP minimum (total N) as the fit stage wrote it, beside its best run."""
    from scaling.fit.artifacts import read_minima
    from scaling.store import load_runs

    minima, _, _ = read_minima(study, HEADLINE_CONVENTION)
    runs = load_runs(study).set_index("run_id")
    out = []
    for m in minima:
        best = runs.loc[m["observed_best_run"]]
        out.append({"flops": m["flops"], "n_opt": m.get("n_opt"), "interior": bool(m.get("interior")),
                    "best_run": best.name, "best_params": float(best["params"]),
                    "best_non_embedding_params": float(best["non_embedding_params"]),
                    "best_loss": m["observed_best_loss"]})
    return out


def predict_summary(study: Path) -> dict[str, Any] | None:
    """Which candidate predicts, and every candidate's held-out error, from ``fit/predict.json``."""
    d = read_json(study / "fit" / "predict.json")
    if not d:
        return None
    rows = [{k: r.get(k) for k in ("name", "score", "errors", "weight", "refused") if k in r} for r in d["candidates"]]
    return {"chosen": d["chosen"], "combine": d["combine"], "axis": d["design"]["axis"], "candidates": rows,
            "choice_frequency": d.get("choice_frequency")}


def extend_summary(study: Path) -> dict[str, Any] | None:
    """What the adaptive sweep added and why each budget stopped, from ``extend.json``."""
    from scaling.sweep.added import LOG, read_log

    if not (study / LOG).exists():
        return None
    log = read_log(study)
    return {"added": [{k: e[k] for k in ("name", "budget", "kind", "reason")} for e in log["added"]],
            "budgets": log["budgets"]}


def backtest_summary(bt: dict[str, Any]) -> dict[str, Any]:
    """The loss backtest of the chosen form, and N* from the form chosen for it (``n_opt_form``)."""
    chosen, n_opt = bt.get("chosen") or {}, bt.get("n_opt") or {}
    out = {k: chosen.get(k) for k in ("budget", "predicted_loss", "achieved_loss", "error", "baselines",
                                      "beats_baselines", "form", "param_convention", "chosen_by")}
    for k in ("n_opt_predicted", "n_opt_observed", "n_opt_error"):
        out[k] = n_opt.get(k, chosen.get(k))
    out.update(n_opt_form=n_opt.get("form", chosen.get("form")),
               n_opt_param_convention=n_opt.get("param_convention", chosen.get("param_convention")),
               n_opt_chosen_by=n_opt.get("chosen_by", chosen.get("chosen_by")))
    return out


def summarize(study: Path, log: StageLog, t0: float, report: str | None) -> dict[str, Any]:
    from scaling.fit.artifacts import exponent_rows

    bt = read_json(study / "fit" / "backtest.json") or {}
    select = read_json(study / "select.json") or {}
    align = read_json(study / "align" / "summary.json") or {}
    counts = SweepStore(study).counts()
    summary = {
        "study": str(study),
        "minutes": sum(log.minutes.values()),  # the whole study, resumed invocations included
        "minutes_this_invocation": (time.perf_counter() - t0) / 60.0,
        "stage_minutes": {k: round(v, 3) for k, v in log.minutes.items()},
        "runs": counts,
        "budgets": budgets(study),
        "extend": extend_summary(study),
        "backtest": backtest_summary(bt),
        "exponents": exponent_rows(study),
        "predict": predict_summary(study),
        "chosen": {k: select.get(k) for k in ("run_id", "name", "params", "non_embedding_params", "reason")
                   if k in select},
        "align": align.get("table"),
        "align_flags": align.get("flags"),
        "align_stage_minutes": align.get("stage_minutes"),
        "report": report,
    }
    atomic_write_json(study / "summary.json", summary)
    return summary
