"""Study folders for the report tests: a synthetic store (through scaling.store) plus stage artifacts.

The artifacts are written in the layouts the stages use (``LawFit.to_dict()`` keys, backtest keys,
align summary), with values derived from the synthetic study's true law, so the report has every
section to draw. They are inputs for the report, not results of a fit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.report_build import TRUE_LAW, make_study, true_loss
from scaling.store import RunDir, atomic_write_json, load_runs

INJECTED = "<script>alert(1)</script>"


def _chinchilla_g(p: dict[str, float]) -> tuple[float, float, float]:
    """G, a, b of Hoffmann et al. 2022 eq. 4: N* = G (C/6)^a, a = beta/(alpha+beta)."""
    a = p["beta"] / (p["alpha"] + p["beta"])
    g = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    return g, a, 1 - a


def write_artifacts(study: Path) -> None:
    runs = load_runs(study)
    done = runs[runs["status"] == "done"]
    g, a, b = _chinchilla_g(TRUE_LAW)
    law = {**TRUE_LAW, "a": a, "b": b, "G": g}
    ci = {k: [v * 0.97, v * 1.03] for k, v in law.items()}
    se = {k: v * 0.015 for k, v in law.items()}
    atomic_write_json(study / "fit" / "approach3_non_embedding.json",
                      {"approach": 3, "param_convention": "non_embedding", **law, "se": se, "ci": ci,
                       "n_points": len(done), "objective": 1e-3})
    atomic_write_json(study / "fit" / "approach2_non_embedding.json",
                      {"approach": 2, "param_convention": "non_embedding",
                       "n_opt": {"coef": g * 6**-a, "exponent": a, "ci": [a - 0.03, a + 0.03]},
                       "d_opt": {"coef": 6**-b / g, "exponent": b, "ci": [b - 0.03, b + 0.03]}, "minima": []})
    top = done[done["budget"] == done["budget"].max()]
    best = top.loc[top["eval_loss"].idxmin()]
    prev = done[done["budget"] < top["budget"].max()]
    c = float(top["budget"].max())
    n_pred = g * (c / 6) ** a
    pred = float(true_loss(n_pred, c / (6 * n_pred)))
    achieved = float(best["eval_loss"])
    atomic_write_json(study / "fit" / "backtest.json", {
        "budget": c, "predicted_loss": pred, "achieved_loss": achieved, "error": (pred - achieved) / achieved,
        "baselines": {"previous_budget": float(prev["eval_loss"].min()), "power_law_on_minima": achieved * 1.012},
        "n_opt_predicted": n_pred, "n_opt_observed": float(best["non_embedding_params"]),
    })
    atomic_write_json(study / "plan.json", {"target_flops": c * 10, "budgets": sorted(done["budget"].unique().tolist()),
                                            "law": "chinchilla", "tokens_per_param": 20})
    atomic_write_json(study / "select.json", {"run_id": best["run_id"], "name": best["name"],
                                              "reason": "closest to the fitted N*(C) at the largest budget"})
    rng = np.random.default_rng(1)
    sft = RunDir(study / "align" / "sft")
    sft.append_metrics({"step": s, "loss": 3.0 - 0.4 * np.log1p(s) / 4 + rng.normal(0, 0.02)} for s in range(1, 61))
    sft.append_metrics({"step": s, "eval_loss": 2.9 - 0.3 * np.log1p(s) / 4} for s in (20, 40, 60))
    dpo = RunDir(study / "align" / "dpo")
    dpo.append_metrics({"step": s, "loss": 0.69 - 0.3 * s / 40, "rewards/accuracies": 0.5 + 0.4 * s / 40,
                        "rewards/margins": 0.05 * s} for s in range(1, 41))
    atomic_write_json(study / "align" / "summary.json", {"table": [
        {"stage": "base", "completion_loss": 3.1, "perplexity": 22.2, "preference_accuracy": 0.52},
        {"stage": "sft", "completion_loss": 2.7, "perplexity": 14.9, "preference_accuracy": 0.55},
        {"stage": "dpo", "completion_loss": 2.75, "perplexity": 15.6, "preference_accuracy": 0.81},
    ]})
    atomic_write_json(study / "summary.json", {"provenance": {
        "git_commit": "0123456789abcdef", "versions": {"torch": "2.13.0", "transformers": "5.0"},
        "hardware": "2 CPU cores", "seed": 0, "dataset": INJECTED}})


def small_study(path: Path, *, artifacts: bool = True, n_runs: int = 18, sizes: int = 6) -> Path:
    """3 budgets x 6 sizes, one run named with an HTML injection, optionally every stage artifact."""
    study = make_study(path, n_runs=n_runs, sizes_per_budget=sizes, names={2: INJECTED}, steps_logged=40,
                       fail_every=10)
    if artifacts:
        write_artifacts(study)
    return study


def read(path: Path) -> str:
    return Path(path).read_text(encoding="utf-8")
